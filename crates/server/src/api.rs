//! Request bodies of the OpenAI API, as far as frugal reads them. Unknown fields are ignored
//! (clients send many); known fields of the wrong type are errors naming the field.

use serde::Deserialize;
use serde_json::Value;

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Up to four.
    Many(Vec<String>),
}

impl Stop {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    /// `text` or `json_object` (`json_schema` is refused).
    #[serde(rename = "type")]
    pub kind: String,
}

/// What chat and text completions share (read from the same body as the endpoint's own
/// fields).
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    /// Ignored beyond being a string: the server has one model.
    pub model: Option<String>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate.
    pub n: Option<u32>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Token limit (older name).
    pub max_tokens: Option<u32>,
    /// Token limit.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (an extension, as vLLM and llama.cpp accept it).
    pub top_k: Option<u32>,
    /// Min-p (extension).
    pub min_p: Option<f32>,
    /// Repetition penalty (extension).
    pub repetition_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<i64>,
    /// Keep generating past EOS up to the token limit (extension, as vLLM's; for benchmarks).
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// The conversation.
    pub messages: Vec<Value>,
    /// Return log-probabilities of the output tokens.
    pub logprobs: Option<bool>,
    /// How many alternatives per token (0–20), with `logprobs`.
    pub top_logprobs: Option<u32>,
    /// Output format.
    pub response_format: Option<ResponseFormat>,
    /// Tool (function) schemas.
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or a named function.
    pub tool_choice: Option<Value>,
    /// More template variables (e.g. `{"enable_thinking": false}`), as vLLM accepts them.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

/// `prompt` of a text completion: text or token ids, one or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Prompt,
    /// Log-probabilities of this many alternatives per token (0–5).
    pub logprobs: Option<u32>,
    /// Put the prompt before the completion.
    pub echo: Option<bool>,
}
