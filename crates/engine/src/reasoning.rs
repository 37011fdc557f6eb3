//! Streaming split of generated text into reasoning and answer content.
//!
//! Reasoning models wrap their chain of thought in `<think>` … `</think>` and write the answer
//! after it. An OpenAI-style API returns the two parts separately (DeepSeek's API calls them
//! `reasoning_content` and `content`); [`ReasoningParser`] does that split on streamed text, piece
//! by piece, as the detokenizer produces it.
//!
//! Where the block opens depends on the chat template:
//!
//! * DeepSeek-R1 (current template) and the R1-Distill models end the generation prompt with
//!   `<｜Assistant｜><think>\n`: the block is already open when generation starts, so the output
//!   begins in reasoning and only `</think>` appears. Some checkpoints (R1-0528) repeat `<think>`
//!   anyway; a `<think>` at the very start of such output is dropped.
//! * Older R1 / Qwen3 with `enable_thinking=true`: the prompt ends with the assistant header and
//!   the model writes `<think>\n…\n</think>\n\n` itself. Text before the first `<think>` is
//!   content (normally there is none).
//! * Qwen3 with `enable_thinking=false` writes an empty `<think>\n\n</think>\n\n` into the prompt,
//!   and DeepSeek-V3 has no reasoning: the output is all content (use [`ReasoningStyle::None`],
//!   or [`ReasoningStyle::Think`] with `prompt_opens_think = false`, which also passes text
//!   through unless the model writes `<think>`).
//!
//! [`prompt_opens_think`] decides the second argument of [`ReasoningParser::new`] from the
//! rendered prompt.
//!
//! Only the first block is recognized: after `</think>` everything is content, tags included
//! (vLLM's `deepseek_r1` and `qwen3` parsers also split at the first `</think>`). A block still
//! open when generation stops (token limit) makes everything after `<think>` reasoning, and
//! [`Finish::unclosed`] reports it.
//!
//! ## Whitespace
//!
//! vLLM's `deepseek_r1` / `qwen3` parsers return the text between the tags verbatim, so its
//! reasoning starts with the `\n` after `<think>` and its content with the `\n\n` after
//! `</think>`. [`Whitespace::Verbatim`] reproduces that. The default, [`Whitespace::Trim`],
//! drops the conventional whitespace around the tags the way DeepSeek's API presents the two
//! fields: whitespace at the start and end of the reasoning, whitespace between `</think>` and
//! the answer, and whitespace at the very start of the output when a `<think>` follows it.
//! Whitespace anywhere else (inside the reasoning, in content with no reasoning block) is kept.
//!
//! ## Streaming
//!
//! Pieces can split a tag (`"<thi"`, `"nk>"`). The parser holds back only a tail that could still
//! become a tag (a proper prefix of `<think>` / `</think>`) and, in trim mode, whitespace whose
//! fate depends on what follows; everything else is emitted at once. The concatenated reasoning
//! and content never depend on how the text was split.

/// Opening tag of a reasoning block.
pub const THINK_OPEN: &str = "<think>";
/// Closing tag of a reasoning block.
pub const THINK_CLOSE: &str = "</think>";

/// How a model marks its reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReasoningStyle {
    /// No reasoning (DeepSeek-V3, V2, Mixtral): all output is content.
    None,
    /// `<think>` … `</think>` (DeepSeek-R1, R1-Distill, Qwen3).
    Think,
}

/// What to do with the whitespace around the tags (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Whitespace {
    /// Drop the conventional whitespace around the tags (DeepSeek API presentation).
    #[default]
    Trim,
    /// Keep the text between the tags byte for byte (vLLM's parsers).
    Verbatim,
}

/// A piece of parsed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Text of the reasoning block (`reasoning_content`).
    Reasoning(String),
    /// Answer text (`content`).
    Content(String),
}

/// What [`ReasoningParser::finish`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The text that was held back, now emitted.
    pub deltas: Vec<Delta>,
    /// A reasoning block was open when the output ended (e.g. the token limit was hit).
    pub unclosed: bool,
}

/// A whole output split at once, by [`parse_complete`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// All reasoning text.
    pub reasoning: String,
    /// All content text.
    pub content: String,
    /// A reasoning block was left open.
    pub unclosed: bool,
}

impl Parsed {
    /// Appends deltas to the two strings.
    pub fn extend(&mut self, deltas: impl IntoIterator<Item = Delta>) {
        for d in deltas {
            match d {
                Delta::Reasoning(s) => self.reasoning.push_str(&s),
                Delta::Content(s) => self.content.push_str(&s),
            }
        }
    }
}

/// Whether a rendered generation prompt leaves a `<think>` block open, i.e. ends with `<think>`
/// and optional whitespace (DeepSeek-R1's `<｜Assistant｜><think>\n`, R1-Distill's `<think>\n`).
/// Qwen3's disabled-thinking prompt ends with `</think>\n\n` and gives `false`.
pub fn prompt_opens_think(prompt: &str) -> bool {
    prompt.trim_end().ends_with(THINK_OPEN)
}

/// Splits a complete output in one go (the same result as streaming it piece by piece).
pub fn parse_complete(
    style: ReasoningStyle,
    prompt_opens_think: bool,
    whitespace: Whitespace,
    text: &str,
) -> Parsed {
    let mut parser = ReasoningParser::new(style, prompt_opens_think).with_whitespace(whitespace);
    let mut parsed = Parsed::default();
    parsed.extend(parser.push(text));
    let finish = parser.finish();
    parsed.extend(finish.deltas);
    parsed.unclosed = finish.unclosed;
    parsed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Outside any block, before one was seen: a `<think>` opens reasoning.
    Before,
    /// Inside the block.
    Reasoning {
        /// No reasoning text has been accepted yet (leading whitespace / a repeated `<think>`
        /// may still be dropped).
        at_start: bool,
        /// The block was opened by the prompt, so a `<think>` at the start is a repeat to drop.
        may_repeat_open: bool,
    },
    /// After `</think>`: all content.
    After {
        /// Nothing after `</think>` has been emitted yet.
        at_start: bool,
    },
    /// [`ReasoningStyle::None`]: pass everything through.
    Passthrough,
}

/// Incremental `<think>` splitter; see the module docs.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    mode: Mode,
    whitespace: Whitespace,
    /// Text received but not yet emitted (a possible tag prefix, or whitespace in trim mode).
    held: String,
    /// Some content was emitted in [`Mode::Before`].
    content_emitted: bool,
}

impl ReasoningParser {
    /// A parser for output generated after a prompt; `prompt_opens_think` says whether the
    /// prompt left a `<think>` block open (see [`prompt_opens_think`]). Whitespace is trimmed
    /// (see [`with_whitespace`](Self::with_whitespace)).
    pub fn new(style: ReasoningStyle, prompt_opens_think: bool) -> Self {
        let mode = match style {
            ReasoningStyle::None => Mode::Passthrough,
            ReasoningStyle::Think if prompt_opens_think => Mode::Reasoning {
                at_start: true,
                may_repeat_open: true,
            },
            ReasoningStyle::Think => Mode::Before,
        };
        ReasoningParser {
            mode,
            whitespace: Whitespace::default(),
            held: String::new(),
            content_emitted: false,
        }
    }

    /// Chooses how whitespace around the tags is treated.
    pub fn with_whitespace(mut self, whitespace: Whitespace) -> Self {
        self.whitespace = whitespace;
        self
    }

    /// Whether the parser is inside a reasoning block now.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.mode, Mode::Reasoning { .. })
    }

    /// Feeds the next piece of output; returns what can be emitted now.
    pub fn push(&mut self, piece: &str) -> Vec<Delta> {
        let mut out = Vec::new();
        if self.mode == Mode::Passthrough {
            emit(&mut out, Delta::Content, piece);
            return out;
        }
        self.held.push_str(piece);
        self.process(&mut out);
        out
    }

    /// Ends the output: emits the held text and reports an unclosed block.
    pub fn finish(&mut self) -> Finish {
        let mut deltas = Vec::new();
        let held = std::mem::take(&mut self.held);
        let trim = self.whitespace == Whitespace::Trim;
        let unclosed = match self.mode {
            Mode::Passthrough => false,
            Mode::Before => {
                emit(&mut deltas, Delta::Content, &held);
                false
            }
            Mode::Reasoning { .. } => {
                // A held tag prefix ("</thi") was text after all; trailing whitespace is the
                // end of the reasoning.
                let text = if trim { held.trim_end() } else { &held };
                emit(&mut deltas, Delta::Reasoning, text);
                true
            }
            Mode::After { at_start } => {
                let text = if trim && at_start {
                    held.trim_start()
                } else {
                    &held
                };
                emit(&mut deltas, Delta::Content, text);
                false
            }
        };
        Finish { deltas, unclosed }
    }

    fn process(&mut self, out: &mut Vec<Delta>) {
        let trim = self.whitespace == Whitespace::Trim;
        loop {
            match self.mode {
                Mode::Passthrough => unreachable!("OK because push returns before processing"),
                Mode::Before => {
                    if let Some(i) = self.held.find(THINK_OPEN) {
                        let before = &self.held[..i];
                        // Whitespace alone before the opening tag is formatting, not an answer.
                        if !(trim && !self.content_emitted && before.trim().is_empty()) {
                            emit(out, Delta::Content, before);
                        }
                        self.held.drain(..i + THINK_OPEN.len());
                        self.mode = Mode::Reasoning {
                            at_start: true,
                            may_repeat_open: false,
                        };
                        continue;
                    }
                    let keep = tag_prefix_len(&self.held, THINK_OPEN);
                    let ready = self.held.len() - keep;
                    if trim && !self.content_emitted && self.held[..ready].trim().is_empty() {
                        // Leading whitespace: dropped if a `<think>` follows, so wait.
                        return;
                    }
                    self.content_emitted |= ready > 0;
                    emit(out, Delta::Content, &self.held[..ready]);
                    self.held.drain(..ready);
                    return;
                }
                Mode::Reasoning {
                    at_start,
                    may_repeat_open,
                } => {
                    if at_start {
                        if trim {
                            let ws = self.held.len() - self.held.trim_start().len();
                            self.held.drain(..ws);
                        }
                        if self.held.is_empty() {
                            return;
                        }
                        if may_repeat_open {
                            if self.held.starts_with(THINK_OPEN) {
                                self.held.drain(..THINK_OPEN.len());
                                self.mode = Mode::Reasoning {
                                    at_start: true,
                                    may_repeat_open: false,
                                };
                                continue;
                            }
                            if THINK_OPEN.starts_with(self.held.as_str()) {
                                return; // could still be the repeated `<think>`
                            }
                        }
                        self.mode = Mode::Reasoning {
                            at_start: false,
                            may_repeat_open: false,
                        };
                    }
                    if let Some(i) = self.held.find(THINK_CLOSE) {
                        let text = &self.held[..i];
                        let text = if trim { text.trim_end() } else { text };
                        emit(out, Delta::Reasoning, text);
                        self.held.drain(..i + THINK_CLOSE.len());
                        self.mode = Mode::After { at_start: true };
                        continue;
                    }
                    let mut ready = self.held.len() - tag_prefix_len(&self.held, THINK_CLOSE);
                    if trim {
                        // Whitespace right before a possible `</think>` may end the reasoning.
                        ready = self.held[..ready].trim_end().len();
                    }
                    emit(out, Delta::Reasoning, &self.held[..ready]);
                    self.held.drain(..ready);
                    return;
                }
                Mode::After { at_start } => {
                    if trim && at_start {
                        let ws = self.held.len() - self.held.trim_start().len();
                        self.held.drain(..ws);
                        if self.held.is_empty() {
                            return;
                        }
                    }
                    self.mode = Mode::After { at_start: false };
                    emit(out, Delta::Content, &self.held);
                    self.held.clear();
                    return;
                }
            }
        }
    }
}

/// Pushes a non-empty delta, merging with the previous one of the same kind.
fn emit(out: &mut Vec<Delta>, kind: fn(String) -> Delta, text: &str) {
    if text.is_empty() {
        return;
    }
    match (out.last_mut(), kind(String::new())) {
        (Some(Delta::Reasoning(s)), Delta::Reasoning(_))
        | (Some(Delta::Content(s)), Delta::Content(_)) => s.push_str(text),
        _ => out.push(kind(text.to_owned())),
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (the part that could
/// still grow into the tag). Tags are ASCII, so the suffix starts at a char boundary.
fn tag_prefix_len(text: &str, tag: &str) -> usize {
    let max = text.len().min(tag.len() - 1);
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_prefix() {
        assert_eq!(tag_prefix_len("abc</th", THINK_CLOSE), 4);
        assert_eq!(tag_prefix_len("abc<", THINK_CLOSE), 1);
        assert_eq!(tag_prefix_len("abc</think", THINK_CLOSE), 7);
        assert_eq!(tag_prefix_len("abc", THINK_CLOSE), 0);
        assert_eq!(tag_prefix_len("é<t", THINK_OPEN), 2);
    }
}
