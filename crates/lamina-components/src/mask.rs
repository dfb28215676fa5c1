//! Attention masks: causal (with a cache offset), sliding-window, and key padding.

use lamina_core::Result;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::{Array, ops};

/// The mask an attention call applies.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Every query sees every key (a single decoded token).
    None,
    /// Causal, aligned to the last query: query `i` of `L` sees keys `..= K - L + i`. MLX
    /// applies it inside the fused kernel without materialising a mask.
    Causal,
    /// An explicit boolean mask (`true` = attend), broadcastable to `[B, H, L, K]`.
    Explicit(Array),
}

impl AttentionMask {
    /// The form MLX's fused attention takes.
    pub fn as_sdpa(&self) -> Option<ScaledDotProductAttentionMask<'_>> {
        match self {
            AttentionMask::None => None,
            AttentionMask::Causal => Some(ScaledDotProductAttentionMask::Causal),
            AttentionMask::Explicit(mask) => Some(ScaledDotProductAttentionMask::Array(mask)),
        }
    }
}

/// Where the queries and keys of one attention call sit in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskSpan {
    /// Position of the first query.
    pub query_start: i32,
    /// Number of queries.
    pub query_len: i32,
    /// Position of the first key.
    pub key_start: i32,
    /// Number of keys (contiguous positions).
    pub key_len: i32,
}

/// A boolean `[L, K]` mask: query at position `q` sees key at position `k` iff
/// `k <= q` and, with a window `W`, `k > q - W`.
///
/// # Errors
/// When MLX cannot build the arrays.
pub fn causal_mask(span: MaskSpan, window: Option<i32>) -> Result<Array> {
    let q = ops::arange::<_, i32>(span.query_start, span.query_start + span.query_len, None)?
        .reshape(&[-1, 1])?;
    let k = ops::arange::<_, i32>(span.key_start, span.key_start + span.key_len, None)?.reshape(&[1, -1])?;
    let mut mask = q.ge(&k)?;
    if let Some(window) = window {
        mask = mask.logical_and(&q.lt(&(&k + window))?)?;
    }
    Ok(mask)
}

/// Combines a causal span with an optional window and key padding (`[B, K]`, `true` or 1
/// for real tokens) into the cheapest mask MLX accepts.
///
/// # Errors
/// When MLX cannot build the arrays.
pub fn attention_mask(
    span: MaskSpan,
    window: Option<i32>,
    key_padding: Option<&Array>,
) -> Result<AttentionMask> {
    let window_matters = window.is_some_and(|w| span.query_start + span.query_len - span.key_start > w);
    let aligned = span.key_start + span.key_len == span.query_start + span.query_len;
    if key_padding.is_none() && !window_matters && aligned {
        return Ok(if span.query_len == 1 { AttentionMask::None } else { AttentionMask::Causal });
    }
    let mut mask = causal_mask(span, window)?;
    if let Some(padding) = key_padding {
        let keep = padding.as_type::<bool>()?.expand_dims_axes(&[1, 2])?; // [B, 1, 1, K]
        mask = mask.logical_and(&keep)?;
    }
    Ok(AttentionMask::Explicit(mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bools(a: &Array) -> Vec<bool> {
        a.as_slice::<bool>().to_vec()
    }

    #[test]
    fn causal_with_offset_sees_the_cached_prefix() {
        let span = MaskSpan { query_start: 2, query_len: 2, key_start: 0, key_len: 4 };
        let mask = causal_mask(span, None).unwrap();
        assert_eq!(mask.shape(), &[2, 4]);
        assert_eq!(bools(&mask), [true, true, true, false, true, true, true, true]);
    }

    #[test]
    fn sliding_window_drops_old_keys() {
        let span = MaskSpan { query_start: 0, query_len: 4, key_start: 0, key_len: 4 };
        let mask = causal_mask(span, Some(2)).unwrap();
        #[rustfmt::skip]
        let expected = [
            true, false, false, false,
            true, true, false, false,
            false, true, true, false,
            false, false, true, true,
        ];
        assert_eq!(bools(&mask), expected);
    }

    #[test]
    fn the_cheapest_form_is_chosen() {
        let full = MaskSpan { query_start: 3, query_len: 2, key_start: 0, key_len: 5 };
        assert!(matches!(attention_mask(full, None, None).unwrap(), AttentionMask::Causal));
        let one = MaskSpan { query_start: 4, query_len: 1, key_start: 0, key_len: 5 };
        assert!(matches!(attention_mask(one, None, None).unwrap(), AttentionMask::None));
        assert!(matches!(attention_mask(full, Some(8), None).unwrap(), AttentionMask::Causal));
        assert!(matches!(attention_mask(full, Some(2), None).unwrap(), AttentionMask::Explicit(_)));
    }

    #[test]
    fn key_padding_hides_padded_keys_per_batch_row() {
        let span = MaskSpan { query_start: 0, query_len: 2, key_start: 0, key_len: 2 };
        let padding = Array::from_slice(&[1i32, 1, 0, 1], &[2, 2]);
        let AttentionMask::Explicit(mask) = attention_mask(span, None, Some(&padding)).unwrap() else {
            panic!("expected an explicit mask");
        };
        assert_eq!(mask.shape(), &[2, 1, 2, 2]);
        assert_eq!(bools(&mask), [true, false, true, true, false, false, false, true]);
    }
}
