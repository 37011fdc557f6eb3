//! `frugal experts`: which routed experts a workload uses, and what an expert cache of a given
//! size would hit.
//!
//! Each non-empty line of `--prompt-file` is one prompt, run as its own conversation (a fresh
//! KV cache) through the chat template (plain text with `--raw`), then continued greedily for
//! `--max-tokens` tokens (default 0: the prompt only). Every token's routing in every MoE layer
//! is recorded into a `frugal_engine::residency::RoutingTrace`, which `--save-trace` writes and
//! `--trace` replays instead of running a model. The report: per MoE layer the number of times
//! each expert was chosen (a sparkline), distinct experts, the top five's share and the entropy
//! relative to uniform use; with `--simulate-cache`, hit rates and bytes read of LRU, LFU,
//! per-layer LRU and the Belady bound at each capacity given.

use std::path::PathBuf;

use anyhow::{bail, Context};
use frugal_engine::residency::{simulate, Capacity, LayerUsage, Policy, RoutingTrace, SimResult};
use frugal_model::{KvCache, LoadOptions, Model, Trace};
use serde::Serialize;

use crate::session::{self, Opened};

/// What the user asked for.
#[derive(Debug, clap::Args)]
pub struct ExpertsArgs {
    /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache
    /// (default: the embedded default model).
    #[arg(long, conflicts_with = "trace")]
    pub model: Option<String>,
    /// A text file: each non-empty line is one prompt (a user message, or plain text with --raw).
    #[arg(long, required_unless_present = "trace", conflicts_with = "trace")]
    pub prompt_file: Option<PathBuf>,
    /// Plain text prompts: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// Tokens to generate greedily after each prompt (their routing is recorded too).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    /// Print JSON (raw counts per layer and expert, simulation results) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Cache capacities to simulate, comma-separated: 25% (of all routed experts' bytes),
    /// 4G / 512M (bytes) or 40 (experts).
    #[arg(long)]
    pub simulate_cache: Option<String>,
    /// Write the recorded routing trace to this file (JSON; see the trace format in
    /// frugal_engine::residency::trace).
    #[arg(long, conflicts_with = "trace")]
    pub save_trace: Option<PathBuf>,
    /// Replay a saved routing trace instead of running a model.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --trace: also drive the real expert cache (reads from this model file) with the
    /// trace, per policy (needs --expert-cache).
    #[arg(long, requires_all = ["trace", "expert_cache"])]
    pub replay_model: Option<String>,
    /// The expert cache's capacity for --replay-model (4G, 512M).
    #[arg(long, requires = "replay_model")]
    pub expert_cache: Option<String>,
    /// Reads in flight for --replay-model.
    #[arg(long, default_value_t = 4)]
    pub io_threads: usize,
    /// Threads for the large matrix products (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize a safetensors model's matrices on load (q8_0, q4_k, ...): expert sizes follow.
    #[arg(long)]
    pub quant: Option<String>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    model: &'a str,
    moe_layers: &'a [usize],
    num_experts: usize,
    tokens: usize,
    sequences: &'a [usize],
    total_expert_bytes: u64,
    layers: Vec<LayerUsage>,
    cache: Vec<JsonSim>,
}

#[derive(Serialize)]
struct JsonSim {
    #[serde(flatten)]
    result: SimResult,
    hit_rate: f64,
}

/// Prefill chunk: bounds the memory of a trace's hidden states on long prompts.
const CHUNK: usize = 256;

/// Run the command.
pub fn run(args: &ExpertsArgs) -> anyhow::Result<()> {
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    // Parse capacities before any long model run.
    let capacities = match &args.simulate_cache {
        Some(s) => s
            .split(',')
            .map(|c| Capacity::parse(c).map_err(|e| anyhow::anyhow!("--simulate-cache: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let trace = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading trace {}", path.display()))?;
            RoutingTrace::from_json(&text).with_context(|| format!("{}", path.display()))?
        }
        None => record(args)?,
    };
    if let Some(path) = &args.save_trace {
        std::fs::write(path, trace.to_json())
            .with_context(|| format!("writing trace {}", path.display()))?;
    }
    let usage = trace.usage();
    let sims: Vec<SimResult> = capacities
        .iter()
        .flat_map(|&c| Policy::ALL.map(|p| simulate(&trace, p, c)))
        .collect();
    if args.json {
        let report = JsonReport {
            model: &trace.model,
            moe_layers: &trace.layers,
            num_experts: trace.num_experts,
            tokens: trace.tokens.len(),
            sequences: &trace.sequences,
            total_expert_bytes: trace.total_expert_bytes(),
            layers: usage,
            cache: sims
                .into_iter()
                .map(|r| JsonSim {
                    hit_rate: r.hit_rate(),
                    result: r,
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", text_report(&trace, &usage, &sims));
    }
    if let (Some(model), Some(capacity)) = (&args.replay_model, &args.expert_cache) {
        if args.io_threads == 0 {
            bail!("--io-threads must be at least 1");
        }
        crate::replay::replay(&trace, model, capacity, args.io_threads)?;
    }
    Ok(())
}

/// Runs every prompt of `--prompt-file` through the model, recording the routing.
fn record(args: &ExpertsArgs) -> anyhow::Result<RoutingTrace> {
    // OK because clap requires --prompt-file without --trace.
    let path = args
        .prompt_file
        .as_ref()
        .context("--prompt-file is required")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading prompt file {}", path.display()))?;
    let prompts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if prompts.is_empty() {
        bail!(
            "prompt file {} has no prompts (one per line)",
            path.display()
        );
    }
    let Opened {
        spec,
        files,
        config,
        tokenizer,
        template,
        ..
    } = session::open(args.model.as_deref())?;
    let qw = crate::load::quantize_on_load(&files, args.quant.as_deref(), args.threads)?;
    let mut model = crate::load::build_model(&files, qw.as_ref(), LoadOptions::from_env())
        .with_context(|| format!("loading {spec}"))?;
    if let Some(t) = args.threads {
        model.set_threads(t);
    }
    let experts = model.expert_bytes();
    if experts.is_empty() {
        bail!("{spec}: the model has no MoE layers (a dense model routes no experts)");
    }
    let (layers, bytes): (Vec<usize>, Vec<Vec<u64>>) = experts
        .into_iter()
        .map(|(l, b)| (l, b.into_iter().map(|x| x as u64).collect()))
        .unzip();
    let mut trace = RoutingTrace::new(&spec, layers, bytes);
    let mut eos = config.eos_token_ids.clone();
    eos.extend(tokenizer.eos_id());

    for prompt in prompts {
        let ids = match (&template, args.raw) {
            (Some(template), false) => {
                let messages = [serde_json::json!({"role": "user", "content": prompt})];
                let rendered =
                    template.render_json(&messages, true, None, &serde_json::Map::new())?;
                // The template writes BOS and the role markers itself.
                tokenizer.encode(&rendered, false)?
            }
            _ => tokenizer.encode(prompt, true)?,
        };
        if ids.is_empty() {
            bail!("prompt {prompt:?} encodes to no tokens");
        }
        trace.push_sequence(run_prompt(&model, &ids, args.max_tokens, &eos)?);
    }
    Ok(trace)
}

/// One prompt (then up to `max_new` greedy tokens, stopping at an EOS id): per token the
/// experts chosen in each MoE layer.
fn run_prompt(
    model: &Model<'_>,
    prompt: &[u32],
    max_new: usize,
    eos: &[u32],
) -> anyhow::Result<Vec<Vec<Vec<u32>>>> {
    let mut cache = KvCache::new(model);
    let mut out: Vec<Vec<Vec<u32>>> = Vec::new();
    let vocab = model.vocab_size();
    let mut step = |tokens: &[u32], out: &mut Vec<Vec<Vec<u32>>>| -> anyhow::Result<Vec<f32>> {
        let mut trace = Trace::default();
        let logits = model.forward_traced(tokens, cache.len(), &mut cache, Some(&mut trace))?;
        let first = out.len();
        out.extend((0..tokens.len()).map(|_| Vec::new()));
        for (_, routes) in &trace.routed {
            for (t, r) in routes.iter().enumerate() {
                out[first + t].push(r.iter().map(|&(e, _)| e as u32).collect());
            }
        }
        Ok(logits[logits.len() - vocab..].to_vec())
    };
    let mut last = Vec::new();
    for chunk in prompt.chunks(CHUNK) {
        last = step(chunk, &mut out)?;
    }
    for _ in 0..max_new {
        let next = argmax(&last);
        if eos.contains(&next) {
            break;
        }
        last = step(&[next], &mut out)?;
    }
    Ok(out)
}

/// The first index of the largest value (greedy decoding).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Widest sparkline; more experts share a column (its height is their largest count).
const SPARK_WIDTH: usize = 64;

/// Counts as block characters, scaled to the largest; unused experts are `·`.
fn sparkline(counts: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let group = counts.len().div_ceil(SPARK_WIDTH).max(1);
    let cols: Vec<u64> = counts
        .chunks(group)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let max = cols.iter().copied().max().unwrap_or(0).max(1);
    cols.iter()
        .map(|&c| {
            if c == 0 {
                '·'
            } else {
                BARS[((c * 8 - 1) / max) as usize]
            }
        })
        .collect()
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn text_report(trace: &RoutingTrace, usage: &[LayerUsage], sims: &[SimResult]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let e = trace.num_experts;
    let _ = writeln!(
        s,
        "{}: {} tokens in {} sequence(s); {} MoE layers × {e} routed experts ({} in all)",
        trace.model,
        trace.tokens.len(),
        trace.sequences.len(),
        trace.layers.len(),
        human_bytes(trace.total_expert_bytes()),
    );
    let group = e.div_ceil(SPARK_WIDTH).max(1);
    let spark_note = if group > 1 {
        format!(" (each column: the most used of {group} experts)")
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "entropy: of the choice distribution, relative to uniform use (1 = uniform)\n"
    );
    let _ = writeln!(
        s,
        "layer  distinct  top-5  entropy  most used (count)          uses per expert{spark_note}"
    );
    for u in usage {
        let mut order: Vec<usize> = (0..u.counts.len()).collect();
        order.sort_by(|&a, &b| u.counts[b].cmp(&u.counts[a]).then(a.cmp(&b)));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .filter(|&&x| u.counts[x] > 0)
            .map(|&x| format!("{x}({})", u.counts[x]))
            .collect();
        let _ = writeln!(
            s,
            "{:>5}  {:>8}  {:>4.0}%  {:>7.3}  {:<25}  {}",
            u.layer,
            format!("{}/{e}", u.distinct),
            u.top5_share * 100.0,
            u.entropy,
            top.join(" "),
            sparkline(&u.counts),
        );
    }
    if !sims.is_empty() {
        let _ = writeln!(
            s,
            "\ncache simulation (decode order, cold start; {} expert uses, {} without a cache)",
            sims[0].accesses,
            human_bytes(sims[0].bytes_uncached)
        );
        let _ = writeln!(
            s,
            "{:<16}  {:>16}  {:>8}  {:>12}",
            "policy", "capacity", "hit rate", "bytes read"
        );
        for r in sims {
            let cap = if r.unit == "bytes" {
                human_bytes(r.capacity)
            } else {
                format!("{} experts", r.capacity)
            };
            let _ = writeln!(
                s,
                "{:<16}  {:>16}  {:>7.1}%  {:>12}",
                r.policy.name(),
                cap,
                r.hit_rate() * 100.0,
                human_bytes(r.bytes_read)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_largest_count() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), "·▁▄█");
        // 128 experts → 64 columns of 2, each the larger of its pair.
        let mut c = vec![0u64; 128];
        c[1] = 5;
        let s: Vec<char> = sparkline(&c).chars().collect();
        assert_eq!(s.len(), 64);
        assert_eq!(s[0], '█');
        assert!(s[1..].iter().all(|&x| x == '·'));
    }
}
