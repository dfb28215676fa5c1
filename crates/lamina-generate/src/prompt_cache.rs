//! Prompt caching: the caches of finished sequences, kept under a byte bound (least
//! recently used first out), so that a request whose tokens begin with a cached sequence's
//! (the earlier turns of a chat) reuses those positions instead of computing them again;
//! and one prompt's cache saved to a file and loaded back (as `mlx_lm.cache_prompt` does).

use std::collections::HashMap;
use std::path::Path;

use lamina_backbones::ModelCache;
use lamina_components::{
    KvCache, KvQuantization, LayerCache, Packed, QuantizedKvCache, RotatingKvCache, SsmState,
};
use lamina_loader::{LoaderError, TensorFile};
use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::{GenerateError, Result};

/// Caches of earlier sequences, keyed by the tokens each holds.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: Vec<Entry>,
    limit_bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    cache: ModelCache,
    bytes: usize,
    used: u64,
}

/// A cached prefix found for a prompt.
#[derive(Debug)]
pub struct CacheHit {
    /// The cache, holding the first `reused` tokens of the prompt.
    pub cache: ModelCache,
    /// Prompt tokens it covers (always fewer than the prompt's).
    pub reused: usize,
}

impl PromptCache {
    /// An empty cache holding at most `limit_bytes` (0 turns caching off).
    pub fn new(limit_bytes: usize) -> Self {
        PromptCache { entries: Vec::new(), limit_bytes, clock: 0 }
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Sequences held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `cache`, which holds exactly `tokens`. Entries it extends are dropped; the least
    /// recently used go until the total fits the bound (a cache larger than the bound is
    /// not kept).
    pub fn insert(&mut self, tokens: Vec<u32>, cache: ModelCache) {
        let bytes = cache.nbytes();
        if bytes > self.limit_bytes || tokens.is_empty() || cache.offset() as usize != tokens.len() {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry { tokens, cache, bytes, used: self.clock });
        while self.nbytes() > self.limit_bytes {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i)
            else {
                break;
            };
            self.entries.remove(oldest);
        }
    }

    /// The cache that covers the longest prefix of `prompt` (leaving at least its last
    /// token to run), trimmed to that prefix; the entry stays for other requests.
    ///
    /// # Errors
    /// When MLX fails to trim (never for a cache [`ModelCache::can_trim_to`] accepts).
    pub fn fetch(&mut self, prompt: &[u32]) -> Result<Option<CacheHit>> {
        let usable = |e: &Entry| {
            let reused = shared_prefix(&e.tokens, prompt).min(prompt.len().saturating_sub(1));
            (reused > 0 && e.cache.can_trim_to(reused as i32)).then_some(reused)
        };
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| usable(e).map(|n| (i, n)))
            .max_by_key(|&(_, n)| n);
        let Some((index, reused)) = best else {
            return Ok(None);
        };
        self.clock += 1;
        let entry = &mut self.entries[index];
        entry.used = self.clock;
        let mut cache = entry.cache.clone();
        cache.trim(reused as i32)?;
        Ok(Some(CacheHit { cache, reused }))
    }
}

/// How many tokens `a` and `b` begin with in common.
pub(crate) fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How one layer is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SavedLayer {
    Kv {
        offset: i32,
    },
    Rotating {
        offset: i32,
        window: i32,
    },
    Ssm {
        offset: i32,
    },
    Quantized {
        offset: i32,
        bits: i32,
        group_size: i32,
        /// A sliding window's cache: its slots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<i32>,
    },
    Empty,
}

/// The metadata key holding the layers' descriptions.
const LAYERS_KEY: &str = "lamina_prompt_cache.layers";
/// The metadata key holding the cached token ids.
const TOKENS_KEY: &str = "lamina_prompt_cache.tokens";

/// Writes one sequence's cache and the tokens it holds to a safetensors file
/// (`layers.N.keys`/`values`/`conv`/`ssm`, described in the header's metadata).
///
/// # Errors
/// [`GenerateError::PromptCache`] for a batch cache or tokens that do not match its
/// length; [`LoaderError::Safetensors`] when the file cannot be written.
pub fn save_prompt_cache(path: &Path, cache: &ModelCache, tokens: &[u32]) -> Result<()> {
    let bad = |reason: String| GenerateError::PromptCache { path: path.to_path_buf(), reason };
    if cache.offset() as usize != tokens.len() {
        return Err(bad(format!(
            "the cache holds {} positions but {} tokens were given",
            cache.offset(),
            tokens.len()
        )));
    }
    let mut arrays: Vec<(String, Array)> = Vec::new();
    let mut layers = Vec::with_capacity(cache.layers.len());
    for (i, layer) in cache.layers.iter().enumerate() {
        let mut put = |name: &str, a: &Array| arrays.push((format!("layers.{i}.{name}"), a.clone()));
        layers.push(match layer {
            LayerCache::Kv(c) => match c.state()? {
                Some((k, v)) => {
                    put("keys", &k);
                    put("values", &v);
                    SavedLayer::Kv { offset: c.offset() }
                }
                None => SavedLayer::Empty,
            },
            LayerCache::Rotating(c) => match c.state() {
                Some((k, v)) => {
                    put("keys", k);
                    put("values", v);
                    SavedLayer::Rotating { offset: c.offset(), window: c.window() }
                }
                None => SavedLayer::Empty,
            },
            LayerCache::Ssm(SsmState { conv: Some(conv), ssm: Some(ssm), offset, .. }) => {
                put("conv", conv);
                put("ssm", ssm);
                SavedLayer::Ssm { offset: *offset }
            }
            LayerCache::Ssm(_) => SavedLayer::Empty,
            LayerCache::Quantized(c) => match c.state()? {
                Some((k, v)) => {
                    for (name, packed) in [("keys", &k), ("values", &v)] {
                        put(name, &packed.data);
                        put(&format!("{name}.scales"), &packed.scales);
                        put(&format!("{name}.biases"), &packed.biases);
                    }
                    let how = c.quantization();
                    SavedLayer::Quantized {
                        offset: c.offset(),
                        bits: how.bits,
                        group_size: how.group_size,
                        window: c.window(),
                    }
                }
                None => SavedLayer::Empty,
            },
            LayerCache::Batch(_) => {
                return Err(bad("a batch of caches cannot be saved; save one row".into()));
            }
        });
    }
    let json_error = |e: serde_json::Error| bad(e.to_string());
    let metadata = HashMap::from([
        ("format".to_owned(), "mlx".to_owned()),
        (LAYERS_KEY.to_owned(), serde_json::to_string(&layers).map_err(json_error)?),
        (TOKENS_KEY.to_owned(), serde_json::to_string(tokens).map_err(json_error)?),
    ]);
    Array::save_safetensors(arrays.iter().map(|(k, v)| (k.as_str(), v)), &metadata, path)
        .map_err(|e| LoaderError::Safetensors { path: path.to_path_buf(), reason: e.to_string() }.into())
}

/// Reads a file [`save_prompt_cache`] wrote: the cache and its tokens. `fresh` is the
/// model's empty cache ([`LanguageModel::make_cache`](lamina_families::LanguageModel::make_cache)),
/// which the file must match layer for layer.
///
/// # Errors
/// [`GenerateError::PromptCache`] when the file is not a prompt cache or belongs to another
/// model (layer count, kinds, windows, shapes); loader errors for a corrupt file.
pub fn load_prompt_cache(path: &Path, fresh: &ModelCache) -> Result<(ModelCache, Vec<u32>)> {
    let bad = |reason: String| GenerateError::PromptCache { path: path.to_path_buf(), reason };
    let file = TensorFile::open(path)?;
    let metadata = file.metadata()?;
    let field = |key: &str| {
        metadata.get(key).ok_or_else(|| bad(format!("no `{key}` in the header: not a prompt cache")))
    };
    let layers: Vec<SavedLayer> = serde_json::from_str(field(LAYERS_KEY)?).map_err(|e| bad(e.to_string()))?;
    let tokens: Vec<u32> = serde_json::from_str(field(TOKENS_KEY)?).map_err(|e| bad(e.to_string()))?;
    if layers.len() != fresh.layers.len() {
        return Err(bad(format!("{} layers saved, the model has {}", layers.len(), fresh.layers.len())));
    }
    let mut arrays: HashMap<String, Array> = file.read(&Default::default())?.into_iter().collect();
    let mut take = |i: usize, name: &str| {
        arrays
            .remove(&format!("layers.{i}.{name}"))
            .ok_or_else(|| bad(format!("`layers.{i}.{name}` is missing")))
    };
    let mut out = Vec::with_capacity(layers.len());
    for (i, (saved, expected)) in layers.iter().zip(&fresh.layers).enumerate() {
        let mismatch =
            || bad(format!("layer {i} was saved as {saved:?} but the model's is a {}", expected.kind()));
        out.push(match (*saved, expected) {
            (SavedLayer::Empty, fresh) => fresh.clone(),
            (SavedLayer::Kv { offset }, LayerCache::Kv(_)) => {
                LayerCache::Kv(KvCache::from_state(take(i, "keys")?, take(i, "values")?, offset)?)
            }
            (SavedLayer::Rotating { offset, window }, LayerCache::Rotating(c)) if c.window() == window => {
                LayerCache::Rotating(RotatingKvCache::from_state(
                    window,
                    take(i, "keys")?,
                    take(i, "values")?,
                    offset,
                )?)
            }
            // A quantized cache is a full-attention or rotating cache converted past its start.
            (SavedLayer::Quantized { offset, bits, group_size, window }, fresh)
                if match (window, fresh) {
                    (None, LayerCache::Kv(_)) => true,
                    (Some(w), LayerCache::Rotating(c)) => c.window() == w,
                    _ => false,
                } =>
            {
                let mut packed = |name: &str| -> Result<Packed> {
                    Ok(Packed {
                        data: take(i, name)?,
                        scales: take(i, &format!("{name}.scales"))?,
                        biases: take(i, &format!("{name}.biases"))?,
                    })
                };
                let (keys, values) = (packed("keys")?, packed("values")?);
                let how = KvQuantization { bits, group_size, start: 0 };
                LayerCache::Quantized(match window {
                    Some(w) => QuantizedKvCache::from_slots(w, keys, values, offset, how)?,
                    None => QuantizedKvCache::from_state(keys, values, offset, how)?,
                })
            }
            (SavedLayer::Ssm { offset }, LayerCache::Ssm(_)) => LayerCache::Ssm(SsmState {
                conv: Some(take(i, "conv")?),
                ssm: Some(take(i, "ssm")?),
                offset,
                row_offsets: Vec::new(),
            }),
            _ => return Err(mismatch()),
        });
    }
    let cache = ModelCache { layers: out };
    if cache.layers.iter().any(|l| l.offset() as usize != tokens.len()) {
        return Err(bad(format!("the layers do not all hold the {} saved tokens", tokens.len())));
    }
    Ok((cache, tokens))
}
