//! Continuous batching: many requests share the model's forward passes.
//!
//! Requests arrive through a [`Handle`] (any thread) and queue; one thread runs
//! [`Scheduler::run`]. Each step it
//!
//! 1. drops sequences whose client has gone ([`EventSink::is_closed`]), freeing their slot and
//!    KV pages at once;
//! 2. admits queued requests in arrival order while a slot (`max_parallel`) and enough KV pages
//!    are free (head of line first: a large request is not overtaken forever by small ones);
//! 3. builds one batch: the next token of every decoding sequence, plus prompt chunks of the
//!    sequences still prefilling, oldest first, up to `max_step_tokens` tokens in all, so that
//!    a long prompt delays the decoders by at most one chunk per step;
//! 4. runs [`Model::forward_batch`], samples each sequence that produced logits for a new
//!    token, and streams the token to its client ([`Event`]).
//!
//! ## KV budget in pages
//!
//! The cache is accounted in pages of `page_size` positions. A sequence reserves, when
//! admitted, the pages for its prompt plus its `max_new_tokens` (capped by the context size),
//! so a running sequence never has to be evicted. Finished sequences leave their cache in the
//! prefix cache, whose pages count too and are given back (least recently used first) when an
//! admission needs them.
//!
//! ## Prefix reuse
//!
//! A new request starts from a copy of the prefix-cache entry sharing the longest prefix with
//! its prompt (cut back with [`KvCache::truncate`]), and prefills only the rest: a chat's next
//! turn re-runs only the new messages. At least one prompt token is always run, for logits.

mod json_mode;
mod prefix;
mod sequence;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use frugal_model::{BatchItem, KvCache, Model};

use crate::generation::{FinishReason, StopCriteria};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;

use prefix::PrefixCache;
use sequence::{Sequence, Step};

/// Limits of a [`Scheduler`].
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoding at once.
    pub max_parallel: usize,
    /// Positions one sequence may hold (prompt plus generated).
    pub ctx_size: usize,
    /// Positions per KV page.
    pub page_size: usize,
    /// KV pages in all (active sequences and the prefix cache).
    pub kv_pages: usize,
    /// Most tokens in one forward pass (decode tokens plus prefill chunks).
    pub max_step_tokens: usize,
    /// Most requests waiting for a slot; more are refused ([`SubmitError::QueueFull`]).
    pub max_queue: usize,
    /// Finished sequences kept for prefix reuse.
    pub prefix_entries: usize,
}

impl SchedulerConfig {
    /// `max_parallel` sequences of up to `ctx_size` positions, with pages for all of them
    /// at once plus as many again for the prefix cache.
    pub fn new(max_parallel: usize, ctx_size: usize) -> Self {
        let page_size = 16;
        let max_parallel = max_parallel.max(1);
        SchedulerConfig {
            max_parallel,
            ctx_size,
            page_size,
            kv_pages: 2 * max_parallel * ctx_size.div_ceil(page_size),
            max_step_tokens: 512,
            max_queue: 64 * max_parallel,
            prefix_entries: max_parallel,
        }
    }

    fn pages(&self, positions: usize) -> usize {
        positions.div_ceil(self.page_size)
    }
}

/// What a client asks for.
pub struct Request {
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Sampling settings (the seed makes a request reproducible).
    pub sampling: SamplingParams,
    /// EOS ids, token limit (`None`: up to the context size) and stop strings.
    pub stop: StopCriteria,
    /// Report each token's log-probability and this many alternatives (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
    /// Constrain the output to one JSON object (OpenAI's `response_format: json_object`): only
    /// tokens that keep it a valid prefix are sampled, and it ends when the object closes.
    pub json_object: bool,
    /// Where the events go.
    pub sink: Box<dyn EventSink>,
}

/// A token's log-probability under the model (the raw logits' softmax, before sampling
/// settings), with the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub id: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The `n` most likely tokens and theirs, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What a request's sink receives, in order: tokens, then one `Done` (or one `Error`).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A generated token and the text it released (possibly empty: text can be held back for
    /// an unfinished character or a possible stop string; EOS releases none).
    Token {
        /// The token id.
        id: u32,
        /// Released text.
        text: String,
        /// Its log-probability, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The end.
    Done {
        /// Held-back text released at the end.
        text: String,
        /// Why it ended.
        finish: FinishReason,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens (EOS included).
        completion_tokens: usize,
        /// Prompt tokens taken from the prefix cache instead of being run.
        cached_tokens: usize,
    },
    /// The request failed while running.
    Error(String),
}

/// Receives a request's events; the scheduler drops the request when its client is gone.
pub trait EventSink: Send {
    /// Delivers an event; false when the receiver is gone.
    fn send(&mut self, event: Event) -> bool;
    /// Whether the receiver is gone (checked every step, also while queued).
    fn is_closed(&self) -> bool;
}

impl EventSink for Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        Sender::send(self, event).is_ok()
    }
    fn is_closed(&self) -> bool {
        false
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// No prompt tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt (plus at least one new token) does not fit the context.
    #[error(
        "the prompt has {prompt} tokens; the context holds {ctx_size}, leaving no room to generate"
    )]
    ContextOverflow {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        ctx_size: usize,
    },
    /// Prompt plus `max_tokens` exceed the context.
    #[error("the prompt has {prompt} tokens and {max_new} more were asked for; the context holds {ctx_size}")]
    TooManyTokens {
        /// Prompt tokens.
        prompt: usize,
        /// Requested new tokens.
        max_new: usize,
        /// Context size.
        ctx_size: usize,
    },
    /// A stop string is empty, or `max_new_tokens` is 0.
    #[error("{0}")]
    Invalid(String),
    /// Too many requests are waiting.
    #[error("{0} requests are already waiting; try again later")]
    QueueFull(usize),
    /// The scheduler has stopped.
    #[error("the scheduler has stopped")]
    Stopped,
}

/// Counters for monitoring, updated by the scheduler.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests accepted.
    pub requests: AtomicU64,
    /// Requests finished (any reason, cancelled included).
    pub finished: AtomicU64,
    /// Requests dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences holding a slot.
    pub active: AtomicUsize,
    /// Prompt tokens run through the model.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens reused from the prefix cache.
    pub cached_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Forward passes.
    pub steps: AtomicU64,
    /// KV pages in use (reserved by sequences plus held by the prefix cache).
    pub kv_pages_used: AtomicUsize,
    /// KV pages in all.
    pub kv_pages_total: AtomicUsize,
    /// Tokens per second (prompt and generated) of the last step, as f32 bits.
    pub tokens_per_second_bits: AtomicU64,
    /// Wall time of all forward passes, microseconds.
    pub busy_micros: AtomicU64,
}

impl Stats {
    /// Tokens per second of the last step.
    pub fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.tokens_per_second_bits.load(Ordering::Relaxed))
    }
}

/// Submits requests to a running [`Scheduler`]; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    tx: Arc<Mutex<Sender<Request>>>,
    stats: Arc<Stats>,
    config: SchedulerConfig,
}

impl Handle {
    /// Queues a request after checking it can ever run.
    pub fn submit(&self, req: Request) -> Result<(), SubmitError> {
        let c = &self.config;
        let prompt = req.prompt.len();
        if prompt == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if prompt >= c.ctx_size {
            return Err(SubmitError::ContextOverflow {
                prompt,
                ctx_size: c.ctx_size,
            });
        }
        if let Some(max_new) = req.stop.max_new_tokens {
            if max_new == 0 {
                return Err(SubmitError::Invalid("max_tokens must be at least 1".into()));
            }
            if prompt + max_new > c.ctx_size {
                return Err(SubmitError::TooManyTokens {
                    prompt,
                    max_new,
                    ctx_size: c.ctx_size,
                });
            }
        }
        if req.stop.stop_strings.iter().any(String::is_empty) {
            return Err(SubmitError::Invalid("a stop string is empty".into()));
        }
        let queued = self.stats.queued.load(Ordering::Relaxed);
        if queued >= c.max_queue {
            return Err(SubmitError::QueueFull(queued));
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        // OK to unwrap: the lock is only held for a send, which does not panic.
        let sent = self.tx.lock().expect("sender lock").send(req);
        sent.map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            SubmitError::Stopped
        })
    }

    /// The live counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The limits.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }
}

/// The batching loop over one model; see the module docs.
pub struct Scheduler<'m> {
    model: &'m Model<'m>,
    tokenizer: &'m Tokenizer,
    config: SchedulerConfig,
    rx: Receiver<Request>,
    stats: Arc<Stats>,
    waiting: VecDeque<Request>,
    active: Vec<Sequence<'m>>,
    prefix: PrefixCache,
    /// Pages reserved by active sequences.
    reserved: usize,
    /// Each token's bytes (`None` for special tokens), for JSON mode.
    vocab_bytes: Vec<Option<Vec<u8>>>,
}

impl<'m> Scheduler<'m> {
    /// A scheduler for `model` and the handle that feeds it. Run it with [`Scheduler::run`].
    pub fn new(
        model: &'m Model<'m>,
        tokenizer: &'m Tokenizer,
        mut config: SchedulerConfig,
    ) -> (Self, Handle) {
        config.max_parallel = config.max_parallel.max(1);
        config.page_size = config.page_size.max(1);
        config.max_step_tokens = config.max_step_tokens.max(config.max_parallel + 1);
        config.ctx_size = config.ctx_size.min(model.config().max_position_embeddings);
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(Stats::default());
        stats
            .kv_pages_total
            .store(config.kv_pages, Ordering::Relaxed);
        let handle = Handle {
            tx: Arc::new(Mutex::new(tx)),
            stats: stats.clone(),
            config: config.clone(),
        };
        let prefix = PrefixCache::new(config.prefix_entries);
        let s = Scheduler {
            model,
            tokenizer,
            config,
            rx,
            stats,
            waiting: VecDeque::new(),
            active: Vec::new(),
            prefix,
            reserved: 0,
            vocab_bytes: (0..model.vocab_size() as u32)
                .map(|id| {
                    (!tokenizer.is_special(id))
                        .then(|| tokenizer.token_bytes(id))
                        .flatten()
                })
                .collect(),
        };
        (s, handle)
    }

    /// Serves requests until every [`Handle`] is dropped and nothing is left to do.
    pub fn run(mut self) {
        loop {
            if self.waiting.is_empty() && self.active.is_empty() {
                match self.rx.recv() {
                    Ok(req) => self.waiting.push_back(req),
                    Err(_) => return,
                }
            }
            while let Ok(req) = self.rx.try_recv() {
                self.waiting.push_back(req);
            }
            self.step();
        }
    }

    /// One scheduling step: drop the departed, admit, run one batch, emit tokens.
    fn step(&mut self) {
        self.drop_departed();
        self.admit();
        self.publish_gauges();
        if self.active.is_empty() {
            return;
        }

        // The batch: every decoder's next token, then prefill chunks oldest first.
        let mut budget = self.config.max_step_tokens;
        let mut plan: Vec<(usize, usize)> = Vec::new(); // (sequence index, tokens)
        for (i, seq) in self.active.iter().enumerate() {
            if !seq.prefilling() {
                plan.push((i, 1));
                budget -= 1;
            }
        }
        for (i, seq) in self.active.iter().enumerate() {
            if seq.prefilling() && budget > 0 {
                let n = seq.unfed().min(budget);
                plan.push((i, n));
                budget -= n;
            }
        }
        plan.sort_unstable();

        let started = Instant::now();
        let mut items: Vec<BatchItem<'_>> = Vec::with_capacity(plan.len());
        let mut plan_it = plan.iter().peekable();
        for (i, seq) in self.active.iter_mut().enumerate() {
            if let Some(&&(j, n)) = plan_it.peek() {
                if j == i {
                    plan_it.next();
                    items.push(seq.batch_item(n));
                }
            }
        }
        let ran: usize = items.iter().map(|it| it.tokens.len()).sum();
        let result = self.model.forward_batch(&mut items);
        drop(items);
        let elapsed = started.elapsed();
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .busy_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let tps = ran as f64 / elapsed.as_secs_f64().max(1e-9);
        self.stats
            .tokens_per_second_bits
            .store(tps.to_bits(), Ordering::Relaxed);

        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // Not expected (inputs are checked at submit); fail the batch, not the server.
                let msg = format!("forward pass failed: {e}");
                for &(i, _) in plan.iter().rev() {
                    let mut seq = self.active.remove(i);
                    seq.sink.send(Event::Error(msg.clone()));
                    self.release(seq, false);
                }
                return;
            }
        };

        let mut done = Vec::new();
        for (&(i, n), mut logits) in plan.iter().zip(logits) {
            let seq = &mut self.active[i];
            let was_prefill = seq.prefilling();
            seq.fed(n);
            if was_prefill {
                self.stats
                    .prompt_tokens
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            if seq.prefilling() {
                continue; // more prompt to run; these logits are not needed
            }
            self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            match seq.sample(&mut logits, self.config.ctx_size, &self.vocab_bytes) {
                Step::Continue => {}
                Step::Finished => done.push((i, true)),
                Step::Gone => done.push((i, false)),
            }
        }
        for &(i, keep) in done.iter().rev() {
            let seq = self.active.remove(i);
            if !keep {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            self.release(seq, true);
        }
        self.publish_gauges();
    }

    /// Drops queued and running requests whose client has gone.
    fn drop_departed(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|r| !r.sink.is_closed());
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.stats.queued.fetch_sub(gone, Ordering::Relaxed);
            self.stats
                .cancelled
                .fetch_add(gone as u64, Ordering::Relaxed);
            self.stats
                .finished
                .fetch_add(gone as u64, Ordering::Relaxed);
        }
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].sink.is_closed() {
                let seq = self.active.remove(i);
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                self.release(seq, true);
            } else {
                i += 1;
            }
        }
    }

    /// Admits queued requests in order while a slot and their pages are free.
    fn admit(&mut self) {
        while self.active.len() < self.config.max_parallel {
            let Some(req) = self.waiting.front() else {
                return;
            };
            let max_total = match req.stop.max_new_tokens {
                Some(m) => (req.prompt.len() + m).min(self.config.ctx_size),
                None => self.config.ctx_size,
            };
            let need = self.config.pages(max_total);
            // Give back prefix-cache pages (least recently used first) until it fits.
            while self.reserved + self.prefix.pages() + need > self.config.kv_pages
                && self.prefix.evict_lru()
            {}
            // Wait for a sequence to finish. (A request larger than the whole budget still runs
            // alone rather than never.)
            if self.reserved + self.prefix.pages() + need > self.config.kv_pages
                && !self.active.is_empty()
            {
                return;
            }
            // OK because `front()` just returned it.
            let req = self.waiting.pop_front().expect("front exists");
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let (mut cache, reused) = match self.prefix.copy_longest(&req.prompt) {
                Some((mut cache, common)) => {
                    // At least one prompt token must run to give the first logits.
                    let keep = common.min(req.prompt.len() - 1);
                    cache.truncate(keep);
                    (cache, keep)
                }
                None => (KvCache::new(self.model), 0),
            };
            // Room for the most the sequence may hold (its pages are reserved for it): its
            // decode steps never grow the cache. Capacity not yet written is not resident.
            cache.reserve(max_total);
            self.stats
                .cached_tokens
                .fetch_add(reused as u64, Ordering::Relaxed);
            self.reserved += need;
            match Sequence::new(req, cache, reused, need, self.tokenizer) {
                Ok(seq) => self.active.push(seq),
                Err((mut sink, msg)) => {
                    self.reserved -= need;
                    sink.send(Event::Error(msg));
                    self.stats.finished.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Frees a sequence's pages; keeps its cache for prefix reuse when `keep_cache`.
    fn release(&mut self, seq: Sequence<'m>, keep_cache: bool) {
        self.reserved -= seq.pages;
        self.stats.finished.fetch_add(1, Ordering::Relaxed);
        if keep_cache && self.config.prefix_entries > 0 {
            let (tokens, cache) = seq.into_cache();
            let pages = self.config.pages(cache.len());
            self.prefix.insert(tokens, cache, pages);
            while self.reserved + self.prefix.pages() > self.config.kv_pages
                && self.prefix.evict_lru()
            {}
        }
    }

    fn publish_gauges(&self) {
        self.stats
            .active
            .store(self.active.len(), Ordering::Relaxed);
        self.stats
            .kv_pages_used
            .store(self.reserved + self.prefix.pages(), Ordering::Relaxed);
    }
}

/// A sampler for a request, checked.
pub(crate) fn sampler_for(params: &SamplingParams) -> Result<Sampler, String> {
    Sampler::new(params.clone()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
