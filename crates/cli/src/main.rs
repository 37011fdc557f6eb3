//! The `frugal` command line: a thin layer over the engine.

mod bench;
mod chat;
mod default_model;
mod experts;
mod inspect;
mod load;
mod logits;
#[cfg(feature = "pull")]
mod pull;
mod quantize;
mod replay;
mod residency;
mod run;
mod serve;
mod session;

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
    /// Generate text from a prompt and stream it (default model: the embedded one).
    Run(run::RunArgs),
    /// Talk with a model, turn by turn, in the terminal (or a pipe: one answer per line read).
    Chat(chat::ChatArgs),
    /// Run a model on token ids and print every position's logits as JSON.
    Logits {
        /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache.
        #[arg(long)]
        model: String,
        /// Comma-separated token ids, e.g. 0,438,57.
        #[arg(long)]
        tokens: String,
        /// Feed this many tokens at a time through the KV cache (default: all at once).
        #[arg(long)]
        chunk: Option<usize>,
        /// Threads for the large matrix products (default: available parallelism).
        #[arg(long)]
        threads: Option<usize>,
        /// Quantize a safetensors model's matrices on load (q8_0, q4_k, ...).
        #[arg(long)]
        quant: Option<String>,
    },
    /// Measure speed (prompt and generation tokens/s, like llama-bench) or memory bandwidth.
    Bench(bench::BenchArgs),
    /// Serve the OpenAI API (chat, completions, models) and a chat page over HTTP.
    Serve(serve::ServeArgs),
    /// Download a model from the Hugging Face hub into the local hub cache.
    #[cfg(feature = "pull")]
    Pull(pull::PullArgs),
    /// Which routed experts prompts use per MoE layer, and what an expert cache would hit.
    Experts(experts::ExpertsArgs),
    /// Write a quantized GGUF (llama.cpp's presets and bytes): frugal quantize IN OUT.gguf --type Q4_K_M.
    Quantize(quantize::QuantizeArgs),
}

fn main() {
    let cli = Cli::parse();
    // Warnings (e.g. an expert read that failed and fell back to the map) on stderr;
    // RUST_LOG overrides the level.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Inspect { path, json } => inspect::run(&path, json),
        Command::Run(args) => run::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Logits {
            model,
            tokens,
            chunk,
            threads,
            quant,
        } => logits::run(&model, &tokens, chunk, threads, quant.as_deref()),
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "pull")]
        Command::Pull(args) => pull::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Experts(args) => experts::run(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// One line naming the problem: the context chain joined by ": ", skipping a cause whose text
/// an outer message already quotes (library errors often embed their source's message).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}
