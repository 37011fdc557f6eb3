//! Which type each tensor gets when a model is quantized: llama.cpp's presets (`Q4_K_M`,
//! `Q8_0`, ...) and its per-tensor choices (`llama_tensor_get_type` in `src/llama-quant.cpp`,
//! llama.cpp commit 0c1e570), so that `frugal quantize` writes the same type mix, and so the
//! same file sizes, as `llama-quantize` without an importance matrix.
//!
//! The rules, on GGUF (llama.cpp) tensor names:
//! - Only tensors of ≥ 2 dimensions whose name ends in `weight` are quantized; norms
//!   (`_norm.weight`), MoE routers (`ffn_gate_inp`) and a few small special tensors keep their
//!   type.
//! - `output.weight` (and `token_embd.weight` when there is no separate output) gets Q6_K in
//!   the k-quant presets (Q8_0 when its rows are not whole blocks of the preset's type).
//! - The `_M`/`_L` presets give more bits to some `attn_v` (and `attn_qkv`, `attn_kv_b`) and
//!   `ffn_down` tensors: Q4_K_M uses Q6_K for the first and last eighth of them and every third
//!   one in between (`use_more_bits`), counted in llama.cpp's tensor order (non-layer tensors
//!   first, then by layer, names sorted within a layer); 8-expert models (Mixtral) get Q8_0
//!   `attn_v`/`attn_k`, 70B Llama/Qwen2 Q5_K `attn_v`.
//! - A row length that is not a multiple of the type's block falls back: Q4_K → Q5_0,
//!   Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, IQ4_XS → IQ4_NL, and to F16 if that still does
//!   not fit (rows not a multiple of 32).
//!
//! Presets that need an importance matrix (IQ1/IQ2/IQ3, Q2_K_S) or types without a quantizer
//! here (TQ, MXFP4) are not offered.

use frugal_formats::gguf::Metadata;
use frugal_formats::DType;

/// A llama.cpp file type (`llama_ftype`): the preset `llama-quantize` is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, missing_docs)] // llama.cpp's names.
pub enum Preset {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// (preset, name, `general.file_type` id from llama.h, default tensor type).
const PRESETS: &[(Preset, &str, u32, DType)] = &[
    (Preset::F32, "F32", 0, DType::F32),
    (Preset::F16, "F16", 1, DType::F16),
    (Preset::BF16, "BF16", 32, DType::BF16),
    (Preset::Q4_0, "Q4_0", 2, DType::Q4_0),
    (Preset::Q4_1, "Q4_1", 3, DType::Q4_1),
    (Preset::Q5_0, "Q5_0", 8, DType::Q5_0),
    (Preset::Q5_1, "Q5_1", 9, DType::Q5_1),
    (Preset::Q8_0, "Q8_0", 7, DType::Q8_0),
    (Preset::Q2_K, "Q2_K", 10, DType::Q2K),
    (Preset::Q3_K_S, "Q3_K_S", 11, DType::Q3K),
    (Preset::Q3_K_M, "Q3_K_M", 12, DType::Q3K),
    (Preset::Q3_K_L, "Q3_K_L", 13, DType::Q3K),
    (Preset::Q4_K_S, "Q4_K_S", 14, DType::Q4K),
    (Preset::Q4_K_M, "Q4_K_M", 15, DType::Q4K),
    (Preset::Q5_K_S, "Q5_K_S", 16, DType::Q5K),
    (Preset::Q5_K_M, "Q5_K_M", 17, DType::Q5K),
    (Preset::Q6_K, "Q6_K", 18, DType::Q6K),
    (Preset::IQ4_NL, "IQ4_NL", 25, DType::IQ4NL),
    (Preset::IQ4_XS, "IQ4_XS", 30, DType::IQ4XS),
];

impl Preset {
    fn row(self) -> &'static (Preset, &'static str, u32, DType) {
        // OK: every variant has a row (checked by a test).
        PRESETS
            .iter()
            .find(|r| r.0 == self)
            .expect("every preset has a row")
    }

    /// Every preset.
    pub fn all() -> impl Iterator<Item = Preset> {
        PRESETS.iter().map(|r| r.0)
    }

    /// llama.cpp's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The preset named `name`, any case (`q4_k_m`); `Q4_K` means `Q4_K_M` and `Q3_K`
    /// `Q3_K_M`, as `llama-quantize` reads them.
    pub fn from_name(name: &str) -> Option<Preset> {
        let up = name.to_ascii_uppercase();
        let up = match up.as_str() {
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "Q3_K" => "Q3_K_M",
            other => other,
        };
        PRESETS.iter().find(|r| r.1 == up).map(|r| r.0)
    }

    /// GGUF's `general.file_type` value (llama.h's `LLAMA_FTYPE_*`).
    pub fn file_type(self) -> u32 {
        self.row().2
    }

    /// The type of tensors no rule singles out.
    pub fn default_type(self) -> DType {
        self.row().3
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The model facts the rules look at (llama.cpp's `hparams` and model type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanModel {
    /// `general.architecture` (`llama`, `deepseek2`, ...).
    pub arch: String,
    /// `{arch}.block_count` (all layers, MTP layers included).
    pub n_layer: usize,
    /// Attention heads of the first layer.
    pub n_head: usize,
    /// Key/value heads of the first layer.
    pub n_head_kv: usize,
    /// Routed experts (0 for dense models).
    pub n_expert: usize,
}

impl PlanModel {
    /// Reads the facts from GGUF metadata. Errors name a missing key.
    pub fn from_gguf(meta: &Metadata) -> Result<PlanModel, PlanError> {
        let arch = meta
            .get_str("general.architecture")
            .ok_or_else(|| PlanError::MissingKey("general.architecture".into()))?
            .to_owned();
        let first = |key: &str| -> Option<usize> {
            let k = format!("{arch}.{key}");
            meta.get_u64(&k)
                .or_else(|| {
                    meta.get_i64_array(&k)
                        .and_then(|a| a.first().map(|&v| v.max(0) as u64))
                })
                .map(|v| v as usize)
        };
        let n_layer = first("block_count")
            .ok_or_else(|| PlanError::MissingKey(format!("{arch}.block_count")))?;
        let n_head = first("attention.head_count").unwrap_or(0);
        let n_head_kv = first("attention.head_count_kv").unwrap_or(n_head);
        let n_expert = first("expert_count").unwrap_or(0);
        Ok(PlanModel {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
        })
    }

    /// Heads sharing one key/value head (llama.cpp's `n_gqa()`; 0 when unknown).
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B` for the families frugal runs: 80-layer Llama with grouped
    /// K/V heads (Llama 2/3 70B) and 80-layer Qwen2 (Qwen2 72B).
    fn is_70b(&self) -> bool {
        self.n_layer == 80
            && match self.arch.as_str() {
                "llama" => self.n_head != self.n_head_kv,
                "qwen2" => true,
                _ => false,
            }
    }
}

/// One input tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanTensor {
    /// GGUF name.
    pub name: String,
    /// GGUF dimensions, innermost first.
    pub ne: Vec<u64>,
    /// Its type in the input.
    pub dtype: DType,
}

/// One output tensor: its type after quantization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The input tensor.
    pub tensor: PlanTensor,
    /// The type it gets (its own type when it is not quantized).
    pub to: DType,
    /// Whether its row length forced a fallback type.
    pub fallback: bool,
}

/// Errors of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A GGUF key the plan needs.
    #[error("GGUF metadata has no '{0}'")]
    MissingKey(String),
    /// An expert model's FFN tensor whose name has no `blk.N.` layer.
    #[error("tensor '{0}': cannot tell its layer (expected 'blk.N.')")]
    NoLayer(String),
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside `blk.N.` first, then by
/// layer number, names sorted bytewise within each group.
pub fn llama_cpp_order(a: &str, b: &str) -> std::cmp::Ordering {
    (layer_of(a).map_or(-1, |l| l as i64), a).cmp(&(layer_of(b).map_or(-1, |l| l as i64), b))
}

/// N of a `blk.N.` name.
fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let digits = rest.find('.').map_or(rest, |i| &rest[..i]);
    digits.parse().ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    match name {
        "output.weight" => return Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => return TokenEmbd,
        _ => {}
    }
    for (pat, c) in [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(pat) {
            return c;
        }
    }
    Other
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// ggml's `ggml_n_dims`: dimensions up to the last one above 1 (at least 1).
fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// llama.cpp's `tensor_allows_quantization` for the default parameters.
fn allows_quantization(name: &str, ne: &[u64]) -> bool {
    if n_dims(ne) < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    !KEEP.iter().any(|k| name.contains(k))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// llama.cpp's fallback (`tensor_type_fallback`) for rows of `ncols` that are not whole
/// blocks of `ty`: the type to use, and whether it differs from `ty`.
#[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
pub fn fallback(ty: DType, ncols: u64) -> (DType, bool) {
    if ncols % ty.block_size() as u64 == 0 {
        return (ty, false);
    }
    let to = match ty {
        DType::IQ4XS => DType::IQ4NL,
        DType::Q2K | DType::Q3K => DType::Q4_0,
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        other => other,
    };
    if ncols % to.block_size() as u64 != 0 {
        (DType::F16, true)
    } else {
        (to, true)
    }
}

/// Counters llama.cpp keeps while it walks the tensors.
struct State<'m> {
    model: &'m PlanModel,
    preset: Preset,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    tied_embeddings: bool,
}

impl State<'_> {
    /// (layer, layer count) of an FFN tensor: parsed from the name for expert models (their
    /// tensors do not come one per layer), else the running count.
    fn layer_info(&self, counter: usize, name: &str) -> Result<(usize, usize), PlanError> {
        if self.model.n_expert.max(1) > 1 {
            let l = layer_of(name).ok_or_else(|| PlanError::NoLayer(name.to_owned()))?;
            if l >= self.model.n_layer {
                return Err(PlanError::NoLayer(name.to_owned()));
            }
            return Ok((l, self.model.n_layer));
        }
        Ok((counter, self.model.n_layer))
    }

    /// `llama_tensor_get_type_impl` for the presets offered here.
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
    fn choose(&mut self, mut ty: DType, t: &PlanTensor, cat: Category) -> Result<DType, PlanError> {
        use Preset as P;
        let p = self.preset;
        let m = self.model;
        let falcon = m.arch == "falcon";
        let more_bits = |i: usize, n: usize| {
            i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
        };
        if cat == Category::Output || (self.tied_embeddings && cat == Category::TokenEmbd) {
            let nx = t.ne[0];
            if falcon || nx % ty.block_size() as u64 != 0 {
                ty = DType::Q8_0;
            } else if ty != DType::Q8_0 {
                ty = DType::Q6K;
            }
        } else if cat == Category::TokenEmbd {
            // Only the IQ1/IQ2/IQ3/TQ presets (not offered) change token embeddings.
        } else if is_attn_v(cat) {
            match p {
                P::Q2_K => {
                    ty = if m.n_gqa() >= 4 {
                        DType::Q4K
                    } else {
                        DType::Q3K
                    }
                }
                P::Q3_K_M => {
                    ty = if self.i_attention_wv < 2 {
                        DType::Q5K
                    } else {
                        DType::Q4K
                    }
                }
                P::Q3_K_L => ty = DType::Q5K,
                P::IQ4_NL | P::IQ4_XS if m.n_gqa() >= 4 => ty = DType::Q5K,
                P::Q4_K_M | P::Q5_K_M if more_bits(self.i_attention_wv, self.n_attention_wv) => {
                    ty = DType::Q6K
                }
                P::Q4_K_S if self.i_attention_wv < 4 => ty = DType::Q5K,
                _ => {}
            }
            if m.is_70b() && matches!(ty, DType::Q3K | DType::Q4K) {
                ty = DType::Q5K;
            }
            if m.n_expert == 8 {
                ty = DType::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if m.n_expert == 8 {
                ty = DType::Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only the IQ3 presets (not offered) change attn_q.
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, &t.name)?;
            match p {
                P::Q2_K => ty = DType::Q3K,
                P::Q3_K_M => {
                    ty = if i < n / 16 {
                        DType::Q5K
                    } else if !falcon || more_bits(i, n) {
                        DType::Q4K
                    } else {
                        DType::Q3K
                    }
                }
                P::Q3_K_L => ty = if falcon { DType::Q4K } else { DType::Q5K },
                P::Q4_K_M => {
                    if falcon {
                        ty = if i < n / 16 {
                            DType::Q6K
                        } else if more_bits(i, n) {
                            DType::Q5K
                        } else {
                            DType::Q4K
                        };
                    } else if more_bits(i, n) {
                        ty = DType::Q6K;
                    }
                }
                P::IQ4_NL | P::IQ4_XS if i < n / 8 => ty = DType::Q5K,
                P::Q5_K_M if more_bits(i, n) => ty = DType::Q6K,
                P::Q4_K_S if !falcon && i < n / 8 => ty = DType::Q5K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if !falcon {
                if m.n_expert == 8 {
                    if matches!(
                        p,
                        P::Q2_K
                            | P::Q3_K_S
                            | P::Q3_K_M
                            | P::IQ4_NL
                            | P::Q4_K_S
                            | P::Q4_K_M
                            | P::IQ4_XS
                    ) {
                        ty = DType::Q5K;
                    }
                } else {
                    match p {
                        P::Q2_K => ty = DType::Q3K,
                        P::Q3_K_M => ty = DType::Q4K,
                        P::Q3_K_L => ty = DType::Q5K,
                        _ => {}
                    }
                }
            } else if p == P::Q3_K_L {
                ty = DType::Q4K;
            }
        } else if cat == Category::AttnQkv {
            // Unreachable: attn_qkv is handled with attn_v above (as in llama.cpp).
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, &t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, &t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(ty)
    }
}

/// The type of every tensor for `preset`, in llama.cpp's output order (see
/// [`llama_cpp_order`]). Errors only for expert models whose FFN tensor names lack a layer.
pub fn plan(
    preset: Preset,
    model: &PlanModel,
    tensors: &[PlanTensor],
) -> Result<Vec<Planned>, PlanError> {
    let mut order: Vec<&PlanTensor> = tensors.iter().collect();
    order.sort_by(|a, b| llama_cpp_order(&a.name, &b.name));
    let mut st = State {
        model,
        preset,
        n_attention_wv: order
            .iter()
            .filter(|t| is_attn_v(category(&t.name)))
            .count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        tied_embeddings: !order.iter().any(|t| category(&t.name) == Category::Output),
    };
    let default = preset.default_type();
    let mut out = Vec::with_capacity(order.len());
    for t in order {
        let (to, fell_back) = if !allows_quantization(&t.name, &t.ne) {
            (t.dtype, false)
        } else if !default.is_quantized() {
            (default, false)
        } else {
            let ty = st.choose(default, t, category(&t.name))?;
            fallback(ty, t.ne[0])
        };
        out.push(Planned {
            tensor: t.clone(),
            to,
            fallback: fell_back,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, ne: &[u64]) -> PlanTensor {
        PlanTensor {
            name: name.into(),
            ne: ne.to_vec(),
            dtype: DType::F32,
        }
    }

    #[test]
    fn presets_round_trip_their_names() {
        for p in Preset::all() {
            assert_eq!(Preset::from_name(&p.name().to_lowercase()), Some(p));
        }
        assert_eq!(Preset::from_name("q4_k"), Some(Preset::Q4_K_M));
        assert_eq!(Preset::from_name("q9"), None);
    }

    #[test]
    fn order_is_llama_cpps() {
        let mut names = vec![
            "blk.10.a",
            "output.weight",
            "blk.2.b",
            "blk.2.a",
            "token_embd.weight",
        ];
        names.sort_by(|a, b| llama_cpp_order(a, b));
        assert_eq!(
            names,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.a",
                "blk.2.b",
                "blk.10.a"
            ]
        );
    }

    #[test]
    fn q4_k_m_on_a_wide_dense_model() {
        // 8 layers of 256-wide weights: attn_v/ffn_down get Q6_K at layers 0, 3, 6, 7 (first and
        // last eighth, and i with (i − n/8) % 3 == 2), output Q6_K, the rest Q4_K.
        let m = PlanModel {
            arch: "llama".into(),
            n_layer: 8,
            n_head: 8,
            n_head_kv: 8,
            n_expert: 0,
        };
        let mut ts = vec![
            t("token_embd.weight", &[256, 1000]),
            t("output.weight", &[256, 1000]),
        ];
        for l in 0..8 {
            for n in ["attn_v", "ffn_down", "attn_q", "attn_norm"] {
                let ne: &[u64] = if n == "attn_norm" {
                    &[256]
                } else {
                    &[256, 256]
                };
                ts.push(t(&format!("blk.{l}.{n}.weight"), ne));
            }
        }
        let p = plan(Preset::Q4_K_M, &m, &ts).unwrap();
        let ty = |name: &str| p.iter().find(|x| x.tensor.name == name).unwrap().to;
        assert_eq!(ty("output.weight"), DType::Q6K);
        assert_eq!(ty("token_embd.weight"), DType::Q4K);
        assert_eq!(ty("blk.3.attn_norm.weight"), DType::F32);
        let six: Vec<usize> = (0..8)
            .filter(|l| ty(&format!("blk.{l}.attn_v.weight")) == DType::Q6K)
            .collect();
        assert_eq!(six, [0, 3, 6, 7]);
        let six: Vec<usize> = (0..8)
            .filter(|l| ty(&format!("blk.{l}.ffn_down.weight")) == DType::Q6K)
            .collect();
        assert_eq!(six, [0, 3, 6, 7]);
        assert_eq!(ty("blk.5.attn_q.weight"), DType::Q4K);
        // Rows of 64: k-quants fall back, 48 → F16.
        assert_eq!(fallback(DType::Q4K, 64), (DType::Q5_0, true));
        assert_eq!(fallback(DType::Q6K, 48), (DType::F16, true));
        assert_eq!(fallback(DType::Q8_0, 64), (DType::Q8_0, false));
    }
}
