//! Benchmark/driver binary: `transcribe [--data-dir DIR] <hark transcribe args>`.
//! Prints the CPU and kernel path line to stderr first; `transcribe --cpu-info` prints
//! only that line (to stdout) and exits.

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
    if std::env::args().nth(1).as_deref() == Some("--cpu-info") {
        println!("{}", hark_speech::kernels::cpu_summary());
        return Ok(());
    }
    eprintln!("{}", hark_speech::kernels::cpu_summary());
    let cli = Cli::parse();
    hark_speech::cli::run_transcribe(&cli.data_dir, cli.args)
}
