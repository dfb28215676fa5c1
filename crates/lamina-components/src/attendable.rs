//! What attention reads from its cache: each cache kind takes the new positions' keys and
//! values and answers with every key and value the queries attend to and the mask they
//! attend under, as mlx-lm's caches do (`update_and_fetch`, `make_mask`). Attention asks;
//! it does not match on cache kinds.

use lamina_core::{Error, Result};
use mlx_rs::Array;

use crate::batch_cache::KvRows;
use crate::cache::LayerCache;
use crate::mask::{AttentionMask, MaskSpan, attention_mask};

/// Keys and values `[B, H_kv, S, D]` for `L` queries, and their mask.
#[derive(Debug, Clone)]
pub struct Attendable {
    /// Every key the queries attend to.
    pub keys: Array,
    /// Every value.
    pub values: Array,
    /// The mask the queries attend under.
    pub mask: AttentionMask,
    /// The position of the first key, when the keys are consecutive positions in order
    /// and every row is at the same position (what a kernel attending by positions
    /// needs); `None` otherwise.
    pub key_start: Option<i32>,
}

impl Attendable {
    /// No cache: the queries attend to their own keys, positions `0..L`.
    ///
    /// # Errors
    /// When the mask cannot be built.
    pub fn uncached(
        keys: Array,
        values: Array,
        window: Option<i32>,
        padding_mask: Option<&Array>,
    ) -> Result<Self> {
        let l = keys.dim(2);
        let span = MaskSpan { query_start: 0, query_len: l, key_start: 0, key_len: l };
        let mask = attention_mask(span, window, padding_mask)?;
        Ok(Attendable { keys, values, mask, key_start: Some(0) })
    }
}

impl LayerCache {
    /// Takes `keys`/`values [B, H_kv, L, D]` at the cache's next positions and returns what
    /// the `L` queries attend to, with the mask (`window` for sliding-window attention,
    /// `padding_mask [B, offset + L]` where the cache kind allows one).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a padding mask with a rotating or batch cache,
    /// [`Error::CacheKind`] for a recurrent state; shape errors.
    pub fn update_and_fetch(
        &mut self,
        keys: &Array,
        values: &Array,
        window: Option<i32>,
        padding_mask: Option<&Array>,
    ) -> Result<Attendable> {
        let (offset, l) = (self.offset(), keys.dim(2));
        let span =
            |key_start: i32, key_len: i32| MaskSpan { query_start: offset, query_len: l, key_start, key_len };
        match self {
            LayerCache::Kv(c) => {
                let (keys, values) = c.update_and_fetch(keys, values)?;
                let mask = attention_mask(span(0, offset + l), window, padding_mask)?;
                Ok(Attendable { keys, values, mask, key_start: Some(0) })
            }
            LayerCache::Rotating(c) => {
                if padding_mask.is_some() {
                    return Err(Error::Unsupported("padding masks with a rotating cache"));
                }
                let out = c.update_and_fetch(keys, values)?;
                let mask = match out.key_start {
                    Some(start) => attention_mask(span(start, out.keys.dim(2)), window, None)?,
                    None => AttentionMask::None,
                };
                Ok(Attendable { keys: out.keys, values: out.values, mask, key_start: out.key_start })
            }
            LayerCache::Batch(c) => {
                if padding_mask.is_some() {
                    return Err(Error::Unsupported("padding masks with a batch KV cache"));
                }
                let out = c.update_and_fetch(keys, values)?;
                let (KvRows::Dense(keys), KvRows::Dense(values)) = (out.keys, out.values) else {
                    return Err(Error::CacheKind {
                        layer: "full-precision attention",
                        cache: "quantized batch",
                    });
                };
                Ok(Attendable { keys, values, mask: AttentionMask::Explicit(out.mask), key_start: None })
            }
            other => Err(Error::CacheKind { layer: "an attention layer", cache: other.kind() }),
        }
    }

    /// Each row's position for RoPE when rows sit at different positions (a batch of
    /// sequences); `None` when every row is at [`LayerCache::offset`].
    ///
    /// # Errors
    /// MLX errors.
    pub fn row_positions(&self) -> Result<Option<Array>> {
        match self {
            LayerCache::Batch(c) => Ok(Some(c.positions()?)),
            _ => Ok(None),
        }
    }
}
