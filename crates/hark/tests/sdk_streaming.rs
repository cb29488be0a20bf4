//! The official AssemblyAI streaming SDKs, unmodified, against a real `hark serve
//! --tls-self-signed` with the test model installed: the Python SDK's StreamingClient
//! (`tests/py-streaming`, pytest in `$HARK_VENV`) and the Node SDK's streaming
//! transcriber (`tests/node`, `node --test`, package in `$HARK_NODE_DIR`), over
//! https/wss, once per database.

mod common;

use common::{fixture_path, run_bounded, with_database, Install};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PY_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py-streaming");
const NODE_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/node");

fn cache_dir(var: &str, default: &str) -> PathBuf {
    std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/hark")
            .join(default)
    })
}

fn python() -> PathBuf {
    let python = cache_dir("HARK_VENV", "venv").join("bin/python");
    assert!(
        python.is_file(),
        "no Python venv with the SDK at {} (HARK_VENV): run `bash scripts/install-test-deps.sh` \
         (SDK tests are never skipped)",
        python.display()
    );
    python
}

fn node_modules() -> PathBuf {
    let modules = cache_dir("HARK_NODE_DIR", "node").join("node_modules");
    assert!(
        modules.join("assemblyai/package.json").is_file(),
        "the Node SDK is not installed in {} (HARK_NODE_DIR): run `bash scripts/install-test-deps.sh` \
         (SDK tests are never skipped)",
        modules.display()
    );
    modules
}

fn run_streaming_sdks(database_url: Option<String>) {
    let python = python();
    let modules = node_modules();
    let jfk = fixture_path("HARK_TEST_JFK_WAV");
    let install = Install::new(database_url);
    let tenant = install.admin_init();
    install.install_model();
    let server = install.serve_with(&["--tls-self-signed"], &[]);
    let host = server
        .base_url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not serving https: {}", server.base_url))
        .to_string();
    let cert = install.data_dir().join("tls/cert.pem");
    assert!(
        server.log().contains(&cert.display().to_string()),
        "serve did not print the certificate path:\n{}",
        server.log()
    );

    let out = run_bounded(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", PY_TESTS])
            .current_dir(PY_TESTS)
            .env("HARK_STREAM_HOST", &host)
            .env("HARK_API_KEY", &tenant.api_key)
            .env("HARK_TEST_JFK_WAV", &jfk)
            .env("SSL_CERT_FILE", &cert)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("ASSEMBLYAI_API_KEY"),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "Python SDK streaming tests failed ({}):\n{}\n{}\n--- hark serve stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    let out = run_bounded(
        Command::new("node")
            .args(["--test", "streaming.test.mjs"])
            .current_dir(NODE_TESTS)
            .env("HARK_STREAM_HOST", &host)
            .env("HARK_API_KEY", &tenant.api_key)
            .env("HARK_TEST_JFK_WAV", &jfk)
            .env("HARK_NODE_MODULES", &modules)
            .env("NODE_EXTRA_CA_CERTS", &cert),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "Node SDK streaming tests failed ({}):\n{}\n{}\n--- hark serve stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn official_streaming_sdks_over_tls_on_sqlite() {
    with_database(false, run_streaming_sdks);
}

#[test]
fn official_streaming_sdks_over_tls_on_postgres() {
    with_database(true, run_streaming_sdks);
}
