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

use std::cell::RefCell;

use frugal_formats::config::{MoeConfig, ScoringFunc, TopkMethod};
use frugal_kernels::softmax;
use smallvec::SmallVec;

use super::experts::{ExpertStore, RoutedExpert};
use super::fused_ffn::{run_mlps, FfnJob};
use super::linear::{load_f32_vec, Linear, Weights};
use super::with_local;
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
        let name = |n: &str| format!("{prefix}.{n}.weight");
        let (gate, up) = Linear::load_pair(
            src,
            (&name(names.gate), &name(names.up)),
            inter,
            hidden,
            fp8_block,
        )?;
        let down = Linear::load(src, &name(names.down), hidden, inter, fp8_block)?;
        Ok(Mlp { gate, up, down })
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

    /// `[t, hidden]` → `out` `[t, hidden]`.
    /// The gate and up products share one quantization of `x` and one parallel step
    /// (`super::fused_ffn`).
    pub fn forward(&self, x: &[f32], threads: usize, out: &mut [f32]) {
        let job = FfnJob {
            mlp: self,
            rows: None,
        };
        run_mlps(&[job], x, threads, |ys| out.copy_from_slice(ys[0]))
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

/// Into `idx`: the indices of the `k` largest values, best first (ties: lower index first).
/// The order is total, so the unstable (allocation-free) sort gives the one answer.
fn top_k(values: &[f32], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend(0..values.len());
    idx.sort_unstable_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
}

/// A router's buffers for one token (reused from token to token and call to call).
#[derive(Debug, Default)]
struct RouteScratch {
    scores: Vec<f32>,
    choice: Vec<f32>,
    group_scores: Vec<f32>,
    idx: Vec<usize>,
    keep: Vec<usize>,
}

/// The MoE block's buffers, kept per thread (see [`super::with_local`]).
#[derive(Debug, Default)]
struct MoeScratch {
    /// `[t, experts]` router logits.
    logits: Vec<f32>,
    route: RouteScratch,
    /// `[t, top_k]`: each token's `(expert, weight)` pairs by expert id.
    routes: Vec<(usize, f32)>,
    /// The experts any token chose, ascending.
    chosen: Vec<usize>,
    /// Per chosen expert, its tokens with their weights.
    users: Users,
}

thread_local! {
    static MOE: RefCell<MoeScratch> = RefCell::new(MoeScratch::default());
}

/// Frees this thread's [`MOE`] (see [`super::release_scratch`]).
pub(super) fn release_scratch() {
    super::release_local(&MOE);
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
        let (mut logits, mut s, mut routes) = (Vec::new(), RouteScratch::default(), Vec::new());
        self.route_into(x, threads, &mut logits, &mut s, &mut routes);
        routes
            .chunks_exact(self.rule.top_k)
            .map(<[_]>::to_vec)
            .collect()
    }

    /// [`Router::route`] into `routes` (`[t, top_k]` pairs, each token's by expert id),
    /// with `logits` and `s` as buffers.
    fn route_into(
        &self,
        x: &[f32],
        threads: usize,
        logits: &mut Vec<f32>,
        s: &mut RouteScratch,
        routes: &mut Vec<(usize, f32)>,
    ) {
        let e = self.weight.rows();
        logits.resize(x.len() / self.weight.cols() * e, 0.0);
        self.weight.forward_into(x, logits, threads);
        routes.clear();
        for l in logits.chunks_exact(e) {
            self.rule.route_one_into(l, s, routes);
        }
    }
}

impl Rule {
    /// One token's `(expert, weight)` pairs, by expert id.
    #[cfg(test)]
    fn route_one(&self, logits: &[f32]) -> Routing {
        let mut chosen = Vec::new();
        self.route_one_into(logits, &mut RouteScratch::default(), &mut chosen);
        chosen
    }

    /// Appends one token's `top_k` `(expert, weight)` pairs, by expert id, to `out`.
    fn route_one_into(&self, logits: &[f32], s: &mut RouteScratch, out: &mut Vec<(usize, f32)>) {
        let RouteScratch {
            scores,
            choice,
            group_scores,
            idx,
            keep,
        } = s;
        scores.clear();
        scores.extend_from_slice(logits);
        match self.scoring {
            ScoringFunc::Softmax => softmax::softmax_inplace(scores),
            ScoringFunc::Sigmoid => scores.iter_mut().for_each(|v| *v = softmax::sigmoid(*v)),
        }
        choice.clear();
        choice.extend_from_slice(scores);
        if let Some(b) = &self.bias {
            choice.iter_mut().zip(b).for_each(|(c, b)| *c += b);
        }
        if self.method != TopkMethod::Greedy {
            let per = choice.len() / self.n_group;
            group_scores.clear();
            for g in choice.chunks_exact(per) {
                group_scores.push(match self.method {
                    TopkMethod::NoAuxTc => {
                        top_k(g, 2, idx);
                        idx.iter().map(|&i| g[i]).sum()
                    }
                    _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                });
            }
            top_k(group_scores, self.topk_group, keep);
            for (gi, g) in choice.chunks_exact_mut(per).enumerate() {
                if !keep.contains(&gi) {
                    g.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                }
            }
        }
        top_k(choice, self.top_k, idx);
        let start = out.len();
        out.extend(idx.iter().map(|&i| (i, scores[i])));
        let chosen = &mut out[start..];
        if self.norm_topk_prob {
            let sum: f32 = chosen.iter().map(|c| c.1).sum::<f32>() + 1e-20;
            chosen.iter_mut().for_each(|c| c.1 /= sum);
        }
        chosen.iter_mut().for_each(|c| c.1 *= self.scaling);
        // Expert ids are distinct: the unstable sort has one answer.
        chosen.sort_unstable_by_key(|c| c.0);
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

    /// `x` (`[t, hidden]`) → `out` (`[t, hidden]`), appending each token's routing to
    /// `routes` when given (a trace). With a `store`, routed experts' bytes come from it (see
    /// [`super::experts`]); otherwise from the map. The routing and the grouping of tokens by
    /// expert live in this thread's scratch.
    pub fn forward(
        &self,
        x: &[f32],
        threads: usize,
        store: Option<&dyn ExpertStore>,
        out: &mut [f32],
        routes: Option<&mut Vec<Routing>>,
    ) {
        with_local(&MOE, |s| {
            let MoeScratch {
                logits,
                route,
                routes: chosen_pairs,
                chosen,
                users,
            } = s;
            {
                let _span = profile::span(Phase::Router);
                self.router
                    .route_into(x, threads, logits, route, chosen_pairs);
            }
            let k = self.router.rule.top_k;
            if let Some(r) = routes {
                r.extend(chosen_pairs.chunks_exact(k).map(<[_]>::to_vec));
            }
            let routes = Routes {
                pairs: chosen_pairs,
                top_k: k,
            };
            out.fill(0.0);
            // The experts any token chose, ascending (the order transformers adds them in).
            chosen.clear();
            chosen.extend(routes.pairs.iter().map(|c| c.0));
            chosen.sort_unstable();
            chosen.dedup();
            let mut run = |experts: &[(usize, &Mlp<'_>)]| {
                run_experts(
                    experts,
                    self.shared.as_ref(),
                    routes,
                    x,
                    out,
                    threads,
                    users,
                )
            };
            match store {
                None => {
                    let experts: Experts<'_, '_> =
                        chosen.iter().map(|&e| (e, &self.experts[e])).collect();
                    run(&experts);
                }
                Some(store) => store.with_experts(self.layer, chosen, &mut |bytes| {
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
                    let experts: Experts<'_, '_> = chosen.iter().copied().zip(&rebased).collect();
                    run(&experts);
                }),
            }
        })
    }
}

/// Chosen experts with their MLPs, ascending id (on the stack for a decode step's few).
type Experts<'e, 'w> = SmallVec<[(usize, &'e Mlp<'w>); 16]>;

/// Every token's routing, `[t, top_k]` `(expert, weight)` pairs, each token's by expert id.
#[derive(Clone, Copy, Debug)]
struct Routes<'r> {
    pairs: &'r [(usize, f32)],
    top_k: usize,
}

/// Per chosen expert, the tokens it runs on (see [`MoeScratch::users`]).
#[derive(Debug, Default)]
struct Users {
    /// `(token, weight)` of every chosen expert's tokens, one expert after another.
    pairs: Vec<(usize, f32)>,
    /// The same tokens alone (a fused job's rows).
    rows: Vec<usize>,
    /// `end[k]`: where expert `k`'s entries end.
    end: Vec<usize>,
}

/// Add `Σ_e w_e · expert_e(x_t)` into `out` for every token `t`, over the chosen `experts`
/// (`(id, weights)`, ascending id), then `shared(x_t)`: transformers' order of additions.
///
/// All experts (and the shared ones) run as one fused step (`super::fused_ffn`): `x`
/// quantized once, the gate/up products of every expert in one parallel step, the down
/// products in another. Tokens are grouped by expert (into `u`), so each chosen expert's
/// weights are read once per call (a `gemm` over its tokens).
fn run_experts(
    experts: &[(usize, &Mlp<'_>)],
    shared: Option<&Mlp<'_>>,
    routes: Routes<'_>,
    x: &[f32],
    out: &mut [f32],
    threads: usize,
    u: &mut Users,
) {
    let t = routes.pairs.len() / routes.top_k;
    let h = out.len() / t.max(1);
    u.pairs.clear();
    u.rows.clear();
    u.end.clear();
    for &(e, _) in experts {
        for (token, r) in routes.pairs.chunks_exact(routes.top_k).enumerate() {
            if let Some(c) = r.iter().find(|c| c.0 == e) {
                u.pairs.push((token, c.1));
                u.rows.push(token);
            }
        }
        u.end.push(u.pairs.len());
    }
    let u = &*u;
    let mut jobs: SmallVec<[FfnJob<'_, '_>; 16]> = SmallVec::new();
    let mut start = 0;
    for (&(_, mlp), &end) in experts.iter().zip(&u.end) {
        let r = &u.rows[start..end];
        start = end;
        if !r.is_empty() {
            jobs.push(FfnJob {
                mlp,
                // An expert every token chose reads the shared quantized input.
                rows: (r.len() != t).then_some(r),
            });
        }
    }
    if let Some(mlp) = shared {
        jobs.push(FfnJob { mlp, rows: None });
    }
    run_mlps(&jobs, x, threads, |ys| {
        let mut ys = ys.iter();
        let mut start = 0;
        for &end in &u.end {
            let users = &u.pairs[start..end];
            start = end;
            if users.is_empty() {
                continue;
            }
            // OK because there is one output per job, and one job per non-empty `users`.
            let y = ys.next().expect("one output per expert");
            for (&(t, w), y) in users.iter().zip(y.chunks_exact(h)) {
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
