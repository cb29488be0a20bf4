//! Crash recovery: `kill -9` a server mid-transcription, start it again on the same data
//! (and database), and the job is picked up again once its lease expires, completes with
//! the real transcript, and is billed exactly once. Likewise a live streaming session:
//! after `kill -9` the restarted server closes it and bills it exactly once.

mod common;

use common::{
    api_json, fixture_path, normalise, poll_transcript, run_bounded, runtime, with_database,
    Install, JFK_PHRASE,
};
use hark_core::clock::{Clock, SystemClock};
use hark_core::{AccountId, ProjectId, TranscriptId};
use hark_store::{SqlStore, StreamStore, TranscriptStatus, TranscriptStore, UsageStore};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const REPEATS: usize = 5;

/// ~3 minutes of real speech: the JFK clip and the LibriVox clips, five times over.
fn long_wav(dir: &Path) -> (PathBuf, f64) {
    let jfk = fixture_path("HARK_TEST_JFK_WAV");
    let librivox = fixture_path("HARK_TEST_LIBRIVOX_DIR");
    let mut clips: Vec<PathBuf> = std::fs::read_dir(&librivox)
        .unwrap_or_else(|e| panic!("reading {}: {e}", librivox.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    clips.sort();
    assert!(
        !clips.is_empty(),
        "no .wav clips in {}: run `bash scripts/test-fixtures.sh`",
        librivox.display()
    );
    let out = dir.join("long.wav");
    let mut sox = Command::new("sox");
    for _ in 0..REPEATS {
        sox.arg(&jfk).args(&clips);
    }
    sox.args(["-r", "16000", "-c", "1", "-b", "16"]).arg(&out);
    let result = run_bounded(&mut sox, Duration::from_secs(120));
    assert!(
        result.status.success(),
        "sox could not build the long WAV (install sox: scripts/install-test-deps.sh): {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let soxi = run_bounded(
        Command::new("soxi").arg("-D").arg(&out),
        Duration::from_secs(30),
    );
    let secs: f64 = String::from_utf8_lossy(&soxi.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("soxi -D {}: {e}", out.display()));
    assert!(
        (150.0..=240.0).contains(&secs),
        "the long WAV is {secs} s, expected about 3 minutes"
    );
    (out, secs)
}

async fn open_store(url: &str) -> SqlStore {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    SqlStore::open(url, clock)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn kill9_mid_job_recovers_and_bills_once(database_url: Option<String>) {
    let install = Install::new(database_url);
    let tenant = install.admin_init();
    install.install_model();
    let (wav, secs) = long_wav(install.dir.path());
    let env = [("HARK_WORKERS", "1"), ("HARK_JOB_LEASE_MS", "2000")];

    let mut first = install.serve(&env);
    let key = tenant.api_key.as_str();
    let audio = std::fs::read(&wav).expect("reading the long WAV");
    let (status, body) = common::http_request(
        "POST",
        &format!("{}/v2/upload", first.base_url),
        Some(key),
        Some("application/octet-stream"),
        &audio,
    )
    .expect("uploading");
    assert_eq!(status, 200, "upload answered {status}: {body}");
    let upload: serde_json::Value = serde_json::from_str(&body).expect("upload JSON");
    let upload_url = upload["upload_url"].as_str().expect("upload_url");
    let created = api_json(
        "POST",
        &format!("{}/v2/transcript", first.base_url),
        key,
        Some(&json!({ "audio_url": upload_url })),
    );
    let id = created["id"].as_str().expect("transcript id").to_string();

    let seen = poll_transcript(
        &first,
        key,
        &id,
        Duration::from_secs(60),
        "processing",
        |t| t["status"] != "queued",
    );
    assert_eq!(
        seen["status"],
        "processing",
        "the job must still be running when the server is killed (it ended first: \
         status {}, error {}); server stderr:\n{}",
        seen["status"],
        seen["error"],
        first.log()
    );
    // Let it get into the engine before the crash.
    std::thread::sleep(Duration::from_millis(500));
    first.kill9();
    let rt = runtime();
    let url = install.effective_database_url();
    let project = ProjectId::parse(&tenant.project_id).expect("project id");
    let transcript_id = TranscriptId::parse(&id).expect("transcript id");
    let at_crash = rt.block_on(async {
        let store = open_store(&url).await;
        let t = store
            .get_transcript(project, transcript_id)
            .await
            .expect("reading the transcript")
            .expect("the transcript exists");
        store.close().await;
        t
    });
    assert_eq!(
        at_crash.status,
        TranscriptStatus::Processing,
        "the job finished before the kill: the audio is too short for this machine"
    );

    let second = install.serve(&env);
    let done = poll_transcript(
        &second,
        key,
        &id,
        Duration::from_secs(900),
        "completed or error",
        |t| t["status"] == "completed" || t["status"] == "error",
    );
    assert_eq!(
        done["status"],
        "completed",
        "after the restart the job ended {} ({}); server stderr:\n{}",
        done["status"],
        done["error"],
        second.log()
    );
    let text = done["text"].as_str().unwrap_or_default();
    let norm = normalise(text);
    assert!(
        norm.contains(JFK_PHRASE),
        "the recovered transcript is not the real one (no \"{JFK_PHRASE}\"): {text}"
    );
    assert!(
        norm.contains("dashwood"),
        "the LibriVox part is missing (no \"dashwood\"): {text}"
    );
    let duration = done["audio_duration"].as_f64().expect("audio_duration");
    assert!(
        (duration - secs).abs() < 2.0,
        "audio_duration {duration} s, the file is {secs} s"
    );
    drop(second);

    // Exactly one usage event for the transcript, though two workers ran it.
    let account = AccountId::parse(&tenant.account_id).expect("account id");
    let events = rt.block_on(async {
        let store = open_store(&url).await;
        let events = store.usage_events(account).await.expect("usage events");
        store.close().await;
        events
    });
    let key_wanted = format!("transcript:{id}");
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.event.idempotency_key == key_wanted)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "expected exactly one usage event {key_wanted}, found {}: {events:#?}",
        ours.len()
    );
    let event = &ours[0].event;
    assert_eq!(event.product, "speech_to_text");
    assert!(
        (event.audio_ms as f64 / 1000.0 - secs).abs() < 2.0,
        "billed {} s for {secs} s of audio",
        event.audio_ms
    );
    assert_eq!(events.len(), 1, "no other usage was recorded: {events:#?}");
}

#[test]
fn kill9_mid_transcription_recovers_on_sqlite() {
    with_database(false, kill9_mid_job_recovers_and_bills_once);
}

#[test]
fn kill9_mid_transcription_recovers_on_postgres() {
    with_database(true, kill9_mid_job_recovers_and_bills_once);
}

/// A streaming client that sends real speech at real-time pace and then keeps the
/// connection open without a word, so the session is live when the server dies.
const STREAM_CLIENT: &str = r#"
import json, sys, time, wave, websockets.sync.client as ws
url, key, wav = sys.argv[1:4]
with wave.open(wav) as w:
    audio = w.readframes(w.getnframes())
conn = ws.connect(url, additional_headers={"Authorization": key})
print(json.loads(conn.recv())["id"], flush=True)
start = time.monotonic()
for i in range(0, len(audio) - 3200 + 1, 3200):
    time.sleep(max(0.0, start + (i + 3200) / 32000 - time.monotonic()))
    conn.send(audio[i : i + 3200])
print("sent", flush=True)
time.sleep(600)
"#;

fn kill9_mid_stream_bills_once(database_url: Option<String>) {
    use std::io::BufRead;
    let install = Install::new(database_url);
    let tenant = install.admin_init();
    install.install_model();
    let env = [
        ("HARK_STREAMING__NODE_LEASE_SECS", "3"),
        ("HARK_STREAMING__PROGRESS_INTERVAL_SECS", "1"),
    ];
    let mut first = install.serve(&env);
    let python = std::env::var("HARK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hark/venv")
        })
        .join("bin/python");
    let ws_url = format!(
        "{}/v3/ws?sample_rate=16000",
        first.base_url.replacen("http", "ws", 1)
    );
    let mut client = common::ChildGuard(Some(
        Command::new(&python)
            .args(["-c", STREAM_CLIENT, &ws_url, &tenant.api_key])
            .arg(fixture_path("HARK_TEST_JFK_WAV"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting the streaming client"),
    ));
    let stdout = client
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("client stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let session = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("the client got no Begin; server:\n{}", first.log()));
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("sent"));
    // Progress is saved every second while audio flows.
    std::thread::sleep(Duration::from_millis(1_500));
    first.kill9();
    client.kill();

    let rt = runtime();
    let url = install.effective_database_url();
    let account = AccountId::parse(&tenant.account_id).expect("account id");
    let id = hark_core::StreamSessionId::parse(&session).expect("session id");
    let open_at_crash = rt.block_on(async {
        let store = open_store(&url).await;
        let row = store.get_stream_session(id).await.expect("session row");
        store.close().await;
        row.expect("the session row exists")
    });
    assert!(open_at_crash.ended_at.is_none(), "{open_at_crash:?}");

    let second = install.serve(&env);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (row, events) = loop {
        let (row, events) = rt.block_on(async {
            let store = open_store(&url).await;
            let row = store.get_stream_session(id).await.expect("row");
            let events = store.usage_events(account).await.expect("usage");
            store.close().await;
            (row.expect("row"), events)
        });
        if row.ended_at.is_some() || std::time::Instant::now() > deadline {
            break (row, events);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        row.ended_at.is_some(),
        "the restarted server did not close the session: {row:?}\n{}",
        second.log()
    );
    assert!(
        row.end_reason.as_deref().unwrap_or("").starts_with("lost"),
        "{row:?}"
    );
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.event.idempotency_key == format!("stream:{session}"))
        .collect();
    assert_eq!(ours.len(), 1, "{events:#?}");
    let e = &ours[0].event;
    assert_eq!(e.product, "streaming");
    // The JFK clip is 11 s; progress was saved within the last second before the kill.
    assert!((9_500..=11_100).contains(&e.audio_ms), "{e:?}");
    assert!(e.session_ms.unwrap_or(0) >= 9_000, "{e:?}");
    drop(second);
}

#[test]
fn kill9_mid_stream_session_is_billed_once_on_sqlite() {
    with_database(false, kill9_mid_stream_bills_once);
}

#[test]
fn kill9_mid_stream_session_is_billed_once_on_postgres() {
    with_database(true, kill9_mid_stream_bills_once);
}
