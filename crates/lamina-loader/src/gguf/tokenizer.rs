//! A tokenizer built from a GGUF's metadata: byte-level BPE (`tokenizer.ggml.model =
//! "gpt2"`) with the pre-tokenizer `tokenizer.ggml.pre` names, or SentencePiece
//! (`"llama"`: Llama 2, Mistral, Gemma) as a BPE whose merges follow the pieces' scores,
//! with byte fallback; special tokens from the token types, and the chat template.

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
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

/// SentencePiece's word-boundary mark.
const SPACE_MARK: &str = "\u{2581}";

/// Byte-level BPE from its vocabulary and merges (`tokenizer.ggml.model = "gpt2"`).
fn byte_level_bpe(header: &Header, tokens: &[&str]) -> Result<tokenizers::Tokenizer, String> {
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
    Ok(inner)
}

/// The merges of a SentencePiece vocabulary, as transformers derives them: every split of
/// a piece into two pieces of the vocabulary, ranked by the whole piece's score (highest
/// first), ties by the parts' ids. Merging greedily by that rank is SentencePiece's (and
/// llama.cpp's) highest-score-first pairing.
fn spm_merges(tokens: &[&str], scores: &[f32]) -> Vec<(String, String)> {
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*ids.get(&piece[..at])?, *ids.get(&piece[at..])?)))
            .collect();
        local.sort_unstable();
        let score = scores.get(id).copied().unwrap_or(0.0);
        merges.extend(local.into_iter().map(|(l, r)| (score, id, l, r)));
    }
    // Stable: within one score, the order of the vocabulary, then of the parts' ids.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, _, l, r)| (tokens[l].to_owned(), tokens[r].to_owned())).collect()
}

/// SentencePiece as a BPE with byte fallback (`tokenizer.ggml.model = "llama"`), as
/// transformers converts Llama and Gemma tokenizers.
fn sentencepiece(header: &Header, tokens: &[&str]) -> Result<tokenizers::Tokenizer, String> {
    let scores: Vec<f32> = match header.get("tokenizer.ggml.scores") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or("`tokenizer.ggml.scores` holds a non-number"))
            .collect::<Result<_, _>>()?,
        _ => return Err("metadata `tokenizer.ggml.scores` is missing".into()),
    };
    if scores.len() != tokens.len() {
        return Err(format!("{} scores for {} tokens", scores.len(), tokens.len()));
    }
    let vocab: Vocab = tokens.iter().enumerate().map(|(id, t)| ((*t).to_owned(), id as u32)).collect();
    let unk = header
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_u64)
        .and_then(|id| tokens.get(id as usize))
        .map_or("<unk>", |t| *t);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, spm_merges(tokens, &scores))
        .unk_token(unk.to_owned())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| e.to_string())?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let add_prefix = header.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
    let replace = Replace::new(" ", SPACE_MARK).map_err(|e| e.to_string())?;
    let normalizer = if add_prefix {
        NormalizerWrapper::Sequence(tokenizers::normalizers::Sequence::new(vec![
            NormalizerWrapper::Prepend(Prepend::new(SPACE_MARK.to_owned())),
            NormalizerWrapper::Replace(replace),
        ]))
    } else {
        NormalizerWrapper::Replace(replace)
    };
    inner.with_normalizer(Some(normalizer));
    let mut decoders = vec![
        DecoderWrapper::Replace(
            tokenizers::normalizers::Replace::new(SPACE_MARK, " ").map_err(|e| e.to_string())?,
        ),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
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
    let tokens = strings(header, "tokenizer.ggml.tokens")?;
    let mut inner = match kind {
        "gpt2" => byte_level_bpe(header, &tokens)?,
        "llama" => sentencepiece(header, &tokens)?,
        other => {
            return Err(format!(
                "tokenizer.ggml.model `{other}` is not supported (lamina builds byte-level BPE, `gpt2`, and \
                 SentencePiece, `llama`, from GGUF)"
            ));
        }
    };
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
