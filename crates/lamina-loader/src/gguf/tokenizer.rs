//! A tokenizer built from a GGUF's metadata: byte-level BPE (`tokenizer.ggml.model =
//! "gpt2"`) with the pre-tokenizer `tokenizer.ggml.pre` names, special tokens from the
//! token types, and the chat template.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::header::{Header, Value};
use crate::tokenizer::Tokenizer;

/// llama.cpp's token types.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// Llama 3's pre-tokenizer pattern (`tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pre-tokenizer pattern (`tokenizer.ggml.pre = "qwen2"`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn strings<'a>(header: &'a Header, key: &str) -> Result<Vec<&'a str>, String> {
    match header.get(key) {
        Some(Value::Array(items)) => {
            items.iter().map(|v| v.as_str().ok_or_else(|| format!("`{key}` holds a non-string"))).collect()
        }
        _ => Err(format!("metadata `{key}` is missing")),
    }
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, String> {
    let byte_level = |regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    let split = |pattern: &str| {
        Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map(PreTokenizerWrapper::Split)
            .map_err(|e| e.to_string())
    };
    Ok(match pre {
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level(true),
        ])),
        "llama-bpe" | "llama3" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false)]))
        }
        "qwen2" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false)]))
        }
        other => {
            return Err(format!(
                "tokenizer.ggml.pre `{other}` is not supported (known: default, gpt2, smollm, llama-bpe, qwen2); \
                 load with the tokenizer turned off and supply one"
            ));
        }
    })
}

/// Builds the tokenizer the metadata describes.
///
/// # Errors
/// A message naming the missing key or the unsupported tokenizer kind.
pub fn tokenizer(header: &Header) -> Result<Tokenizer, String> {
    let kind = header
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or("metadata `tokenizer.ggml.model` is missing")?;
    if kind != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model `{kind}` is not supported (lamina builds byte-level BPE, `gpt2`, from GGUF)"
        ));
    }
    let tokens = strings(header, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(header, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| format!("merge `{m}` has no space"))
        })
        .collect::<Result<_, _>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(id, t)| ((*t).to_owned(), id as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| e.to_string())?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let pre = header.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    if let Some(Value::Array(types)) = header.get("tokenizer.ggml.token_type") {
        let pick = |wanted: u64, special: bool| -> Vec<AddedToken> {
            types
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| t.as_u64() == Some(wanted))
                .map(|(_, token)| AddedToken::from((*token).to_owned(), special))
                .collect()
        };
        inner.add_special_tokens(&pick(CONTROL, true));
        inner.add_tokens(&pick(USER_DEFINED, false));
    }
    let token = |key: &str| {
        header
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|id| tokens.get(id as usize))
            .map(|t| (*t).to_owned())
    };
    let add_bos = header.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false);
    let chat_template = header.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_owned);
    Ok(Tokenizer::from_parts(
        inner,
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
        chat_template,
    )
    .with_add_bos(add_bos))
}
