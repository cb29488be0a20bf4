//! Dashboard render benchmark (`bench/dashboard/run.sh`): boots the real server on
//! loopback over a database seeded with one large account (by default 1,000 API keys
//! in one project, 1,000 members plus 1,000 pending invites, 10,000 transcripts), signs
//! its Owner in, then requests every account page in turn and reports, per page, the
//! p50 / p95 / max time to the last byte and the page's weight. Exits 1 when a page's
//! p95 is over the target (20 ms) or it weighs more than 60 KB.
//!
//! Settings (environment): HARK_BENCH_DB=postgres (a fresh database on the server of
//! HARK_TEST_POSTGRES_URL; default: SQLite in a temp dir),
//! HARK_BENCH_KEYS, HARK_BENCH_MEMBERS, HARK_BENCH_INVITES, HARK_BENCH_TRANSCRIPTS,
//! HARK_BENCH_REQUESTS (per page, default 200).

use hark_core::clock::{Clock, SystemClock};
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::plan::LimitOverrides;
use hark_core::{AccountId, InviteId, Plan, TranscriptId, UserId};
use hark_server::config::Config;
use hark_store::{Actor, Mail, NewAccount, NewInvite, NewTranscript};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PASSWORD: &str = "dashboard benchmark passphrase";
const TARGET_P95_MS: f64 = 20.0;
const MAX_BYTES: usize = 60 * 1024;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run() -> Result<(), Error> {
    let (keys_n, members_n, invites_n, transcripts_n, requests) = (
        setting("HARK_BENCH_KEYS", 1000),
        setting("HARK_BENCH_MEMBERS", 1000),
        setting("HARK_BENCH_INVITES", 1000),
        setting("HARK_BENCH_TRANSCRIPTS", 10_000),
        setting("HARK_BENCH_REQUESTS", 200),
    );
    let dir = tempfile::tempdir()?;
    // A database of its own: the benchmark's master key lives in its temp data dir.
    let database_url = match std::env::var("HARK_BENCH_DB").as_deref() {
        Ok("postgres") => hark_store::testing::TestDatabase::postgres().await.url,
        _ => String::new(),
    };
    let config = Config {
        data_dir: dir.path().join("data"),
        database_url,
        bind: "127.0.0.1:0".into(),
        workers: 0,
        rate_limit: hark_server::config::RateLimitConfig {
            requests: 1_000_000_000,
            window_secs: 300,
            ..Default::default()
        },
        ..Config::default()
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = hark_server::start(config.clone(), None, clock.clone()).await?;
    let state = server.state.clone();
    let store = state.store.clone();
    let base = state.public_base_url.clone();
    let master_key = hark_server::load_master_key(&config)?;

    let seeding = Instant::now();
    let owner_email = format!("owner-{}@bench.invalid", uuid::Uuid::new_v4().simple());
    let boot = store
        .create_account(
            NewAccount {
                id: AccountId::new(),
                name: "Dashboard benchmark".into(),
                plan: Plan::Enterprise,
                owner_id: UserId::new(),
                owner_email: owner_email.clone(),
                project: hark_server::provisioning::new_project(&master_key, "default"),
            },
            &Actor::Operator,
        )
        .await?;
    let account = boot.account.id;
    let project = boot.project.id;
    let mut overrides = LimitOverrides::default();
    for o in [
        format!("api_keys={}", keys_n + 10),
        format!("members={}", members_n + invites_n + 10),
    ] {
        overrides.set(&o)?;
    }
    store
        .set_plan(account, Plan::Enterprise, overrides, &Actor::Operator)
        .await?;
    let hash = hark_core::password::hash(PASSWORD)?;
    store
        .set_password(boot.owner, &hash, None, &Actor::Operator)
        .await?;
    let bench_store = hark_server::open_store(&config, clock.clone()).await?;
    let mut first_key = None;
    for i in 0..keys_n {
        let (record, _) = hark_server::provisioning::issue_api_key(
            &bench_store,
            &master_key,
            clock.as_ref(),
            project,
            &format!("key {i:04}"),
            None,
            &Actor::Operator,
        )
        .await?;
        first_key.get_or_insert(record.id);
    }
    let key_id = first_key.ok_or("HARK_BENCH_KEYS must be at least 1")?;
    let invite = |email: String, role| {
        let token = keys::generate(SecretKind::Invite);
        let digest = SecretDigest::of(token.expose()).to_hex();
        (
            NewInvite {
                id: InviteId::new(),
                account_id: account,
                email: email.clone(),
                role,
                digest_hex: digest.clone(),
                expires_at: clock.now_ms() + 86_400_000,
            },
            Mail {
                to: email,
                subject: "invite".into(),
                body: "benchmark".into(),
            },
            digest,
        )
    };
    for i in 0..members_n {
        let (new, mail, digest) = invite(
            format!("member-{i:04}@bench.invalid"),
            hark_core::Role::Reader,
        );
        store.create_invite(new, mail, &Actor::Operator).await?;
        store
            .accept_invite(&digest, (UserId::new(), hash.clone()))
            .await?;
    }
    for i in 0..invites_n {
        let (new, mail, _) = invite(
            format!("pending-{i:04}@bench.invalid"),
            hark_core::Role::Admin,
        );
        store.create_invite(new, mail, &Actor::Operator).await?;
    }
    for i in 0..transcripts_n {
        store
            .create_transcript(NewTranscript {
                id: TranscriptId::random(),
                project_id: project,
                api_key_id: key_id,
                audio_url: format!("https://example.com/audio-{i}.wav"),
                upload_id: None,
                params: "{}".into(),
            })
            .await?;
    }
    bench_store.close().await;
    let seeded_secs = seeding.elapsed().as_secs_f64();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": owner_email, "password": PASSWORD, "return_token": true}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let cookie = format!(
        "hark_session={}; hark_csrf={}",
        login["token"].as_str().ok_or("no session token")?,
        login["csrf_token"].as_str().ok_or("no csrf token")?
    );

    let a = format!("/accounts/{account}");
    let pages = [
        a.clone(),
        format!("{a}/projects"),
        format!("{a}/keys?project={project}"),
        format!("{a}/projects/{project}/keys/{key_id}"),
        format!("{a}/members"),
        format!("{a}/security"),
        format!("{a}/settings"),
        format!("{a}/projects/{project}/transcripts"),
        format!("{a}/audit"),
        format!("{a}/playground?project={project}"),
        format!("{a}/usage?range=30d&group_by=api_key"),
        "/accounts".to_string(),
        "/profile".to_string(),
    ];
    println!(
        "seeded {keys_n} keys, {members_n} members, {invites_n} invites, {transcripts_n} transcripts in {seeded_secs:.1} s ({})",
        if config.database_url.is_empty() { "SQLite" } else { "PostgreSQL" }
    );
    println!(
        "{:<48} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "page", "status", "p50 ms", "p95 ms", "max ms", "bytes"
    );
    let mut ok = true;
    for path in &pages {
        let url = format!("{base}{path}");
        let mut times = Vec::with_capacity(requests);
        let (mut status, mut bytes) = (0, 0);
        for i in 0..requests + 20 {
            let started = Instant::now();
            let answer = http.get(&url).header("cookie", &cookie).send().await?;
            status = answer.status().as_u16();
            let body = answer.bytes().await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            bytes = body.len();
            if i >= 20 {
                times.push(ms);
            }
        }
        if status == 404 {
            println!("{path:<48} {status:>6}   (no such page in this build)");
            continue;
        }
        times.sort_by(f64::total_cmp);
        let (p50, p95, max) = (
            percentile(&times, 50.0),
            percentile(&times, 95.0),
            percentile(&times, 100.0),
        );
        let shown = path
            .replace(&account.to_string(), "{a}")
            .replace(&project.to_string(), "{p}")
            .replace(&key_id.to_string(), "{k}");
        println!("{shown:<48} {status:>6} {p50:>8.2} {p95:>8.2} {max:>8.2} {bytes:>8}");
        if status != 200 || p95 > TARGET_P95_MS || bytes > MAX_BYTES {
            ok = false;
        }
    }
    println!(
        "target: p95 <= {TARGET_P95_MS} ms and <= {MAX_BYTES} bytes per page: {}",
        if ok { "met" } else { "NOT met" }
    );
    server.shutdown().await;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
