//! `echoel`: Echoel Jam's command line.

mod demo;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "echoel",
    version,
    about = "Echoel Jam: play together over the internet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the audio engine on a generated signal and reports latency and quality.
    Demo {
        /// Seconds of audio per configuration.
        #[arg(long, default_value_t = 3.0)]
        seconds: f32,
        /// Folder for the WAV files (sent and received, per configuration).
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { seconds, out } => demo::run(seconds, &out),
    }
}
