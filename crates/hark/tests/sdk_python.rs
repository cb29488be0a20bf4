//! The official AssemblyAI Python SDK, unmodified, against a real `hark serve` with the
//! test model installed: runs `tests/py` (pytest) in `$HARK_VENV`, once per database.

mod common;

use common::{fixture_path, run_bounded, with_database, Install};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const PY_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py");

fn venv_python() -> PathBuf {
    let venv = std::env::var("HARK_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hark/venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = PathBuf::from(&venv).join("bin/python");
    assert!(
        python.is_file(),
        "no Python venv at {venv} (HARK_VENV): run `bash scripts/install-test-deps.sh` \
         (SDK tests are never skipped)"
    );
    let check = run_bounded(
        Command::new(&python).args(["-c", "import assemblyai, pytest"]),
        Duration::from_secs(60),
    );
    assert!(
        check.status.success(),
        "{} cannot import assemblyai and pytest: run `bash scripts/install-test-deps.sh`\n{}",
        python.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    python
}

fn run_sdk_suite(database_url: Option<String>) {
    let python = venv_python();
    let jfk = fixture_path("HARK_TEST_JFK_WAV");
    let install = Install::new(database_url);
    let tenant = install.admin_init();
    install.install_model();
    let server = install.serve(&[]);

    let started = Instant::now();
    let out = run_bounded(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", PY_TESTS])
            .current_dir(PY_TESTS)
            .env("HARK_BASE_URL", &server.base_url)
            .env("HARK_API_KEY", &tenant.api_key)
            .env("HARK_TEST_JFK_WAV", &jfk)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("ASSEMBLYAI_API_KEY")
            .env_remove("ASSEMBLYAI_BASE_URL"),
        Duration::from_secs(900),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest {PY_TESTS} failed ({}):\n{stdout}\n{stderr}\n--- hark serve stderr ---\n{}",
        out.status,
        server.log()
    );
    eprintln!(
        "pytest passed in {:.1?} against {}:\n{stdout}",
        started.elapsed(),
        server.base_url
    );
}

#[test]
fn official_python_sdk_on_sqlite() {
    with_database(false, run_sdk_suite);
}

#[test]
fn official_python_sdk_on_postgres() {
    with_database(true, run_sdk_suite);
}
