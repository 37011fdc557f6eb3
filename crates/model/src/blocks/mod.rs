//! Building blocks of decoder layers, each reading its weights from a mapped checkpoint.
//!
//! - [`linear`]: `y = W x` over F32/BF16/F16/FP8 block-scaled or GGUF-quantized weights, read
//!   row by row; [`linear::Weights`], where blocks find tensors by Hugging Face name.
//! - [`rope`]: rotary tables with YaRN, and the MLA softmax scale.
//! - [`gqa`]: grouped-query attention with its K/V cache (bias, q/k norm, sliding window).
//! - [`mla`]: multi-head latent attention over a compressed cache.
//! - [`ffn`]: SwiGLU MLP, the MoE routers (DeepSeek, Mixtral, Qwen3-MoE), the MoE block.
//! - `fused_ffn`: several SwiGLU MLPs (a MoE layer's chosen and shared experts) in two
//!   parallel steps over one quantization of the input; `products`: several products of one
//!   input in one parallel step.
//! - [`experts`]: where the MoE block gets routed experts' bytes ([`experts::ExpertStore`]).

pub mod experts;
pub mod ffn;
mod fused_ffn;
pub mod gqa;
mod heads;
pub mod linear;
pub mod mla;
mod products;
pub mod rope;

/// One sequence's rows in a batched attention call: rows `len` of the stacked input, at
/// positions `start_pos..start_pos + len`, attending over (and appended to) `cache`.
#[derive(Debug)]
pub struct SeqSpan<'c, C> {
    /// Position of the first row (the cache holds exactly this many positions).
    pub start_pos: usize,
    /// Rows (tokens) of this sequence.
    pub len: usize,
    /// The sequence's cache of this layer.
    pub cache: &'c mut C,
}

/// Frees this thread's scratch of the blocks that keep it on the calling thread (MLA, GQA,
/// MoE), so that a long prefill's buffers are not held through the decoding that follows;
/// the next call grows them again.
pub(crate) fn release_scratch() {
    mla::release_scratch();
    gqa::release_scratch();
    ffn::release_scratch();
}

/// Replaces this thread's scratch in `key` by an empty one (unless it is in use).
pub(crate) fn release_local<T: Default + 'static>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
) {
    key.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            *s = T::default();
        }
    })
}

/// Runs `f` with this thread's scratch `T` held in `key`, reused from call to call so that a
/// decode step allocates nothing once its buffers have grown; a fresh `T` when the thread's
/// is already in use (a re-entered block).
pub(crate) fn with_local<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut T::default()),
    })
}
