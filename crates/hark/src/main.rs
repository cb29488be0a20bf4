//! The `hark` command: run the server, migrate the database, and operate accounts.

mod admin;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hark_server::config::Config;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "hark",
    version,
    about = "Self-hosted speech-to-text with AssemblyAI's API"
)]
struct Cli {
    /// TOML configuration file (layered over defaults, under HARK_* variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: SQLite database, uploads, models, master key.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite:... or postgres://...); default: SQLite in the data dir.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server and its workers.
    Serve {
        /// Address to listen on.
        #[arg(long)]
        bind: Option<String>,
        /// Origin used in the absolute URLs the API returns.
        #[arg(long)]
        public_base_url: Option<String>,
        /// Number of transcription workers in this process.
        #[arg(long)]
        workers: Option<usize>,
        /// Serve HTTPS/WSS with this PEM certificate chain (needs --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key for --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve HTTPS/WSS with a development certificate made in <data-dir>/tls/.
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        tls_self_signed: bool,
    },
    /// Run transcription workers only (no HTTP listener), on a shared database.
    Worker {
        /// Number of transcription workers in this process.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Install and list speech models.
    Models(hark_speech::cli::ModelsCommand),
    /// Transcribe local audio files with an installed model.
    Transcribe(hark_speech::cli::TranscribeArgs),
    /// Operator commands: accounts, projects, keys, audit.
    Admin(admin::AdminArgs),
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A configuration error is reported by `run` below; logging starts as text then.
    let json = cli.config().is_ok_and(|c| c.log_format == "json");
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HARK_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.config()?;
    let clock: Arc<dyn hark_core::Clock> = Arc::new(hark_core::SystemClock);
    match cli.command {
        Command::Serve {
            bind,
            public_base_url,
            workers,
            tls_cert,
            tls_key,
            tls_self_signed,
        } => {
            if tls_cert.is_some() {
                config.tls.cert = tls_cert;
                config.tls.key = tls_key;
                config.tls.self_signed = false;
            }
            if tls_self_signed {
                config.tls = hark_server::config::TlsConfig {
                    self_signed: true,
                    ..Default::default()
                };
            }
            if let Some(b) = bind {
                config.bind = b;
            }
            if let Some(u) = public_base_url {
                config.public_base_url = u;
            }
            if let Some(w) = workers {
                config.workers = w;
            }
            let engine = speech_engine(&config)?;
            let server = hark_server::start(config, engine, clock)
                .await
                .context("starting the server")?;
            if let Some(files) = &server.tls {
                eprintln!("hark: TLS certificate {}", files.cert.display());
            }
            eprintln!("hark speech {}", hark_speech::kernels::cpu_summary());
            // While no account exists, the way in is a one-time setup link.
            if let Some(link) = hark_server::manage::links::first_run_link(&server.state)
                .await
                .context("making the first-run setup link")?
            {
                eprintln!(
                    "hark: no account exists yet. Open this link to create the first account and its Owner (it works once):\n\n    {link}\n"
                );
            }
            eprintln!("hark listening on {}", server.state.public_base_url);
            let state = server.state.clone();
            tokio::select! {
                r = server.wait() => r.context("server stopped")?,
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("shutting down");
                    drop(state);
                }
            }
            Ok(())
        }
        Command::Worker { workers } => {
            if let Some(w) = workers {
                config.workers = w;
            }
            let engine = speech_engine(&config)?;
            let node = hark_server::start_worker(config, engine, clock)
                .await
                .context("starting the worker")?;
            eprintln!(
                "hark worker running ({} workers)",
                node.state.config.workers
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            tracing::info!("shutting down");
            node.shutdown().await;
            Ok(())
        }
        Command::Migrate => {
            let store = hark_server::open_store(&config, clock).await?;
            store.close().await;
            println!(
                "migrations applied to {}",
                redact_url(&config.effective_database_url())
            );
            Ok(())
        }
        Command::Admin(cmd) => admin::run(&config, clock, cmd).await,
        Command::Models(cmd) => {
            let dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || hark_speech::cli::run_models(&dir, cmd)).await?
        }
        Command::Transcribe(args) => {
            let dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || hark_speech::cli::run_transcribe(&dir, args))
                .await?
        }
    }
}

/// The Whisper engine over the data dir's models, with the default model loaded now
/// so the first request does not pay for it (and a broken model shows at start).
fn speech_engine(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn hark_core::speech::SpeechEngine>>> {
    use hark_core::speech::SpeechEngine;
    let options = hark_speech::EngineOptions {
        max_duration_secs: config.models.max_audio_secs as f64,
        ..hark_speech::EngineOptions::default()
    };
    let engine = hark_speech::WhisperEngine::new(&config.data_dir, options)
        .context("starting the speech engine")?;
    let installed = engine.models();
    if installed.is_empty() {
        tracing::warn!(
            "no speech model is installed in {}; transcripts will fail until one is (hark models install PATH)",
            config.data_dir.join("models").display()
        );
    } else if installed.contains(&config.models.default) {
        engine
            .load(&config.models.default)
            .with_context(|| format!("loading model {}", config.models.default))?;
        tracing::info!(model = %config.models.default, "speech model loaded");
    } else {
        tracing::warn!(default = %config.models.default, ?installed, "the default model is not installed");
    }
    Ok(Some(Arc::new(engine)))
}

/// A database URL without its password, for printing.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
