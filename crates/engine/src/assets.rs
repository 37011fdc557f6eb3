//! A model's text-side assets — tokenizer and chat template — from whichever files it came in.
//!
//! A Hugging Face folder keeps them in `tokenizer.json`, `tokenizer_config.json` and
//! `chat_template.jinja`; a GGUF file keeps them in its `tokenizer.*` metadata. Callers ask
//! here and need not care which.

use frugal_formats::ModelFiles;

use crate::chat_template::{ChatTemplate, ChatTemplateError};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// The model's tokenizer, or `None` when its files carry none (a config-only folder, or a GGUF
/// file written without `tokenizer.ggml.*`).
pub fn load_tokenizer(files: &ModelFiles) -> Result<Option<Tokenizer>, TokenizerError> {
    if let Some(folder) = files.hf_folder() {
        return folder
            .tokenizer_json_path()
            .map(Tokenizer::from_tokenizer_json)
            .transpose();
    }
    match files.gguf_metadata() {
        Some(md) if md.contains_key("tokenizer.ggml.model") => {
            Tokenizer::from_gguf_metadata(md).map(Some)
        }
        _ => Ok(None),
    }
}

/// The model's chat template, or `None` when it has none.
///
/// Templates refer to `bos_token` and `eos_token` by text. A folder names them in
/// `tokenizer_config.json`; a GGUF file gives their ids, which `tokenizer` turns into text.
pub fn load_chat_template(
    files: &ModelFiles,
    tokenizer: Option<&Tokenizer>,
) -> Result<Option<ChatTemplate>, ChatTemplateError> {
    let Some(source) = files.chat_template() else {
        return Ok(None);
    };
    let (bos, eos) = match files.hf_folder().and_then(|f| f.tokenizer_config()) {
        Some(tc) => (tc.bos_token.clone(), tc.eos_token.clone()),
        None => {
            let text = |id: Option<u32>| tokenizer.zip(id).and_then(|(t, id)| t.id_to_token(id));
            (
                text(tokenizer.and_then(Tokenizer::bos_id)),
                text(tokenizer.and_then(Tokenizer::eos_id)),
            )
        }
    };
    ChatTemplate::new(source, bos.as_deref(), eos.as_deref()).map(Some)
}
