//! Tokenizers from `tokenizer.json` (through the `tokenizers` crate) plus what
//! `tokenizer_config.json` adds: special tokens and the chat template.

use std::path::Path;

use serde_json::Value;

use crate::error::{LoaderError, Result};
use crate::json::{read_json, write_json};

/// A tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
    add_bos: bool,
}

impl Tokenizer {
    /// Reads the tokenizer files of a checkpoint folder: `tokenizer.json`, and when present
    /// `tokenizer_config.json` and `chat_template.jinja` (which newer repos ship, and which
    /// wins over the config's template, as in transformers).
    ///
    /// # Errors
    /// As [`Tokenizer::from_files`], or [`LoaderError::Io`] for an unreadable template.
    pub fn from_folder(folder: &Path) -> Result<Self> {
        let config = folder.join("tokenizer_config.json");
        let mut tokenizer =
            Self::from_files(&folder.join("tokenizer.json"), config.is_file().then_some(&*config))?;
        let template = folder.join("chat_template.jinja");
        if template.is_file() {
            let text = std::fs::read_to_string(&template).map_err(|e| LoaderError::io(&template, e))?;
            tokenizer.chat_template = Some(text);
        }
        Ok(tokenizer)
    }

    /// Reads `tokenizer.json` and, when given, `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] or [`LoaderError::Json`] naming the file.
    pub fn from_files(tokenizer_json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| LoaderError::Tokenizer {
            path: tokenizer_json.to_path_buf(),
            reason: e.to_string(),
        })?;
        let config = match tokenizer_config {
            Some(path) => read_json::<Value>(path)?,
            None => Value::Null,
        };
        Ok(Tokenizer {
            inner,
            bos_token: special(&config, "bos_token"),
            eos_token: special(&config, "eos_token"),
            chat_template: chat_template(&config),
            // transformers' tokenizer.json prepends BOS in its own post-processor; only a
            // tokenizer lamina saved from GGUF metadata asks lamina to do it.
            add_bos: config.get(PREPEND_BOS_KEY).and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// A tokenizer built from parts (GGUF metadata).
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        chat_template: Option<String>,
    ) -> Self {
        Tokenizer { inner, bos_token, eos_token, chat_template, add_bos: false }
    }

    /// The same tokenizer, prepending the BOS token when encoding with special tokens
    /// (for tokenizers whose `tokenizer.json`-style post-processor is not available, as in
    /// GGUF files with `tokenizer.ggml.add_bos_token`).
    pub fn with_add_bos(self, add_bos: bool) -> Self {
        Tokenizer { add_bos, ..self }
    }

    /// Token ids of `text`, with the tokenizer's special tokens (BOS, ...) when asked.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] if the tokenizer fails.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| LoaderError::Tokenizer { path: "tokenizer".into(), reason: e.to_string() })?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens && self.add_bos {
            if let Some(bos) = self.bos_token.as_deref().and_then(|t| self.token_to_id(t)) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] for ids outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| LoaderError::Tokenizer { path: "tokenizer".into(), reason: e.to_string() })
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token's text.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token's text.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The EOS token's id, when the tokenizer names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// The Jinja chat template, when the checkpoint has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Writes `tokenizer.json` and a `tokenizer_config.json` holding the special tokens and
    /// chat template, as a Hugging Face folder has them.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] or [`LoaderError::Io`] naming the file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.inner
            .save(&path, false)
            .map_err(|e| LoaderError::Tokenizer { path: path.clone(), reason: e.to_string() })?;
        let mut config = serde_json::Map::new();
        for (key, value) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("chat_template", &self.chat_template),
        ] {
            if let Some(value) = value {
                config.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
        config.insert(PREPEND_BOS_KEY.into(), Value::Bool(self.add_bos));
        write_json(&dir.join("tokenizer_config.json"), &Value::Object(config))
    }

    /// The `tokenizers` crate's tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The `tokenizer_config.json` key with which lamina records that it must prepend BOS
/// itself (tokenizers built from GGUF metadata have no post-processor doing it).
const PREPEND_BOS_KEY: &str = "lamina_prepend_bos";

/// A special token, written as a string or as `{"content": "..."}`.
fn special(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The chat template, written as a string or as a list of `{name, template}` (the one
/// named `default`, else the first).
fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named =
                |name: &str| list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name));
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
        _ => None,
    }
}
