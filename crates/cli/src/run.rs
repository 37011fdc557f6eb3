//! `frugal run`: one prompt in, generated text streamed out.
//!
//! The prompt goes through the model's chat template (unless `--raw`), is tokenized, and the
//! generation loop (`frugal_engine::generation`) runs prefill then token-by-token decode on the
//! model's KV cache, sampling with the model's `generation_config.json` defaults overridden by
//! the flags. `--prompt-tokens` skips templating and tokenization; `--format json` prints one
//! object at the end instead of streaming.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use frugal_engine::assets::{load_chat_template, load_tokenizer};
use frugal_engine::generation::{FinishReason, Generation, GenerationEvent, StopCriteria};
use frugal_engine::reasoning::{prompt_opens_think, Delta, ReasoningParser, ReasoningStyle};
use frugal_engine::sampling::{Sampler, SamplingParams};
use frugal_model::{KvCache, Model};
use serde::Serialize;

use crate::load::open_model;

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
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (default: the model's generation_config.json).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens (0: off).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalise tokens already in the context (1: off).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Seed for sampling, for reproducible runs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the text contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Threads for the large matrix products (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not show the model's `<think>` reasoning, only its answer.
    #[arg(long)]
    pub hide_thinking: bool,
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

/// The sampling settings: generation_config.json, then the flags.
fn sampling(args: &RunArgs, files: &frugal_formats::ModelFiles) -> anyhow::Result<SamplingParams> {
    let mut p = match files.hf_folder().and_then(|f| f.generation_config()) {
        Some(gc) => SamplingParams::from_generation_config(gc)?,
        None => SamplingParams::greedy(),
    };
    if let Some(t) = args.temperature {
        p.temperature = t;
        p.do_sample = t > 0.0;
    }
    if let Some(k) = args.top_k {
        p.top_k = k;
    }
    if let Some(v) = args.top_p {
        p.top_p = v;
    }
    if let Some(v) = args.min_p {
        p.min_p = v;
    }
    if let Some(v) = args.repetition_penalty {
        p.repetition_penalty = v;
    }
    if args.seed.is_some() {
        p.seed = args.seed;
    }
    p.validate()?;
    Ok(p)
}

/// Run the command.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let spec = match &args.model {
        Some(m) => m.clone(),
        None => crate::default_model::path()?.to_string_lossy().into_owned(),
    };
    let files = open_model(&spec)?;
    let config = files.config()?;
    let tokenizer = load_tokenizer(&files)?.with_context(|| {
        format!("{spec}: the model has no tokenizer (tokenizer.json or GGUF vocabulary)")
    })?;

    // The prompt as ids, and as text for the reasoning parser (does it open a `<think>`?).
    let template = load_chat_template(&files, Some(&tokenizer))?;
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
    // A model reasons in `<think>` blocks when its vocabulary or template knows the tag.
    let style = if tokenizer.token_to_id("<think>").is_some()
        || files.chat_template().is_some_and(|t| t.contains("<think>"))
    {
        ReasoningStyle::Think
    } else {
        ReasoningStyle::None
    };
    let mut reasoning = ReasoningParser::new(style, prompt_opens_think(&prompt_text));

    let mut model = Model::load(&files).with_context(|| format!("loading {spec}"))?;
    if let Some(t) = args.threads {
        model.set_threads(t);
    }
    let mut cache = KvCache::new(&model);

    let mut stop = match files.hf_folder().and_then(|f| f.generation_config()) {
        Some(gc) => StopCriteria::from_generation_config(gc),
        None => StopCriteria::default(),
    };
    if stop.eos_token_ids.is_empty() {
        stop.eos_token_ids = config.eos_token_ids.clone();
        stop.eos_token_ids.extend(tokenizer.eos_id());
    }
    stop.max_new_tokens = Some(args.max_tokens);
    stop.stop_strings = args.stop.clone();

    let sampler = Sampler::new(sampling(args, &files)?)?;
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
        return Ok(());
    }

    // On a terminal the reasoning is dimmed; in a pipe the text is printed exactly as generated
    // (or, with --hide-thinking, only the answer).
    let terminal = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let show = |deltas: Vec<Delta>, out: &mut std::io::StdoutLock| -> std::io::Result<()> {
        for d in deltas {
            match d {
                Delta::Reasoning(r) if !args.hide_thinking => write!(out, "\x1b[2m{r}\x1b[0m")?,
                Delta::Reasoning(_) => {}
                Delta::Content(c) => out.write_all(c.as_bytes())?,
            }
        }
        out.flush()
    };
    for event in generation {
        match event? {
            GenerationEvent::Text(piece) if terminal || args.hide_thinking => {
                show(reasoning.push(&piece), &mut stdout)?;
            }
            GenerationEvent::Text(piece) => {
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()?;
            }
            GenerationEvent::Token(_) => {}
            GenerationEvent::Finished(_) => {
                if terminal || args.hide_thinking {
                    show(reasoning.finish().deltas, &mut stdout)?;
                }
                writeln!(stdout)?;
            }
        }
    }
    Ok(())
}

/// OpenAI's names: `stop` for EOS or a stop string, `length` for the token limit.
fn finish_name(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Eos | FinishReason::StopString(_) => "stop",
        FinishReason::Length => "length",
    }
}
