//! Choosing the next token from a model's logits: repetition penalty, temperature, top-k, top-p,
//! min-p, then a seeded random draw (or greedy argmax).
//!
//! The transforms and their order are those of Hugging Face transformers' `generate`
//! (v5.24, `generation/utils.py` `GenerationMixin._get_logits_processor`, and the processors in
//! `generation/logits_process.py`): first the repetition penalty (CTRL, Keskar et al. 2019),
//! which also applies to greedy decoding; then, only when sampling, the "warpers":
//!
//! - repetition penalty θ: for every distinct token id in the history (prompt included), a logit
//!   x becomes x/θ when x ≥ 0 and x·θ when x < 0, so θ > 1 always makes repeats less likely;
//! - temperature T: x/T;
//! - top-k: every token whose logit is below the k-th largest is masked (ties with the k-th all
//!   survive);
//! - top-p (nucleus, Holtzman et al. 2019): with p = softmax(x) sorted ascending, a token is
//!   masked when the cumulative sum up to and including it is ≤ 1 − top_p; the most likely token
//!   always survives;
//! - min-p: a token is masked when its probability is below min_p × the top probability.
//!
//! Masked tokens get probability 0, the survivors the softmax of their logits. Greedy decoding
//! (`do_sample = false`, or temperature 0) takes the argmax after the penalty, the lowest id on
//! ties (as `torch.argmax`). Each setting is skipped at its neutral value (penalty 1, T 1, k 0,
//! top_p 1, min_p 0), as `generate` skips adding the processor.
//!
//! The random draw uses ChaCha8 (`rand_chacha`), whose output stream for a given seed is fixed
//! across platforms and crate versions, so a seed reproduces a generation exactly.
//!
//! Work happens on the candidates that survive, kept in a buffer the [`Sampler`] reuses, so the
//! steady state allocates nothing. With top-k set (transformers' default is 50) only k tokens are
//! sorted, found by selection in O(vocab).

use frugal_formats::hf::GenerationConfig;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Errors from sampling settings and from sampling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A setting is out of its range.
    #[error("invalid sampling setting `{field}` = {value}: expected {expected}")]
    InvalidParam {
        /// The setting, named as in `generation_config.json`.
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
    /// The logits slice is empty.
    #[error("no logits to sample from (empty vocabulary)")]
    EmptyLogits,
    /// A logit is NaN or +inf (−inf is allowed: it masks the token).
    #[error("logit of token {index} (of {vocab}) is {value}; logits must be finite or -inf")]
    NonFiniteLogit {
        /// Token id.
        index: usize,
        /// Number of logits.
        vocab: usize,
        /// The value.
        value: f32,
    },
    /// Every logit is −inf.
    #[error("all {vocab} logits are -inf: there is no token to choose")]
    AllMasked {
        /// Number of logits.
        vocab: usize,
    },
    /// A history token id has no logit.
    #[error("history token id {id} is outside the vocabulary of {vocab} logits")]
    HistoryTokenOutOfRange {
        /// The id.
        id: u32,
        /// Number of logits.
        vocab: usize,
    },
}

/// Sampling settings. Each filter is off at its neutral value.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Sample (true) or decode greedily (false).
    pub do_sample: bool,
    /// Temperature T ≥ 0; 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (ties at the k-th included); 0 = off.
    pub top_k: usize,
    /// Nucleus mass, 0 < top_p ≤ 1; 1 = off.
    pub top_p: f32,
    /// Minimum probability relative to the top token, 0 ≤ min_p ≤ 1; 0 = off.
    pub min_p: f32,
    /// Repetition penalty θ > 0; 1 = off.
    pub repetition_penalty: f32,
    /// RNG seed; `None` draws one from the OS-seeded hasher keys.
    pub seed: Option<u64>,
}

/// transformers' `GenerationConfig._get_default_generation_params` values for the settings
/// `generate` falls back on when neither the checkpoint nor the caller sets them.
const HF_DEFAULT_TOP_K: usize = 50;

impl Default for SamplingParams {
    /// transformers' defaults: greedy; were sampling switched on, T 1 and top-k 50.
    fn default() -> Self {
        Self {
            do_sample: false,
            temperature: 1.0,
            top_k: HF_DEFAULT_TOP_K,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (argmax), no penalty.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// The settings `generate` would use with this `generation_config.json` and no overrides:
    /// unset keys take transformers' defaults (`do_sample` false, temperature 1, **top_k 50**,
    /// top_p 1, no min-p, penalty 1). So DeepSeek-R1's file (`do_sample` true, temperature 0.6,
    /// top_p 0.95) samples with top-k 50 too. `top_k` −1, which some files use for "off", is
    /// read as 0 (off).
    pub fn from_generation_config(gc: &GenerationConfig) -> Result<Self, SamplingError> {
        let d = Self::default();
        let top_k = match gc.top_k {
            None => d.top_k,
            Some(-1) => 0,
            Some(k) => usize::try_from(k).map_err(|_| SamplingError::InvalidParam {
                field: "top_k",
                value: k.to_string(),
                expected: "a non-negative integer (0 or -1 = off)",
            })?,
        };
        let p = Self {
            do_sample: gc.do_sample.unwrap_or(d.do_sample),
            temperature: gc.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: gc.top_p.unwrap_or(d.top_p),
            min_p: gc.min_p.unwrap_or(d.min_p),
            repetition_penalty: gc.repetition_penalty.unwrap_or(d.repetition_penalty),
            seed: None,
        };
        p.validate()?;
        Ok(p)
    }

    /// Whether these settings decode greedily.
    pub fn is_greedy(&self) -> bool {
        !self.do_sample || self.temperature == 0.0
    }

    /// Checks every setting's range; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field, value: f32, expected| SamplingError::InvalidParam {
            field,
            value: value.to_string(),
            expected,
        };
        // Written so that NaN fails every check.
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(bad(
                "temperature",
                self.temperature,
                "a finite number >= 0 (0 = greedy)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad("top_p", self.top_p, "0 < top_p <= 1 (1 = off)"));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(bad("min_p", self.min_p, "0 <= min_p <= 1 (0 = off)"));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(bad(
                "repetition_penalty",
                self.repetition_penalty,
                "a finite number > 0 (1 = off)",
            ));
        }
        Ok(())
    }
}

/// A token that survived the filters, with its share of the final distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Its logit after penalty and temperature.
    pub logit: f32,
    /// Its probability among the survivors (they sum to 1).
    pub prob: f64,
}

/// Picks tokens from logits with fixed [`SamplingParams`] and its own seeded RNG.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Survivors, reused between calls.
    candidates: Vec<Candidate>,
    /// Bitset of token ids already penalised in this call, all zero between calls.
    seen: Vec<u64>,
}

impl Sampler {
    /// A sampler with `params` (validated), seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(random_seed);
        Ok(Self {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            candidates: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Restarts the random stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Chooses the next token. `history` is every token so far, prompt included (the
    /// repetition penalty looks at it). `logits` is scratch: it is left holding the penalised,
    /// temperature-scaled scores.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32, SamplingError> {
        let greedy = self.params.is_greedy();
        self.distribution(logits, history)?;
        if greedy {
            return Ok(self.candidates[0].id);
        }
        // 53 random bits → a uniform double in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut cum = 0.0;
        for c in &self.candidates {
            cum += c.prob;
            if u < cum {
                return Ok(c.id);
            }
        }
        // Only reachable when rounding leaves the sum of probabilities a hair below u.
        Ok(self.candidates[self.candidates.len() - 1].id)
    }

    /// The distribution [`Sampler::sample`] draws from: the surviving tokens, most likely first,
    /// with probabilities summing to 1 (one token with probability 1 when greedy).
    pub fn distribution(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
    ) -> Result<&[Candidate], SamplingError> {
        let vocab = logits.len();
        if vocab == 0 {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(index) = logits
            .iter()
            .position(|x| x.is_nan() || *x == f32::INFINITY)
        {
            return Err(SamplingError::NonFiniteLogit {
                index,
                vocab,
                value: logits[index],
            });
        }
        if self.params.repetition_penalty != 1.0 {
            self.penalize(logits, history)?;
        }
        self.candidates.clear();
        if self.params.is_greedy() {
            // First maximum: the lowest id wins ties.
            let (mut best, mut best_x) = (0, f32::NEG_INFINITY);
            for (i, &x) in logits.iter().enumerate() {
                if x > best_x {
                    (best, best_x) = (i, x);
                }
            }
            if best_x == f32::NEG_INFINITY {
                return Err(SamplingError::AllMasked { vocab });
            }
            self.candidates.push(Candidate {
                id: best as u32,
                logit: best_x,
                prob: 1.0,
            });
            return Ok(&self.candidates);
        }

        let t = self.params.temperature;
        if t != 1.0 {
            logits.iter_mut().for_each(|x| *x /= t);
        }
        // Token ids fit u32: vocabularies are indexed by u32 ids throughout.
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, x)| **x > f32::NEG_INFINITY)
                .map(|(i, &x)| Candidate {
                    id: i as u32,
                    logit: x,
                    prob: 0.0,
                }),
        );
        if self.candidates.is_empty() {
            return Err(SamplingError::AllMasked { vocab });
        }
        let k = self.params.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(k - 1, |a, b| b.logit.total_cmp(&a.logit));
            let kth = self.candidates[k - 1].logit;
            self.candidates.retain(|c| c.logit >= kth);
        }
        // Most likely first. Among equal logits the higher id comes first, so a cut from the
        // tail (top-p) drops the lower id first, as transformers' stable ascending sort does.
        self.candidates
            .sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit).then(b.id.cmp(&a.id)));

        // Unnormalised softmax weights relative to the top logit (so the top weight is 1).
        let top = self.candidates[0].logit;
        let mut total = 0.0;
        for c in &mut self.candidates {
            c.prob = ((c.logit - top) as f64).exp();
            total += c.prob;
        }
        let top_p = self.params.top_p as f64;
        if top_p < 1.0 {
            // Ascending cumulative probability ≤ 1 − top_p ⇒ masked; the top token never is.
            let limit = (1.0 - top_p) * total;
            let mut cum = 0.0;
            let mut keep = self.candidates.len();
            while keep > 1 {
                cum += self.candidates[keep - 1].prob;
                if cum > limit {
                    break;
                }
                keep -= 1;
            }
            self.candidates.truncate(keep);
        }
        let min_p = self.params.min_p as f64;
        if min_p > 0.0 {
            // Relative to the top weight, which is 1; the ratio survives renormalisation.
            // The top token (weight 1 ≥ min_p) always stays.
            let keep = self.candidates.partition_point(|c| c.prob >= min_p);
            self.candidates.truncate(keep);
        }
        let total: f64 = self.candidates.iter().map(|c| c.prob).sum();
        for c in &mut self.candidates {
            c.prob /= total;
        }
        Ok(&self.candidates)
    }

    /// Applies the repetition penalty once to each distinct id in `history`.
    fn penalize(&mut self, logits: &mut [f32], history: &[u32]) -> Result<(), SamplingError> {
        let vocab = logits.len();
        if let Some(&id) = history.iter().find(|&&id| id as usize >= vocab) {
            return Err(SamplingError::HistoryTokenOutOfRange { id, vocab });
        }
        let theta = self.params.repetition_penalty;
        self.seen.resize(vocab.div_ceil(64), 0);
        for &id in history {
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if self.seen[word] & bit == 0 {
                self.seen[word] |= bit;
                let x = &mut logits[id as usize];
                *x = if *x < 0.0 { *x * theta } else { *x / theta };
            }
        }
        for &id in history {
            self.seen[id as usize / 64] = 0;
        }
        Ok(())
    }
}

/// A seed from the standard library's randomly keyed hasher (seeded by the OS per process).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}
