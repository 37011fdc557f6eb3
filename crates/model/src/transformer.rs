//! The decoder-only transformer every family shares, in f32:
//!
//! ```text
//! x = embed_tokens[token]                                   [T, H]
//! for each layer L:
//!     x = x + attn(rmsnorm(x))      MLA (DeepSeek, compressed cache) or GQA (K/V cache)
//!     x = x + ffn(rmsnorm(x))       dense SwiGLU or MoE (router + routed + shared experts)
//! logits = lm_head(rmsnorm(x))      lm_head = embed_tokens when tied       [T, vocab]
//! ```
//!
//! Which block each layer uses and what its tensors are called is the family's business
//! (`families/`); this file only runs them. Reference: transformers 5.24's modeling files
//! of each family; the fixtures in `fixtures/models/` hold its outputs. DeepSeek MTP layers are
//! not run.

use frugal_formats::config::{Architecture, Attention, ModelConfig, WeightQuantization};
use frugal_formats::{ModelFiles, TensorSource};
use frugal_kernels::norm;

use std::cell::RefCell;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::blocks::experts::{ExpertStore, RoutedExpert};
use crate::blocks::ffn::{Mlp, Moe, Routing};
use crate::blocks::gqa::{GqaAttention, KvHeads};
use crate::blocks::linear::{load_f32_vec, Linear, Weights};
use crate::blocks::mla::{LatentCache, MlaAttention};
use crate::blocks::rope::{RopeRows, RopeTable};
use crate::blocks::{with_local, SeqSpan};
use crate::families;
use crate::gguf_names::GgufNames;
use crate::profile::{self, Phase};
use crate::ModelError;

/// The attention block of one layer.
#[derive(Debug)]
pub(crate) enum Attn<'a> {
    Mla(MlaAttention<'a>),
    Gqa(GqaAttention<'a>),
}

/// The feed-forward block of one layer.
#[derive(Debug)]
pub(crate) enum Ffn<'a> {
    Dense(Mlp<'a>),
    Moe(Moe<'a>),
}

/// One decoder layer: pre-norm attention, then pre-norm feed-forward.
#[derive(Debug)]
pub(crate) struct Layer<'a> {
    pub(crate) input_norm: Vec<f32>,
    pub(crate) attn: Attn<'a>,
    pub(crate) post_attn_norm: Vec<f32>,
    pub(crate) ffn: Ffn<'a>,
}

/// A loaded model of any supported family; weights stay in the mapped files of `ModelFiles`
/// (routed experts: or come from an [`ExpertStore`], [`Model::set_expert_store`]).
pub struct Model<'a> {
    config: ModelConfig,
    embed: Linear<'a>,
    layers: Vec<Layer<'a>>,
    final_norm: Vec<f32>,
    lm_head: Linear<'a>,
    rope: RopeTable,
    eps: f32,
    threads: usize,
    expert_store: Option<Arc<dyn ExpertStore + 'a>>,
}

impl std::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("layers", &self.layers.len())
            .field("threads", &self.threads)
            .field("expert_store", &self.expert_store.is_some())
            .finish_non_exhaustive()
    }
}

/// The former name of [`Model`], when only DeepSeek ran.
pub type DeepSeek<'a> = Model<'a>;

/// Choices made when loading a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Multiply quantized (GGUF block-type) weights by f32 activations, dequantizing the
    /// weights exactly, instead of quantizing each activation row to the weight type's 8-bit
    /// format first (Q8_0/Q8_1/Q8_K, as llama.cpp does) for integer dot products. Slower;
    /// gives transformers' result on the dequantized weights (to f32 rounding) rather than
    /// llama.cpp's. Float weights (F32, F16, BF16, FP8) always take f32 activations.
    pub exact_activations: bool,
    /// Leave routed experts in the file's layout instead of repacking their Q4_K matrices
    /// (`quant::repack`): for a model that will be given an expert store
    /// ([`Model::set_expert_store`], which hands experts out as file bytes), so that loading
    /// neither copies nor touches them.
    pub keep_experts_mapped: bool,
}

impl LoadOptions {
    /// The defaults, except `exact_activations` when the environment has
    /// `FRUGAL_EXACT_ACTIVATIONS=1` (so any command can switch without a flag).
    pub fn from_env() -> Self {
        LoadOptions {
            exact_activations: std::env::var("FRUGAL_EXACT_ACTIVATIONS").is_ok_and(|v| v == "1"),
            keep_experts_mapped: false,
        }
    }
}

/// A tensor source seen through [`LoadOptions`].
struct WithOptions<'a> {
    inner: &'a dyn TensorSource,
    options: LoadOptions,
}

impl<'a> Weights<'a> for WithOptions<'a> {
    fn tensor(&self, name: &str) -> Option<frugal_formats::TensorView<'a>> {
        self.inner.tensor(name)
    }

    fn exact_activations(&self) -> bool {
        self.options.exact_activations
    }

    fn populate(&self, bytes: &[u8]) {
        self.inner.populate(bytes);
    }
}

/// One layer's cache.
#[derive(Clone, Debug)]
enum LayerCache {
    /// MLA: per position the normed latent and the roped shared key.
    Latent(LatentCache),
    /// GQA: per position the roped keys and the values of every kv head.
    Kv(KvHeads),
}

/// The cache of every layer: MLA latents or GQA keys and values.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    /// [`Model::cache_shape`] of the model it was made for.
    shape: [usize; 3],
}

impl KvCache {
    /// An empty cache for `model`.
    pub fn new(model: &Model<'_>) -> Self {
        KvCache {
            layers: model
                .layers
                .iter()
                .map(|l| match &l.attn {
                    Attn::Mla(_) => LayerCache::Latent(LatentCache::default()),
                    Attn::Gqa(g) => {
                        let [n_kv, d] = g.cache_shape();
                        LayerCache::Kv(KvHeads::new(n_kv, d))
                    }
                })
                .collect(),
            len: 0,
            shape: model.cache_shape(),
        }
    }

    /// An empty cache for `model` with room for `positions` positions: decoding within them
    /// never reallocates the cache.
    pub fn with_capacity(model: &Model<'_>, positions: usize) -> Self {
        let mut cache = KvCache::new(model);
        cache.reserve(positions);
        cache
    }

    /// Makes room for `positions` positions in all (cached ones included), so that appending
    /// up to that length never reallocates. Best effort: room the allocator refuses (an
    /// implausibly long reservation) is left to grow as positions are appended. Room not yet
    /// written to is address space only.
    pub fn reserve(&mut self, positions: usize) {
        let more = positions.saturating_sub(self.len);
        let [_, a, b] = self.shape;
        // A refused reservation leaves the buffer as it was, which stays correct.
        let room = |v: &mut Vec<f32>, n: usize| {
            let _ = n.checked_mul(more).map(|values| v.try_reserve(values));
        };
        for layer in &mut self.layers {
            match layer {
                // MLA: `a` = kv_lora_rank, `b` = qk_rope_head_dim per position.
                LayerCache::Latent(c) => {
                    room(&mut c.latent, a);
                    room(&mut c.rope_key, b);
                }
                LayerCache::Kv(c) => c.reserve(more),
            }
        }
    }

    /// Writes zeros over the room [`KvCache::reserve`] made, so that its pages are resident
    /// now. Appending to the cache then takes no page fault: otherwise the first write to
    /// each fresh 4 KiB page faults, a few µs each (here, in a VM: about 3), every other
    /// position on every layer of an MLA model (2.3 KB of latent per position and layer).
    /// For a caller that will fill the room (a benchmark, a one-shot generation of a known
    /// length); it costs that memory up front.
    pub fn prefault(&mut self) {
        let zero = |v: &mut Vec<f32>| {
            v.spare_capacity_mut()
                .iter_mut()
                .for_each(|x| _ = x.write(0.0));
        };
        for layer in &mut self.layers {
            match layer {
                LayerCache::Latent(c) => {
                    zero(&mut c.latent);
                    zero(&mut c.rope_key);
                }
                LayerCache::Kv(c) => c.prefault(),
            }
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (nothing when `len` is not shorter), so that a
    /// copy of a cache can serve another sequence sharing its first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let [_, a, b] = self.shape;
        for layer in &mut self.layers {
            match layer {
                // MLA: `a` = kv_lora_rank, `b` = qk_rope_head_dim per position.
                LayerCache::Latent(c) => {
                    c.latent.truncate(len * a);
                    c.rope_key.truncate(len * b);
                }
                LayerCache::Kv(c) => c.truncate(len),
            }
        }
        self.len = len;
    }

    /// Bytes of cached values. MLA: per position and layer, `kv_lora_rank + qk_rope_head_dim`
    /// f32s (the latent and the shared rope key; no per-head keys or values are ever stored).
    /// GQA: `2 · num_kv_heads · head_dim` f32s.
    pub fn bytes(&self) -> usize {
        let values: usize = self
            .layers
            .iter()
            .map(|l| match l {
                LayerCache::Latent(c) => c.latent.len() + c.rope_key.len(),
                LayerCache::Kv(c) => c.values(),
            })
            .sum();
        values * std::mem::size_of::<f32>()
    }
}

/// Intermediate values of a forward pass, for tests and debugging.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// `[n_layers + 1]` residual streams `[T, hidden]`: the embeddings, then after each layer.
    pub hidden_states: Vec<Vec<f32>>,
    /// For each MoE layer `(layer index, per token the (expert, weight) pairs by expert id)`.
    pub routed: Vec<(usize, Vec<Routing>)>,
}

impl<'a> Model<'a> {
    /// Load a checkpoint (DeepSeek V2/V3, Qwen2, Llama, Qwen3-MoE, Mixtral) from a Hugging
    /// Face folder or a GGUF file (llama.cpp's names, mapped by `crate::gguf_names`; quantized
    /// weights stay quantized), checking every tensor's shape and type. Nothing is decoded but
    /// norms, biases and FP8 scales.
    ///
    /// Options are [`LoadOptions::from_env`]'s; [`Model::load_with`] takes them explicitly.
    pub fn load(files: &'a ModelFiles) -> Result<Self, ModelError> {
        Self::load_with(files, LoadOptions::from_env())
    }

    /// [`Model::load`] with explicit options.
    pub fn load_with(files: &'a ModelFiles, options: LoadOptions) -> Result<Self, ModelError> {
        let config = files.config().map_err(|e| ModelError::Open(Box::new(e)))?;
        let src = files.tensors().ok_or(ModelError::NoWeights)?;
        if files.gguf_metadata().is_none() {
            return Self::from_parts(config, src);
        }
        // llama.cpp's converter permutes Llama/Mixtral q/k rows for its interleaved rope.
        let qk_interleaved = matches!(
            config.architecture,
            Architecture::Llama | Architecture::Mixtral
        );
        let mut rope = RopeTable::new(&config.rope)?;
        if src.tensor("rope_freqs.weight").is_some() {
            let divisors = load_f32_vec(&src, "rope_freqs.weight", &[config.rope.rotary_dim / 2])?;
            rope.divide_frequencies(&divisors)?;
        }
        // Owned copies (repacked, or plain in huge pages) take anonymous memory, which cannot
        // be paged out the way the file's pages can: make them only while the weights fit in
        // the memory available now with a fifth to spare. Otherwise the routed experts (and,
        // if the rest alone does not fit, every matrix) stay mapped and stream from the page
        // cache, so a model larger than memory still runs, as it does from a plain map.
        let infos = src.tensor_infos();
        let total: u64 = infos.iter().map(|t| t.nbytes as u64).sum();
        let experts: u64 = infos
            .iter()
            .filter(|t| t.name.contains("_exps."))
            .map(|t| t.nbytes as u64)
            .sum();
        let (dense_fits, all_fit) = owned_copies_fit(total, experts, available_memory());
        let names = GgufNames {
            inner: src,
            exact_activations: options.exact_activations,
            // `FRUGAL_REPACK=0` keeps every matrix as mapped.
            repack: std::env::var("FRUGAL_REPACK").map_or(true, |v| v != "0") && dense_fits,
            repack_experts: !options.keep_experts_mapped && all_fit,
        };
        Self::build(config, &names, rope, qk_interleaved)
    }

    /// Load from a config and a tensor source with Hugging Face names (default options).
    pub fn from_parts(config: ModelConfig, src: &'a dyn TensorSource) -> Result<Self, ModelError> {
        Self::from_parts_with(config, src, LoadOptions::default())
    }

    /// [`Model::from_parts`] with explicit options (a source of quantized matrices, such as
    /// quantize-on-load's, honours `exact_activations`).
    pub fn from_parts_with(
        config: ModelConfig,
        src: &'a dyn TensorSource,
        options: LoadOptions,
    ) -> Result<Self, ModelError> {
        let rope = RopeTable::new(&config.rope)?;
        let with = WithOptions {
            inner: src,
            options,
        };
        Self::build(config, &with, rope, false)
    }

    fn build(
        config: ModelConfig,
        src: &dyn Weights<'a>,
        rope: RopeTable,
        qk_interleaved: bool,
    ) -> Result<Self, ModelError> {
        let fp8_block = match &config.weight_quantization {
            None => 128,
            Some(WeightQuantization::Fp8 {
                block_size: Some([a, b]),
                ..
            }) if a == b && *a > 0 => *a,
            Some(q) => {
                return Err(ModelError::UnsupportedConfig {
                    what: format!("weight quantization {q:?}"),
                })
            }
        };
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let cx = families::Ctx {
            src,
            config: &config,
            fp8_block,
            qk_interleaved,
        };
        let layers = load_layers(config.num_hidden_layers, |l| families::layer(&cx, l))?;
        let embed = Linear::load(src, "model.embed_tokens.weight", vocab, h, fp8_block)?;
        let lm_head = if config.tie_word_embeddings {
            Linear::load(src, "model.embed_tokens.weight", vocab, h, fp8_block)?
        } else {
            Linear::load(src, "lm_head.weight", vocab, h, fp8_block)?
        };
        // Each decoded token reads one embedding row, a new one most times: map the table's
        // pages now (after a tied head's copy may have released them) so that a step never
        // waits on a page fault for its row.
        if embed.decodes_stored_data() {
            src.populate(embed.stored_data());
        }
        Ok(Model {
            final_norm: load_f32_vec(src, "model.norm.weight", &[h])?,
            eps: config.rms_norm_eps as f32,
            config,
            embed,
            layers,
            lm_head,
            rope,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            expert_store: None,
        })
    }

    /// What a cache for this model holds: `[layers, kv_lora_rank, qk_rope_head_dim]` (MLA) or
    /// `[layers, num_kv_heads, head_dim]` (GQA).
    fn cache_shape(&self) -> [usize; 3] {
        match &self.config.attention {
            Attention::Mla(m) => [self.layers.len(), m.kv_lora_rank, m.qk_rope_head_dim],
            Attention::Gqa(g) => [self.layers.len(), g.num_kv_heads, g.head_dim],
        }
    }

    /// Take routed experts' weights from `store` from now on (`None`: from the mapped file
    /// again). See [`crate::blocks::experts`].
    pub fn set_expert_store(&mut self, store: Option<Arc<dyn ExpertStore + 'a>>) {
        self.expert_store = store;
    }

    /// Every routed expert of every MoE layer, with where its bytes lie (for an
    /// [`ExpertStore`] to read them itself).
    pub fn routed_experts(&self) -> Vec<RoutedExpert<'a>> {
        self.layers
            .iter()
            .filter_map(|layer| match &layer.ffn {
                Ffn::Moe(moe) => Some(moe.routed_experts()),
                Ffn::Dense(_) => None,
            })
            .flatten()
            .collect()
    }

    /// Use up to `threads` threads for large matrix products (at least 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// For each MoE layer `(layer index, each routed expert's stored bytes by expert id)`:
    /// what loading one expert (its gate, up and down projections) reads. Empty for a dense
    /// model. The layer order is [`Trace::routed`]'s.
    pub fn expert_bytes(&self) -> Vec<(usize, Vec<usize>)> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(l, layer)| match &layer.ffn {
                Ffn::Moe(moe) => Some((l, moe.expert_bytes())),
                Ffn::Dense(_) => None,
            })
            .collect()
    }

    /// Vocabulary size (columns of the logits).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Run `tokens` at positions `start_pos..` (which must equal `cache.len()`), appending
    /// them to the cache. Returns the logits of every position, `[tokens.len(), vocab]`.
    pub fn forward(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_traced(tokens, start_pos, cache, None)
    }

    /// [`Model::forward`], but only the last position's logits `[vocab]` (what decoding
    /// needs; skips the LM head for the other positions).
    pub fn forward_last(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.forward_last_into(tokens, start_pos, cache, &mut logits)?;
        Ok(logits)
    }

    /// [`Model::forward_last`] into `logits` (resized to `[vocab]`). The decode loop's call:
    /// once a first step has grown this thread's buffers (and `logits`), a step of one token
    /// allocates nothing, provided the cache has room ([`KvCache::with_capacity`]).
    pub fn forward_last_into(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut KvCache,
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.check_input(tokens, start_pos, cache)?;
        with_local(&WORKSPACE, |ws| {
            self.run_stacked(ws, &mut [(tokens, cache)], None);
            let h = self.config.hidden_size;
            let rows = ws.x.len() / h;
            let last = rows.saturating_sub(1) * h..ws.x.len();
            logits.resize((last.len() / h) * self.config.vocab_size, 0.0);
            self.head_into(&ws.x[last], &mut ws.xn, logits);
            ws.release_after(rows);
        });
        Ok(())
    }

    /// [`Model::forward`], recording hidden states and routing into `trace`.
    pub fn forward_traced(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &mut KvCache,
        trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_input(tokens, start_pos, cache)?;
        Ok(with_local(&WORKSPACE, |ws| {
            self.run_stacked(ws, &mut [(tokens, cache)], trace);
            let logits = self.head_rows(&ws.x, &mut ws.xn);
            ws.release_after(tokens.len());
            logits
        }))
    }

    /// The decoder layers over the tokens of one or more sequences stacked as rows (each
    /// already checked by [`Model::check_input`] at its cache's length): norms, projections and
    /// feed-forward blocks see all rows at once, attention each sequence over its own cache.
    /// Appends every sequence's positions to its cache; leaves the last residual `[T, hidden]`
    /// in `ws.x`. Every intermediate value lives in `ws` or in the blocks' per-thread
    /// scratch, so a pass allocates nothing once those have grown to its size.
    pub(crate) fn run_stacked(
        &self,
        ws: &mut Workspace,
        seqs: &mut [(&[u32], &mut KvCache)],
        mut trace: Option<&mut Trace>,
    ) {
        let h = self.config.hidden_size;
        let threads = self.threads;
        let t: usize = seqs.iter().map(|(tokens, _)| tokens.len()).sum();
        let Workspace { x, xn, delta, rope } = ws;
        xn.resize(t * h, 0.0);
        delta.resize(t * h, 0.0);

        // Embeddings [T, h].
        let embed_span = profile::span(Phase::Embed);
        x.resize(t * h, 0.0);
        let all_tokens = seqs.iter().flat_map(|(tokens, _)| tokens.iter());
        for (row, &tok) in x.chunks_exact_mut(h).zip(all_tokens) {
            self.embed.decode_rows(tok as usize..tok as usize + 1, row);
        }
        drop(embed_span);
        if let Some(tr) = trace.as_deref_mut() {
            tr.hidden_states.push(x.clone());
        }

        // cos/sin of every row's position, shared by all layers.
        let positions = seqs
            .iter()
            .flat_map(|(tokens, cache)| cache.len..cache.len + tokens.len());
        rope.fill(&self.rope, positions);
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention sub-block.
            rms_rows(x, &layer.input_norm, self.eps, xn);
            // The `unreachable!`s are OK because `check_input` compared every layer's kind.
            match &layer.attn {
                Attn::Mla(attn) => {
                    let mut spans = layer_spans(seqs, l, |c| match c {
                        LayerCache::Latent(c) => c,
                        LayerCache::Kv(_) => unreachable!("cache kind checked"),
                    });
                    attn.forward(xn, &mut spans, &self.rope, rope, threads, delta)
                }
                Attn::Gqa(attn) => {
                    let mut spans = layer_spans(seqs, l, |c| match c {
                        LayerCache::Kv(c) => c,
                        LayerCache::Latent(_) => unreachable!("cache kind checked"),
                    });
                    attn.forward(xn, &mut spans, rope, threads, delta)
                }
            };
            x.iter_mut().zip(&*delta).for_each(|(v, d)| *v += d);
            if let Some(store) = self.expert_store.as_deref().filter(|s| s.wants_prefetch()) {
                self.prefetch_after(l, x, store);
            }

            // Feed-forward sub-block.
            rms_rows(x, &layer.post_attn_norm, self.eps, xn);
            match &layer.ffn {
                Ffn::Dense(mlp) => mlp.forward(xn, threads, delta),
                Ffn::Moe(moe) => {
                    let mut routes = trace.is_some().then(Vec::new);
                    let store = self.expert_store.as_deref();
                    moe.forward(xn, threads, store, delta, routes.as_mut());
                    if let (Some(tr), Some(routes)) = (trace.as_deref_mut(), routes) {
                        tr.routed.push((l, routes));
                    }
                }
            };
            let combine = profile::span(Phase::FfnCombine);
            x.iter_mut().zip(&*delta).for_each(|(v, d)| *v += d);
            drop(combine);
            if let Some(tr) = trace.as_deref_mut() {
                tr.hidden_states.push(x.clone());
            }
        }
        for (tokens, cache) in seqs.iter_mut() {
            cache.len += tokens.len();
        }
    }

    /// Hints `store` with the experts the next MoE layer after `l` would choose for `x` (the
    /// residual after layer `l`'s attention, normed with that layer's FFN norm): the residual
    /// changes little from one layer to the next, so the guess is often right, and the store
    /// reads them while layer `l`'s experts and the next attention compute.
    fn prefetch_after(&self, l: usize, x: &[f32], store: &dyn ExpertStore) {
        let next = self.layers[l + 1..]
            .iter()
            .enumerate()
            .find_map(|(i, layer)| match &layer.ffn {
                Ffn::Moe(moe) => Some((l + 1 + i, layer, moe)),
                Ffn::Dense(_) => None,
            });
        if let Some((m, layer, moe)) = next {
            let mut xn = vec![0.0; x.len()];
            rms_rows(x, &layer.post_attn_norm, self.eps, &mut xn);
            let mut ids: Vec<usize> = moe
                .route(&xn, self.threads)
                .iter()
                .flatten()
                .map(|c| c.0)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            store.prefetch(m, &ids);
        }
    }

    /// The logits `[vocab]` of each row of `x` (`[rows, hidden]`, last residuals); `xn` is
    /// scratch.
    pub(crate) fn head_rows(&self, x: &[f32], xn: &mut Vec<f32>) -> Vec<f32> {
        let mut logits = vec![0.0; x.len() / self.config.hidden_size * self.config.vocab_size];
        self.head_into(x, xn, &mut logits);
        logits
    }

    /// [`Model::head_rows`] into `logits` (`[rows, vocab]`).
    fn head_into(&self, x: &[f32], xn: &mut Vec<f32>, logits: &mut [f32]) {
        xn.resize(x.len(), 0.0);
        rms_rows(x, &self.final_norm, self.eps, xn);
        let _span = profile::span(Phase::LmHead);
        self.lm_head.forward_into(xn, logits, self.threads);
    }

    pub(crate) fn check_input(
        &self,
        tokens: &[u32],
        start_pos: usize,
        cache: &KvCache,
    ) -> Result<(), ModelError> {
        let kinds_match = cache.layers.len() == self.layers.len()
            && cache.layers.iter().zip(&self.layers).all(|(c, l)| {
                matches!(
                    (c, &l.attn),
                    (LayerCache::Latent(_), Attn::Mla(_)) | (LayerCache::Kv(_), Attn::Gqa(_))
                )
            });
        if cache.shape != self.cache_shape() || !kinds_match {
            return Err(ModelError::CacheMismatch {
                expected: self.cache_shape(),
                found: cache.shape,
            });
        }
        if start_pos != cache.len {
            return Err(ModelError::CachePosition {
                start_pos,
                cached: cache.len,
            });
        }
        let needed = start_pos + tokens.len();
        if needed > self.config.max_position_embeddings {
            return Err(ModelError::ContextTooLong {
                needed,
                max: self.config.max_position_embeddings,
            });
        }
        let vocab = self.config.vocab_size;
        if let Some((index, &token)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(ModelError::TokenOutOfRange {
                token,
                index,
                vocab_size: vocab,
            });
        }
        Ok(())
    }
}

/// Every layer `load(l)` for `l < n`, in order, spread over the machine's threads (all of
/// them: the model's own thread count is set after loading). Loading is mostly making the
/// owned copies: repacking into fresh anonymous memory, whose pages the kernel zeroes on first
/// touch. On one thread that took DeepSeek-V2-Lite Q4_K_M (10 GB) 20 s on the two-core VM
/// of issue 6, 14.8 s of it in the kernel; on both, `frugal bench -p 0 -n 1` took 2.1–5.0 s
/// against 6.1–24 s, five runs of each alternated (the VM's page faults vary from run to
/// run). Layers are independent; each thread takes the next unloaded one. The first error,
/// by layer, is returned, as loading one layer after another did.
fn load_layers<T, F>(n: usize, load: F) -> Result<Vec<T>, ModelError>
where
    T: Send,
    F: Fn(usize) -> Result<T, ModelError> + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    load_layers_on(threads, n, load)
}

/// [`load_layers`] on up to `threads` threads.
fn load_layers_on<T, F>(threads: usize, n: usize, load: F) -> Result<Vec<T>, ModelError>
where
    T: Send,
    F: Fn(usize) -> Result<T, ModelError> + Sync,
{
    let threads = threads.min(n);
    if threads <= 1 {
        return (0..n).map(load).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<T, ModelError>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let l = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if l >= n {
                            return done;
                        }
                        let layer = load(l);
                        // Stop taking layers after a failure; the others finish theirs.
                        let failed = layer.is_err();
                        done.push((l, layer));
                        if failed {
                            next.store(n, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            // A panic while loading is re-raised here, as it would have been on one thread.
            let done = w.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (l, layer) in done {
                slots[l] = Some(layer);
            }
        }
    });
    // Layers in order up to the first failure (a layer not taken after it is `None`).
    let mut layers = Vec::with_capacity(n);
    for slot in slots {
        match slot {
            Some(layer) => layers.push(layer?),
            None => unreachable!("every layer before a failure was loaded"),
        }
    }
    Ok(layers)
}

/// Whether owned copies of the weights other than the routed experts (`total - experts`
/// bytes), and of all of them, fit in `available` bytes with a fifth to spare (both, when
/// the available memory is not known).
fn owned_copies_fit(total: u64, experts: u64, available: Option<u64>) -> (bool, bool) {
    let fits = |bytes: u64| available.is_none_or(|a| bytes <= a / 5 * 4);
    (fits(total.saturating_sub(experts)), fits(total))
}

/// The memory the system could give this process now without swapping (`MemAvailable`);
/// `None` where it is not known (not Linux).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// RMSNorm of every `[hidden]` row of `x` into `out` (as long).
fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let _span = profile::span(Phase::Norm);
    for (o, r) in out.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        norm::rmsnorm(r, w, eps, o);
    }
}

/// Each sequence's span of layer `l`'s cache (`pick` gets its kind's cache), on the stack for
/// a few sequences (a decode step).
fn layer_spans<'s, C>(
    seqs: &'s mut [(&[u32], &mut KvCache)],
    l: usize,
    pick: impl Fn(&mut LayerCache) -> &mut C,
) -> SmallVec<[SeqSpan<'s, C>; 4]> {
    seqs.iter_mut()
        .map(|(tokens, cache)| SeqSpan {
            start_pos: cache.len,
            len: tokens.len(),
            cache: pick(&mut cache.layers[l]),
        })
        .collect()
}

/// A forward pass's buffers, kept per thread between passes (see [`with_local`]): with the
/// blocks' own per-thread scratch, what lets a decode step run without allocating.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    /// The residual stream `[T, hidden]`.
    pub(crate) x: Vec<f32>,
    /// A normed copy of it `[T, hidden]` (a sub-block's input).
    pub(crate) xn: Vec<f32>,
    /// A sub-block's output `[T, hidden]`.
    delta: Vec<f32>,
    /// Every row's rope cos/sin.
    rope: RopeRows,
}

impl Workspace {
    /// Rows up to which a pass's buffers are kept for the next pass (decode steps, batches of
    /// decoding sequences); a longer pass (a prefill) frees them and the blocks' scratch.
    const KEEP_ROWS: usize = 64;

    /// Frees the buffers (this thread's and the blocks' scratch) after a pass of `rows` rows
    /// when it was longer than [`Workspace::KEEP_ROWS`].
    pub(crate) fn release_after(&mut self, rows: usize) {
        if rows > Self::KEEP_ROWS {
            *self = Workspace::default();
            crate::blocks::release_scratch();
        }
    }
}

thread_local! {
    pub(crate) static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_copies_only_while_they_fit() {
        const GB: u64 = 1 << 30;
        // 16 GB of weights, 14 of them routed experts.
        assert_eq!(
            owned_copies_fit(16 * GB, 14 * GB, Some(24 * GB)),
            (true, true)
        );
        assert_eq!(
            owned_copies_fit(16 * GB, 14 * GB, Some(19 * GB)),
            (true, false)
        );
        assert_eq!(
            owned_copies_fit(16 * GB, 14 * GB, Some(2 * GB)),
            (false, false)
        );
        assert_eq!(owned_copies_fit(16 * GB, 14 * GB, None), (true, true));
        assert!(available_memory().is_none_or(|a| a > 0));
    }

    /// Parallel loading returns the layers in order, each loaded once, and of several failing
    /// layers reports the first, as loading one after another did; whatever the thread count.
    #[test]
    fn layers_load_in_parallel_in_order_and_the_first_failure_is_reported() {
        let missing = |l: usize| ModelError::MissingTensor {
            name: format!("model.layers.{l}.mlp.gate.weight"),
        };
        for threads in [1, 2, 3, 8, 40] {
            let calls: Vec<std::sync::atomic::AtomicUsize> =
                (0..29).map(|_| Default::default()).collect();
            let layers = load_layers_on(threads, 29, |l| {
                calls[l].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(l * 10)
            })
            .unwrap();
            assert_eq!(layers, (0..29).map(|l| l * 10).collect::<Vec<_>>());
            assert!(calls
                .iter()
                .all(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1));

            let err = load_layers_on(threads, 29, |l| {
                if l == 7 || l == 20 {
                    // A slow first failure: the later one is likely found before it ends.
                    if l == 7 {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(missing(l))
                } else {
                    Ok(l)
                }
            })
            .unwrap_err();
            assert_eq!(err.to_string(), missing(7).to_string(), "{threads} threads");
            assert!(load_layers_on(threads, 0, |_| Ok(0u8)).unwrap().is_empty());
        }
    }
}
