//! The KV cache of a decoding batch: sequences of different lengths share one
//! `[B, H_kv, capacity, D]` array, each left-padded so that they all write their next
//! position at the same index. Each row remembers where its position 0 sits (its RoPE
//! offset is `offset - start`) and where its first kept key sits (keys before it are
//! masked); a sliding window is a mask on the same array. Sequences join (their own cache
//! padded in) and leave (their keys cut back out into a cache of their own) between steps,
//! so that a forward pass costs the same number of graph nodes for one row as for 32.
//! A full-attention batch can hold its keys and values quantized ([`KvRows::Quantized`]),
//! as a sequence's own [`QuantizedKvCache`] does.

use lamina_core::{Error, Result};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexMutOp, TryIndexOp};
use mlx_rs::{Array, ops};

use crate::cache::{
    DecodeKernel, DecodeScores, KV_STEP, KvCache, LayerCache, Ownership, RotatingKvCache, check_compatible,
};
use crate::quantized_cache::{KvQuantization, Packed, QuantizedKvCache};

/// A batch's keys or values `[B, H_kv, K, ...]`: at full precision, or quantized.
#[derive(Debug, Clone)]
pub enum KvRows {
    /// `[B, H_kv, K, D]`.
    Dense(Array),
    /// MLX's affine quantization of `[B, H_kv, K, D]`.
    Quantized(Packed),
}

impl KvRows {
    /// The arrays held (one, or the packed data, scales and biases).
    pub fn parts(&self) -> Vec<&Array> {
        match self {
            KvRows::Dense(a) => vec![a],
            KvRows::Quantized(p) => p.parts().to_vec(),
        }
    }

    fn parts_mut(&mut self) -> Vec<&mut Array> {
        match self {
            KvRows::Dense(a) => vec![a],
            KvRows::Quantized(p) => p.parts_mut().into(),
        }
    }

    /// Size of axis `axis` (0: rows, 1: heads, 2: positions; the same for every part).
    fn dim(&self, axis: i32) -> i32 {
        match self {
            KvRows::Dense(a) => a.dim(axis),
            KvRows::Quantized(p) => p.data.dim(axis),
        }
    }

    /// `f` applied to every part.
    fn map(&self, f: impl Fn(&Array) -> Result<Array>) -> Result<Self> {
        Ok(match self {
            KvRows::Dense(a) => KvRows::Dense(f(a)?),
            KvRows::Quantized(p) => KvRows::Quantized(p.map(f)?),
        })
    }

    /// The parts of `self` and `other` concatenated along `axis`.
    fn concatenate(&self, other: &Self, axis: i32) -> Result<Self> {
        let join = |a: &Array, b: &Array| -> Result<Array> { Ok(ops::concatenate(&[a, b], axis)?) };
        match (self, other) {
            (KvRows::Dense(a), KvRows::Dense(b)) => Ok(KvRows::Dense(join(a, b)?)),
            (KvRows::Quantized(a), KvRows::Quantized(b)) => Ok(KvRows::Quantized(a.zip(b, join)?)),
            _ => Err(Error::Internal("a batch KV cache mixed full-precision and quantized rows")),
        }
    }

    /// Zeros shaped like `self` but for `rows` rows and `n` positions.
    fn zeros(&self, rows: i32, n: i32) -> Result<Self> {
        self.map(|a| {
            let s = a.shape();
            Ok(ops::zeros_dtype(&[rows, s[1], n, s[3]], a.dtype())?)
        })
    }

    /// These rows quantized as `how` says (quantized ones stay as they are).
    fn quantized(self, how: KvQuantization) -> Result<Self> {
        match self {
            KvRows::Dense(a) => Ok(KvRows::Quantized(Packed::quantize(&a, how)?)),
            quantized => Ok(quantized),
        }
    }
}

/// Keys and values of a batch of sequences, left-padded into one array.
#[derive(Debug, Clone, Default)]
pub struct BatchKvCache {
    window: Option<i32>,
    /// Set once the batch holds its keys and values quantized.
    quantization: Option<KvQuantization>,
    pub(crate) keys: Option<KvRows>,
    pub(crate) values: Option<KvRows>,
    /// The index every row writes its next position at.
    pub(crate) offset: i32,
    /// Per row: the index of its position 0 (negative when a window dropped early keys).
    starts: Vec<i32>,
    /// Per row: the index of its first kept key.
    firsts: Vec<i32>,
    /// Whether the decode kernels may write the buffers in place.
    pub(crate) ownership: Ownership,
}

/// What a batch cache returns to the attention layer for `L` new positions.
#[derive(Debug, Clone)]
pub struct BatchedKv {
    /// `[B, H_kv, K, D_k]`.
    pub keys: KvRows,
    /// `[B, H_kv, K, D_v]`.
    pub values: KvRows,
    /// `[B, 1, L, K]`, `true` where a query may attend.
    pub mask: Array,
}

impl BatchKvCache {
    /// An empty batch; `window` for sliding-window attention layers.
    pub fn new(window: Option<i32>) -> Self {
        BatchKvCache { window, ..Self::default() }
    }

    /// An empty batch for prompts of `lengths` tokens prefilled together, each left-padded
    /// to the longest (the padding is masked; RoPE positions start at 0 on each prompt's
    /// first token).
    pub fn padded(window: Option<i32>, lengths: &[i32]) -> Self {
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let pads: Vec<i32> = lengths.iter().map(|l| longest - l).collect();
        BatchKvCache { window, starts: pads.clone(), firsts: pads, ..Self::default() }
    }

    /// How the batch's keys and values are quantized (`None`: full precision).
    pub fn quantization(&self) -> Option<KvQuantization> {
        self.quantization
    }

    /// Converts a full-attention batch holding more than `how.start` positions to quantized
    /// keys and values (as [`LayerCache::quantize_past_start`] converts a KV cache); a
    /// windowed batch stays as it is.
    ///
    /// # Errors
    /// A head dimension the group size does not divide; [`Error::InvalidConfig`] for
    /// settings MLX does not take.
    pub fn quantize_past_start(&mut self, how: KvQuantization) -> Result<()> {
        if self.window.is_none() && self.quantization.is_none() && self.offset as usize > how.start {
            self.quantize(how)?;
        }
        Ok(())
    }

    /// Holds the keys and values quantized from now on.
    fn quantize(&mut self, how: KvQuantization) -> Result<()> {
        let how = how.validated()?;
        for rows in [&mut self.keys, &mut self.values] {
            if let Some(r) = rows.take() {
                *rows = Some(r.quantized(how)?);
            }
        }
        self.quantization = Some(how);
        Ok(())
    }

    /// The arrays held.
    pub(crate) fn held(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).flat_map(KvRows::parts).collect()
    }

    /// The arrays held, to replace.
    pub(crate) fn held_mut(&mut self) -> Vec<&mut Array> {
        self.keys.iter_mut().chain(self.values.iter_mut()).flat_map(KvRows::parts_mut).collect()
    }

    /// Sequences in the batch.
    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    /// Each row's position of its next token, `[B]` int32 (RoPE offsets).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn positions(&self) -> Result<Array> {
        let positions: Vec<i32> = self.starts.iter().map(|s| self.offset - s).collect();
        Ok(Array::from_slice(&positions, &[positions.len() as i32]))
    }

    /// Appends `L` positions to every row; returns all keys and values with the mask the
    /// `L` queries attend under.
    ///
    /// # Shapes
    /// `keys [B, H_kv, L, D_k]`, `values [B, H_kv, L, D_v]`
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch, heads or head size differ from the stored ones.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<BatchedKv> {
        if keys.ndim() != 4 || keys.dim(0) as usize != self.rows() {
            let (expected, actual) = (vec![self.rows() as i32, -1, -1, -1], keys.shape().to_vec());
            return Err(Error::Shape { name: "new keys".into(), expected, actual });
        }
        if let (Some(KvRows::Dense(k)), Some(KvRows::Dense(v))) = (&self.keys, &self.values) {
            check_compatible(k, keys, "keys")?;
            check_compatible(v, values, "values")?;
        }
        let (prev, len) = (self.offset, keys.dim(2));
        let (keys, values) = match self.quantization {
            Some(how) => (
                KvRows::Quantized(Packed::quantize(keys, how)?),
                KvRows::Quantized(Packed::quantize(values, how)?),
            ),
            None => (KvRows::Dense(keys.clone()), KvRows::Dense(values.clone())),
        };
        let all_keys = append_rows(&mut self.keys, &keys, prev)?;
        let all_values = append_rows(&mut self.values, &values, prev)?;
        self.ownership.lend(); // views of the buffers go out
        self.offset += len;
        let total = self.offset;
        let index = ops::arange::<_, i32>(0, total, None)?.reshape(&[1, 1, 1, total])?;
        let firsts = Array::from_slice(&self.firsts, &[self.firsts.len() as i32, 1, 1, 1]);
        let mask = if len == 1 {
            // One query per row, at the last index (never padding): every kept key in the
            // window.
            let kept = index.ge(&firsts)?;
            match self.window {
                Some(window) => kept.logical_and(&index.gt(Array::from_int(total - 1 - window))?)?,
                None => kept,
            }
        } else {
            // A padding position attends to itself alone, so that no row of scores is empty.
            let query = ops::arange::<_, i32>(prev, total, None)?.reshape(&[1, 1, len, 1])?;
            let mask = index.ge(&firsts)?.logical_or(&index.eq(&query)?)?.logical_and(&index.le(&query)?)?;
            match self.window {
                Some(window) => mask.logical_and(&index.gt(&(&query - window))?)?,
                None => mask,
            }
        };
        Ok(BatchedKv { keys: all_keys, values: all_values, mask })
    }

    /// One decoded position of every row written into the batch's buffers in place by
    /// `kernel` (as [`LayerCache::decode_in_place`] says), which gets each row's first kept
    /// slot and position as `lamina_kernels::decode_attention`'s places: every row attends
    /// to its own keys as its own cache would hold them. `None` (and `kernel` not called)
    /// for quantized rows, or buffers shared with a joining row's cache or handed out.
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch, heads or head size differ from the stored ones;
    /// `kernel`'s errors.
    pub(crate) fn decode_in_place(
        &mut self,
        k: &Array,
        v: &Array,
        how: DecodeScores,
        kernel: impl DecodeKernel,
    ) -> Result<Option<Array>> {
        let (Some(KvRows::Dense(keys)), Some(KvRows::Dense(values))) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        check_compatible(keys, k, "keys")?;
        check_compatible(values, v, "values")?;
        let prev = self.offset;
        let grown = reserve_rows(&mut self.keys, &KvRows::Dense(k.clone()), prev)?
            | reserve_rows(&mut self.values, &KvRows::Dense(v.clone()), prev)?;
        if grown {
            self.ownership = Ownership::default();
        }
        let (Some(KvRows::Dense(keys)), Some(KvRows::Dense(values))) = (&self.keys, &self.values) else {
            return Err(Error::Internal("a batch KV cache lost its buffers"));
        };
        if !self.ownership.exclusive() {
            return Ok(None);
        }
        let places: Vec<i32> =
            self.firsts.iter().zip(&self.starts).flat_map(|(&first, &start)| [first, prev - start]).collect();
        let places = Array::from_slice(&places, &[self.rows() as i32, 2]);
        let attention = lamina_kernels::DecodeAttention {
            slot: prev,
            length: prev + 1,
            scale: how.scale,
            window: self.window,
            softcap: how.softcap,
        };
        let (out, new_keys, new_values) = kernel([keys, values], attention, Some(&places))?;
        self.keys = Some(KvRows::Dense(new_keys));
        self.values = Some(KvRows::Dense(new_values));
        self.offset += 1;
        Ok(Some(out))
    }

    /// Pads a sequence's own cache (a KV, quantized or rotating cache, batch 1) in as the
    /// last row. A quantized row makes the batch quantized (its rows are converted); a
    /// full-precision row joining a quantized batch is quantized.
    ///
    /// # Errors
    /// [`Error::CacheKind`] for another kind of cache, [`Error::Unsupported`] for an empty
    /// one or a quantized row in a windowed batch, [`Error::Shape`] when heads or head size
    /// differ from the batch's.
    pub fn join(&mut self, row: &LayerCache) -> Result<()> {
        let (keys, values, kept, len) = match row {
            LayerCache::Kv(c) => match c.state()? {
                Some((k, v)) => (KvRows::Dense(k), KvRows::Dense(v), c.offset(), c.offset()),
                None => return Err(Error::Unsupported("joining an empty cache to a batch")),
            },
            // A window's quantized cache joins a windowed batch at full precision.
            LayerCache::Quantized(c) if c.window().is_some() => match c.temporal()? {
                Some((k, v, kept)) => (KvRows::Dense(k), KvRows::Dense(v), kept, c.offset()),
                None => return Err(Error::Unsupported("joining an empty cache to a batch")),
            },
            LayerCache::Quantized(c) => {
                if self.window.is_some() {
                    return Err(Error::Unsupported("a full-attention quantized cache in a windowed batch"));
                }
                if self.quantization.is_none() {
                    self.quantize(c.quantization())?;
                }
                match c.state()? {
                    Some((k, v)) => (KvRows::Quantized(k), KvRows::Quantized(v), c.offset(), c.offset()),
                    None => return Err(Error::Unsupported("joining an empty cache to a batch")),
                }
            }
            LayerCache::Rotating(c) => match c.temporal()? {
                Some((k, v, kept)) => (KvRows::Dense(k), KvRows::Dense(v), kept, c.offset()),
                None => return Err(Error::Unsupported("joining an empty cache to a batch")),
            },
            other => return Err(Error::CacheKind { layer: "a batch KV cache", cache: other.kind() }),
        };
        let (keys, values) = match self.quantization {
            Some(how) => (keys.quantized(how)?, values.quantized(how)?),
            None => (keys, values),
        };
        if keys.dim(0) != 1 {
            return Err(Error::Shape {
                name: "joining cache".into(),
                expected: vec![1],
                actual: vec![keys.dim(0)],
            });
        }
        if let (Some(k), Some(v)) = (&self.keys, &self.values) {
            same_heads(k, &keys, "keys")?;
            same_heads(v, &values, "values")?;
        }
        let (Some(stored_k), Some(stored_v)) = (self.keys.take(), self.values.take()) else {
            self.keys = Some(keys);
            self.values = Some(values);
            self.offset = kept;
            self.starts = vec![kept - len];
            self.firsts = vec![0];
            self.ownership = Ownership::lent(); // the row's own cache shares these buffers
            return Ok(());
        };
        // Make room on the left when the newcomer is longer than the batch.
        let (mut stored_k, mut stored_v) = (stored_k, stored_v);
        if kept > self.offset {
            let shift = kept - self.offset;
            let rows = stored_k.dim(0);
            stored_k = stored_k.zeros(rows, shift)?.concatenate(&stored_k, 2)?;
            stored_v = stored_v.zeros(rows, shift)?.concatenate(&stored_v, 2)?;
            self.offset += shift;
            self.starts.iter_mut().chain(self.firsts.iter_mut()).for_each(|i| *i += shift);
        }
        let (offset, capacity) = (self.offset, stored_k.dim(2));
        let pad = |row: KvRows| -> Result<KvRows> {
            let left = row.zeros(1, offset - kept)?;
            let right = row.zeros(1, capacity - offset)?;
            left.concatenate(&row, 2)?.concatenate(&right, 2)
        };
        self.keys = Some(stored_k.concatenate(&pad(keys)?, 0)?);
        self.values = Some(stored_v.concatenate(&pad(values)?, 0)?);
        self.ownership = Ownership::default();
        self.starts.push(offset - len);
        self.firsts.push(offset - kept);
        Ok(())
    }

    /// Takes row `index` out: its keys and values as a cache of its own (a rotating cache
    /// for a windowed layer), continuing exactly where the row was.
    ///
    /// # Errors
    /// [`Error::Shape`] for a row that does not exist; MLX errors.
    pub fn leave(&mut self, index: usize) -> Result<LayerCache> {
        if index >= self.rows() {
            let (expected, actual) = (vec![self.rows() as i32], vec![index as i32]);
            return Err(Error::Shape { name: "batch row".into(), expected, actual });
        }
        let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) else {
            return Err(Error::Internal("a batch KV cache with rows lost its buffers"));
        };
        let (start, first) = (self.starts.remove(index), self.firsts.remove(index));
        let at = index as i32;
        // A copy, so that the row does not keep the whole batch's buffer alive.
        let end = self.offset;
        let own =
            |a: &Array| -> Result<Array> { Ok(a.try_index((at..at + 1, .., first..end, ..))?.contiguous()?) };
        let (row_k, row_v) = (k.map(own)?, v.map(own)?);
        let (len, kept) = (self.offset - start, self.offset - first);
        let row = match (self.window, row_k, row_v, self.quantization) {
            (None, KvRows::Dense(row_k), KvRows::Dense(row_v), _) => {
                LayerCache::Kv(KvCache::from_state(row_k, row_v, len)?)
            }
            (None, KvRows::Quantized(row_k), KvRows::Quantized(row_v), Some(how)) => {
                LayerCache::Quantized(QuantizedKvCache::from_state(row_k, row_v, len, how)?)
            }
            (Some(window), KvRows::Dense(row_k), KvRows::Dense(row_v), _) => {
                LayerCache::Rotating(to_slots(window, row_k, row_v, len, kept)?)
            }
            _ => return Err(Error::Internal("a batch KV cache's rows do not match its kind")),
        };
        if self.starts.is_empty() {
            *self = BatchKvCache::new(self.window);
            return Ok(row);
        }
        let rest: Vec<i32> = (0..k.dim(0)).filter(|&r| r != at).collect();
        let rest = Array::from_slice(&rest, &[rest.len() as i32]);
        // Drop the padding every remaining row has on the left.
        let drop = self.firsts.iter().copied().min().unwrap_or(0);
        let keep =
            |a: &Array| -> Result<Array> { Ok(a.take_axis(&rest, 0)?.try_index((Ellipsis, drop.., ..))?) };
        self.keys = Some(k.map(keep)?);
        self.values = Some(v.map(keep)?);
        self.ownership = Ownership::default();
        self.offset -= drop;
        self.starts.iter_mut().chain(self.firsts.iter_mut()).for_each(|i| *i -= drop);
        Ok(row)
    }
}

/// Makes room for `new`'s positions at `prev..` of `stored` (grown by whole [`KV_STEP`]
/// blocks when full, or allocated); returns whether the buffers are new.
fn reserve_rows(stored: &mut Option<KvRows>, new: &KvRows, prev: i32) -> Result<bool> {
    if prev + new.dim(2) <= stored.as_ref().map_or(0, |s| s.dim(2)) {
        return Ok(false);
    }
    let room = new.zeros(new.dim(0), (new.dim(2) + KV_STEP - 1) / KV_STEP * KV_STEP)?;
    *stored = Some(match stored.take() {
        Some(old) => old.map(|a| Ok(a.try_index((Ellipsis, ..prev, ..))?))?.concatenate(&room, 2)?,
        None => room,
    });
    Ok(true)
}

/// Writes `new` at positions `prev..` of `stored` ([`reserve_rows`]); returns positions
/// `..prev + L`.
fn append_rows(stored: &mut Option<KvRows>, new: &KvRows, prev: i32) -> Result<KvRows> {
    let end = prev + new.dim(2);
    reserve_rows(stored, new, prev)?;
    let Some(rows) = stored.as_mut() else {
        return Err(Error::Internal("a batch KV cache lost its buffers"));
    };
    for (part, written) in rows.parts_mut().into_iter().zip(new.parts()) {
        part.try_index_mut((Ellipsis, prev..end, ..), written)?;
    }
    rows.map(|a| Ok(a.try_index((Ellipsis, ..end, ..))?))
}

/// A joining row must have the batch's heads and head size.
fn same_heads(stored: &KvRows, new: &KvRows, name: &str) -> Result<()> {
    for (stored, new) in stored.parts().into_iter().zip(new.parts()) {
        let (s, n) = (stored.shape(), new.shape());
        if n.len() != 4 || s[1] != n[1] || s[3] != n[3] {
            return Err(Error::Shape {
                name: format!("joining {name}"),
                expected: vec![1, s[1], -1, s[3]],
                actual: n.to_vec(),
            });
        }
    }
    Ok(())
}

/// A rotating cache of `window` slots from the last `kept` keys (in order) of a sequence
/// of `len` positions: position `p` at slot `p % window`.
fn to_slots(window: i32, keys: Array, values: Array, len: i32, kept: i32) -> Result<RotatingKvCache> {
    let n = kept.min(window);
    let tail = |a: &Array| a.try_index((Ellipsis, kept - n.., ..));
    let (keys, values) = (tail(&keys)?, tail(&values)?);
    let slots = |a: Array| -> Result<Array> {
        if len <= window {
            // Positions 0..len sit at slots 0..len; the rest are empty.
            let s = a.shape();
            let empty = ops::zeros_dtype(&[s[0], s[1], window - n, s[3]], a.dtype())?;
            return Ok(ops::concatenate(&[a, empty], 2)?);
        }
        // Slot s holds position p = len - window + t with p % window == s.
        let order: Vec<i32> = (0..window).map(|s| (s - (len - window)).rem_euclid(window)).collect();
        Ok(a.take_axis(Array::from_slice(&order, &[window]), 2)?)
    };
    RotatingKvCache::from_state(window, slots(keys)?, slots(values)?, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{array, to_vec};

    fn kv_cache(len: i32, salt: f32) -> (LayerCache, Array) {
        let keys = array(&[1, 2, len, 3], salt);
        let mut cache = KvCache::new();
        cache.update_and_fetch(&keys, &keys).unwrap();
        (LayerCache::Kv(cache), keys)
    }

    #[test]
    fn rows_of_different_lengths_pad_left_and_leave_unchanged() {
        let mut batch = BatchKvCache::new(None);
        let (short, short_keys) = kv_cache(2, 0.0);
        let (long, long_keys) = kv_cache(5, 1.0);
        batch.join(&short).unwrap();
        batch.join(&long).unwrap(); // longer: the first row is shifted right
        assert_eq!((batch.rows(), batch.offset), (2, 5));
        assert_eq!(batch.positions().unwrap().as_slice::<i32>(), &[2, 5]);
        let new = array(&[2, 2, 1, 3], 2.0);
        let out = batch.update_and_fetch(&new, &new).unwrap();
        // Row 0 sees its 2 keys and the new one; row 1 all 6.
        let mask: Vec<bool> = out.mask.as_slice::<bool>().to_vec();
        assert_eq!(mask, [false, false, false, true, true, true, true, true, true, true, true, true]);
        let LayerCache::Kv(first) = batch.leave(0).unwrap() else { panic!("a KV cache") };
        let (k, _) = first.state().unwrap().unwrap();
        let expected = ops::concatenate(&[short_keys, new.try_index(0..1).unwrap()], 2).unwrap();
        assert_eq!((first.offset(), to_vec(&k)), (3, to_vec(&expected)));
        // The remaining row lost no key and no padding is left.
        assert_eq!((batch.rows(), batch.offset), (1, 6));
        let LayerCache::Kv(second) = batch.leave(0).unwrap() else { panic!("a KV cache") };
        let (k, _) = second.state().unwrap().unwrap();
        let expected = ops::concatenate(&[long_keys, new.try_index(1..2).unwrap()], 2).unwrap();
        assert_eq!(to_vec(&k), to_vec(&expected));
        assert!(batch.leave(0).is_err());
    }

    #[test]
    fn a_quantized_batch_keeps_each_row_as_its_own_quantized_cache_would() {
        let how = KvQuantization { bits: 8, group_size: 32, start: 3 };
        let rows: Vec<Array> =
            [(2, 0.0), (5, 1.0), (4, 2.0)].iter().map(|&(n, s)| array(&[1, 2, n, 32], s)).collect();
        let own = |keys: &Array| {
            let mut cache = KvCache::new();
            cache.update_and_fetch(keys, keys).unwrap();
            cache
        };
        let mut batch = BatchKvCache::new(None);
        batch.join(&LayerCache::Kv(own(&rows[0]))).unwrap();
        batch.quantize_past_start(how).unwrap();
        assert_eq!(batch.quantization(), None, "2 positions: not past the start");
        // A quantized row makes the batch quantized; a full-precision one joins quantized.
        batch.join(&LayerCache::Quantized(QuantizedKvCache::from_kv(&own(&rows[1]), how).unwrap())).unwrap();
        assert_eq!(batch.quantization(), Some(how));
        batch.join(&LayerCache::Kv(own(&rows[2]))).unwrap();
        let new = array(&[3, 2, 1, 32], 3.0);
        let out = batch.update_and_fetch(&new, &new).unwrap();
        assert!(matches!(out.keys, KvRows::Quantized(_)));
        for (index, row) in rows.iter().enumerate().rev() {
            let at = index as i32;
            let LayerCache::Quantized(left) = batch.leave(index).unwrap() else {
                panic!("a quantized cache")
            };
            let mut alone = QuantizedKvCache::from_kv(&own(row), how).unwrap();
            alone
                .update_and_fetch(&new.try_index(at..at + 1).unwrap(), &new.try_index(at..at + 1).unwrap())
                .unwrap();
            assert_eq!(left.offset(), alone.offset());
            let ((k, _), (expected, _)) = (left.state().unwrap().unwrap(), alone.state().unwrap().unwrap());
            assert_eq!(k.data.as_slice::<u32>(), expected.data.contiguous().unwrap().as_slice::<u32>());
            assert_eq!(to_vec(&k.scales), to_vec(&expected.scales));
        }
        assert_eq!(batch.rows(), 0);
        let mut windowed = BatchKvCache::new(Some(4));
        let quantized = LayerCache::Quantized(QuantizedKvCache::from_kv(&own(&rows[0]), how).unwrap());
        assert!(windowed.join(&quantized).is_err(), "a full-attention cache in a windowed batch");
        // A window's quantized cache joins a windowed batch at full precision, in order.
        let mut rotating = RotatingKvCache::new(4).unwrap();
        rotating.update_and_fetch(&rows[1], &rows[1]).unwrap();
        let quantized = QuantizedKvCache::from_rotating(&rotating, how).unwrap();
        windowed.join(&LayerCache::Quantized(quantized.clone())).unwrap();
        let LayerCache::Rotating(back) = windowed.leave(0).unwrap() else { panic!("a rotating cache") };
        let (k, _) = back.state().unwrap();
        let (slots, _) = quantized.state().unwrap().unwrap();
        assert_eq!(back.offset(), 5);
        assert_eq!(to_vec(k), to_vec(&slots.dequantize(how).unwrap()), "the same slots, dequantized");
    }

    #[test]
    fn a_windowed_row_leaves_as_the_rotating_cache_it_would_be() {
        let window = 4;
        let all = array(&[1, 1, 7, 2], 0.5);
        let mut rotating = RotatingKvCache::new(window).unwrap();
        rotating.update_and_fetch(&all, &all).unwrap();
        let mut batch = BatchKvCache::new(Some(window));
        batch.join(&LayerCache::Rotating(rotating.clone())).unwrap();
        assert_eq!(batch.positions().unwrap().as_slice::<i32>(), &[7]);
        let LayerCache::Rotating(back) = batch.leave(0).unwrap() else { panic!("a rotating cache") };
        let (k, _) = back.state().unwrap();
        let (expected, _) = rotating.state().unwrap();
        assert_eq!((back.offset(), to_vec(k)), (7, to_vec(expected)));
    }
}
