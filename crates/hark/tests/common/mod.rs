//! End-to-end harness for the `hark` binary: temp data dirs, `hark admin`, model
//! installation, and `hark serve` as a child process that is killed when dropped.
//!
//! Everything these tests need (fixtures, the model, the Python venv, PostgreSQL) must
//! be present: a missing piece fails the test with a message saying how to provide it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const HARK: &str = env!("CARGO_BIN_EXE_hark");

/// The JFK clip says this (normalised).
pub const JFK_PHRASE: &str = "ask not what your country can do for you";

/// A fixture variable: from the environment, else from the `env.sh` that
/// `scripts/test-fixtures.sh` writes. Panics with instructions when neither has it.
pub fn fixture_var(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        if !v.is_empty() {
            return v;
        }
    }
    let env_sh = fixtures_env_sh();
    if let Ok(text) = std::fs::read_to_string(&env_sh) {
        for line in text.lines() {
            let line = line.trim().trim_start_matches("export ").trim();
            if let Some((k, v)) = line.split_once('=') {
                if k == name {
                    return v.trim_matches('"').to_string();
                }
            }
        }
    }
    panic!(
        "{name} is not set and not in {}: run `bash scripts/test-fixtures.sh` and \
         `source {}` (fixture tests are never skipped)",
        env_sh.display(),
        env_sh.display()
    );
}

fn fixtures_env_sh() -> PathBuf {
    let dir = std::env::var("HARK_TEST_FIXTURES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hark/fixtures",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    Path::new(&dir).join("env.sh")
}

/// A fixture file or directory that must exist.
pub fn fixture_path(name: &str) -> PathBuf {
    let path = PathBuf::from(fixture_var(name));
    assert!(
        path.exists(),
        "{name}={} does not exist: run `bash scripts/test-fixtures.sh`",
        path.display()
    );
    path
}

/// Lower case, punctuation dropped, whitespace collapsed.
pub fn normalise(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A data directory (and optionally an external database) for one `hark` installation.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub database_url: Option<String>,
}

impl Install {
    pub fn new(database_url: Option<String>) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            database_url,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL the server uses: the given one, or SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("hark.db").display()))
    }

    /// `hark --data-dir D [--database-url U]`, with no `HARK_*` variables from the
    /// caller's environment (the configuration loader refuses unknown ones, and the
    /// tests must not pick up a developer's settings).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(HARK);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HARK_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--data-dir").arg(self.data_dir());
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `hark <args>` and returns its stdout; panics with its output on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = run_bounded(self.command().args(args), Duration::from_secs(300));
        assert!(
            out.status.success(),
            "`hark {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn run_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("`hark {}` printed no JSON ({e}): {out}", args.join(" ")))
    }

    /// `hark admin init`: the first account, its project and key.
    pub fn admin_init(&self) -> Tenant {
        self.admin_init_account("owner@example.com", "E2E", &[])
    }

    /// `hark admin init` for an account of its own (`extra`: e.g. `["--plan", "enterprise"]`).
    pub fn admin_init_account(&self, email: &str, account_name: &str, extra: &[&str]) -> Tenant {
        let mut args = vec![
            "admin",
            "init",
            "--email",
            email,
            "--account-name",
            account_name,
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = self.run_json(&args);
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("admin init JSON has no {k}: {v}"))
                .to_string()
        };
        Tenant {
            account_id: field("account_id"),
            project_id: field("project_id"),
            api_key: field("api_key"),
        }
    }

    /// `hark admin user set-password EMAIL`, the password on stdin.
    pub fn set_password(&self, email: &str, password: &str) {
        use std::io::Write;
        let mut child = self
            .command()
            .args(["admin", "user", "set-password", email, "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Installs the test model from `$HARK_TEST_MODEL_DIR` into the data dir.
    pub fn install_model(&self) {
        let model = fixture_path("HARK_TEST_MODEL_DIR");
        self.run(&["models", "install", model.to_str().expect("utf-8 path")]);
        assert!(
            self.data_dir().join("models").is_dir(),
            "`hark models install` left no {}/models",
            self.data_dir().display()
        );
    }

    /// Starts `hark serve --bind 127.0.0.1:0` with extra environment and waits until
    /// `/health` answers.
    pub fn serve(&self, envs: &[(&str, &str)]) -> Server {
        self.serve_with(&[], envs)
    }

    /// As [`Self::serve`], with extra `hark serve` arguments (e.g. `--tls-self-signed`).
    pub fn serve_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = self.command();
        cmd.args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Server::start(cmd)
    }

    /// Starts `hark worker` (transcription only, no listener) with extra arguments and
    /// environment, and waits until it says it runs.
    pub fn worker(&self, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = self.command();
        cmd.arg("worker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Server::spawn(cmd, WORKER_READY).0
    }
}

/// What `hark serve` prints (to stderr) once it accepts requests, before its URL.
const SERVE_READY: &str = "hark listening on ";
/// What `hark worker` prints once its workers run.
const WORKER_READY: &str = "hark worker running";

pub struct Tenant {
    pub account_id: String,
    pub project_id: String,
    pub api_key: String,
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let program = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + limit;
    loop {
        let child = guard.0.as_mut().expect("child");
        if child.try_wait().expect("try_wait").is_some() {
            return guard
                .0
                .take()
                .expect("child")
                .wait_with_output()
                .expect("output");
        }
        if Instant::now() > deadline {
            panic!("{program} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills (SIGKILL) and reaps a child process when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `hark serve`; dropping it kills the process.
pub struct Server {
    child: ChildGuard,
    pub pid: u32,
    pub base_url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(cmd: Command) -> Self {
        let (mut server, url) = Self::spawn(cmd, SERVE_READY);
        server.base_url = url;
        server.wait_healthy(Duration::from_secs(30));
        server
    }

    /// Spawns `cmd` and waits until a line of its stderr contains `ready`; returns the
    /// process and the rest of that line.
    fn spawn(mut cmd: Command, ready: &'static str) -> (Self, String) {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped stderr");
        let child = ChildGuard(Some(child));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split(ready).nth(1) {
                        let _ = tx.send(rest.trim().to_string());
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let server = Server {
            child,
            pid,
            base_url: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(rest) => (server, rest),
            Err(_) => panic!(
                "{cmd:?} printed no `{ready}` line within 60 s; its stderr:\n{}",
                server.log()
            ),
        }
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("{}/health", self.base_url);
        // Over TLS the plain client cannot ask; an accepted connection will do.
        let tls_addr = self.base_url.strip_prefix("https://").map(str::to_string);
        loop {
            if let Some(child) = self.child.0.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "hark serve exited ({status}) before it was healthy:\n{}",
                        self.log()
                    );
                }
            }
            match &tls_addr {
                Some(addr) => {
                    if std::net::TcpStream::connect(addr).is_ok() {
                        return;
                    }
                }
                None => {
                    if let Ok((200, _)) = http_get(&url, None) {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{url} did not answer 200 within {limit:?}; server stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no cleanup, leases left held.
    pub fn kill9(&mut self) {
        self.child.kill();
    }
}

/// A blocking GET (status, body) without pulling in an HTTP client for one call.
pub fn http_get(url: &str, auth: Option<&str>) -> std::io::Result<(u16, String)> {
    http_request("GET", url, auth, None, &[])
}

/// A minimal HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn http_request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("malformed response: {text}")))?;
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in: {headers}")))?;
    let chunked = headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A JSON API call that must answer 200.
pub fn api_json(method: &str, url: &str, key: &str, body: Option<&Value>) -> Value {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, text) = http_request(
        method,
        url,
        Some(key),
        body.map(|_| "application/json"),
        payload.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    assert_eq!(status, 200, "{method} {url} answered {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"))
}

/// Polls `GET /v2/transcript/{id}` until `done` holds, failing after `limit`.
pub fn poll_transcript(
    server: &Server,
    key: &str,
    id: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("{}/v2/transcript/{id}", server.base_url);
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    loop {
        if let Ok((200, text)) = http_get(&url, Some(key)) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if done(&v) {
                    return v;
                }
                last = v;
            }
        }
        if Instant::now() > deadline {
            let mut shown = last.clone();
            if let Some(words) = shown.get_mut("words") {
                *words = Value::String("(elided)".into());
            }
            panic!(
                "transcript {id} was not {what} within {limit:?}; last seen: {shown}\nserver stderr:\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small runtime for the async store helpers these synchronous tests call.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `body` with a database URL: `None` (SQLite in the data dir) or a fresh
/// PostgreSQL database that is dropped afterwards, even when `body` panics.
pub fn with_database(postgres: bool, body: impl FnOnce(Option<String>)) {
    if !postgres {
        body(None);
        return;
    }
    let rt = runtime();
    let db = rt.block_on(hark_store::testing::TestDatabase::postgres());
    let url = db.url.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(Some(url))));
    rt.block_on(db.drop_database());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
