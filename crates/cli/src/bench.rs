//! `frugal bench`: speed in tokens per second, in the manner of llama.cpp's `llama-bench`, and
//! the machine's memory read bandwidth that bounds it.
//!
//! - Prompt processing (`ppP`): `P` random token ids prefilled as one batch into an empty cache;
//!   `P / seconds`.
//! - Text generation (`tgN`): `N` decode steps of one random token each, from an empty cache;
//!   `N / seconds`. Like llama-bench, no sampling: each step computes the last position's logits.
//! - With `-d D`, each repetition first prefills `D` random tokens untimed, and the test runs
//!   from there (`pp512 @ d4096`, as llama-bench names it).
//!
//! Each test runs once untimed (warm-up: pages of the mapped file come into memory), then
//! `-r` times; the mean and sample standard deviation of the per-repetition tokens/s are shown.
//!
//! Decoding one token reads the active weights once (attention, dense and shared FFNs, norms,
//! routers, the LM head, one embedding row, and `k` of `E` routed experts per MoE layer; see
//! [`frugal_model::active`]), so tg tokens/s × active bytes is the weight bandwidth achieved;
//! each tg repetition is set against the read bandwidth measured right before and right after
//! it at the same thread count (their mean), and the fraction reported is the mean of those
//! over the steady repetitions, the ones whose two measurements agree within 10%
//! (`--memory` alone prints that bandwidth for 1..N threads; `--bandwidth` gives one instead).

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Context};
use frugal_kernels::hugemem::HugeBuf;
use frugal_kernels::pool::ThreadPool;
use frugal_model::active::active_bytes;
use frugal_model::profile;
use frugal_model::{KvCache, Model};

use crate::load::open_model;

/// `frugal bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache (default: the
    /// embedded model).
    #[arg(long)]
    model: Option<String>,
    /// Prompt tokens prefilled per repetition (0: no pp test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated per repetition (0: no tg test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Tokens already in the cache when each test starts (prefilled untimed), as
    /// llama-bench's `-d`: decode and prefill speed deep into a conversation.
    #[arg(short = 'd', long = "depth", default_value_t = 0)]
    depth: usize,
    /// Threads (default: available parallelism). With --memory: the largest count measured.
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Measure memory read bandwidth at 1..=threads threads instead of running a model.
    #[arg(long)]
    memory: bool,
    /// Size of the array read by the bandwidth test, in MiB (well above the last-level cache).
    #[arg(long, default_value_t = 1024)]
    memory_mib: usize,
    /// Use this read bandwidth (GB/s) for the fraction instead of measuring it.
    #[arg(long)]
    bandwidth: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also time each phase of the forward pass (attention projections, experts, LM head, …)
    /// over the timed repetitions and print where each token's time goes.
    #[arg(long)]
    profile: bool,
    /// --max-memory and the expert cache's settings (the bandwidth test, which allocates
    /// --memory-mib, is then skipped unless --bandwidth is given).
    #[command(flatten)]
    memory_flags: crate::residency::MemoryFlags,
}

/// Run the command.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.memory_mib == 0 {
        bail!("--memory-mib must be at least 1");
    }
    if args.memory {
        return memory(args, threads);
    }
    if args.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    if args.bandwidth.is_some_and(|b| b.is_nan() || b <= 0.0) {
        bail!("--bandwidth must be a positive number of GB/s");
    }
    model(args, threads)
}

/// Mean and sample standard deviation.
fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One test's results.
#[derive(serde::Serialize)]
struct TestResult {
    /// `pp512`, `tg128`.
    test: String,
    tokens: usize,
    /// Tokens/s of each repetition.
    samples: Vec<f64>,
    mean: f64,
    sd: f64,
    /// The expert cache's counters over the timed repetitions (with --max-memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    experts: Option<frugal_engine::residency::CacheStats>,
    /// Wall time per phase over the timed repetitions (with --profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<Vec<PhaseJson>>,
}

/// One phase of a test's profile.
#[derive(serde::Serialize)]
struct PhaseJson {
    /// `attn.core`, …; `other` is the test's time outside every phase.
    phase: &'static str,
    /// Microseconds per token of the test.
    us_per_token: f64,
    /// Share of the test's time.
    fraction: f64,
    /// Steps timed per token.
    calls_per_token: f64,
}

/// The profile of a test of `tokens` tokens per repetition that took `seconds`, from the
/// phase totals `times` over those repetitions.
fn phase_report(times: &[profile::PhaseTime], tokens: usize, seconds: &[f64]) -> Vec<PhaseJson> {
    let total: f64 = seconds.iter().sum();
    let per = (tokens * seconds.len()) as f64;
    let timed: f64 = times.iter().map(|p| p.time.as_secs_f64()).sum();
    let mut rows: Vec<PhaseJson> = times
        .iter()
        .filter(|p| p.calls > 0)
        .map(|p| PhaseJson {
            phase: p.phase.name(),
            us_per_token: p.time.as_secs_f64() * 1e6 / per,
            fraction: p.time.as_secs_f64() / total,
            calls_per_token: p.calls as f64 / per,
        })
        .collect();
    rows.push(PhaseJson {
        phase: "other",
        us_per_token: (total - timed).max(0.0) * 1e6 / per,
        fraction: (total - timed).max(0.0) / total,
        calls_per_token: 0.0,
    });
    rows
}

impl TestResult {
    fn new(test: String, tokens: usize, seconds: &[f64]) -> Self {
        let samples: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
        let (mean, sd) = mean_sd(&samples);
        TestResult {
            test,
            tokens,
            samples,
            mean,
            sd,
            experts: None,
            profile: None,
        }
    }
}

/// Random token ids (a fixed-seed xorshift: runs are comparable, no token is special-cased).
struct Tokens(u64);

impl Tokens {
    fn next(&mut self, vocab: usize) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % vocab as u64) as u32
    }
}

#[derive(serde::Serialize)]
struct ModelReport {
    model: String,
    architecture: String,
    threads: usize,
    weight_bytes: u64,
    active: ActiveJson,
    tests: Vec<TestResult>,
    /// tg tokens/s × active bytes per token.
    tg_weight_gbs: Option<f64>,
    /// The read bandwidth the fraction is taken against: --bandwidth, or the mean over the
    /// steady tg repetitions of the bandwidth of their moment (see [`Bracketed`]).
    memory_read_gbs: Option<f64>,
    /// Read bandwidth measured right after each timed tg repetition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    memory_read_samples: Vec<f64>,
    /// Read bandwidth measured right before each timed tg repetition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    memory_read_before: Vec<f64>,
    /// The mean over the steady tg repetitions of (weight traffic / read bandwidth of that
    /// moment), or `tg_weight_gbs / memory_read_gbs` with a given bandwidth.
    bandwidth_fraction: Option<f64>,
    /// Repetitions whose bandwidths before and after agree within [`STEADY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    steady_repetitions: Option<usize>,
    /// `bandwidth_fraction` over every repetition, steady or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth_fraction_all: Option<f64>,
}

/// How far apart (relative to the larger) the read bandwidths measured before and after a tg
/// repetition may be for it to count as steady. A shared machine changes state now and then
/// (this one's two-thread figure flips between about 35 and 60 GB/s); a repetition that
/// straddles a change has no single bandwidth to be compared with.
const STEADY: f64 = 0.10;

/// tg repetitions set against the read bandwidth of their moment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bracketed {
    /// Mean over the steady repetitions (all, when none is) of `(before + after) / 2`.
    read_gbs: f64,
    /// Mean over the same repetitions of `tokens/s × bytes per token / bandwidth`.
    fraction: f64,
    /// How many repetitions were steady.
    steady: usize,
    /// The fraction's mean over every repetition.
    fraction_all: f64,
}

/// Sets each repetition's tokens/s `tps[i]` (× `per_token` GB) against the mean of the read
/// bandwidths measured before (`before[i]`) and after (`after[i]`) it; `None` without
/// repetitions.
fn bracket(tps: &[f64], per_token: f64, before: &[f64], after: &[f64]) -> Option<Bracketed> {
    // Per repetition: (bandwidth, fraction, steady).
    let reps: Vec<(f64, f64, bool)> = tps
        .iter()
        .zip(before.iter().zip(after))
        .map(|(t, (&b, &a))| {
            let bw = (b + a) / 2.0;
            (
                bw,
                t * per_token / bw,
                b.min(a) >= (1.0 - STEADY) * b.max(a),
            )
        })
        .collect();
    if reps.is_empty() {
        return None;
    }
    let steady = reps.iter().filter(|r| r.2).count();
    let counted: Vec<_> = reps.iter().filter(|r| r.2 || steady == 0).collect();
    let mean = |xs: Vec<f64>| mean_sd(&xs).0;
    Some(Bracketed {
        read_gbs: mean(counted.iter().map(|r| r.0).collect()),
        fraction: mean(counted.iter().map(|r| r.1).collect()),
        steady,
        fraction_all: mean(reps.iter().map(|r| r.1).collect()),
    })
}

#[derive(serde::Serialize)]
struct ActiveJson {
    per_token: u64,
    embedding_row: u64,
    lm_head: u64,
    routed_experts: u64,
    dense: u64,
}

fn model(args: &BenchArgs, threads: usize) -> anyhow::Result<()> {
    let spec = match &args.model {
        Some(m) => m.clone(),
        None => crate::default_model::path()?.to_string_lossy().into_owned(),
    };
    let files = open_model(&spec)?;
    let config = files.config()?;
    let mut model = Model::load_with(&files, args.memory_flags.load_options())
        .with_context(|| format!("loading {spec}"))?;
    model.set_threads(threads);
    let experts = crate::residency::attach(
        &args.memory_flags,
        &files,
        &mut model,
        args.n_prompt.max(args.n_gen),
    )?;
    let stats = || crate::residency::stats(&experts);
    let vocab = model.vocab_size();
    let max_pos = config.max_position_embeddings;
    if args.depth + args.n_prompt.max(args.n_gen) > max_pos {
        bail!(
            "-d {} plus -p/-n of {} is past the model's {max_pos} positions",
            args.depth,
            args.n_prompt.max(args.n_gen)
        );
    }
    let depth = args.depth;
    let suffix = if depth > 0 {
        format!(" @ d{depth}")
    } else {
        String::new()
    };
    // A cache holding `depth` random tokens (prefilled in one batch, untimed, and left out
    // of a profile running for repetition `rep`), with room for `more`.
    let prefilled = |tokens: &mut Tokens, rep: usize, more: usize| -> anyhow::Result<KvCache> {
        let mut cache = KvCache::with_capacity(&model, depth + more);
        // As llama-bench's context, allocated and cleared before timing: no step of the
        // test pays the first touch of the cache's pages.
        cache.prefault();
        if depth > 0 {
            let ids: Vec<u32> = (0..depth).map(|_| tokens.next(vocab)).collect();
            profile::enable(false);
            model.forward_last(&ids, 0, &mut cache)?;
            profile::enable(args.profile && rep > 0);
        }
        Ok(cache)
    };
    let infos = files
        .tensors()
        .map(|t| t.tensor_infos())
        .unwrap_or_default();
    let active = active_bytes(&config, &infos);

    let mut tokens = Tokens(0x9E37_79B9_7F4A_7C15);
    let mut tests = Vec::new();
    // Progress on a terminal only: `\r` rewrites one line.
    let tty = std::io::stderr().is_terminal();
    let progress = |what: &str| {
        if tty {
            eprint!("\r{what:30}");
        }
    };
    if args.n_prompt > 0 {
        let mut secs = Vec::new();
        let mut before = None;
        for rep in 0..=args.reps {
            progress(&format!("pp{} {rep}/{}", args.n_prompt, args.reps));
            if rep == 1 {
                before = stats();
                start_profile(args.profile);
            }
            let mut cache = prefilled(&mut tokens, rep, args.n_prompt)?;
            let ids: Vec<u32> = (0..args.n_prompt).map(|_| tokens.next(vocab)).collect();
            let t0 = Instant::now();
            model.forward_last(&ids, depth, &mut cache)?;
            // Repetition 0 is the warm-up.
            if rep > 0 {
                secs.push(t0.elapsed().as_secs_f64());
            }
        }
        let name = format!("pp{}{suffix}", args.n_prompt);
        let mut r = TestResult::new(name, args.n_prompt, &secs);
        r.experts = stats().zip(before).map(|(now, then)| now.since(&then));
        r.profile = stop_profile(args.profile, args.n_prompt, &secs);
        tests.push(r);
    }
    let mut tg = None;
    let mut tg_samples: Option<Vec<f64>> = None;
    // The machine's read bandwidth, measured right before and right after each timed tg
    // repetition: on a shared machine it drifts from minute to minute (this one's two-thread
    // figure has read anywhere from 35 to 60 GB/s within an hour), and each repetition's
    // fraction is taken against the bandwidth of its own moment. Not with a given
    // --bandwidth, nor in a budgeted run (which does not allocate the test's array).
    let probe = (args.n_gen > 0 && args.bandwidth.is_none() && experts.is_none())
        .then(|| Probe::new(args.memory_mib << 20))
        .transpose()?;
    let mut read_samples = Vec::new();
    let mut read_before = Vec::new();
    // The probe, untimed and out of the profile.
    let measure = |p: &Probe| {
        let on = args.profile;
        profile::enable(false);
        let gbs = p.measure(threads, 2).best_gbs;
        profile::enable(on);
        gbs
    };
    if args.n_gen > 0 {
        let mut secs = Vec::new();
        let mut logits = Vec::new();
        let mut before = None;
        for rep in 0..=args.reps {
            progress(&format!("tg{} {rep}/{}", args.n_gen, args.reps));
            if rep == 1 {
                before = stats();
                start_profile(args.profile);
            }
            // Warm-up: one step, as llama-bench does. The cache has room for every step and
            // the logits buffer is reused, as in a decode loop: a step allocates nothing.
            let steps = if rep == 0 { 1 } else { args.n_gen };
            let mut cache = prefilled(&mut tokens, rep, steps)?;
            if let (true, Some(p)) = (rep > 0, &probe) {
                read_before.push(measure(p));
            }
            let t0 = Instant::now();
            for pos in depth..depth + steps {
                model.forward_last_into(&[tokens.next(vocab)], pos, &mut cache, &mut logits)?;
            }
            if rep > 0 {
                secs.push(t0.elapsed().as_secs_f64());
                if let Some(p) = &probe {
                    read_samples.push(measure(p));
                }
            }
        }
        let name = format!("tg{}{suffix}", args.n_gen);
        let mut r = TestResult::new(name, args.n_gen, &secs);
        r.experts = stats().zip(before).map(|(now, then)| now.since(&then));
        r.profile = stop_profile(args.profile, args.n_gen, &secs);
        tg = Some(r.mean);
        tg_samples = Some(r.samples.clone());
        tests.push(r);
    }
    progress("");

    let per_token = active.per_token() as f64 / 1e9;
    let tg_weight_gbs = tg.map(|tps| tps * per_token);
    let bracketed = match (args.bandwidth, &tg_samples) {
        (None, Some(tps)) => bracket(tps, per_token, &read_before, &read_samples),
        _ => None,
    };
    let (memory_read_gbs, bandwidth_fraction) = match (args.bandwidth, bracketed) {
        (Some(b), _) => (Some(b), tg_weight_gbs.map(|w| w / b)),
        (None, Some(b)) => (Some(b.read_gbs), Some(b.fraction)),
        _ => (None, None),
    };
    let report = ModelReport {
        model: spec,
        architecture: config.architecture.to_string(),
        threads,
        weight_bytes: active.total,
        active: ActiveJson {
            per_token: active.per_token(),
            embedding_row: active.embedding_row,
            lm_head: active.lm_head,
            routed_experts: active.routed_experts,
            dense: active.dense,
        },
        tests,
        tg_weight_gbs,
        memory_read_gbs,
        memory_read_samples: read_samples.clone(),
        memory_read_before: read_before.clone(),
        bandwidth_fraction,
        steady_repetitions: bracketed.map(|b| b.steady),
        bandwidth_fraction_all: bracketed.map(|b| b.fraction_all),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "model: {} ({}, {} of weights)",
        report.model,
        report.architecture,
        human(report.weight_bytes)
    );
    println!("threads: {threads}");
    println!("{:>14}  {:>18}", "test", "t/s");
    for t in &report.tests {
        println!("{:>14}  {:>10.2} ± {:<6.2}", t.test, t.mean, t.sd);
        if let Some(s) = &t.experts {
            for line in s.summary().lines() {
                println!("          {line}");
            }
        }
        if let Some(rows) = &t.profile {
            println!(
                "          {:<12} {:>10} {:>7} {:>10}",
                "phase", "µs/token", "share", "steps/tok"
            );
            for p in rows {
                println!(
                    "          {:<12} {:>10.1} {:>6.1}% {:>10.1}",
                    p.phase,
                    p.us_per_token,
                    100.0 * p.fraction,
                    p.calls_per_token
                );
            }
        }
    }
    println!(
        "active bytes per token: {} (attention, dense and shared FFN, norms {}; routed \
         experts {}; lm_head {}; embedding row {})",
        human(active.per_token()),
        human(active.dense),
        human(active.routed_experts),
        human(active.lm_head),
        human(active.embedding_row),
    );
    if let (Some(w), Some(m), Some(f)) = (
        report.tg_weight_gbs,
        report.memory_read_gbs,
        report.bandwidth_fraction,
    ) {
        let s = || {
            report
                .memory_read_samples
                .iter()
                .chain(&report.memory_read_before)
        };
        let range = match bracketed {
            None => String::new(),
            Some(b) => {
                let lo = s().cloned().fold(f64::INFINITY, f64::min);
                let hi = s().cloned().fold(0.0, f64::max);
                let n = report.memory_read_samples.len();
                let steady = match b.steady {
                    0 => format!("none of {n} repetitions steady, so all counted"),
                    k if k == n => format!("all {n} repetitions steady"),
                    k => format!(
                        "{k} of {n} repetitions steady and counted; all {n}: {:.0}%",
                        100.0 * b.fraction_all
                    ),
                };
                format!(
                    "; measured before and after each repetition, {lo:.1}–{hi:.1} GB/s; {steady}"
                )
            }
        };
        println!(
            "tg weight traffic: {w:.2} GB/s = {:.0}% of the read bandwidth {m:.2} GB/s \
             ({threads} thread{}{range})",
            100.0 * f,
            if threads == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Starts the phase profile (clearing what earlier tests left) when asked for.
fn start_profile(on: bool) {
    if on {
        profile::take();
        profile::enable(true);
    }
}

/// Stops the phase profile and reports it, when asked for.
fn stop_profile(on: bool, tokens: usize, seconds: &[f64]) -> Option<Vec<PhaseJson>> {
    on.then(|| {
        profile::enable(false);
        phase_report(&profile::take(), tokens, seconds)
    })
}

/// `1.23 GB`, `45.6 MB`, `7.8 kB`.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// Read bandwidth at one thread count.
#[derive(serde::Serialize)]
struct Bandwidth {
    threads: usize,
    /// The fastest pass (as STREAM reports).
    best_gbs: f64,
    mean_gbs: f64,
}

fn memory(args: &BenchArgs, max_threads: usize) -> anyhow::Result<()> {
    let bytes = args.memory_mib << 20;
    let results: Vec<Bandwidth> = (1..=max_threads)
        .map(|t| read_bandwidth(t, bytes, args.reps.max(2)))
        .collect::<anyhow::Result<_>>()?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            bytes: usize,
            read: &'a [Bandwidth],
        }
        println!(
            "{}",
            serde_json::to_string(&Out {
                bytes,
                read: &results
            })?
        );
        return Ok(());
    }
    println!("memory read bandwidth ({} MiB array)", args.memory_mib);
    println!("{:>8}  {:>10}  {:>10}", "threads", "best GB/s", "mean GB/s");
    for r in &results {
        println!(
            "{:>8}  {:>10.2}  {:>10.2}",
            r.threads, r.best_gbs, r.mean_gbs
        );
    }
    Ok(())
}

/// Sum of `data` in 8 independent lanes (vectorisable; each load is used once).
fn sum_lanes(data: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = data.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(x);
        }
    }
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// STREAM-like read test: `passes` timed sums of a `bytes` array split over `threads` threads
/// of the process pool (in 4 MiB pieces, claimed dynamically), after one untimed pass.
///
/// The array lives in memory of the kind the repacked weights use ([`HugeBuf`]: transparent
/// huge pages where the system has them), so the fraction compares like with like: with
/// 4 KiB pages this machine reads about a fifth slower on one thread.
fn read_bandwidth(threads: usize, bytes: usize, passes: usize) -> anyhow::Result<Bandwidth> {
    Ok(Probe::new(bytes)?.measure(threads, passes))
}

/// The bandwidth test's array, allocated and filled once, measured as often as wanted.
struct Probe {
    buf: HugeBuf,
}

impl Probe {
    fn new(bytes: usize) -> anyhow::Result<Probe> {
        let mut buf = HugeBuf::zeroed(bytes / 8 * 8).context("memory for the bandwidth test")?;
        // Non-zero contents: the pages are really allocated, not the shared zero page.
        Self::words_mut(&mut buf)
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as u64);
        Ok(Probe { buf })
    }

    fn words_mut(buf: &mut HugeBuf) -> &mut [u64] {
        // SAFETY: every bit pattern is a valid u64; `align_to_mut` gives the aligned middle
        // part (all of it: a `HugeBuf` starts on a cache line and holds whole u64s here).
        unsafe { buf.as_mut_slice().align_to_mut::<u64>().1 }
    }

    fn words(&self) -> &[u64] {
        // SAFETY: as in `words_mut`.
        unsafe { self.buf.align_to::<u64>().1 }
    }

    /// `passes` timed reads after one untimed one.
    fn measure(&self, threads: usize, passes: usize) -> Bandwidth {
        const PIECE: usize = (4 << 20) / 8;
        let data = self.words();
        let pool = ThreadPool::global(threads);
        let pieces: Vec<&[u64]> = data.chunks(PIECE).collect();
        let mut gbs = Vec::with_capacity(passes);
        for pass in 0..=passes {
            let t0 = Instant::now();
            let sums = pool.map(pieces.len(), |i| sum_lanes(pieces[i]));
            let s = t0.elapsed().as_secs_f64();
            // Keep the sums observable so the reads cannot be optimised away.
            std::hint::black_box(sums);
            if pass > 0 {
                gbs.push(data.len() as f64 * 8.0 / s / 1e9);
            }
        }
        let (mean, _) = mean_sd(&gbs);
        Bandwidth {
            threads,
            best_gbs: gbs.iter().cloned().fold(0.0, f64::max),
            mean_gbs: mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_whose_bandwidth_changed_are_left_out() {
        // 100 t/s of 0.3 GB: 30 GB/s of weights. The second repetition straddles a change
        // from 60 to 35 GB/s; the others are steady at 36 and 34 (mean 35) and 37.5.
        let b = bracket(&[100.0; 3], 0.3, &[36.0, 60.0, 37.0], &[34.0, 35.0, 38.0]).unwrap();
        assert_eq!(b.steady, 2);
        assert!((b.read_gbs - (35.0 + 37.5) / 2.0).abs() < 1e-12);
        assert!((b.fraction - (30.0 / 35.0 + 30.0 / 37.5) / 2.0).abs() < 1e-12);
        let all = (30.0 / 35.0 + 30.0 / 47.5 + 30.0 / 37.5) / 3.0;
        assert!((b.fraction_all - all).abs() < 1e-12);
        // 10% apart (of the larger) is still steady; more is not.
        assert_eq!(bracket(&[1.0], 1.0, &[90.0], &[100.0]).unwrap().steady, 1);
        assert_eq!(bracket(&[1.0], 1.0, &[89.0], &[100.0]).unwrap().steady, 0);
        // None steady: every repetition counts.
        let b = bracket(&[100.0; 2], 0.3, &[60.0, 35.0], &[35.0, 60.0]).unwrap();
        assert_eq!(b.steady, 0);
        assert!((b.fraction - b.fraction_all).abs() < 1e-12);
        assert!((b.read_gbs - 47.5).abs() < 1e-12);
        assert!(bracket(&[], 0.3, &[], &[]).is_none());
    }

    #[test]
    fn lanes_sum_like_a_plain_sum() {
        let v: Vec<u64> = (0..1003).map(|i| i * 2_654_435_761).collect();
        let plain = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        assert_eq!(sum_lanes(&v), plain);
    }

    #[test]
    fn mean_and_sample_sd() {
        let (m, s) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        // Sample variance: 32 / 7.
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }
}
