//! Benchmark/driver binary: `transcribe [--data-dir DIR] <hark transcribe args>`.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
struct Cli {
    /// Data directory holding models/ (default ./hark-data).
    #[arg(long, default_value = "hark-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    args: hark_speech::cli::TranscribeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    hark_speech::cli::run_transcribe(&cli.data_dir, cli.args)
}
