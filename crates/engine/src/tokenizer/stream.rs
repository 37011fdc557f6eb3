//! Streaming detokenization: token ids in, complete UTF-8 text out.
//!
//! A token need not end on a character boundary: byte-level BPE tokens and SentencePiece's
//! byte-fallback tokens `<0xNN>` can split one character over several tokens. [`DecodeStream`]
//! keeps the bytes of an unfinished character back until a later token completes it, and emits
//! U+FFFD exactly where `String::from_utf8_lossy` of the whole output would (an invalid
//! sequence is known to be invalid as soon as its first bad byte arrives). With the
//! SentencePiece space prefix, the one leading space [`Tokenizer::decode`] drops is dropped here
//! too. So the pieces, then [`DecodeStream::flush`], concatenate to `decode(all ids)`.

use super::{Tokenizer, TokenizerError};

/// Incremental decoder over a [`Tokenizer`].
#[derive(Debug)]
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip_special_tokens: bool,
    /// Bytes not yet emitted: the start of an unfinished UTF-8 sequence.
    pending: Vec<u8>,
    /// True until the first byte of output has been seen (for the leading-space strip).
    at_start: bool,
}

impl<'a> DecodeStream<'a> {
    /// A stream decoding with `tok`.
    pub fn new(tok: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tok,
            skip_special_tokens,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        let bytes = self.tok.piece_bytes(id, self.skip_special_tokens)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut bytes = bytes.as_slice();
        if self.at_start {
            self.at_start = false;
            if self.tok.strips_leading_space() && bytes.first() == Some(&b' ') {
                bytes = &bytes[1..];
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // OK because from_utf8 vouched for the first `valid` bytes.
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid])
                            .expect("OK because valid_up_to"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // An incomplete sequence at the end: keep it for the next token.
                            self.pending.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    /// Ends the stream: bytes of a character that never completed, as U+FFFD.
    pub fn flush(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }
}
