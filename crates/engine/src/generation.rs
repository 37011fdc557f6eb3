//! The generation loop, independent of any model: prefill, then decode token by token until a
//! stop condition, streaming events (token ids, text pieces, the finish reason).
//!
//! The model is a closure `FnMut(&[u32]) -> Result<Vec<f32>, E>` that feeds the tokens it is
//! given after those it has already seen (it keeps its own KV cache) and returns the logits of
//! the last position: the whole prompt on the first call, then one token per call.
//!
//! Stop conditions ([`StopCriteria`]), checked after every sampled token in this order:
//! - an end-of-sequence id (several may be set, as Llama 3 and Qwen checkpoints list them): the
//!   id is reported as a token but its text is not emitted;
//! - a stop string in the decoded text: the text up to it is emitted, the stop string and
//!   anything after it are not. A stop string may span tokens (and a token may end inside a
//!   UTF-8 character), so text that could be the start of a stop string is held back until a
//!   later piece settles it ([`StopStrings`]);
//! - `max_new_tokens` generated, or the context full: [`FinishReason::Length`].
//!
//! The sequence (prompt plus generated tokens) never exceeds the context size, as transformers'
//! `max_length`; a prompt that leaves no room is refused before the model is called.

use std::collections::VecDeque;

use frugal_formats::hf::GenerationConfig;

use crate::sampling::{Sampler, SamplingError};
use crate::tokenizer::{DecodeStream, Tokenizer, TokenizerError};

/// Errors from setting up or running a generation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerationError {
    /// The prompt has no tokens.
    #[error("the prompt is empty: at least one token is needed to compute logits")]
    EmptyPrompt,
    /// The prompt fills the context (or more).
    #[error(
        "prompt has {prompt} tokens but the context holds {context}, leaving no room to generate"
    )]
    PromptTooLong {
        /// Prompt length in tokens.
        prompt: usize,
        /// Context size in tokens.
        context: usize,
    },
    /// A stop string is empty (it would match before any text).
    #[error("stop string {index} is empty")]
    EmptyStopString {
        /// Its position in the list.
        index: usize,
    },
    /// `max_new_tokens` is 0.
    #[error("max_new_tokens must be at least 1")]
    ZeroMaxNewTokens,
    /// The model closure failed.
    #[error("model forward pass failed at sequence length {position}: {source}")]
    Model {
        /// Tokens fed before the failing call.
        position: usize,
        /// The closure's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Sampling failed (bad logits).
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// Detokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// When to stop generating.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StopCriteria {
    /// End-of-sequence token ids; any of them ends the generation.
    pub eos_token_ids: Vec<u32>,
    /// Most tokens to generate (`None`: until EOS, a stop string or the context is full).
    pub max_new_tokens: Option<usize>,
    /// Strings that end the generation when they appear in the output text.
    pub stop_strings: Vec<String>,
}

impl StopCriteria {
    /// The checkpoint's EOS ids and `max_new_tokens`. `max_length` is not used: transformers'
    /// fallback of 20 is meant for tests, and the context size bounds the sequence anyway.
    pub fn from_generation_config(gc: &GenerationConfig) -> Self {
        Self {
            eos_token_ids: gc.eos_token_id.clone(),
            max_new_tokens: gc
                .max_new_tokens
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            stop_strings: Vec::new(),
        }
    }

    /// Whether `id` ends the generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }
}

/// What a [`StopStrings::push`] released.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopScan {
    /// Text that is now safe to emit (never part of a stop string).
    pub text: String,
    /// Index of the stop string that matched, if one did; nothing more will be released.
    pub matched: Option<usize>,
}

/// Finds stop strings in streamed text, holding back text that might begin one.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// A matcher for `stops` (an empty one matches at once, before any text).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.to_vec(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds a piece of text. Returns the text now known not to belong to a stop string, and the
    /// stop string that matched (the earliest in the text; on equal starts the first listed).
    pub fn push(&mut self, piece: &str) -> StopScan {
        if self.stopped {
            return StopScan::default();
        }
        self.held.push_str(piece);
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|pos| (pos, i)))
            .min();
        if let Some((pos, i)) = found {
            self.held.truncate(pos);
            self.stopped = true;
            return StopScan {
                text: std::mem::take(&mut self.held),
                matched: Some(i),
            };
        }
        // Hold back the longest suffix that a stop string starts with. No full match is in
        // `held`, so such a suffix is shorter than that stop string.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = self.held.len().saturating_sub(longest.saturating_sub(1));
        let hold_from = (earliest..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(hold_from);
        StopScan {
            text: std::mem::replace(&mut self.held, rest),
            matched: None,
        }
    }

    /// Ends the stream: releases the held-back text (no stop string can complete any more).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Why a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was sampled.
    Eos,
    /// `max_new_tokens` were generated or the context is full.
    Length,
    /// This stop string appeared in the text.
    StopString(String),
}

/// One step of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationEvent {
    /// A sampled token id (EOS included), in order.
    Token(u32),
    /// The next piece of output text. Pieces lag tokens where text is held back (an unfinished
    /// character, a possible stop string); their concatenation is the output text.
    Text(String),
    /// The last event.
    Finished(FinishReason),
}

/// The whole result of a generation, from [`Generation::run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationOutput {
    /// Generated token ids (EOS included when it ended the generation).
    pub tokens: Vec<u32>,
    /// Generated text, without a matched stop string.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
}

/// A running generation; iterate it for [`GenerationEvent`]s.
pub struct Generation<'t, F> {
    forward: F,
    tokenizer: &'t Tokenizer,
    decoder: DecodeStream<'t>,
    sampler: Sampler,
    stop: StopCriteria,
    stop_strings: StopStrings,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// How many of `tokens` the model has been fed.
    fed: usize,
    context_size: usize,
    events: VecDeque<GenerationEvent>,
    done: bool,
}

impl<'t, F, E> Generation<'t, F>
where
    F: FnMut(&[u32]) -> Result<Vec<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sets up a generation of `prompt` in a context of `context_size` tokens; checks the
    /// prompt fits and the stop criteria make sense before anything runs. Text is decoded
    /// skipping special tokens (see [`Generation::skip_special_tokens`]).
    pub fn new(
        forward: F,
        tokenizer: &'t Tokenizer,
        sampler: Sampler,
        stop: StopCriteria,
        prompt: &[u32],
        context_size: usize,
    ) -> Result<Self, GenerationError> {
        if prompt.is_empty() {
            return Err(GenerationError::EmptyPrompt);
        }
        if prompt.len() >= context_size {
            return Err(GenerationError::PromptTooLong {
                prompt: prompt.len(),
                context: context_size,
            });
        }
        if let Some(index) = stop.stop_strings.iter().position(String::is_empty) {
            return Err(GenerationError::EmptyStopString { index });
        }
        if stop.max_new_tokens == Some(0) {
            return Err(GenerationError::ZeroMaxNewTokens);
        }
        Ok(Self {
            forward,
            tokenizer,
            decoder: tokenizer.decode_stream(true),
            sampler,
            stop_strings: StopStrings::new(&stop.stop_strings),
            stop,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            fed: 0,
            context_size,
            events: VecDeque::new(),
            done: false,
        })
    }

    /// Whether special tokens (other than EOS, never shown) are left out of the text; default
    /// true. Set before the first event.
    pub fn skip_special_tokens(mut self, skip: bool) -> Self {
        self.decoder = self.tokenizer.decode_stream(skip);
        self
    }

    /// Prompt and generated tokens so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Runs to the end and collects the output.
    pub fn run(mut self) -> Result<GenerationOutput, GenerationError> {
        let mut text = String::new();
        while let Some(event) = self.next() {
            match event? {
                GenerationEvent::Text(piece) => text.push_str(&piece),
                GenerationEvent::Token(_) => {}
                GenerationEvent::Finished(finish) => {
                    return Ok(GenerationOutput {
                        tokens: self.generated().to_vec(),
                        text,
                        finish,
                    })
                }
            }
        }
        unreachable!("OK because the event stream always ends with Finished or an error")
    }

    /// Feeds the unfed tokens, samples one, and queues its events.
    fn step(&mut self) -> Result<(), GenerationError> {
        let mut logits =
            (self.forward)(&self.tokens[self.fed..]).map_err(|e| GenerationError::Model {
                position: self.fed,
                source: e.into(),
            })?;
        self.fed = self.tokens.len();
        let id = self.sampler.sample(&mut logits, &self.tokens)?;
        self.tokens.push(id);
        self.events.push_back(GenerationEvent::Token(id));
        if self.stop.is_eos(id) {
            return self.finish(FinishReason::Eos);
        }
        if let Some(piece) = self.decoder.step(id)? {
            let scan = self.stop_strings.push(&piece);
            if !scan.text.is_empty() {
                self.events.push_back(GenerationEvent::Text(scan.text));
            }
            if let Some(i) = scan.matched {
                self.done = true;
                let stop = self.stop.stop_strings[i].clone();
                self.events
                    .push_back(GenerationEvent::Finished(FinishReason::StopString(stop)));
                return Ok(());
            }
        }
        let at_max = self.stop.max_new_tokens == Some(self.tokens.len() - self.prompt_len);
        if at_max || self.tokens.len() >= self.context_size {
            return self.finish(FinishReason::Length);
        }
        Ok(())
    }

    /// Flushes the decoder and the held-back text, then queues `Finished`.
    fn finish(&mut self, mut reason: FinishReason) -> Result<(), GenerationError> {
        self.done = true;
        let mut text = String::new();
        if let Some(rest) = self.decoder.flush() {
            let scan = self.stop_strings.push(&rest);
            text.push_str(&scan.text);
            if let Some(i) = scan.matched {
                reason = FinishReason::StopString(self.stop.stop_strings[i].clone());
            }
        }
        text.push_str(&self.stop_strings.finish());
        if !text.is_empty() {
            self.events.push_back(GenerationEvent::Text(text));
        }
        self.events.push_back(GenerationEvent::Finished(reason));
        Ok(())
    }
}

impl<F, E> Iterator for Generation<'_, F>
where
    F: FnMut(&[u32]) -> Result<Vec<f32>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<GenerationEvent, GenerationError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.step() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
