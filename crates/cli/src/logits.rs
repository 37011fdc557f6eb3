//! `frugal logits`: run a model on token ids and print the logits of every position
//! as JSON, `{"logits": [[...], ...]}` (one row of `vocab_size` values per input token).
//!
//! `--chunk N` feeds N tokens at a time through the KV cache (the output is the same up to
//! rounding); without it the whole prompt is one pass.

use std::io::Write;

use anyhow::{bail, Context};
use frugal_model::KvCache;

use crate::load::open_model;

/// Parse `1,2,3` into token ids.
fn parse_tokens(s: &str) -> anyhow::Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|p| {
            let p = p.trim();
            p.parse::<u32>()
                .with_context(|| format!("--tokens: {p:?} is not a token id"))
        })
        .collect::<anyhow::Result<Vec<u32>>>()?;
    if ids.is_empty() {
        bail!("--tokens: no token ids given");
    }
    Ok(ids)
}

/// Run the command.
pub fn run(
    model: &str,
    tokens: &str,
    chunk: Option<usize>,
    threads: Option<usize>,
    quant: Option<&str>,
    memory: &crate::residency::MemoryFlags,
) -> anyhow::Result<()> {
    let tokens = parse_tokens(tokens)?;
    if chunk == Some(0) {
        bail!("--chunk must be at least 1");
    }
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let files = open_model(model)?;
    let qw = crate::load::quantize_on_load(&files, quant, threads)?;
    let mut m = crate::load::build_model(&files, qw.as_ref(), memory.load_options())
        .with_context(|| format!("loading {model}"))?;
    if let Some(t) = threads {
        m.set_threads(t);
    }
    let experts = crate::residency::attach(memory, &files, &mut m, tokens.len())?;
    let vocab = m.vocab_size();
    let mut cache = KvCache::new(&m);
    let mut logits = Vec::with_capacity(tokens.len() * vocab);
    for part in tokens.chunks(chunk.unwrap_or(tokens.len())) {
        logits.extend(m.forward(part, cache.len(), &mut cache)?);
    }
    if let Some(s) = crate::residency::stats(&experts) {
        eprintln!("{}", s.summary());
    }
    let rows: Vec<&[f32]> = logits.chunks_exact(vocab).collect();
    // f32 values serialise in their shortest round-tripping form.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer(&mut out, &Output { logits: rows })
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    match written {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.context("writing the logits")?),
    }
}

#[derive(serde::Serialize)]
struct Output<'a> {
    logits: Vec<&'a [f32]>,
}
