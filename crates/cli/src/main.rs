//! The `frugal` command line: a thin layer over the engine.

mod inspect;
mod load;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "frugal",
    version,
    about = "Mixture-of-Experts inference on the hardware you already own"
)]
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { path, json } => inspect::run(&path, json),
    };
    // One line naming the problem (the context chain joined by ": "), no backtrace.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
