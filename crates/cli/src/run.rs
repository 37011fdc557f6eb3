//! `frugal run`: one prompt in, generated text streamed out.
//!
//! The prompt goes through the model's chat template (unless `--raw`), is tokenized, and the
//! generation loop (`frugal_engine::generation`) runs prefill then token-by-token decode on the
//! model's KV cache, sampling with the model's `generation_config.json` defaults overridden by
//! the flags. `--prompt-tokens` skips templating and tokenization; `--format json` prints one
//! object at the end instead of streaming.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use frugal_engine::generation::{FinishReason, Generation, GenerationEvent};
use frugal_engine::reasoning::{prompt_opens_think, Delta, ReasoningParser, ReasoningStyle};
use frugal_engine::sampling::Sampler;
use frugal_model::KvCache;
use serde::Serialize;

use crate::session::{self, show, GenFlags, Opened};

/// What the user asked for.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The prompt (a user message, or plain text with --raw).
    pub prompt: Option<String>,
    /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache
    /// (default: the embedded default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Plain completion: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// Comma-separated prompt token ids, instead of a text prompt.
    #[arg(long, conflicts_with_all = ["prompt", "raw"])]
    pub prompt_tokens: Option<String>,
    /// `text` streams the answer; `json` prints one object with the generated ids.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print the expert cache's statistics (hits, reads, stall) on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Sampling, limits, threads and reasoning display.
    #[command(flatten)]
    pub flags: GenFlags,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Stream text as it is generated.
    Text,
    /// One JSON object at the end.
    Json,
}

#[derive(Serialize)]
struct JsonOutput {
    /// Generated ids, the prompt excluded.
    tokens: Vec<u32>,
    /// The generated text as decoded.
    text: String,
    /// The `<think>` part, for reasoning models (null otherwise).
    reasoning: Option<String>,
    /// The answer: the text after the reasoning.
    content: String,
    /// Whether a reasoning block was still open when generation stopped.
    reasoning_unclosed: bool,
    finish_reason: String,
    usage: Usage,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
}

fn parse_tokens(s: &str) -> anyhow::Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .with_context(|| format!("--prompt-tokens: {p:?} is not a token id"))
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("--prompt-tokens: no token ids given");
    }
    Ok(ids)
}

/// Run the command.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let flags = &args.flags;
    flags.check()?;
    let Opened {
        spec,
        files,
        config,
        tokenizer,
        template,
        style,
    } = session::open(args.model.as_deref())?;

    // The prompt as ids, and as text for the reasoning parser (does it open a `<think>`?).
    let (prompt_ids, prompt_text) = match (&args.prompt_tokens, &args.prompt) {
        (Some(ids), _) => {
            let ids = parse_tokens(ids)?;
            let text = tokenizer.decode(&ids, false)?;
            (ids, text)
        }
        (None, None) => bail!("give a prompt, or --prompt-tokens"),
        (None, Some(text)) => match (&template, args.raw) {
            (Some(template), false) => {
                let messages = [serde_json::json!({"role": "user", "content": text})];
                let rendered =
                    template.render_json(&messages, true, None, &serde_json::Map::new())?;
                // The template writes BOS and the role markers itself.
                (tokenizer.encode(&rendered, false)?, rendered)
            }
            _ => (tokenizer.encode(text, true)?, text.clone()),
        },
    };
    let mut reasoning = ReasoningParser::new(style, prompt_opens_think(&prompt_text));

    let qw = crate::load::quantize_on_load(&files, flags.quant.as_deref(), flags.threads)?;
    let mut model = crate::load::build_model(&files, qw.as_ref(), flags.memory.load_options())
        .with_context(|| format!("loading {spec}"))?;
    if let Some(t) = flags.threads {
        model.set_threads(t);
    }
    let experts = crate::residency::attach(
        &flags.memory,
        &files,
        &mut model,
        prompt_ids.len() + flags.max_tokens,
    )?;
    // Room for the whole answer, resident: decoding never grows the cache or faults in its
    // pages (writing it costs far less than one decode step per position).
    let mut cache = KvCache::with_capacity(&model, prompt_ids.len() + flags.max_tokens);
    cache.prefault();

    let stop = flags.stop_criteria(&files, &config, &tokenizer);
    let sampler = Sampler::new(flags.sampling(&files)?)?;
    // The loop hands over the whole prompt first, then one token at a time, and samples from
    // the last position's logits only.
    let forward = |tokens: &[u32]| -> anyhow::Result<Vec<f32>> {
        Ok(model.forward_last(tokens, cache.len(), &mut cache)?)
    };
    let generation = Generation::new(
        forward,
        &tokenizer,
        sampler,
        stop,
        &prompt_ids,
        config.max_position_embeddings,
    )?
    // Control tokens (`<｜end▁of▁sentence｜>`, tool markers) are not text for a reader.
    .skip_special_tokens(true);

    let prompt_tokens = prompt_ids.len();
    if args.format == Format::Json {
        let out = generation.run()?;
        let mut deltas = reasoning.push(&out.text);
        let finish = reasoning.finish();
        deltas.extend(finish.deltas);
        let (mut thought, mut content) = (String::new(), String::new());
        for d in deltas {
            match d {
                Delta::Reasoning(r) => thought.push_str(&r),
                Delta::Content(c) => content.push_str(&c),
            }
        }
        let json = JsonOutput {
            usage: Usage {
                prompt_tokens,
                completion_tokens: out.tokens.len(),
            },
            finish_reason: finish_name(&out.finish).into(),
            tokens: out.tokens,
            text: out.text,
            reasoning: (style == ReasoningStyle::Think).then_some(thought),
            content,
            reasoning_unclosed: finish.unclosed,
        };
        println!("{}", serde_json::to_string(&json)?);
        print_stats(args.stats, &experts);
        return Ok(());
    }

    // On a terminal the reasoning is dimmed; in a pipe the text is printed exactly as generated
    // (or, with --hide-thinking, only the answer).
    let terminal = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let split = terminal || flags.hide_thinking;
    for event in generation {
        match event? {
            GenerationEvent::Text(piece) if split => {
                show(
                    reasoning.push(&piece),
                    terminal,
                    flags.hide_thinking,
                    &mut stdout,
                )?;
            }
            GenerationEvent::Text(piece) => {
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()?;
            }
            GenerationEvent::Token(_) => {}
            GenerationEvent::Finished(_) => {
                if split {
                    let rest = reasoning.finish().deltas;
                    show(rest, terminal, flags.hide_thinking, &mut stdout)?;
                }
                writeln!(stdout)?;
            }
        }
    }
    print_stats(args.stats, &experts);
    Ok(())
}

/// `--stats`: the expert cache's counters on stderr.
fn print_stats(wanted: bool, cache: &Option<crate::residency::Cache<'_>>) {
    if !wanted {
        return;
    }
    match crate::residency::stats(cache) {
        Some(s) => eprintln!("{}", s.summary()),
        None => eprintln!("expert cache: none (all weights mapped; --max-memory sets a budget)"),
    }
}

/// OpenAI's names: `stop` for EOS or a stop string, `length` for the token limit.
fn finish_name(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Eos | FinishReason::StopString(_) => "stop",
        FinishReason::Length => "length",
    }
}
