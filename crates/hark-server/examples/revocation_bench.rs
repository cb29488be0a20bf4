//! Revocation propagation and authenticated throughput over several nodes on one
//! PostgreSQL database (`bench/cluster/run.sh`).
//!
//! Starts `HARK_BENCH_NODES` (default 3) real servers (`hark_server::start`) in this
//! process on a fresh PostgreSQL database (`HARK_TEST_POSTGRES_URL`), with the auth
//! epoch poll turned down to 60 s so only the revocation bus can propagate, then:
//!
//! 1. Revocation: `HARK_BENCH_REVOCATIONS` (default 1000) keys, each first used on every
//!    node (so each node has it cached); each key is then revoked through the store (as
//!    the management API does) and every node is polled over HTTP until it refuses the
//!    key. The lag of a node is from the revocation's commit (when `revoke_api_key`
//!    returns) to its first 401. Prints p50, p99 and max over all (key, node) pairs,
//!    and over the revocations of the time until every node refused the key.
//! 2. Throughput: `GET /v2/transcript?limit=1` with valid keys, `HARK_BENCH_CONNECTIONS`
//!    concurrent clients for `HARK_BENCH_SECONDS` seconds, spread over the first 1, 2 and
//!    3 nodes; prints requests/s for each.
//!
//! All nodes share this process's CPUs (and the machine's with PostgreSQL and the
//! client), so throughput with more nodes shows the cost of spreading, not the gain of
//! more machines.

use hark_core::clock::{Clock, SystemClock};
use hark_core::{AccountId, Plan, UserId};
use hark_server::config::Config;
use hark_store::testing::TestDatabase;
use hark_store::{AccountStore, Actor, KeyStore, NewAccount, SqlStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A node still accepting a revoked key after this is given up on (and reported).
const GIVE_UP: Duration = Duration::from_secs(10);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let nodes_wanted = env("HARK_BENCH_NODES", 3).max(1);
    let revocations = env("HARK_BENCH_REVOCATIONS", 1000);
    let connections = env("HARK_BENCH_CONNECTIONS", 32);
    let seconds = env("HARK_BENCH_SECONDS", 10) as u64;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let database = TestDatabase::postgres().await;
    let master_key = hark_core::seal::MasterKey::generate_hex();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..nodes_wanted {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: dir.path().join("data"),
            database_url: database.url.clone(),
            bind: "127.0.0.1:0".into(),
            master_key: hark_core::keys::Secret::new(master_key.clone()),
            workers: 0,
            auth_epoch_poll_ms: 60_000,
            ..Config::default()
        };
        config_rate_limit_off(&mut config);
        nodes.push(hark_server::start(config, None, clock.clone()).await?);
        dirs.push(dir);
    }
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.state.public_base_url.clone())
        .collect();
    let store = SqlStore::open(&database.url, clock.clone()).await?;
    let master = hark_core::seal::MasterKey::from_hex(&master_key)?;
    let account = AccountId::new();
    let boot = store
        .create_account(
            NewAccount {
                id: account,
                name: "bench".into(),
                plan: Plan::Enterprise,
                owner_id: UserId::new(),
                owner_email: "bench@example.com".into(),
                project: hark_server::provisioning::new_project(&master, "bench"),
            },
            &Actor::Operator,
        )
        .await?;
    let mut overrides = hark_core::plan::LimitOverrides::default();
    overrides.set(&format!("api_keys={}", revocations + 100))?;
    store
        .set_plan(account, Plan::Enterprise, overrides, &Actor::Operator)
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let status = |base: &str, key: &str| {
        let req = http
            .get(format!("{base}/v2/transcript?limit=1"))
            .header("authorization", key);
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };

    // 1. Revocation propagation.
    let mut lags_ms: Vec<f64> = Vec::with_capacity(revocations * nodes_wanted);
    // Per revocation, until the last node refused it: when it holds everywhere.
    let mut everywhere_ms: Vec<f64> = Vec::with_capacity(revocations);
    let started_all = Instant::now();
    for i in 0..revocations {
        let (record, secret) = hark_server::provisioning::issue_api_key(
            &store,
            &master,
            clock.as_ref(),
            boot.project.id,
            "bench",
            None,
            &Actor::Operator,
        )
        .await?;
        let key = secret.into_inner();
        for base in &bases {
            let s = status(base, &key).await;
            if s != 200 {
                return Err(format!("warming key {i} on {base}: {s}").into());
            }
        }
        store.revoke_api_key(record.id, &Actor::Operator).await?;
        let committed = Instant::now();
        let waits = bases.iter().map(|base| {
            let key = key.clone();
            let status = &status;
            async move {
                loop {
                    if status(base, &key).await == 401 {
                        return committed.elapsed();
                    }
                    if committed.elapsed() > GIVE_UP {
                        return committed.elapsed();
                    }
                }
            }
        });
        let mut slowest = 0.0f64;
        for lag in futures::future::join_all(waits).await {
            let ms = lag.as_secs_f64() * 1000.0;
            lags_ms.push(ms);
            slowest = slowest.max(ms);
        }
        everywhere_ms.push(slowest);
    }
    let elapsed = started_all.elapsed().as_secs_f64();
    for (what, lags) in [
        ("each node", &mut lags_ms),
        ("every node", &mut everywhere_ms),
    ] {
        lags.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "revocation propagation to {what}, {revocations} revocations x {nodes_wanted} nodes ({} samples, {elapsed:.1} s): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p99 <= 100 ms: {})",
            lags.len(),
            pct(0.5),
            pct(0.99),
            lags.last().copied().unwrap_or(0.0),
            if pct(0.99) <= 100.0 { "MET" } else { "NOT MET" }
        );
    }
    let never = lags_ms
        .iter()
        .filter(|ms| **ms >= GIVE_UP.as_secs_f64() * 1000.0)
        .count();
    if never > 0 {
        println!("{never} (key, node) pairs still accepted the key after {GIVE_UP:?} (counted at {GIVE_UP:?})");
    }

    // 2. Authenticated throughput with 1..=N nodes.
    let mut keys = Vec::new();
    for _ in 0..connections {
        let (_, secret) = hark_server::provisioning::issue_api_key(
            &store,
            &master,
            clock.as_ref(),
            boot.project.id,
            "load",
            None,
            &Actor::Operator,
        )
        .await?;
        keys.push(secret.into_inner());
    }
    for n in 1..=nodes_wanted {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut clients = Vec::new();
        for (c, key) in keys.iter().enumerate() {
            let base = bases[c % n].clone();
            let key = key.clone();
            let http = http.clone();
            let done = done.clone();
            let failed = failed.clone();
            clients.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let ok = http
                        .get(format!("{base}/v2/transcript?limit=1"))
                        .header("authorization", &key)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for client in clients {
            client.await?;
        }
        println!(
            "authenticated GET /v2/transcript?limit=1 over {n} node(s), {connections} clients, {seconds} s: \
             {:.0} requests/s ({} failed)",
            done.load(Ordering::Relaxed) as f64 / seconds as f64,
            failed.load(Ordering::Relaxed)
        );
    }

    for node in nodes {
        node.shutdown().await;
    }
    store.close().await;
    database.drop_database().await;
    drop(dirs);
    Ok(())
}

/// The benchmark measures authentication, not the limiter.
fn config_rate_limit_off(config: &mut Config) {
    config.rate_limit.requests = u32::MAX / 2;
    config.rate_limit.window_secs = 1;
}
