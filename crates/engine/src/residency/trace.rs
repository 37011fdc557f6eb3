//! A routing trace and its usage statistics.
//!
//! # File format
//!
//! One JSON object (`frugal experts --save-trace FILE` writes it, `--trace FILE` reads it):
//!
//! ```json
//! {
//!   "format": "frugal-expert-trace",
//!   "version": 1,
//!   "model": "fixtures/models/deepseek-v3",
//!   "layers": [1, 2],
//!   "num_experts": 16,
//!   "expert_bytes": [[24576, 24576, ...], [24576, ...]],
//!   "sequences": [27],
//!   "tokens": [[[0, 3, 9, 12], [2, 5, 7, 15]], ...]
//! }
//! ```
//!
//! - `layers`: the model's layer index of each MoE layer (dense layers are absent).
//! - `expert_bytes[i][e]`: bytes of routed expert `e` of MoE layer `i` as stored (gate + up +
//!   down), what loading it from disk reads.
//! - `sequences`: the number of tokens of each prompt (with its generated tokens), in order;
//!   they sum to the length of `tokens`.
//! - `tokens[t][i]`: the experts the router chose for token `t` in MoE layer `i`, in the order
//!   the tokens were run (a prompt's tokens, then its generated ones, then the next prompt's).
//!
//! `model` is informational.

use serde::{Deserialize, Serialize};

/// The `format` field of a trace file.
pub const FORMAT: &str = "frugal-expert-trace";
/// The `version` this code writes and reads.
pub const VERSION: u32 = 1;

/// Why a trace is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The text is not a trace object.
    #[error("not a routing trace: {0}")]
    Json(#[from] serde_json::Error),
    /// The `format`/`version` fields are not ours.
    #[error("not a routing trace: format {format:?} version {version} (expected {FORMAT:?} version {VERSION})")]
    Format {
        /// The file's `format`.
        format: String,
        /// The file's `version`.
        version: u32,
    },
    /// The fields disagree with each other.
    #[error("inconsistent routing trace: {0}")]
    Inconsistent(String),
}

/// Per token and MoE layer, the routed experts chosen; see the module doc for the file format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingTrace {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// What produced the trace (a model path), for people reading the file.
    #[serde(default)]
    pub model: String,
    /// The model's layer index of each MoE layer.
    pub layers: Vec<usize>,
    /// Routed experts per MoE layer.
    pub num_experts: usize,
    /// `[moe layer][expert]` stored bytes of each routed expert.
    pub expert_bytes: Vec<Vec<u64>>,
    /// Tokens per prompt, in order.
    pub sequences: Vec<usize>,
    /// `[token][moe layer]` the chosen experts.
    pub tokens: Vec<Vec<Vec<u32>>>,
}

/// How one MoE layer's experts were used over a trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerUsage {
    /// The model's layer index.
    pub layer: usize,
    /// Times each expert was chosen, by expert id.
    pub counts: Vec<u64>,
    /// Experts chosen at least once.
    pub distinct: usize,
    /// Fraction of all choices that went to the five most chosen experts.
    pub top5_share: f64,
    /// Shannon entropy of the choice distribution divided by `ln(num_experts)`: 1 is uniform
    /// use of every expert, 0 is one expert taking every choice.
    pub entropy: f64,
}

impl RoutingTrace {
    /// An empty trace for a model with these MoE layers and expert sizes (`[layer][expert]`).
    pub fn new(model: &str, layers: Vec<usize>, expert_bytes: Vec<Vec<u64>>) -> Self {
        RoutingTrace {
            format: FORMAT.into(),
            version: VERSION,
            model: model.into(),
            num_experts: expert_bytes.first().map_or(0, Vec::len),
            layers,
            expert_bytes,
            sequences: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Reads a trace from its JSON text, checking that its fields agree.
    pub fn from_json(text: &str) -> Result<Self, TraceError> {
        let t: RoutingTrace = serde_json::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    /// The trace as JSON text (one line).
    pub fn to_json(&self) -> String {
        // OK because every field is a plain number, string or list.
        serde_json::to_string(self).expect("a trace serializes")
    }

    /// Checks the format tag and that every token names a valid expert of every layer.
    pub fn validate(&self) -> Result<(), TraceError> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(TraceError::Format {
                format: self.format.clone(),
                version: self.version,
            });
        }
        let bad = |m: String| Err(TraceError::Inconsistent(m));
        let n_layers = self.layers.len();
        if n_layers == 0 || self.num_experts == 0 {
            return bad("no MoE layers or no experts".into());
        }
        if self.expert_bytes.len() != n_layers
            || self
                .expert_bytes
                .iter()
                .any(|b| b.len() != self.num_experts)
        {
            return bad(format!(
                "expert_bytes must be {n_layers} lists of {} sizes",
                self.num_experts
            ));
        }
        if self.sequences.iter().sum::<usize>() != self.tokens.len() {
            return bad(format!(
                "sequences sum to {} but there are {} tokens",
                self.sequences.iter().sum::<usize>(),
                self.tokens.len()
            ));
        }
        for (t, tok) in self.tokens.iter().enumerate() {
            if tok.len() != n_layers {
                return bad(format!(
                    "token {t} has {} layers, expected {n_layers}",
                    tok.len()
                ));
            }
            for (i, experts) in tok.iter().enumerate() {
                if let Some(e) = experts.iter().find(|&&e| e as usize >= self.num_experts) {
                    return bad(format!(
                        "token {t}, layer {}: expert {e} of {}",
                        self.layers[i], self.num_experts
                    ));
                }
            }
        }
        Ok(())
    }

    /// Appends one prompt's tokens (`[token][moe layer]` chosen experts).
    pub fn push_sequence(&mut self, tokens: Vec<Vec<Vec<u32>>>) {
        self.sequences.push(tokens.len());
        self.tokens.extend(tokens);
    }

    /// Expert choices in the trace (tokens × layers × experts per token).
    pub fn accesses(&self) -> usize {
        self.tokens.iter().flatten().map(Vec::len).sum()
    }

    /// Bytes of all routed experts of all MoE layers: what holding every one resident takes.
    pub fn total_expert_bytes(&self) -> u64 {
        self.expert_bytes.iter().flatten().sum()
    }

    /// Per MoE layer, how its experts were used.
    pub fn usage(&self) -> Vec<LayerUsage> {
        let e = self.num_experts;
        self.layers
            .iter()
            .enumerate()
            .map(|(i, &layer)| {
                let mut counts = vec![0u64; e];
                for tok in &self.tokens {
                    for &x in &tok[i] {
                        counts[x as usize] += 1;
                    }
                }
                let total: u64 = counts.iter().sum();
                let mut sorted = counts.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let top5: u64 = sorted.iter().take(5).sum();
                // H = -Σ p ln p over the experts used; ln(E) is the uniform maximum.
                let entropy = if total == 0 || e < 2 {
                    0.0
                } else {
                    let h: f64 = counts
                        .iter()
                        .filter(|&&c| c > 0)
                        .map(|&c| {
                            let p = c as f64 / total as f64;
                            -p * p.ln()
                        })
                        .sum();
                    h / (e as f64).ln()
                };
                LayerUsage {
                    layer,
                    distinct: counts.iter().filter(|&&c| c > 0).count(),
                    top5_share: if total == 0 {
                        0.0
                    } else {
                        top5 as f64 / total as f64
                    },
                    entropy,
                    counts,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RoutingTrace {
        let mut t = RoutingTrace::new("m", vec![1, 3], vec![vec![10; 4], vec![20; 4]]);
        t.push_sequence(vec![
            vec![vec![0, 1], vec![2, 3]],
            vec![vec![0, 2], vec![2, 3]],
        ]);
        t
    }

    #[test]
    fn usage_counts_and_shares() {
        let u = small().usage();
        assert_eq!(u[0].layer, 1);
        assert_eq!(u[0].counts, vec![2, 1, 1, 0]);
        assert_eq!(u[0].distinct, 3);
        assert_eq!(u[0].top5_share, 1.0);
        // p = (1/2, 1/4, 1/4): H = 1.5 ln 2; ln 4 = 2 ln 2 → 0.75.
        assert!((u[0].entropy - 0.75).abs() < 1e-12);
        // Layer 3: experts 2 and 3 twice each: H = ln 2 → 0.5.
        assert_eq!(u[1].counts, vec![0, 0, 2, 2]);
        assert!((u[1].entropy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn json_round_trip_and_checks() {
        let t = small();
        assert_eq!(RoutingTrace::from_json(&t.to_json()).unwrap(), t);
        let mut bad = t.clone();
        bad.tokens[1][0][0] = 4;
        let err = RoutingTrace::from_json(&bad.to_json()).unwrap_err();
        assert!(err.to_string().contains("expert 4 of 4"), "{err}");
        let mut bad = t.clone();
        bad.sequences = vec![3];
        assert!(RoutingTrace::from_json(&bad.to_json()).is_err());
        let mut bad = t;
        bad.format = "other".into();
        assert!(matches!(
            RoutingTrace::from_json(&bad.to_json()),
            Err(TraceError::Format { .. })
        ));
        assert!(RoutingTrace::from_json("[1, 2]").is_err());
    }
}
