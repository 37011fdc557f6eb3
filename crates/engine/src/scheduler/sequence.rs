//! One admitted request: its cache, sampler, detokenizer and stop state.

use frugal_model::{BatchItem, KvCache};

use super::json_mode::JsonPrefix;
use super::{sampler_for, Event, EventSink, Request, TokenLogprob};
use crate::generation::{FinishReason, StopCriteria, StopStrings};
use crate::sampling::Sampler;
use crate::tokenizer::{DecodeStream, Tokenizer};

/// What sampling a token led to.
pub(super) enum Step {
    /// Keep decoding.
    Continue,
    /// Finished normally (`Done` sent).
    Finished,
    /// The client is gone.
    Gone,
}

pub(super) struct Sequence<'m> {
    pub(super) sink: Box<dyn EventSink>,
    /// Prompt, then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens in `cache`.
    fed: usize,
    cache: KvCache,
    cached_tokens: usize,
    /// KV pages reserved.
    pub(super) pages: usize,
    sampler: Sampler,
    stop: StopCriteria,
    stop_strings: StopStrings,
    decoder: DecodeStream<'m>,
    logprobs: Option<usize>,
    /// `json_object` mode: the output so far as a JSON-object prefix.
    json: Option<JsonPrefix>,
}

impl<'m> Sequence<'m> {
    /// A sequence starting from `cache`, which holds the first `reused` prompt tokens.
    pub(super) fn new(
        req: Request,
        cache: KvCache,
        reused: usize,
        pages: usize,
        tokenizer: &'m Tokenizer,
    ) -> Result<Self, (Box<dyn EventSink>, String)> {
        let sampler = match sampler_for(&req.sampling) {
            Ok(s) => s,
            Err(e) => return Err((req.sink, e)),
        };
        Ok(Sequence {
            prompt_len: req.prompt.len(),
            tokens: req.prompt,
            fed: reused,
            cache,
            cached_tokens: reused,
            pages,
            sampler,
            stop_strings: StopStrings::new(&req.stop.stop_strings),
            stop: req.stop,
            decoder: tokenizer.decode_stream(req.skip_special_tokens),
            logprobs: req.logprobs,
            json: req.json_object.then(JsonPrefix::new),
            sink: req.sink,
        })
    }

    /// Whether prompt tokens are still to be run.
    pub(super) fn prefilling(&self) -> bool {
        self.fed < self.prompt_len
    }

    /// Tokens not yet in the cache.
    pub(super) fn unfed(&self) -> usize {
        self.tokens.len() - self.fed
    }

    /// The next `n` unfed tokens with this sequence's cache, for one forward pass.
    pub(super) fn batch_item(&mut self, n: usize) -> BatchItem<'_> {
        BatchItem {
            tokens: self.tokens[self.fed..self.fed + n].to_vec(),
            cache: &mut self.cache,
        }
    }

    /// Records that `n` tokens went into the cache.
    pub(super) fn fed(&mut self, n: usize) {
        self.fed += n;
    }

    /// Samples the next token from `logits`, streams it, and decides whether to go on.
    /// `vocab` holds each token's bytes (`None`: special), for JSON mode.
    pub(super) fn sample(
        &mut self,
        logits: &mut [f32],
        ctx_size: usize,
        vocab: &[Option<Vec<u8>>],
    ) -> Step {
        let logprob = self.logprobs.map(|top| log_probs(logits, top));
        if let Some(json) = &self.json {
            // Only tokens that keep the text a JSON-object prefix; the output ends as soon as
            // the object closes, so EOS is never needed.
            for (id, l) in logits.iter_mut().enumerate() {
                let ok = matches!(vocab.get(id), Some(Some(b)) if !b.is_empty() && json.accepts(b));
                if !ok {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let id = match self.sampler.sample(logits, &self.tokens) {
            Ok(id) => id,
            Err(e) => {
                self.sink
                    .send(Event::Error(format!("sampling failed: {e}")));
                return Step::Gone;
            }
        };
        let logprob = logprob.map(|(lp, top)| TokenLogprob {
            id,
            logprob: lp[id as usize],
            top,
        });
        self.tokens.push(id);
        let generated = self.tokens.len() - self.prompt_len;

        let mut finish = None;
        let mut text = String::new();
        if let (Some(json), Some(Some(bytes))) = (&mut self.json, vocab.get(id as usize)) {
            bytes.iter().for_each(|&b| {
                json.push(b);
            });
        }
        if self.stop.is_eos(id) {
            finish = Some(FinishReason::Eos);
        } else {
            let piece = match self.decoder.step(id) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    self.sink
                        .send(Event::Error(format!("detokenizing failed: {e}")));
                    return Step::Gone;
                }
            };
            let scan = self.stop_strings.push(&piece);
            text = scan.text;
            if let Some(i) = scan.matched {
                finish = Some(FinishReason::StopString(self.stop.stop_strings[i].clone()));
            } else if self.json.as_ref().is_some_and(JsonPrefix::done) {
                // The object is complete: end as EOS would.
                finish = Some(FinishReason::Eos);
            }
        }
        if finish.is_none()
            && (self.stop.max_new_tokens.is_some_and(|m| generated >= m)
                || self.tokens.len() >= ctx_size)
        {
            finish = Some(FinishReason::Length);
        }
        if !self.sink.send(Event::Token { id, text, logprob }) {
            return Step::Gone;
        }
        let Some(finish) = finish else {
            return Step::Continue;
        };
        let mut rest = String::new();
        if !matches!(finish, FinishReason::StopString(_)) {
            if let Some(tail) = self.decoder.flush() {
                rest.push_str(&self.stop_strings.push(&tail).text);
            }
            rest.push_str(&self.stop_strings.finish());
        }
        let done = Event::Done {
            text: rest,
            finish,
            prompt_tokens: self.prompt_len,
            completion_tokens: generated,
            cached_tokens: self.cached_tokens,
        };
        if self.sink.send(done) {
            Step::Finished
        } else {
            Step::Gone
        }
    }

    /// The tokens whose positions the cache holds, and the cache.
    pub(super) fn into_cache(mut self) -> (Vec<u32>, KvCache) {
        self.tokens.truncate(self.fed);
        (self.tokens, self.cache)
    }
}

/// Log-softmax of the raw logits, and the `top` most likely `(id, logprob)`.
fn log_probs(logits: &[f32], top: usize) -> (Vec<f32>, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp: Vec<f32> = logits.iter().map(|&x| (x as f64 - log_z) as f32).collect();
    let mut order: Vec<u32> = (0..lp.len() as u32).collect();
    let top = top.min(order.len());
    if top > 0 {
        // Highest first; ties by lower id.
        let key = |&i: &u32| (std::cmp::Reverse(ordered(lp[i as usize])), i);
        order.select_nth_unstable_by_key(top - 1, key);
        order.truncate(top);
        order.sort_by_key(key);
    } else {
        order.clear();
    }
    let top = order.into_iter().map(|i| (i, lp[i as usize])).collect();
    (lp, top)
}

/// A total order on finite-or-not f32 for sorting.
fn ordered(x: f32) -> i64 {
    let b = x.to_bits() as i32;
    (if b < 0 { b ^ i32::MAX } else { b }) as i64
}
