//! A KV cache stored quantized, as mlx-lm's `QuantizedKVCache`: keys and values in MLX's
//! affine quantization (`bits` per element, a scale and a bias per `group_size` elements of
//! the head dimension), attended through quantized matrix products without dequantizing
//! the whole cache. A 4-bit cache of f32 keys holds ~1/6.4 of their bytes (8-bit: ~1/3.6).
//!
//! Generation starts with a full-precision cache and converts it once it holds more than
//! [`KvQuantization::start`] positions (mlx-lm's `quantized_kv_start`), so short prompts keep
//! full precision.

use lamina_core::{Error, Result};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexMutOp, TryIndexOp};
use mlx_rs::{Array, Dtype, ops};
use serde::{Deserialize, Serialize};

use crate::cache::{DecodeScores, KV_STEP, KvCache, Ownership, RotatingKvCache};

/// How a KV cache is quantized (mlx-lm's `--kv-bits`, `--kv-group-size`,
/// `--quantized-kv-start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvQuantization {
    /// Bits per element: 2, 3, 4, 5, 6 or 8.
    pub bits: i32,
    /// Elements of the head dimension sharing a scale and a bias: 32, 64 or 128.
    pub group_size: i32,
    /// Positions kept at full precision before the cache is converted.
    pub start: usize,
}

impl KvQuantization {
    /// `bits` with mlx-lm's defaults: groups of 64, conversion past 5000 positions.
    pub fn bits(bits: i32) -> Self {
        KvQuantization { bits, group_size: 64, start: 5000 }
    }

    /// Checks the settings MLX's quantization takes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validated(self) -> Result<Self> {
        if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
            return Err(Error::invalid(
                "KvQuantization",
                "bits",
                format!("must be 2, 3, 4, 5, 6 or 8, got {}", self.bits),
            ));
        }
        if ![32, 64, 128].contains(&self.group_size) {
            return Err(Error::invalid(
                "KvQuantization",
                "group_size",
                format!("must be 32, 64 or 128, got {}", self.group_size),
            ));
        }
        Ok(self)
    }
}

/// Quantized rows: `data [B, H, N, D * bits / 32]` (uint32), `scales` and `biases`
/// `[B, H, N, D / group_size]`.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The packed elements.
    pub data: Array,
    /// A scale per group.
    pub scales: Array,
    /// A bias per group.
    pub biases: Array,
}

impl Packed {
    pub(crate) fn quantize(a: &Array, how: KvQuantization) -> Result<Self> {
        let d = a.dim(-1);
        if d % how.group_size != 0 {
            return Err(Error::invalid(
                "KvQuantization",
                "group_size",
                format!("the head dimension {d} is not a multiple of the group size {}", how.group_size),
            ));
        }
        let (data, scales, biases) = ops::quantize(a, how.group_size, how.bits)?;
        Ok(Packed { data, scales, biases })
    }

    /// Data, scales and biases as the kernel returns them.
    fn from_parts([data, scales, biases]: [Array; 3]) -> Self {
        Packed { data, scales, biases }
    }

    /// The data, scales and biases.
    pub(crate) fn parts(&self) -> [&Array; 3] {
        [&self.data, &self.scales, &self.biases]
    }

    /// The data, scales and biases, to replace.
    pub(crate) fn parts_mut(&mut self) -> [&mut Array; 3] {
        [&mut self.data, &mut self.scales, &mut self.biases]
    }

    /// Positions `..n` of the rows.
    fn head(&self, n: i32) -> Result<Self> {
        self.rows(0..n)
    }

    /// Room for `n` positions of `width`-element rows of `[B, H_kv, 1, width]` `like`,
    /// quantized as `how` says.
    fn zeros(like: &Array, n: i32, how: KvQuantization) -> Result<Self> {
        let (b, h, width) = (like.dim(0), like.dim(1), like.dim(3));
        let groups = ops::zeros_dtype(&[b, h, n, width / how.group_size], like.dtype())?;
        Ok(Packed {
            data: ops::zeros_dtype(&[b, h, n, width * how.bits / 32], Dtype::Uint32)?,
            scales: groups.clone(),
            biases: groups,
        })
    }

    /// `f` applied to the data, scales and biases.
    pub(crate) fn map(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<Self> {
        Ok(Packed { data: f(&self.data)?, scales: f(&self.scales)?, biases: f(&self.biases)? })
    }

    /// `f` applied to the data, scales and biases of `self` and `other` side by side.
    pub(crate) fn zip(&self, other: &Packed, f: impl Fn(&Array, &Array) -> Result<Array>) -> Result<Self> {
        Ok(Packed {
            data: f(&self.data, &other.data)?,
            scales: f(&self.scales, &other.scales)?,
            biases: f(&self.biases, &other.biases)?,
        })
    }

    /// `f` applied to the data of all of `all` together, then to their scales and biases.
    pub(crate) fn combine(all: &[&Packed], f: impl Fn(&[&Array]) -> Result<Array>) -> Result<Self> {
        let part = |i: usize| f(&all.iter().map(|p| p.parts()[i]).collect::<Vec<_>>());
        Ok(Packed { data: part(0)?, scales: part(1)?, biases: part(2)? })
    }

    /// Positions `range` of the rows.
    fn rows(&self, range: std::ops::Range<i32>) -> Result<Self> {
        self.map(|a| Ok(a.try_index((Ellipsis, range.clone(), ..))?))
    }

    /// The kernels' view of these rows.
    fn kernel_view(&self) -> lamina_kernels::PackedKv<'_> {
        lamina_kernels::PackedKv { data: &self.data, scales: &self.scales, biases: &self.biases }
    }

    /// Room for `n` positions: zeros shaped like `self` along the position axis.
    fn zeros_like(&self, n: i32) -> Result<Self> {
        self.map(|a| {
            let mut shape = a.shape().to_vec();
            shape[2] = n;
            Ok(ops::zeros_dtype(&shape, a.dtype())?)
        })
    }

    /// `self`'s positions followed by `more`'s.
    fn concatenate(&self, more: &Packed) -> Result<Self> {
        self.zip(more, |a, b| Ok(ops::concatenate(&[a, b], 2)?))
    }

    /// Writes `rows` at positions `at..`.
    fn write(&mut self, at: i32, rows: &Packed) -> Result<()> {
        let n = rows.data.dim(2);
        for (part, new) in self.parts_mut().into_iter().zip(rows.parts()) {
            part.try_index_mut((Ellipsis, at..at + n, ..), new)?;
        }
        Ok(())
    }

    /// Keeps positions `..keep` of `stored` and appends `room` after them (or makes `room`
    /// the buffer of an empty cache).
    fn grow(stored: &mut Option<Packed>, keep: i32, room: Packed) -> Result<()> {
        *stored = Some(match stored.take() {
            Some(s) => s.head(keep)?.concatenate(&room)?,
            None => room,
        });
        Ok(())
    }

    /// The full-precision rows back (in the scales' dtype).
    pub fn dequantize(&self, how: KvQuantization) -> Result<Array> {
        Ok(ops::dequantize(&self.data, &self.scales, &self.biases, how.group_size, how.bits)?)
    }
}

/// Keys and values of every position so far, quantized.
#[derive(Debug, Clone)]
pub struct QuantizedKvCache {
    keys: Option<Packed>,
    values: Option<Packed>,
    offset: i32,
    how: KvQuantization,
    /// For a sliding window's cache: the slots kept, position `p` at slot `p % window`
    /// (as [`RotatingKvCache`]).
    window: Option<i32>,
    /// Whether the decode kernel may write the buffers in place (see `KvCache`).
    pub(crate) ownership: Ownership,
}

/// What a quantized cache returns for `L` new positions: the keys and values they attend
/// to and the position of the first key — `None` for a single query attending to a window's
/// slots out of order (every slot kept, no mask needed).
#[derive(Debug, Clone)]
pub struct QuantizedKv {
    /// `[B, H_kv, K, ...]`.
    pub keys: Packed,
    /// `[B, H_kv, K, ...]`.
    pub values: Packed,
    /// Position of the first key, when the keys are in temporal order.
    pub key_start: Option<i32>,
}

impl QuantizedKvCache {
    /// An empty cache quantizing as `how` says.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for settings MLX does not take.
    pub fn new(how: KvQuantization) -> Result<Self> {
        Ok(QuantizedKvCache {
            keys: None,
            values: None,
            offset: 0,
            how: how.validated()?,
            window: None,
            ownership: Ownership::default(),
        })
    }

    /// `cache`'s positions, quantized.
    ///
    /// # Errors
    /// As [`QuantizedKvCache::new`], and a head dimension the group size does not divide.
    pub fn from_kv(cache: &KvCache, how: KvQuantization) -> Result<Self> {
        let mut quantized = Self::new(how)?;
        if let Some((keys, values)) = cache.state()? {
            quantized.update_and_fetch(&keys, &values)?;
        }
        Ok(quantized)
    }

    /// A cache holding `keys` and `values`, valid up to `offset` (how a saved cache is
    /// restored).
    ///
    /// # Errors
    /// [`Error::Shape`] when the parts do not agree or hold fewer than `offset` positions.
    pub fn from_state(keys: Packed, values: Packed, offset: i32, how: KvQuantization) -> Result<Self> {
        let mut cache = Self::new(how)?;
        for part in keys.parts().into_iter().chain(values.parts()) {
            if part.ndim() != 4 || part.dim(2) < offset || part.dim(0) != keys.data.dim(0) {
                return Err(Error::Shape {
                    name: "quantized KV cache state".into(),
                    expected: vec![keys.data.dim(0), -1, offset, -1],
                    actual: part.shape().to_vec(),
                });
            }
        }
        cache.keys = Some(keys.head(offset)?);
        cache.values = Some(values.head(offset)?);
        cache.offset = offset;
        cache.ownership = Ownership::lent();
        Ok(cache)
    }

    /// A sliding window's cache quantized: `cache`'s slots, position `p` at slot
    /// `p % window` (mlx-lm leaves such caches at full precision; their memory is bounded
    /// by the window, but a window of thousands is still worth quantizing).
    ///
    /// # Errors
    /// As [`QuantizedKvCache::from_kv`].
    pub fn from_rotating(cache: &RotatingKvCache, how: KvQuantization) -> Result<Self> {
        let mut quantized = Self::new(how)?;
        quantized.window = Some(cache.window());
        if let Some((keys, values)) = cache.state() {
            quantized.keys = Some(Packed::quantize(keys, how)?);
            quantized.values = Some(Packed::quantize(values, how)?);
        }
        quantized.offset = cache.offset();
        Ok(quantized)
    }

    /// A sliding window's cache holding `keys` and `values` slots (`[B, H_kv, window, ...]`,
    /// position `p` at slot `p % window`) after `offset` positions (how a saved cache is
    /// restored).
    ///
    /// # Errors
    /// [`Error::Shape`] when the parts do not hold `window` slots of one batch.
    pub fn from_slots(
        window: i32,
        keys: Packed,
        values: Packed,
        offset: i32,
        how: KvQuantization,
    ) -> Result<Self> {
        for part in keys.parts().into_iter().chain(values.parts()) {
            if part.ndim() != 4 || part.dim(2) != window {
                return Err(Error::Shape {
                    name: "quantized rotating KV cache state".into(),
                    expected: vec![-1, -1, window, -1],
                    actual: part.shape().to_vec(),
                });
            }
        }
        let mut cache = Self::from_state(keys, values, window, how)?;
        cache.window = Some(window);
        cache.offset = offset;
        Ok(cache)
    }

    /// Positions stored (for a window, processed: not all of them are kept).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The slots kept, for a sliding window's cache.
    pub fn window(&self) -> Option<i32> {
        self.window
    }

    /// Whether the cache can be brought back to `len` positions (a window: while it has
    /// not wrapped around).
    pub(crate) fn can_trim_to(&self, len: i32) -> bool {
        self.window.is_none_or(|w| self.offset <= w) && (0..=self.offset).contains(&len)
    }

    /// Whether `extra` more positions can be trimmed off again.
    pub(crate) fn can_rewind(&self, extra: i32) -> bool {
        self.window.is_none_or(|w| self.offset + extra <= w)
    }

    /// A window's kept positions in temporal order at full precision, and how many (how a
    /// row joins a windowed batch).
    ///
    /// # Errors
    /// When MLX fails.
    pub(crate) fn temporal(&self) -> Result<Option<(Array, Array, i32)>> {
        let kept = self.window.map_or(self.offset, |w| self.offset.min(w));
        let (Some(keys), Some(values)) = self.ordered(self.offset, kept)? else { return Ok(None) };
        Ok(Some((keys.dequantize(self.how)?, values.dequantize(self.how)?, kept)))
    }

    /// The last `n` positions before `end`, in temporal order.
    fn ordered(&self, end: i32, n: i32) -> Result<(Option<Packed>, Option<Packed>)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else { return Ok((None, None)) };
        if n == 0 {
            return Ok((None, None));
        }
        let Some(window) = self.window else {
            return Ok((Some(k.rows(end - n..end)?), Some(v.rows(end - n..end)?)));
        };
        let slots = ops::remainder(&ops::arange::<_, i32>(end - n, end, None)?, Array::from_int(window))?;
        let pick = |p: &Packed| p.map(|a| Ok(a.take_axis(&slots, 2)?));
        Ok((Some(pick(k)?), Some(pick(v)?)))
    }

    /// Writes quantized positions `first..first + L` of a window into their slots
    /// (`L <= window`), allocating the slots on first use.
    fn write_slots(&mut self, keys: &Packed, values: &Packed, first: i32, window: i32) -> Result<()> {
        let len = keys.data.dim(2);
        let start = first % window;
        let first_run = len.min(window - start);
        for (stored, new) in [(&mut self.keys, keys), (&mut self.values, values)] {
            if stored.is_none() {
                *stored = Some(new.zeros_like(window)?);
                self.ownership = Ownership::default();
            }
            let Some(s) = stored.as_mut() else { continue };
            s.write(start, &new.rows(0..first_run)?)?;
            if first_run < len {
                s.write(0, &new.rows(first_run..len)?)?;
            }
        }
        Ok(())
    }

    /// How it quantizes.
    pub fn quantization(&self) -> KvQuantization {
        self.how
    }

    /// The stored positions' keys and values (`None` while empty); a window's slots.
    ///
    /// # Errors
    /// When MLX fails to slice.
    pub fn state(&self) -> Result<Option<(Packed, Packed)>> {
        self.ownership.lend();
        match (&self.keys, &self.values, self.window) {
            (Some(k), Some(v), Some(_)) => Ok(Some((k.clone(), v.clone()))),
            (Some(k), Some(v), None) => Ok(Some((k.head(self.offset)?, v.head(self.offset)?))),
            _ => Ok(None),
        }
    }

    /// Forgets positions from `len` on (`len <= offset`).
    pub(crate) fn set_offset(&mut self, len: i32) {
        self.offset = len;
    }

    /// The arrays held.
    pub(crate) fn held(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).flat_map(Packed::parts).collect()
    }

    /// The arrays held, to replace.
    pub(crate) fn held_mut(&mut self) -> Vec<&mut Array> {
        self.keys.iter_mut().chain(self.values.iter_mut()).flat_map(Packed::parts_mut).collect()
    }

    /// Whether [`QuantizedKvCache::decode_attention`] runs here: its width and groups on
    /// the CPU's kernels.
    pub fn has_decode_attention(&self) -> bool {
        lamina_kernels::supports_quantized(self.how.bits, self.how.group_size)
    }

    /// Quantizes and appends one position's key and value and attends `q` to every stored
    /// position, in one graph node (lamina's quantized decode attention: the cache is read
    /// packed, and written in place while nothing else holds its buffers). f32 on the CPU.
    ///
    /// # Shapes
    /// `q [B, H, 1, D]`, `k [B, H_kv, 1, D]`, `v [B, H_kv, 1, D_v]` -> `[B, 1, H * D_v]`
    ///
    /// # Errors
    /// The kernel's: another device or dtype, shapes that differ from the stored ones.
    pub fn decode_attention(&mut self, q: &Array, k: &Array, v: &Array, how: DecodeScores) -> Result<Array> {
        let (slot, length) = match self.window {
            Some(w) => (self.offset % w, (self.offset + 1).min(w)),
            None => (self.offset, self.offset + 1),
        };
        let capacity = self.keys.as_ref().map_or(0, |s| s.data.dim(2));
        if slot + 1 > capacity {
            // A window allocates its slots once; a full cache grows by whole steps.
            let step = self.window.unwrap_or(KV_STEP);
            for (stored, new) in [(&mut self.keys, k), (&mut self.values, v)] {
                Packed::grow(stored, slot, Packed::zeros(new, step, self.how)?)?;
            }
            self.ownership = Ownership::default();
        }
        let (Some(keys), Some(values)) = (&self.keys, &self.values) else {
            return Err(Error::Internal("a quantized KV cache lost its buffers"));
        };
        let cache = lamina_kernels::QuantizedCache {
            keys: keys.kernel_view(),
            values: values.kernel_view(),
            group_size: self.how.group_size,
            bits: self.how.bits,
        };
        // A window's slots all lie within the layer's window.
        let attention = lamina_kernels::DecodeAttention {
            slot,
            length,
            scale: how.scale,
            window: if self.window.is_some() { None } else { how.window },
            softcap: how.softcap,
        };
        let in_place = self.ownership.exclusive();
        let (out, buffers) = if in_place {
            // SAFETY: the ownership token says no clone, saved state or handed-out array
            // shares these buffers: this cache is their only reader.
            unsafe { lamina_kernels::quantized_decode_attention_in_place(q, k, v, cache, attention)? }
        } else {
            lamina_kernels::quantized_decode_attention(q, k, v, cache, attention)?
        };
        self.keys = Some(Packed::from_parts(buffers.keys));
        self.values = Some(Packed::from_parts(buffers.values));
        self.offset += 1;
        if !in_place {
            self.ownership = Ownership::default(); // the kernel wrote into copies
        }
        Ok(out)
    }

    /// Quantizes and adds `L` positions; returns what the `L` queries attend to: every
    /// stored position (`key_start` 0), or for a window, as [`RotatingKvCache`] does, the
    /// kept slots (one query) or the window before the chunk and the chunk in order.
    ///
    /// # Errors
    /// As [`QuantizedKvCache::update_and_fetch`].
    pub fn update_and_fetch_rows(&mut self, keys: &Array, values: &Array) -> Result<QuantizedKv> {
        let Some(window) = self.window else {
            let (keys, values) = self.update_and_fetch(keys, values)?;
            return Ok(QuantizedKv { keys, values, key_start: Some(0) });
        };
        let (k, v) = (Packed::quantize(keys, self.how)?, Packed::quantize(values, self.how)?);
        let (len, prev) = (keys.dim(2), self.offset);
        if len == 1 && self.keys.is_some() {
            self.write_slots(&k, &v, prev, window)?;
            self.offset += 1;
            let kept = self.offset.min(window);
            let (Some(keys), Some(values)) = (&self.keys, &self.values) else {
                return Err(Error::Internal("a quantized KV cache lost its buffers"));
            };
            return Ok(QuantizedKv { keys: keys.head(kept)?, values: values.head(kept)?, key_start: None });
        }
        let before = prev.min(window - 1);
        let (old_k, old_v) = self.ordered(prev, before)?;
        let join = |old: Option<Packed>, new: &Packed| match old {
            Some(old) => old.concatenate(new),
            None => Ok(new.clone()),
        };
        let (keys_all, values_all) = (join(old_k, &k)?, join(old_v, &v)?);
        let keep = len.min(window);
        self.write_slots(&k.rows(len - keep..len)?, &v.rows(len - keep..len)?, prev + len - keep, window)?;
        self.offset += len;
        Ok(QuantizedKv { keys: keys_all, values: values_all, key_start: Some(prev - before) })
    }

    /// Quantizes and appends `L` positions; returns every stored position's keys and values
    /// (a full-attention cache; a window's goes through
    /// [`QuantizedKvCache::update_and_fetch_rows`]).
    ///
    /// # Shapes
    /// `keys [B, H_kv, L, D_k]`, `values [B, H_kv, L, D_v]`
    ///
    /// # Errors
    /// A head dimension the group size does not divide; MLX errors (shapes that differ
    /// from earlier calls).
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Packed, Packed)> {
        if self.window.is_some() {
            return Err(Error::Unsupported(
                "appending to a window's quantized cache (update_and_fetch_rows)",
            ));
        }
        let (k, v) = (Packed::quantize(keys, self.how)?, Packed::quantize(values, self.how)?);
        let len = keys.dim(2);
        let end = self.offset + len;
        for (stored, new) in [(&mut self.keys, &k), (&mut self.values, &v)] {
            let capacity = stored.as_ref().map_or(0, |s| s.data.dim(2));
            if end > capacity {
                Packed::grow(stored, self.offset, new.zeros_like((len + KV_STEP - 1) / KV_STEP * KV_STEP)?)?;
            }
            if let Some(s) = stored.as_mut() {
                s.write(self.offset, new)?;
            }
        }
        self.offset = end;
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) => Ok((k.head(end)?, v.head(end)?)),
            _ => Err(Error::Internal("a quantized KV cache lost its buffers")),
        }
    }
}

/// Attention of `q [B, H, L, D]` to quantized keys and values `[B, H_kv, K, ...]` (grouped
/// query heads share their KV head), with `keep` (`[L, K]` or `[B, 1, L, K]`, `true` =
/// attend) and optional soft-capping of the scores: two quantized matrix products, the
/// softmax in f32. Returns `[B, H, L, D_v]`.
///
/// # Errors
/// When MLX fails (shapes that do not agree).
pub fn quantized_attention(
    q: &Array,
    keys: &Packed,
    values: &Packed,
    how: KvQuantization,
    scale: f32,
    softcap: Option<f32>,
    keep: Option<&Array>,
) -> Result<Array> {
    let (b, heads, l, d) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let kv_heads = keys.data.dim(1);
    let repeats = heads / kv_heads.max(1);
    let dtype = keys.scales.dtype();
    let q = q
        .as_dtype(dtype)?
        .multiply(Array::from_f32(scale).as_dtype(dtype)?)?
        .reshape(&[b, kv_heads, repeats, l, d])?;
    let grouped = |p: &Packed| -> Result<[Array; 3]> {
        Ok([p.data.expand_dims(2)?, p.scales.expand_dims(2)?, p.biases.expand_dims(2)?])
    };
    let [kd, ks, kb] = grouped(keys)?;
    let mut scores = ops::quantized_matmul(&q, &kd, &ks, &kb, true, how.group_size, how.bits)?; // [B, H_kv, R, L, K]
    if let Some(cap) = softcap {
        let cap_a = Array::from_f32(cap).as_dtype(scores.dtype())?;
        scores = ops::tanh(&scores.divide(&cap_a)?)?.multiply(&cap_a)?;
    }
    if let Some(keep) = keep {
        let keep = if keep.ndim() == 4 { keep.expand_dims(2)? } else { keep.clone() };
        let floor = Array::from_f32(f32::MIN).as_dtype(scores.dtype())?;
        scores = ops::select(&keep, &scores, &floor)?;
    }
    let probs = ops::softmax_axis(&scores.as_dtype(Dtype::Float32)?, -1, None)?.as_dtype(dtype)?;
    let [vd, vs, vb] = grouped(values)?;
    let out = ops::quantized_matmul(&probs, &vd, &vs, &vb, false, how.group_size, how.bits)?;
    let dv = out.dim(-1);
    Ok(out.reshape(&[b, heads, l, dv])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{KvCache, LayerCache};

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
    }

    /// Attention of `q` to plain keys and values, as `quantized_attention` computes it.
    fn reference(q: &Array, k: &Array, v: &Array, scale: f32, keep: Option<&Array>) -> Array {
        let (b, h, l, d) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
        let kv_heads = k.dim(1);
        let q =
            q.multiply(Array::from_f32(scale)).unwrap().reshape(&[b, kv_heads, h / kv_heads, l, d]).unwrap();
        let scores = q.matmul(k.expand_dims(2).unwrap().swap_axes(-1, -2).unwrap()).unwrap();
        let scores = match keep {
            Some(m) => ops::select(m, &scores, Array::from_f32(f32::MIN)).unwrap(),
            None => scores,
        };
        let probs = ops::softmax_axis(&scores, -1, None).unwrap();
        probs.matmul(v.expand_dims(2).unwrap()).unwrap().reshape(&[b, h, l, -1]).unwrap()
    }

    #[test]
    fn quantized_attention_is_attention_on_the_dequantized_cache() {
        let key = mlx_rs::random::key(3).unwrap();
        let normal = |shape: &[i32], k: &Array| mlx_rs::random::normal::<f32>(shape, None, None, k).unwrap();
        let keys = mlx_rs::random::split(&key, 3).unwrap();
        let (q, k, v) = (
            normal(&[1, 4, 3, 64], &keys.0),
            normal(&[1, 2, 10, 64], &keys.1),
            normal(&[1, 2, 10, 64], &key),
        );
        for bits in [4, 8] {
            let how = KvQuantization { bits, group_size: 32, start: 0 };
            let mut cache = QuantizedKvCache::new(how).unwrap();
            // Two appends, across a growth of the buffers.
            cache
                .update_and_fetch(
                    &k.try_index((Ellipsis, ..7, ..)).unwrap(),
                    &v.try_index((Ellipsis, ..7, ..)).unwrap(),
                )
                .unwrap();
            let (pk, pv) = cache
                .update_and_fetch(
                    &k.try_index((Ellipsis, 7.., ..)).unwrap(),
                    &v.try_index((Ellipsis, 7.., ..)).unwrap(),
                )
                .unwrap();
            assert_eq!(cache.offset(), 10);
            let keep = crate::mask::causal_mask(
                crate::mask::MaskSpan { query_start: 7, query_len: 3, key_start: 0, key_len: 10 },
                None,
            )
            .unwrap();
            let out = quantized_attention(&q, &pk, &pv, how, 0.125, None, Some(&keep)).unwrap();
            let exact =
                reference(&q, &pk.dequantize(how).unwrap(), &pv.dequantize(how).unwrap(), 0.125, Some(&keep));
            assert!(max_diff(&out, &exact) < 1e-4, "{bits} bits: {}", max_diff(&out, &exact));
            // Against the full-precision keys: the quantization error, small at 8 bits.
            let full = reference(&q, &k, &v, 0.125, Some(&keep));
            let error = max_diff(&out, &full);
            assert!(error < if bits == 8 { 0.02 } else { 0.3 }, "{bits} bits: {error}");
            assert!(error > 0.0);
        }
    }

    #[test]
    fn a_kv_cache_past_its_start_converts_and_keeps_its_positions() {
        let how = KvQuantization { bits: 8, group_size: 64, start: 4 };
        let mut layer = LayerCache::Kv(KvCache::new());
        let k = mlx_rs::random::normal::<f32>(&[1, 2, 4, 64], None, None, &mlx_rs::random::key(1).unwrap())
            .unwrap();
        if let LayerCache::Kv(c) = &mut layer {
            c.update_and_fetch(&k, &k).unwrap();
        }
        layer.quantize_past_start(how).unwrap();
        assert_eq!(layer.kind(), "KV cache", "4 positions: not past the start");
        if let LayerCache::Kv(c) = &mut layer {
            c.update_and_fetch(&k, &k).unwrap();
        }
        layer.quantize_past_start(how).unwrap();
        let LayerCache::Quantized(q) = &layer else { panic!("{}", layer.kind()) };
        assert_eq!(q.offset(), 8);
        let (keys, _) = q.state().unwrap().unwrap();
        let back = keys.dequantize(how).unwrap();
        assert!(max_diff(&back.try_index((Ellipsis, 4.., ..)).unwrap(), &k) < 0.05);
        assert!(layer.can_trim_to(5));
        layer.trim(5).unwrap();
        assert_eq!(layer.offset(), 5);
        assert!(QuantizedKvCache::new(KvQuantization { bits: 7, ..how }).is_err());
        assert!(QuantizedKvCache::new(KvQuantization { group_size: 48, ..how }).is_err());
        let mut odd = QuantizedKvCache::new(KvQuantization { group_size: 128, ..how }).unwrap();
        assert!(odd.update_and_fetch(&k, &k).is_err(), "a head dimension of 64 in groups of 128");
    }
}
