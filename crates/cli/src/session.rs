//! What `frugal run` and `frugal chat` share: the generation flags, opening a model with its
//! tokenizer and chat template, sampling and stop settings, and the streaming printer that
//! dims (or hides) `<think>` reasoning.

use std::io::Write;

use anyhow::{bail, Context};
use frugal_engine::assets::{load_chat_template, load_tokenizer};
use frugal_engine::chat_template::ChatTemplate;
use frugal_engine::generation::StopCriteria;
use frugal_engine::reasoning::{Delta, ReasoningStyle};
use frugal_engine::sampling::SamplingParams;
use frugal_engine::tokenizer::Tokenizer;
use frugal_formats::config::ModelConfig;
use frugal_formats::ModelFiles;

use crate::load::open_model;

/// Generation flags common to `run` and `chat`.
#[derive(Debug, clap::Args)]
pub struct GenFlags {
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
    /// Quantize a safetensors model's matrices on load: q8_0, q6_k, q5_k, q4_k, q4_0, ...
    #[arg(long)]
    pub quant: Option<String>,
    /// --max-memory and the expert cache's settings.
    #[command(flatten)]
    pub memory: crate::residency::MemoryFlags,
}

impl GenFlags {
    /// Rejects flag values no generation can use.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        if self.max_tokens == 0 {
            bail!("--max-tokens must be at least 1");
        }
        self.memory.check()
    }

    /// The sampling settings: generation_config.json, then the flags.
    pub fn sampling(&self, files: &ModelFiles) -> anyhow::Result<SamplingParams> {
        let mut p = match files.hf_folder().and_then(|f| f.generation_config()) {
            Some(gc) => SamplingParams::from_generation_config(gc)?,
            None => SamplingParams::greedy(),
        };
        if let Some(t) = self.temperature {
            p.temperature = t;
            p.do_sample = t > 0.0;
        }
        if let Some(k) = self.top_k {
            p.top_k = k;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            p.repetition_penalty = v;
        }
        if self.seed.is_some() {
            p.seed = self.seed;
        }
        p.validate()?;
        Ok(p)
    }

    /// When to stop: generation_config.json's EOS ids (else the config's and the
    /// tokenizer's), the token limit and the stop strings.
    pub fn stop_criteria(
        &self,
        files: &ModelFiles,
        config: &ModelConfig,
        tokenizer: &Tokenizer,
    ) -> StopCriteria {
        let mut stop = match files.hf_folder().and_then(|f| f.generation_config()) {
            Some(gc) => StopCriteria::from_generation_config(gc),
            None => StopCriteria::default(),
        };
        if stop.eos_token_ids.is_empty() {
            stop.eos_token_ids = config.eos_token_ids.clone();
            stop.eos_token_ids.extend(tokenizer.eos_id());
        }
        stop.max_new_tokens = Some(self.max_tokens);
        stop.stop_strings = self.stop.clone();
        stop
    }
}

/// An opened model's files with what text generation needs besides the weights.
pub struct Opened {
    /// What the user named (for messages).
    pub spec: String,
    /// The files.
    pub files: ModelFiles,
    /// The parsed config.
    pub config: ModelConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template, when the model has one.
    pub template: Option<ChatTemplate>,
    /// Whether the model reasons in `<think>` blocks.
    pub style: ReasoningStyle,
}

/// Opens `--model` (or the embedded default model) with its tokenizer and chat template.
pub fn open(model: Option<&str>) -> anyhow::Result<Opened> {
    let spec = match model {
        Some(m) => m.to_owned(),
        None => crate::default_model::path()?.to_string_lossy().into_owned(),
    };
    let files = open_model(&spec)?;
    let config = files.config()?;
    let tokenizer = load_tokenizer(&files)?.with_context(|| {
        format!("{spec}: the model has no tokenizer (tokenizer.json or GGUF vocabulary)")
    })?;
    let template = load_chat_template(&files, Some(&tokenizer))?;
    // A model reasons in `<think>` blocks when its vocabulary or template knows the tag.
    let style = if tokenizer.token_to_id("<think>").is_some()
        || files.chat_template().is_some_and(|t| t.contains("<think>"))
    {
        ReasoningStyle::Think
    } else {
        ReasoningStyle::None
    };
    Ok(Opened {
        spec,
        files,
        config,
        tokenizer,
        template,
        style,
    })
}

/// Writes reasoning/content deltas: reasoning dimmed with ANSI SGR 2 when `dim`, left out when
/// `hide_thinking`; content as is. Returns the content written, for a chat history.
pub fn show(
    deltas: Vec<Delta>,
    dim: bool,
    hide_thinking: bool,
    out: &mut impl Write,
) -> std::io::Result<String> {
    let mut content = String::new();
    for d in deltas {
        match d {
            Delta::Reasoning(_) if hide_thinking => {}
            Delta::Reasoning(r) if dim => write!(out, "\x1b[2m{r}\x1b[0m")?,
            Delta::Reasoning(r) => out.write_all(r.as_bytes())?,
            Delta::Content(c) => {
                out.write_all(c.as_bytes())?;
                content.push_str(&c);
            }
        }
    }
    out.flush()?;
    Ok(content)
}
