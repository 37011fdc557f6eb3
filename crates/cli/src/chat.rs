//! `frugal chat`: an interactive multi-turn conversation on stdin/stdout.
//!
//! Each input line is a user turn. The whole conversation is re-rendered with the chat template
//! every turn; when the new prompt's tokens extend what the KV cache already holds, only the
//! new suffix is fed (else the cache is reset and the whole prompt is prefilled: templates such
//! as DeepSeek-R1's drop the reasoning of earlier assistant turns, so the history's tokens can
//! change). The answer's content (its `<think>` reasoning left out) joins the history.
//!
//! On a terminal (stdin a tty) there is a prompt, reasoning is dimmed and each answer ends with
//! a dimmed `[N tokens, X tok/s]` (with how many prompt tokens the cache
//! spared re-feeding). In a pipe, answers are printed as plain text, one per turn,
//! and the speed line goes to stderr. Ctrl-C during an answer stops that answer; at the prompt
//! it ends the session (as EOF and `/exit` do).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use frugal_engine::generation::{Generation, GenerationEvent};
use frugal_engine::reasoning::{prompt_opens_think, ReasoningParser};
use frugal_engine::sampling::Sampler;
use frugal_model::KvCache;
use serde_json::{json, Value};

use crate::session::{self, show, GenFlags};

/// What the user asked for.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache
    /// (default: the embedded default model).
    #[arg(long)]
    pub model: Option<String>,
    /// The system prompt to start with (also settable with `/system TEXT`).
    #[arg(long)]
    pub system: Option<String>,
    /// Prefill the whole conversation every turn (for testing the cache reuse against).
    #[arg(long, hide = true)]
    pub no_cache_reuse: bool,
    /// Sampling, limits, threads and reasoning display.
    #[command(flatten)]
    pub flags: GenFlags,
}

const HELP: &str = "\
/reset        forget the conversation
/system TEXT  set the system prompt (and reset)
/save FILE    write the conversation as JSON messages
/help         this list
/exit         leave (so do Ctrl-D, and Ctrl-C at the prompt)
Ctrl-C during an answer stops the answer.";

/// The conversation and the model state it left.
struct Conversation {
    system: Option<String>,
    /// User and assistant messages, in order.
    turns: Vec<Value>,
}

impl Conversation {
    fn messages(&self) -> Vec<Value> {
        let mut m: Vec<Value> = self
            .system
            .iter()
            .map(|s| json!({"role": "system", "content": s}))
            .collect();
        m.extend(self.turns.iter().cloned());
        m
    }
}

/// Run the command.
pub fn run(args: &ChatArgs) -> anyhow::Result<()> {
    let flags = &args.flags;
    flags.check()?;
    let opened = session::open(args.model.as_deref())?;
    let spec = &opened.spec;
    let template = opened.template.as_ref().with_context(|| {
        format!("{spec}: the model has no chat template, which chat needs (use `frugal run --raw`)")
    })?;
    let tokenizer = &opened.tokenizer;
    let qw = crate::load::quantize_on_load(&opened.files, flags.quant.as_deref(), flags.threads)?;
    let mut model =
        crate::load::build_model(&opened.files, qw.as_ref(), flags.memory.load_options())
            .with_context(|| format!("loading {spec}"))?;
    if let Some(t) = flags.threads {
        model.set_threads(t);
    }
    // The KV cache is charged for a context of 4096 tokens (or the model's maximum).
    let _experts = crate::residency::attach(
        &flags.memory,
        &opened.files,
        &mut model,
        opened.config.max_position_embeddings.min(4096),
    )?;
    let params = flags.sampling(&opened.files)?;
    let stop = flags.stop_criteria(&opened.files, &opened.config, tokenizer);

    let interactive = std::io::stdin().is_terminal();
    let color = interactive && std::io::stdout().is_terminal();
    // Set by Ctrl-C; `answering` says whether an answer is running (else Ctrl-C exits).
    let interrupted = Arc::new(AtomicBool::new(false));
    let answering = Arc::new(AtomicBool::new(false));
    {
        let (interrupted, answering) = (interrupted.clone(), answering.clone());
        ctrlc::set_handler(move || {
            if answering.load(Ordering::SeqCst) {
                interrupted.store(true, Ordering::SeqCst);
            } else {
                println!();
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }

    let mut conv = Conversation {
        system: args.system.clone(),
        turns: Vec::new(),
    };
    let mut cache = KvCache::new(&model);
    // The tokens whose keys and values `cache` holds, in order.
    let mut cached: Vec<u32> = Vec::new();
    let mut stdout = std::io::stdout();
    let mut stdin = std::io::stdin().lock();
    let mut turn = 0u64;
    if interactive {
        println!("frugal chat with {spec} — /help for commands, /exit or Ctrl-D to leave");
    }
    loop {
        if interactive {
            if color {
                print!("\x1b[1m>\x1b[0m ");
            } else {
                print!("> ");
            }
            stdout.flush()?;
        }
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 {
            if interactive {
                println!();
            }
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let rest = rest.trim();
            match name {
                "exit" | "quit" => return Ok(()),
                "help" => println!("{HELP}"),
                "reset" => {
                    conv.turns.clear();
                    (cache, cached, turn) = (KvCache::new(&model), Vec::new(), 0);
                }
                "system" => {
                    conv.system = (!rest.is_empty()).then(|| rest.to_owned());
                    conv.turns.clear();
                    (cache, cached, turn) = (KvCache::new(&model), Vec::new(), 0);
                }
                "save" if !rest.is_empty() => {
                    let text = serde_json::to_string_pretty(&conv.messages())?;
                    match std::fs::write(rest, text + "\n") {
                        Ok(()) if interactive => println!("saved to {rest}"),
                        Ok(()) => {}
                        Err(e) => eprintln!("error: writing {rest}: {e}"),
                    }
                }
                "save" => eprintln!("error: /save needs a file name"),
                _ => eprintln!("error: unknown command /{name} (try /help)"),
            }
            continue;
        }

        conv.turns.push(json!({"role": "user", "content": line}));
        let rendered =
            template.render_json(&conv.messages(), true, None, &serde_json::Map::new())?;
        // The template writes BOS and the role markers itself.
        let prompt = tokenizer.encode(&rendered, false)?;
        // Reuse the cache when the new prompt extends what it holds; the generation is handed
        // the whole prompt and the forward pass skips the cached part.
        let extends = prompt.len() > cached.len() && prompt.starts_with(&cached);
        let mut skip = if extends && !args.no_cache_reuse {
            cached.len()
        } else {
            (cache, cached) = (KvCache::new(&model), Vec::new());
            0
        };
        let reused = skip;
        let mut sampling = params.clone();
        // A fixed seed gives each turn its own stream, reproducibly.
        sampling.seed = params.seed.map(|s| s.wrapping_add(turn));
        turn += 1;
        let sampler = Sampler::new(sampling)?;
        let forward = |tokens: &[u32]| -> anyhow::Result<Vec<f32>> {
            let new = &tokens[skip..];
            skip = 0;
            let logits = model.forward_last(new, cache.len(), &mut cache)?;
            cached.extend_from_slice(new);
            Ok(logits)
        };
        let generation = match Generation::new(
            forward,
            tokenizer,
            sampler,
            stop.clone(),
            &prompt,
            opened.config.max_position_embeddings,
        ) {
            Ok(g) => g.skip_special_tokens(true),
            Err(e) => {
                eprintln!("error: {e}");
                conv.turns.pop();
                continue;
            }
        };
        let mut reasoning = ReasoningParser::new(opened.style, prompt_opens_think(&rendered));
        let split = color || flags.hide_thinking;
        let mut out = stdout.lock();
        let mut content = String::new();
        let mut generated = 0usize;
        let start = Instant::now();
        interrupted.store(false, Ordering::SeqCst);
        answering.store(true, Ordering::SeqCst);
        let mut failed = None;
        for event in generation {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            match event {
                Ok(GenerationEvent::Token(_)) => generated += 1,
                Ok(GenerationEvent::Text(piece)) => {
                    let deltas = reasoning.push(&piece);
                    if split {
                        content += &show(deltas, color, flags.hide_thinking, &mut out)?;
                    } else {
                        // In a pipe the text is printed exactly as generated, as `run` does.
                        out.write_all(piece.as_bytes())?;
                        out.flush()?;
                        content += &show(deltas, false, true, &mut std::io::sink())?;
                    }
                }
                Ok(GenerationEvent::Finished(_)) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        answering.store(false, Ordering::SeqCst);
        let rest = reasoning.finish().deltas;
        if split {
            content += &show(rest, color, flags.hide_thinking, &mut out)?;
        } else {
            content += &show(rest, false, true, &mut std::io::sink())?;
        }
        writeln!(out)?;
        if let Some(e) = failed {
            // The cache may hold part of a failed step: start the next turn afresh.
            (cache, cached) = (KvCache::new(&model), Vec::new());
            eprintln!("error: {e}");
            conv.turns.pop();
            continue;
        }
        let seconds = start.elapsed().as_secs_f64();
        let stopped = if interrupted.load(Ordering::SeqCst) {
            ", stopped"
        } else {
            ""
        };
        let reused = if reused > 0 {
            format!(", {reused} prompt tokens reused")
        } else {
            String::new()
        };
        let stats = format!(
            "[{generated} tokens, {:.1} tok/s{reused}{stopped}]",
            generated as f64 / seconds.max(1e-9)
        );
        if color {
            writeln!(out, "\x1b[2m{stats}\x1b[0m")?;
        } else if interactive {
            writeln!(out, "{stats}")?;
        } else {
            eprintln!("{stats}");
        }
        conv.turns
            .push(json!({"role": "assistant", "content": content}));
    }
}
