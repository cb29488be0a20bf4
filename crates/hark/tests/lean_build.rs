//! The single-node build (`--no-default-features`, what `scripts/serve.sh` builds):
//! it serves on SQLite and local files, and refuses PostgreSQL, S3 storage and a
//! Redis-shared rate limit at start, each with a message saying how to build them in.
//! `scripts/test.sh` runs this file in such a build; in the full build it has no tests.
#![cfg(not(any(feature = "postgres", feature = "s3", feature = "redis")))]

mod common;

use common::{run_bounded, Install};
use std::time::Duration;

/// Runs `hark serve` with `envs` and returns its stderr, asserting that it exited
/// with a failure (it must refuse to start, not serve).
fn refused(install: &Install, envs: &[(&str, &str)]) -> String {
    let mut cmd = install.command();
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway:\n{stderr}");
    stderr
}

#[test]
fn serves_on_sqlite_and_local_files() {
    let install = Install::new(None);
    let tenant = install.admin_init();
    let server = install.serve(&[]);
    let (status, body) = common::http_get(
        &format!("{}/v2/transcript", server.base_url),
        Some(&tenant.api_key),
    )
    .expect("list transcripts");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn refuses_postgres_saying_how_to_build_it_in() {
    let install = Install::new(Some("postgres://postgres@127.0.0.1:5432/test".into()));
    let stderr = refused(&install, &[]);
    assert!(stderr.contains("no PostgreSQL support"), "{stderr}");
    assert!(stderr.contains("`postgres` feature"), "{stderr}");
    // The operator's commands open the database through the same store.
    let out = run_bounded(
        install.command().args([
            "admin",
            "init",
            "--email",
            "a@example.com",
            "--account-name",
            "A",
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PostgreSQL support"));
}

#[test]
fn refuses_s3_storage_saying_how_to_build_it_in() {
    let install = Install::new(None);
    let stderr = refused(
        &install,
        &[
            ("HARK_STORAGE__KIND", "s3"),
            ("HARK_STORAGE__BUCKET", "hark"),
            ("HARK_STORAGE__ENDPOINT", "http://127.0.0.1:9"),
            ("HARK_STORAGE__REGION", "garage"),
        ],
    );
    assert!(stderr.contains("no S3 storage"), "{stderr}");
    assert!(stderr.contains("`s3` feature"), "{stderr}");
}

#[test]
fn refuses_redis_saying_how_to_build_it_in() {
    let install = Install::new(None);
    let stderr = refused(&install, &[("HARK_REDIS_URL", "redis://127.0.0.1:6379")]);
    assert!(stderr.contains("no Redis support"), "{stderr}");
    assert!(stderr.contains("`redis` feature"), "{stderr}");
}
