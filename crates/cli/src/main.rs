//! The `frugal` command line: a thin layer over the engine.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "frugal", version, about = "Mixture-of-Experts inference on the hardware you already own")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model: architecture, parameters, tensor types, memory estimates.
    Inspect {
        /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache.
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { path, json } => {
            let _ = (path, json);
            anyhow::bail!("inspect is not written yet")
        }
    }
}
