//! GGUF weights under Hugging Face names, so every family loads a GGUF file with the same code
//! as a safetensors folder.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, names from gguf-py's `tensor_mapping.py`)
//! renames every tensor (`model.layers.L.self_attn.q_proj.weight` → `blk.L.attn_q.weight`) and
//! stacks each layer's routed experts into one 3-D tensor `blk.L.ffn_{gate,up,down}_exps`
//! (`[E, rows, cols]` row-major). [`GgufNames`] answers an HF name with the GGUF tensor it
//! became; one expert of a stacked tensor is its contiguous `1/E` byte slice (each expert is
//! whole rows of whole blocks, whatever the type), so nothing is copied.
//!
//! Re-layouts that are not renames, handled elsewhere:
//! - Llama/Mixtral `attn_q`/`attn_k` rows are permuted per head (rope pairs interleaved):
//!   the GQA block ropes adjacent pairs for them ([`crate::blocks::gqa::GqaLayout`]).
//! - Llama 3 rope scaling is the tensor `rope_freqs.weight` (frequency divisors), applied by
//!   [`crate::Model::load`].
//! - DeepSeek's `kv_b_proj` is stored split: `attn_k_b` (`[n_head, kv_lora_rank, qk_nope]`,
//!   each head's `W_UK` transposed) and `attn_v_b` (`[n_head, v_head_dim, kv_lora_rank]`).
//!   They are offered, flattened to 2-D, as `self_attn.k_b_proj` / `self_attn.v_b_proj`
//!   (names of ours, not Hugging Face's), which the MLA block uses when `kv_b_proj` (older
//!   converters' whole `attn_kv_b`) is absent.
//!
//! The mapping (`fixtures/gguf/make_gguf.py`'s `state_dict_from_gguf` is its inverse):
//!
//! | Hugging Face | GGUF |
//! |---|---|
//! | `model.embed_tokens` / `model.norm` / `lm_head` | `token_embd` / `output_norm` / `output` |
//! | `input_layernorm` / `post_attention_layernorm` | `attn_norm` / `ffn_norm` |
//! | `self_attn.{q,k,v,o}_proj` | `attn_{q,k,v,output}` |
//! | `self_attn.{q,k}_norm` | `attn_{q,k}_norm` |
//! | `self_attn.q_a_proj` / `q_a_layernorm` / `q_b_proj` | `attn_q_a` / `attn_q_a_norm` / `attn_q_b` |
//! | `self_attn.kv_a_proj_with_mqa` / `kv_a_layernorm` | `attn_kv_a_mqa` / `attn_kv_a_norm` |
//! | `self_attn.kv_b_proj` | `attn_kv_b` (older converters) |
//! | `self_attn.{k,v}_b_proj` (ours, 2-D) | `attn_{k,v}_b` (3-D) |
//! | `mlp.{gate,up,down}_proj` | `ffn_{gate,up,down}` |
//! | `mlp.gate`, `block_sparse_moe.gate` (router) | `ffn_gate_inp` |
//! | `mlp.gate.e_score_correction_bias` | `exp_probs_b.bias` |
//! | `mlp.shared_experts.{gate,up,down}_proj` | `ffn_{gate,up,down}_shexp` |
//! | `mlp.experts.E.{gate,up,down}_proj`, `block_sparse_moe.experts.E.{w1,w3,w2}` | `ffn_{gate,up,down}_exps`\[E\] |
//! | `mlp.experts.E.{gate,up}_proj` when merged | `ffn_gate_up_exps`\[E\], first / second half of its rows |

use frugal_formats::{TensorSource, TensorView};

use crate::blocks::linear::Weights;

/// A GGUF tensor source seen through Hugging Face names.
pub(crate) struct GgufNames<'a> {
    pub(crate) inner: &'a dyn TensorSource,
    /// Passed on to every quantized weight ([`Weights::exact_activations`]).
    pub(crate) exact_activations: bool,
    /// Keep owned copies of the matrices at load ([`Weights::repack`]: repacked Q4_K/Q6_K,
    /// other types copied into huge pages): all but the embedding (read by row) and, unless
    /// `repack_experts`, the routed experts.
    pub(crate) repack: bool,
    /// Repack routed experts too (not when an expert store will hand them out as file
    /// bytes: [`crate::LoadOptions::keep_experts_mapped`]).
    pub(crate) repack_experts: bool,
}

/// Where an HF name lives in a GGUF file: a tensor, or expert `E` of a stacked one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GgufLocation {
    pub(crate) name: String,
    pub(crate) expert: Option<usize>,
}

/// The GGUF location of the Hugging Face tensor `hf`, if it has one.
pub(crate) fn gguf_location(hf: &str) -> Option<GgufLocation> {
    let plain = |name: String| Some(GgufLocation { name, expert: None });
    match hf {
        "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
        "model.norm.weight" => return plain("output_norm.weight".into()),
        "lm_head.weight" => return plain("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if rest == "mlp.gate.e_score_correction_bias" {
        return plain(format!("blk.{layer}.exp_probs_b.bias"));
    }
    let (path, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let kind = match path {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "self_attn.q_a_proj" => "attn_q_a",
        "self_attn.q_a_layernorm" => "attn_q_a_norm",
        "self_attn.q_b_proj" => "attn_q_b",
        "self_attn.kv_a_proj_with_mqa" => "attn_kv_a_mqa",
        "self_attn.kv_a_layernorm" => "attn_kv_a_norm",
        // Older converters wrote `kv_b_proj` whole; the MLA block prefers it when present.
        "self_attn.kv_b_proj" => "attn_kv_b",
        "self_attn.k_b_proj" => "attn_k_b",
        "self_attn.v_b_proj" => "attn_v_b",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp",
        "mlp.shared_experts.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_experts.up_proj" => "ffn_up_shexp",
        "mlp.shared_experts.down_proj" => "ffn_down_shexp",
        _ => {
            // Routed experts: `{mlp,block_sparse_moe}.experts.E.<proj>`.
            let experts = path
                .strip_prefix("mlp.experts.")
                .or_else(|| path.strip_prefix("block_sparse_moe.experts."))?;
            let (e, proj) = experts.split_once('.')?;
            let kind = match proj {
                "gate_proj" | "w1" => "ffn_gate_exps",
                "up_proj" | "w3" => "ffn_up_exps",
                "down_proj" | "w2" => "ffn_down_exps",
                _ => return None,
            };
            return Some(GgufLocation {
                name: format!("blk.{layer}.{kind}.{suffix}"),
                expert: Some(e.parse().ok()?),
            });
        }
    };
    plain(format!("blk.{layer}.{kind}.{suffix}"))
}

impl<'a> Weights<'a> for GgufNames<'a> {
    fn exact_activations(&self) -> bool {
        self.exact_activations
    }

    fn repack(&self, name: &str) -> bool {
        self.repack
            && (self.repack_experts || !name.contains(".experts."))
            && !name.contains("embed_tokens")
    }

    fn release(&self, bytes: &[u8]) {
        self.inner.release(bytes);
    }

    fn populate(&self, bytes: &[u8]) {
        self.inner.populate(bytes);
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'a>> {
        let loc = gguf_location(name)?;
        // Some converters merge each layer's expert gate and up projections into one
        // `ffn_gate_up_exps` `[E, 2·n_ff, cols]`: per expert its n_ff gate rows, then its n_ff
        // up rows (llama.cpp's graph splits the product's first and second halves).
        let (mut t, merged_half) = match self.inner.tensor(&loc.name) {
            Some(t) => (t, None),
            None if loc.expert.is_some() => {
                let half = if loc.name.contains(".ffn_gate_exps.") {
                    0
                } else if loc.name.contains(".ffn_up_exps.") {
                    1
                } else {
                    return None;
                };
                let merged = loc
                    .name
                    .replace(".ffn_gate_exps.", ".ffn_gate_up_exps.")
                    .replace(".ffn_up_exps.", ".ffn_gate_up_exps.");
                (self.inner.tensor(&merged)?, Some(half))
            }
            None => return None,
        };
        let Some(e) = loc.expert else {
            if loc.name.ends_with("attn_k_b.weight") || loc.name.ends_with("attn_v_b.weight") {
                // `[n_head, a, b]` → `[n_head · a, b]`: the same bytes.
                if let [n, a, b] = t.shape[..] {
                    t.shape = vec![n.checked_mul(a)?, b];
                }
            }
            return Some(t);
        };
        // `[E, rows, cols]`: expert `e` is bytes `e·n/E ..`, `[rows, cols]`. A stacked tensor
        // of another shape, or bytes not split evenly, has no such expert: missing.
        let [n_exp, rows, cols] = t.shape[..] else {
            return None;
        };
        if e >= n_exp || t.data.len() % n_exp != 0 {
            return None;
        }
        let per = t.data.len() / n_exp;
        let data = &t.data[e * per..(e + 1) * per];
        let Some(half) = merged_half else {
            return Some(TensorView {
                name: t.name,
                dtype: t.dtype,
                shape: vec![rows, cols],
                data,
            });
        };
        // Whole rows of whole blocks: an even row count splits the bytes evenly.
        if rows % 2 != 0 || per % 2 != 0 {
            return None;
        }
        Some(TensorView {
            name: t.name,
            dtype: t.dtype,
            shape: vec![rows / 2, cols],
            data: &data[half * per / 2..(half + 1) * per / 2],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(hf: &str) -> Option<(String, Option<usize>)> {
        gguf_location(hf).map(|l| (l.name, l.expert))
    }

    #[test]
    fn names_map_as_the_converter_renames() {
        let p = |s: &str| Some((s.to_string(), None));
        assert_eq!(loc("model.embed_tokens.weight"), p("token_embd.weight"));
        assert_eq!(loc("lm_head.weight"), p("output.weight"));
        assert_eq!(
            loc("model.layers.3.self_attn.q_proj.bias"),
            p("blk.3.attn_q.bias")
        );
        assert_eq!(
            loc("model.layers.0.mlp.gate.e_score_correction_bias"),
            p("blk.0.exp_probs_b.bias")
        );
        assert_eq!(
            loc("model.layers.1.block_sparse_moe.experts.7.w3.weight"),
            Some(("blk.1.ffn_up_exps.weight".into(), Some(7)))
        );
        assert_eq!(
            loc("model.layers.1.mlp.experts.2.down_proj.weight"),
            Some(("blk.1.ffn_down_exps.weight".into(), Some(2)))
        );
        assert_eq!(
            loc("model.layers.1.self_attn.kv_b_proj.weight"),
            p("blk.1.attn_kv_b.weight")
        );
        assert_eq!(
            loc("model.layers.1.self_attn.k_b_proj.weight"),
            p("blk.1.attn_k_b.weight")
        );
        assert_eq!(loc("model.layers.x.mlp.gate.weight"), None);
        assert_eq!(loc("model.layers.1.mlp.experts.2.w9.weight"), None);
    }

    /// llama.cpp's DeepSeek-V3 Q4_K_M file with each layer's `ffn_gate_exps` and `ffn_up_exps`
    /// merged into `ffn_gate_up_exps` (per expert: gate rows, then up rows), in memory.
    struct Merged {
        file: frugal_formats::gguf::GgufFile,
        merged: std::collections::HashMap<String, (Vec<usize>, Vec<u8>)>,
    }

    impl TensorSource for Merged {
        fn tensor_infos(&self) -> Vec<frugal_formats::TensorInfo> {
            Vec::new()
        }
        fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
            if name.contains("_exps.") && !name.contains("down") {
                let (shape, data) = self.merged.get(name)?;
                let t = self.file.tensor(&name.replace("gate_up", "gate"))?;
                return Some(TensorView {
                    name: t.name,
                    dtype: t.dtype,
                    shape: shape.clone(),
                    data,
                });
            }
            self.file.tensor(name)
        }
    }

    #[test]
    fn merged_gate_up_experts_split_into_gate_and_up() {
        let path = frugal_testdata::fixtures_dir().join("gguf/deepseek-v3/deepseek-v3-Q4_K_M.gguf");
        let file = frugal_formats::gguf::GgufFile::open(path).expect("committed fixture");
        let mut merged = std::collections::HashMap::new();
        for l in 0..8 {
            let (Some(g), Some(u)) = (
                file.tensor(&format!("blk.{l}.ffn_gate_exps.weight")),
                file.tensor(&format!("blk.{l}.ffn_up_exps.weight")),
            ) else {
                continue;
            };
            let [n, rows, cols] = g.shape[..] else {
                panic!("3-D")
            };
            let per = g.data.len() / n;
            let mut data = Vec::new();
            for e in 0..n {
                data.extend_from_slice(&g.data[e * per..(e + 1) * per]);
                data.extend_from_slice(&u.data[e * per..(e + 1) * per]);
            }
            merged.insert(
                format!("blk.{l}.ffn_gate_up_exps.weight"),
                (vec![n, 2 * rows, cols], data),
            );
        }
        assert!(!merged.is_empty(), "the fixture has routed experts");
        let m = Merged { file, merged };
        let plain = GgufNames {
            inner: &m.file,
            exact_activations: false,
            repack: false,
            repack_experts: false,
        };
        let split = GgufNames {
            inner: &m,
            exact_activations: false,
            repack: false,
            repack_experts: false,
        };
        let mut checked = 0;
        for l in 0..8 {
            for e in 0..64 {
                for proj in ["gate_proj", "up_proj"] {
                    let name = format!("model.layers.{l}.mlp.experts.{e}.{proj}.weight");
                    let Some(want) = plain.tensor(&name) else {
                        continue;
                    };
                    let got = split.tensor(&name).expect("found in the merged tensor");
                    assert_eq!(got.shape, want.shape, "{name}");
                    assert_eq!(got.dtype, want.dtype, "{name}");
                    assert!(got.data == want.data, "{name}: bytes differ");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 4, "{checked}");
    }
}
