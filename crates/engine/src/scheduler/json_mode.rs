//! `response_format: json_object`: sampling restricted to tokens that keep the output a prefix
//! of one JSON object (RFC 8259 grammar, whitespace allowed around tokens), then EOS once the
//! object is closed.
//!
//! The object must start the output, and whitespace comes in runs of at most
//! [`MAX_WS_RUN`] bytes (enough for indentation), so a model cannot spend its tokens on blanks.
//!
//! [`JsonPrefix`] is a byte-level pushdown recognizer. Each step, every token's bytes are run
//! through a copy of the current state; tokens that hit an invalid byte get `-inf` logits.

/// Longest run of whitespace bytes allowed.
pub(super) const MAX_WS_RUN: u8 = 16;

/// Longest number, in bytes, and most exponent digits: every number then fits an f64
/// (at most ~1e24 · 1e99), which clients' parsers require.
pub(super) const MAX_NUM_LEN: u8 = 24;
const MAX_EXP_DIGITS: u8 = 2;

/// Where the recognizer is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Before the top-level object: whitespace or `{`.
    Start,
    /// A value is expected.
    Value,
    /// Right after `[`: a value or `]`.
    ArrayFirst,
    /// Right after `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the closer.
    After,
    /// Inside a string; `esc`: 0 plain, 1 after `\`, 2..=5 hex digits still expected + 1.
    Str { key: bool, esc: u8 },
    /// Inside a number.
    Num(Num),
    /// Inside `true`/`false`/`null`: the bytes still expected.
    Lit(&'static [u8]),
    /// The top-level object is closed.
    Done,
}

/// Number lexing states (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }

    fn step(self, b: u8) -> Option<Num> {
        use Num::*;
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') => Int,
            (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') => Dot,
            (Dot | Frac, b'0'..=b'9') => Frac,
            (Zero | Int | Frac, b'e' | b'E') => E,
            (E, b'+' | b'-') => ESign,
            (E | ESign | Exp, b'0'..=b'9') => Exp,
            _ => return None,
        })
    }
}

/// A recognizer of JSON-object prefixes.
#[derive(Clone, Debug)]
pub(super) struct JsonPrefix {
    /// Open containers: `{` or `[`.
    stack: Vec<u8>,
    st: St,
    /// Whitespace bytes just seen outside strings.
    ws_run: u8,
    /// Bytes and exponent digits of the number being read.
    num_len: u8,
    exp_digits: u8,
}

fn ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonPrefix {
    pub(super) fn new() -> Self {
        JsonPrefix {
            stack: Vec::new(),
            st: St::Start,
            ws_run: 0,
            num_len: 0,
            exp_digits: 0,
        }
    }

    /// Whether the top-level object is complete.
    pub(super) fn done(&self) -> bool {
        self.st == St::Done
    }

    /// Whether all of `bytes` can follow.
    pub(super) fn accepts(&self, bytes: &[u8]) -> bool {
        let mut s = self.clone();
        bytes.iter().all(|&b| s.push(b))
    }

    /// Advances by one byte; false (state unspecified) when the byte cannot follow.
    pub(super) fn push(&mut self, b: u8) -> bool {
        if ws(b) && !matches!(self.st, St::Str { .. }) {
            self.ws_run += 1;
            if self.ws_run > MAX_WS_RUN {
                return false;
            }
        } else {
            self.ws_run = 0;
        }
        match self.st {
            St::Start => {
                if b == b'{' {
                    self.stack.push(b'{');
                    self.st = St::ObjectFirst;
                }
                b == b'{'
            }
            St::Done => ws(b),
            St::Value | St::ArrayFirst => {
                if ws(b) {
                    return true;
                }
                if self.st == St::ArrayFirst && b == b']' {
                    return self.close(b'[');
                }
                self.value_start(b)
            }
            St::ObjectFirst | St::Key => {
                if ws(b) {
                    return true;
                }
                if self.st == St::ObjectFirst && b == b'}' {
                    return self.close(b'{');
                }
                if b == b'"' {
                    self.st = St::Str { key: true, esc: 0 };
                    return true;
                }
                false
            }
            St::Colon => {
                if b == b':' {
                    self.st = St::Value;
                }
                b == b':' || ws(b)
            }
            St::After => self.after(b),
            St::Str { key, esc } => {
                match esc {
                    0 => match b {
                        b'"' => self.st = if key { St::Colon } else { St::After },
                        b'\\' => self.st = St::Str { key, esc: 1 },
                        0..=0x1f => return false,
                        _ => {}
                    },
                    1 => match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            self.st = St::Str { key, esc: 0 }
                        }
                        b'u' => self.st = St::Str { key, esc: 5 },
                        _ => return false,
                    },
                    n => {
                        if !b.is_ascii_hexdigit() {
                            return false;
                        }
                        self.st = St::Str {
                            key,
                            esc: if n == 2 { 0 } else { n - 1 },
                        };
                    }
                }
                true
            }
            St::Num(n) => match n.step(b) {
                Some(next) => {
                    self.num_len += 1;
                    self.exp_digits += u8::from(next == Num::Exp);
                    self.st = St::Num(next);
                    self.num_len <= MAX_NUM_LEN && self.exp_digits <= MAX_EXP_DIGITS
                }
                None if n.complete() => {
                    self.st = St::After;
                    self.after(b)
                }
                None => false,
            },
            St::Lit(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                self.st = if rest.len() == 1 {
                    St::After
                } else {
                    St::Lit(&rest[1..])
                };
                true
            }
        }
    }

    fn value_start(&mut self, b: u8) -> bool {
        (self.num_len, self.exp_digits) = (1, 0);
        self.st = match b {
            b'{' => {
                self.stack.push(b'{');
                St::ObjectFirst
            }
            b'[' => {
                self.stack.push(b'[');
                St::ArrayFirst
            }
            b'"' => St::Str { key: false, esc: 0 },
            b'-' => St::Num(Num::Minus),
            b'0' => St::Num(Num::Zero),
            b'1'..=b'9' => St::Num(Num::Int),
            b't' => St::Lit(b"rue"),
            b'f' => St::Lit(b"alse"),
            b'n' => St::Lit(b"ull"),
            _ => return false,
        };
        true
    }

    fn after(&mut self, b: u8) -> bool {
        if ws(b) {
            return true;
        }
        match (self.stack.last(), b) {
            (Some(b'{'), b',') => self.st = St::Key,
            (Some(b'['), b',') => self.st = St::Value,
            (Some(b'{'), b'}') => return self.close(b'{'),
            (Some(b'['), b']') => return self.close(b'['),
            _ => return false,
        }
        true
    }

    fn close(&mut self, open: u8) -> bool {
        if self.stack.pop() != Some(open) {
            return false;
        }
        self.st = if self.stack.is_empty() {
            St::Done
        } else {
            St::After
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(s: &str) -> bool {
        JsonPrefix::new().accepts(s.as_bytes())
    }

    /// Every prefix of valid objects is accepted, and the whole object completes; checked
    /// against serde_json's parser on the same texts.
    #[test]
    fn prefixes_of_valid_objects() {
        for text in [
            r#"{}"#,
            r#"{"a": 1, "b": [true, false, null, -0.5e+3, "x\"\u00e9\n"], "c": {"d": []}}"#,
            r#"{"k":[{"x":0},{"y":12.25E-2}],"s":"日本"}"#,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
            let mut p = JsonPrefix::new();
            for (i, &b) in text.as_bytes().iter().enumerate() {
                assert!(p.push(b), "{text:?} at {i}");
            }
            assert!(p.done(), "{text:?}");
        }
    }

    #[test]
    fn rejects_what_no_object_continues() {
        for bad in [
            "[",
            "1",
            "\"a\"",
            "{a",
            "{\"a\" 1",
            "{\"a\":}",
            "{\"a\":01",
            "{\"a\":1,}",
            "{]",
            "{\"a\":tru e",
            "{\"a\":\"\u{1}\"",
            "{\"a\":\"\\x\"",
            "{\"a\":1}}",
            "{\"a\":1} x",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":[1 2]}",
        ] {
            assert!(!accepts(bad), "{bad:?}");
            assert!(serde_json::from_str::<serde_json::Value>(bad).map_or(true, |v| !v.is_object()));
        }
        // Policy beyond the grammar: no blank start, bounded blank runs, f64-sized numbers.
        assert!(!accepts(" {}"));
        assert!(!accepts(&format!(
            "{{{}",
            " ".repeat(MAX_WS_RUN as usize + 1)
        )));
        assert!(accepts(&format!("{{{}", " ".repeat(MAX_WS_RUN as usize))));
        assert!(!accepts("{\"a\":1e100"));
        assert!(!accepts(&format!(
            "{{\"a\":{}",
            "9".repeat(MAX_NUM_LEN as usize + 1)
        )));
        assert!(accepts("{\"a\":-12.5e+99}"));
    }
}
