//! Feed-forward blocks: the SwiGLU MLP `down(silu(gate(x)) * up(x))`, the MoE routers and the
//! MoE block (routed experts plus shared experts).
//!
//! Routers (logits `W_g x` in f32, `E` experts, `k` chosen):
//! - Mixtral and Qwen3-MoE: `softmax` over all `E` logits, `greedy` top-k, weights divided by
//!   their sum (Mixtral always, Qwen3-MoE when `norm_topk_prob`), scaling 1 — the rule below
//!   with those settings (transformers 5.24 `MixtralTopKRouter`, `Qwen3MoeTopKRouter`: softmax,
//!   topk, then `/= sum`).
//! - scores: `softmax(logits)` (V2) or `sigmoid(logits)` (V3); choice values = scores, plus
//!   `e_score_correction_bias` when the checkpoint has it (V3; the bias only steers the choice).
//! - `greedy`: top-k of the choice values.
//! - `group_limited_greedy` (V2): experts split into `n_group` equal groups, group score = the
//!   MAX choice value in the group; keep the best `topk_group` groups, top-k inside them.
//! - `noaux_tc` (V3): the same with group score = the SUM of the two best choice values.
//! - weights = the unbiased scores of the chosen experts, divided by their sum (+1e-20) when
//!   `norm_topk_prob`, times `routed_scaling_factor`.
//!
//! MoE output = `Σ_e w_e · expert_e(x)` (experts in ascending id, as transformers adds them),
//! then `+ shared_experts(x)`. Only the chosen experts' weights are read.

use frugal_formats::config::{MoeConfig, ScoringFunc, TopkMethod};
use frugal_kernels::softmax;

use super::experts::{ExpertStore, RoutedExpert};
use super::fused_ffn::{run_mlps, FfnJob};
use super::linear::{load_f32_vec, Linear, Weights};
use crate::profile::{self, Phase};
use crate::ModelError;

/// One token's routing: `(expert, weight)` pairs sorted by expert id.
pub type Routing = Vec<(usize, f32)>;

/// A SwiGLU MLP.
#[derive(Debug)]
pub struct Mlp<'a> {
    gate: Linear<'a>,
    up: Linear<'a>,
    down: Linear<'a>,
}

/// Checkpoint names of an MLP's three projections.
#[derive(Clone, Copy, Debug)]
pub struct MlpNames {
    /// The gate (`silu` input).
    pub gate: &'static str,
    /// The up projection.
    pub up: &'static str,
    /// The down projection.
    pub down: &'static str,
}

impl MlpNames {
    /// `gate_proj`, `up_proj`, `down_proj` (Llama, Qwen, DeepSeek).
    pub const PROJ: MlpNames = MlpNames {
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    };
    /// Mixtral's experts: `w1` (gate), `w3` (up), `w2` (down).
    pub const W123: MlpNames = MlpNames {
        gate: "w1",
        up: "w3",
        down: "w2",
    };
}

impl<'a> Mlp<'a> {
    /// Load `prefix.{gate,up,down}_proj.weight` of width `inter`.
    pub fn load(
        src: &dyn Weights<'a>,
        prefix: &str,
        hidden: usize,
        inter: usize,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        Self::load_named(src, prefix, MlpNames::PROJ, hidden, inter, fp8_block)
    }

    /// Load `prefix.{names}.weight` of width `inter`.
    pub fn load_named(
        src: &dyn Weights<'a>,
        prefix: &str,
        names: MlpNames,
        hidden: usize,
        inter: usize,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let lin = |name: &str, rows, cols| {
            Linear::load(
                src,
                &format!("{prefix}.{name}.weight"),
                rows,
                cols,
                fp8_block,
            )
        };
        Ok(Mlp {
            gate: lin(names.gate, inter, hidden)?,
            up: lin(names.up, inter, hidden)?,
            down: lin(names.down, hidden, inter)?,
        })
    }

    /// The gate, up and down projections.
    pub(crate) fn projections(&self) -> [&Linear<'a>; 3] {
        [&self.gate, &self.up, &self.down]
    }

    /// The gate projection.
    pub(crate) fn gate(&self) -> &Linear<'a> {
        &self.gate
    }

    /// The up projection.
    pub(crate) fn up(&self) -> &Linear<'a> {
        &self.up
    }

    /// The down projection.
    pub(crate) fn down(&self) -> &Linear<'a> {
        &self.down
    }

    /// An MLP of these three projections.
    pub(crate) fn from_projections(gate: Linear<'a>, up: Linear<'a>, down: Linear<'a>) -> Self {
        Mlp { gate, up, down }
    }

    /// Bytes of the gate, up and down weights as stored.
    pub fn stored_bytes(&self) -> usize {
        self.gate.stored_bytes() + self.up.stored_bytes() + self.down.stored_bytes()
    }

    /// `[t, hidden]` → `[t, hidden]`.
    /// The gate and up products share one quantization of `x` and one parallel step
    /// (`super::fused_ffn`).
    pub fn forward(&self, x: &[f32], threads: usize) -> Vec<f32> {
        let job = FfnJob {
            mlp: self,
            rows: None,
        };
        run_mlps(&[job], x, threads, |ys| ys[0].to_vec())
    }
}

/// A DeepSeekMoE router: the gate weight and the selection rule.
#[derive(Debug)]
pub struct Router<'a> {
    weight: Linear<'a>,
    rule: Rule,
}

/// How a router turns logits into chosen experts and weights.
#[derive(Debug)]
struct Rule {
    bias: Option<Vec<f32>>,
    scoring: ScoringFunc,
    method: TopkMethod,
    n_group: usize,
    topk_group: usize,
    top_k: usize,
    norm_topk_prob: bool,
    scaling: f32,
}

/// Indices of the `k` largest values, best first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

impl<'a> Router<'a> {
    /// Load `prefix.gate.weight` (and `prefix.gate.e_score_correction_bias` when the config
    /// says so).
    pub fn load(
        src: &dyn Weights<'a>,
        prefix: &str,
        hidden: usize,
        moe: &MoeConfig,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let e = moe.num_experts;
        let r = &moe.router;
        let grouped = r.topk_method != TopkMethod::Greedy;
        if grouped
            && (r.n_group == 0
                || (e / r.n_group) * r.n_group != e
                || r.topk_group == 0
                || r.topk_group > r.n_group
                || moe.num_experts_per_tok > r.topk_group * (e / r.n_group))
        {
            return Err(ModelError::UnsupportedConfig {
                what: format!(
                    "{e} experts in {} groups keeping {} for top-{}",
                    r.n_group, r.topk_group, moe.num_experts_per_tok
                ),
            });
        }
        if moe.num_experts_per_tok == 0 || moe.num_experts_per_tok > e {
            return Err(ModelError::UnsupportedConfig {
                what: format!("top-{} of {e} experts", moe.num_experts_per_tok),
            });
        }
        let bias = if r.correction_bias {
            Some(load_f32_vec(
                src,
                &format!("{prefix}.gate.e_score_correction_bias"),
                &[e],
            )?)
        } else {
            None
        };
        Ok(Router {
            weight: Linear::load(src, &format!("{prefix}.gate.weight"), e, hidden, fp8_block)?,
            rule: Rule {
                bias,
                scoring: r.scoring,
                method: r.topk_method,
                n_group: r.n_group,
                topk_group: r.topk_group,
                top_k: moe.num_experts_per_tok,
                norm_topk_prob: r.norm_topk_prob,
                scaling: r.routed_scaling_factor,
            },
        })
    }

    /// For each of the `t` tokens of `x` (`[t, hidden]`), the chosen `(expert, weight)` pairs,
    /// sorted by expert id.
    pub fn route(&self, x: &[f32], threads: usize) -> Vec<Routing> {
        let e = self.weight.rows();
        let logits = self.weight.forward(x, threads);
        logits
            .chunks_exact(e)
            .map(|l| self.rule.route_one(l))
            .collect()
    }
}

impl Rule {
    fn route_one(&self, logits: &[f32]) -> Routing {
        let mut scores = logits.to_vec();
        match self.scoring {
            ScoringFunc::Softmax => softmax::softmax_inplace(&mut scores),
            ScoringFunc::Sigmoid => scores.iter_mut().for_each(|v| *v = softmax::sigmoid(*v)),
        }
        let mut choice = scores.clone();
        if let Some(b) = &self.bias {
            choice.iter_mut().zip(b).for_each(|(c, b)| *c += b);
        }
        if self.method != TopkMethod::Greedy {
            let per = choice.len() / self.n_group;
            let group_scores: Vec<f32> = choice
                .chunks_exact(per)
                .map(|g| match self.method {
                    TopkMethod::NoAuxTc => top_k(g, 2).iter().map(|&i| g[i]).sum(),
                    _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                })
                .collect();
            let keep = top_k(&group_scores, self.topk_group);
            for (gi, g) in choice.chunks_exact_mut(per).enumerate() {
                if !keep.contains(&gi) {
                    g.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                }
            }
        }
        let mut chosen: Vec<(usize, f32)> = top_k(&choice, self.top_k)
            .into_iter()
            .map(|i| (i, scores[i]))
            .collect();
        if self.norm_topk_prob {
            let sum: f32 = chosen.iter().map(|c| c.1).sum::<f32>() + 1e-20;
            chosen.iter_mut().for_each(|c| c.1 /= sum);
        }
        chosen.iter_mut().for_each(|c| c.1 *= self.scaling);
        chosen.sort_by_key(|c| c.0);
        chosen
    }
}

/// A DeepSeekMoE block: router, routed experts, shared experts.
#[derive(Debug)]
pub struct Moe<'a> {
    /// The decoder layer this block belongs to (how an [`ExpertStore`] names its experts).
    layer: usize,
    router: Router<'a>,
    experts: Vec<Mlp<'a>>,
    shared: Option<Mlp<'a>>,
}

impl<'a> Moe<'a> {
    /// Load `prefix.{gate,experts.E,shared_experts}` (`prefix` = `model.layers.L.mlp`) of
    /// decoder layer `layer`.
    pub fn load(
        src: &dyn Weights<'a>,
        layer: usize,
        prefix: &str,
        hidden: usize,
        moe: &MoeConfig,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        Self::load_named(src, layer, prefix, MlpNames::PROJ, hidden, moe, fp8_block)
    }

    /// [`Moe::load`] with the experts' projections named `expert_names` (Mixtral:
    /// `prefix` = `model.layers.L.block_sparse_moe`, [`MlpNames::W123`]).
    pub fn load_named(
        src: &dyn Weights<'a>,
        layer: usize,
        prefix: &str,
        expert_names: MlpNames,
        hidden: usize,
        moe: &MoeConfig,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let experts = (0..moe.num_experts)
            .map(|e| {
                Mlp::load_named(
                    src,
                    &format!("{prefix}.experts.{e}"),
                    expert_names,
                    hidden,
                    moe.expert_intermediate_size,
                    fp8_block,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = if moe.num_shared_experts > 0 {
            Some(Mlp::load(
                src,
                &format!("{prefix}.shared_experts"),
                hidden,
                moe.shared_intermediate_size(),
                fp8_block,
            )?)
        } else {
            None
        };
        Ok(Moe {
            layer,
            router: Router::load(src, prefix, hidden, moe, fp8_block)?,
            experts,
            shared,
        })
    }

    /// Each routed expert's stored bytes (gate + up + down), by expert id; shared experts
    /// and the router are not included (they are read for every token).
    pub fn expert_bytes(&self) -> Vec<usize> {
        self.experts.iter().map(Mlp::stored_bytes).collect()
    }

    /// The routed experts, with where their bytes are.
    pub fn routed_experts(&self) -> impl Iterator<Item = RoutedExpert<'a>> + '_ {
        self.experts
            .iter()
            .enumerate()
            .map(|(expert, mlp)| RoutedExpert {
                layer: self.layer,
                expert,
                parts: mlp.expert_bytes(),
            })
    }

    /// The router's choice for each row of `x` (`[t, hidden]`) without running the experts:
    /// how a store guesses which experts the next layer will want.
    pub fn route(&self, x: &[f32], threads: usize) -> Vec<Routing> {
        self.router.route(x, threads)
    }

    /// `[t, hidden]` → `[t, hidden]`, also returning each token's routing. With a `store`,
    /// routed experts' bytes come from it (see [`super::experts`]); otherwise from the map.
    pub fn forward(
        &self,
        x: &[f32],
        threads: usize,
        store: Option<&dyn ExpertStore>,
    ) -> (Vec<f32>, Vec<Routing>) {
        let routes = {
            let _span = profile::span(Phase::Router);
            self.router.route(x, threads)
        };
        let mut out = vec![0.0f32; x.len()];
        // The experts any token chose, ascending (the order transformers adds them in).
        let mut chosen: Vec<usize> = routes.iter().flatten().map(|c| c.0).collect();
        chosen.sort_unstable();
        chosen.dedup();
        match store {
            None => {
                let experts: Vec<(usize, &Mlp<'a>)> =
                    chosen.iter().map(|&e| (e, &self.experts[e])).collect();
                run_experts(
                    &experts,
                    self.shared.as_ref(),
                    &routes,
                    x,
                    &mut out,
                    threads,
                );
            }
            Some(store) => store.with_experts(self.layer, &chosen, &mut |bytes| {
                let rebased: Vec<Mlp<'_>> = chosen
                    .iter()
                    .zip(bytes)
                    .map(|(&e, b)| {
                        self.experts[e]
                            .rebased_as(b)
                            // A store handing back bytes of another length is a bug in it.
                            .expect("expert store returned bytes of the stored length")
                    })
                    .collect();
                let experts: Vec<(usize, &Mlp<'_>)> =
                    chosen.iter().copied().zip(&rebased).collect();
                run_experts(
                    &experts,
                    self.shared.as_ref(),
                    &routes,
                    x,
                    &mut out,
                    threads,
                );
            }),
        }
        (out, routes)
    }
}

/// Add `Σ_e w_e · expert_e(x_t)` into `out` for every token `t`, over the chosen `experts`
/// (`(id, weights)`, ascending id; `routes[t]` the token's `(expert, weight)` pairs), then
/// `shared(x_t)`: transformers' order of additions.
///
/// All experts (and the shared ones) run as one fused step (`super::fused_ffn`): `x`
/// quantized once, the gate/up products of every expert in one parallel step, the down
/// products in another. Tokens are grouped by expert, so each chosen expert's weights are
/// read once per call (a `gemm` over its tokens).
fn run_experts(
    experts: &[(usize, &Mlp<'_>)],
    shared: Option<&Mlp<'_>>,
    routes: &[Routing],
    x: &[f32],
    out: &mut [f32],
    threads: usize,
) {
    let t = routes.len();
    let h = out.len() / t.max(1);
    // Per chosen expert, its tokens and their weights (`users[k]` for `experts[k]`).
    let users: Vec<Vec<(usize, f32)>> = experts
        .iter()
        .map(|&(e, _)| {
            routes
                .iter()
                .enumerate()
                .filter_map(|(t, r)| r.iter().find(|c| c.0 == e).map(|c| (t, c.1)))
                .collect()
        })
        .collect();
    let rows: Vec<Vec<usize>> = users
        .iter()
        .map(|u| u.iter().map(|&(t, _)| t).collect())
        .collect();
    let mut jobs: Vec<FfnJob<'_, '_>> = experts
        .iter()
        .zip(&rows)
        .filter(|(_, r)| !r.is_empty())
        .map(|(&(_, mlp), r)| FfnJob {
            mlp,
            // An expert every token chose reads the shared quantized input.
            rows: (r.len() != t).then_some(&r[..]),
        })
        .collect();
    if let Some(mlp) = shared {
        jobs.push(FfnJob { mlp, rows: None });
    }
    run_mlps(&jobs, x, threads, |ys| {
        let mut ys = ys.iter();
        for u in users.iter().filter(|u| !u.is_empty()) {
            // OK because there is one output per job, and one job per non-empty `u`.
            let y = ys.next().expect("one output per expert");
            for (&(t, w), y) in u.iter().zip(y.chunks_exact(h)) {
                for (o, v) in out[t * h..(t + 1) * h].iter_mut().zip(y) {
                    *o += v * w;
                }
            }
        }
        if shared.is_some() {
            // OK because the shared experts' job was pushed last.
            let s = ys.next().expect("shared experts' output");
            out.iter_mut().zip(s.iter()).for_each(|(o, v)| *o += v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: TopkMethod, scoring: ScoringFunc, bias: Option<Vec<f32>>) -> Rule {
        Rule {
            bias,
            scoring,
            method,
            n_group: 2,
            topk_group: 1,
            top_k: 2,
            norm_topk_prob: false,
            scaling: 1.0,
        }
    }

    fn ids(r: &Routing) -> Vec<usize> {
        r.iter().map(|c| c.0).collect()
    }

    #[test]
    fn group_score_is_max_for_v2_and_top2_sum_for_v3() {
        // Group 0 = experts 0..3 holds the single best expert; group 1 = 3..6 has two strong.
        let logits = [3.0f32, -5.0, -5.0, 2.5, 2.5, -5.0];
        let v2 = rule(TopkMethod::GroupLimitedGreedy, ScoringFunc::Softmax, None);
        // max: group 0 (3.0) beats group 1 (2.5); only experts 0..3 are eligible.
        assert_eq!(ids(&v2.route_one(&logits)), [0, 1]);
        let v3 = rule(TopkMethod::NoAuxTc, ScoringFunc::Sigmoid, None);
        // sum of top 2: group 1 (2 × σ(2.5)) beats group 0 (σ(3) + σ(-5)).
        assert_eq!(ids(&v3.route_one(&logits)), [3, 4]);
        let greedy = rule(TopkMethod::Greedy, ScoringFunc::Softmax, None);
        assert_eq!(ids(&greedy.route_one(&logits)), [0, 3]);
    }

    #[test]
    fn bias_steers_choice_but_not_weights() {
        let logits = [0.0f32, 1.0, -1.0, 2.0];
        let mut r = rule(
            TopkMethod::NoAuxTc,
            ScoringFunc::Sigmoid,
            Some(vec![5.0, 0.0, 5.0, 0.0]),
        );
        r.n_group = 1;
        let plain = r.route_one(&logits);
        assert_eq!(ids(&plain), [0, 2]);
        // Weights are the unbiased sigmoid scores.
        assert_eq!(plain[0].1, softmax::sigmoid(0.0));
        assert_eq!(plain[1].1, softmax::sigmoid(-1.0));
        r.norm_topk_prob = true;
        r.scaling = 2.5;
        let normed = r.route_one(&logits);
        let sum = softmax::sigmoid(0.0) + softmax::sigmoid(-1.0);
        assert!((normed[0].1 - 2.5 * softmax::sigmoid(0.0) / sum).abs() < 1e-6);
        assert!((normed.iter().map(|c| c.1).sum::<f32>() - 2.5).abs() < 1e-5);
    }
}
