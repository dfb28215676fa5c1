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
use lamina_kernels::RowSpan;

const MIXED: Error = Error::Internal("a batch KV cache mixed full-precision and quantized rows");

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

    /// Rows of `sources` (all dense or all quantized) placed as `spans` say, `positions`
    /// per row (lamina_kernels::move_rows on every part).
    fn moved(sources: &[&KvRows], spans: &[RowSpan], positions: i32) -> Result<Self> {
        let dense: Option<Vec<&Array>> =
            sources.iter().map(|r| if let KvRows::Dense(a) = r { Some(a) } else { None }).collect();
        if let Some(dense) = dense {
            return Ok(KvRows::Dense(lamina_kernels::move_rows(&dense, spans, positions)?));
        }
        let packed: Option<Vec<&Packed>> =
            sources.iter().map(|r| if let KvRows::Quantized(p) = r { Some(p) } else { None }).collect();
        let packed = packed.ok_or(MIXED)?;
        Ok(KvRows::Quantized(Packed::combine(&packed, |parts| {
            lamina_kernels::move_rows(parts, spans, positions)
        })?))
    }

    /// [`KvRows::moved`] of these rows alone, within their own buffers when `exclusive`
    /// (rows only move towards the start: a batch closing up or dropping padding).
    fn moved_within(&self, spans: &[RowSpan], positions: i32, exclusive: bool) -> Result<Self> {
        if !exclusive {
            return KvRows::moved(&[self], spans, positions);
        }
        // SAFETY: the batch owns these buffers alone (its ownership says so), and the
        // caller evaluated every copy read from them before.
        self.map(|a| Ok(unsafe { lamina_kernels::move_rows_in_place(a, spans, positions)? }))
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

/// A sequence's own cache on its way into a batch.
struct Joining {
    keys: KvRows,
    values: KvRows,
    /// Positions it holds.
    kept: i32,
    /// Positions it has seen (more than kept when a window dropped early ones).
    len: i32,
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
    /// last row ([`BatchKvCache::join_all`] with one row).
    ///
    /// # Errors
    /// As [`BatchKvCache::join_all`].
    pub fn join(&mut self, row: &LayerCache) -> Result<()> {
        self.join_all(&[row])
    }

    /// Pads sequences' own caches (KV, quantized or rotating caches, batch 1 each) in as
    /// the last rows, in order, with one copy of the batch whatever their number (joining
    /// them one by one would copy the batch once per row). A quantized row makes the batch
    /// quantized (its rows are converted); a full-precision row joining a quantized batch
    /// is quantized.
    ///
    /// # Errors
    /// [`Error::CacheKind`] for another kind of cache, [`Error::Unsupported`] for an empty
    /// one or a quantized row in a windowed batch, [`Error::Shape`] when heads or head size
    /// differ from the batch's (no row joins then).
    pub fn join_all(&mut self, rows: &[&LayerCache]) -> Result<()> {
        if let Some(how) = self.joined_quantization(rows)?
            && self.quantization.is_none()
        {
            self.quantize(how)?;
        }
        let mut joining: Vec<Joining> = Vec::with_capacity(rows.len());
        for row in rows {
            let (keys, values, kept, len) = self.joining(row)?;
            let (keys, values) = match self.quantization {
                Some(how) => (keys.quantized(how)?, values.quantized(how)?),
                None => (keys, values),
            };
            let batch = self.keys.as_ref().zip(self.values.as_ref());
            if let Some((k, v)) = batch.or(joining.first().map(|j| (&j.keys, &j.values))) {
                same_heads(k, &keys, "keys")?;
                same_heads(v, &values, "values")?;
            }
            joining.push(Joining { keys, values, kept, len });
        }
        let Some(longest) = joining.iter().map(|j| j.kept).max() else { return Ok(()) };
        let stored = self.keys.take().zip(self.values.take());
        if stored.is_none() && joining.len() == 1 {
            let Joining { keys, values, kept, len } = joining.remove(0);
            self.keys = Some(keys);
            self.values = Some(values);
            self.offset = kept;
            self.starts = vec![kept - len];
            self.firsts = vec![0];
            self.ownership = Ownership::lent(); // the row's own cache shares these buffers
            return Ok(());
        }
        // One node per part: the batch's rows shifted right by `shift`, then each newcomer
        // padded to the batch's slots, with room for the next KV_STEP positions at least.
        let (rows, shift, capacity) = match &stored {
            Some((k, _)) => (k.dim(0), (longest - self.offset).max(0), k.dim(2)),
            None => (0, 0, 0),
        };
        let held = self.offset;
        self.offset = if stored.is_some() { held + shift } else { longest };
        self.starts.iter_mut().chain(self.firsts.iter_mut()).for_each(|i| *i += shift);
        let offset = self.offset;
        let positions = (capacity + shift).max((offset / KV_STEP + 1) * KV_STEP);
        let base = usize::from(stored.is_some());
        let mut spans: Vec<RowSpan> =
            (0..rows).map(|row| RowSpan { source: 0, row, from: 0, to: shift, count: held }).collect();
        for (j, row) in joining.iter().enumerate() {
            spans.push(RowSpan { source: base + j, row: 0, from: 0, to: offset - row.kept, count: row.kept });
            self.starts.push(offset - row.len);
            self.firsts.push(offset - row.kept);
        }
        let stored_k = stored.as_ref().map(|(k, _)| k);
        let stored_v = stored.as_ref().map(|(_, v)| v);
        let keys: Vec<&KvRows> = stored_k.into_iter().chain(joining.iter().map(|j| &j.keys)).collect();
        let values: Vec<&KvRows> = stored_v.into_iter().chain(joining.iter().map(|j| &j.values)).collect();
        self.keys = Some(KvRows::moved(&keys, &spans, positions)?);
        self.values = Some(KvRows::moved(&values, &spans, positions)?);
        self.ownership = Ownership::default();
        Ok(())
    }

    /// The quantization the batch has once `rows` joined: a quantized full-attention row
    /// makes a full-attention batch quantized.
    fn joined_quantization(&self, rows: &[&LayerCache]) -> Result<Option<KvQuantization>> {
        let mut quantization = self.quantization;
        for row in rows {
            if let LayerCache::Quantized(c) = row
                && c.window().is_none()
            {
                if self.window.is_some() {
                    return Err(Error::Unsupported("a full-attention quantized cache in a windowed batch"));
                }
                quantization = quantization.or(Some(c.quantization()));
            }
        }
        Ok(quantization)
    }

    /// A joining row's keys, values, positions kept and length, checked.
    fn joining(&self, row: &LayerCache) -> Result<(KvRows, KvRows, i32, i32)> {
        let empty = || Error::Unsupported("joining an empty cache to a batch");
        let (keys, values, kept, len) = match row {
            LayerCache::Kv(c) => {
                let (k, v) = c.state()?.ok_or_else(empty)?;
                (KvRows::Dense(k), KvRows::Dense(v), c.offset(), c.offset())
            }
            // A window's quantized cache joins a windowed batch at full precision.
            LayerCache::Quantized(c) if c.window().is_some() => {
                let (k, v, kept) = c.temporal()?.ok_or_else(empty)?;
                (KvRows::Dense(k), KvRows::Dense(v), kept, c.offset())
            }
            LayerCache::Quantized(c) => {
                let (k, v) = c.state()?.ok_or_else(empty)?;
                (KvRows::Quantized(k), KvRows::Quantized(v), c.offset(), c.offset())
            }
            LayerCache::Rotating(c) => {
                let (k, v, kept) = c.temporal()?.ok_or_else(empty)?;
                (KvRows::Dense(k), KvRows::Dense(v), kept, c.offset())
            }
            other => return Err(Error::CacheKind { layer: "a batch KV cache", cache: other.kind() }),
        };
        if keys.dim(0) != 1 {
            return Err(Error::Shape {
                name: "joining cache".into(),
                expected: vec![1],
                actual: vec![keys.dim(0)],
            });
        }
        Ok((keys, values, kept, len))
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
        // A copy, so that the row does not keep the whole batch's buffer alive; evaluated
        // now, before the other rows move over it.
        let end = self.offset;
        let own = [RowSpan { source: 0, row: at, from: first, to: 0, count: end - first }];
        let (row_k, row_v) =
            (KvRows::moved(&[&k], &own, end - first)?, KvRows::moved(&[&v], &own, end - first)?);
        mlx_rs::transforms::eval(row_k.parts().into_iter().chain(row_v.parts()))?;
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
        // The other rows closed up, without the padding every one of them has on the left,
        // in the batch's own buffers when it owns them alone.
        let drop = self.firsts.iter().copied().min().unwrap_or(0);
        let spans: Vec<RowSpan> = (0..k.dim(0))
            .filter(|&row| row != at)
            .map(|row| RowSpan { source: 0, row, from: drop, to: 0, count: end - drop })
            .collect();
        let (positions, exclusive) = (k.dim(2) - drop, self.ownership.exclusive());
        self.keys = Some(k.moved_within(&spans, positions, exclusive)?);
        self.values = Some(v.moved_within(&spans, positions, exclusive)?);
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
    let room = (new.dim(2) + KV_STEP - 1) / KV_STEP * KV_STEP;
    *stored = Some(match stored.take() {
        Some(old) => {
            let spans: Vec<RowSpan> =
                (0..old.dim(0)).map(|row| RowSpan { source: 0, row, from: 0, to: 0, count: prev }).collect();
            KvRows::moved(&[&old], &spans, prev + room)?
        }
        None => new.zeros(new.dim(0), room)?,
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

    /// Every row's keys as `leave` returns them, the batch's offset and mask after one
    /// more position.
    fn rows_after_a_step(mut batch: BatchKvCache, new: &Array) -> (Vec<Vec<f32>>, Vec<bool>, Vec<i32>) {
        let out = batch.update_and_fetch(new, new).unwrap();
        let mask = out.mask.as_slice::<bool>().to_vec();
        let positions = batch.positions().unwrap().as_slice::<i32>().to_vec();
        let mut rows = Vec::new();
        while batch.rows() > 0 {
            let LayerCache::Kv(row) = batch.leave(0).unwrap() else { panic!("a KV cache") };
            rows.push(to_vec(&row.state().unwrap().unwrap().0));
        }
        (rows, mask, positions)
    }

    #[test]
    fn rows_joined_at_once_equal_rows_joined_one_by_one() {
        let caches: Vec<LayerCache> =
            [(3, 0.0), (6, 1.0), (2, 2.0)].iter().map(|&(n, s)| kv_cache(n, s).0).collect();
        let new = array(&[4, 2, 1, 3], 3.0);
        let mut one_by_one = BatchKvCache::new(None);
        let mut at_once = BatchKvCache::new(None);
        one_by_one.join(&caches[0]).unwrap();
        at_once.join(&caches[0]).unwrap();
        for cache in &caches {
            one_by_one.join(cache).unwrap();
        }
        at_once.join_all(&caches.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((at_once.rows(), at_once.offset), (4, 6));
        assert_eq!(rows_after_a_step(at_once, &new), rows_after_a_step(one_by_one, &new));
    }

    #[test]
    fn rows_leaving_from_anywhere_leave_the_others_as_they_were() {
        let mut batch = BatchKvCache::new(None);
        let rows: Vec<(LayerCache, Array)> =
            [(4, 0.0), (2, 1.0), (3, 2.0), (5, 3.0)].iter().map(|&(n, s)| kv_cache(n, s)).collect();
        batch.join_all(&rows.iter().map(|(c, _)| c).collect::<Vec<_>>()).unwrap();
        // What each row in the batch should hold, in the batch's order.
        let mut expected: Vec<Array> = rows.into_iter().map(|(_, keys)| keys).collect();
        let step = |batch: &mut BatchKvCache, expected: &mut Vec<Array>, salt: f32| {
            let new = array(&[expected.len() as i32, 2, 1, 3], salt);
            batch.update_and_fetch(&new, &new).unwrap();
            for (i, keys) in expected.iter_mut().enumerate() {
                let at = i as i32;
                *keys = ops::concatenate(&[&*keys, &new.try_index(at..at + 1).unwrap()], 2).unwrap();
            }
        };
        // From the middle, the end and the start (the longest rows: the rest drop the padding
        // none of them needs), then the only one.
        for (at, salt, offset) in [(1, 4.0, 6), (2, 5.0, 6), (0, 6.0, 6), (0, 7.0, 0)] {
            step(&mut batch, &mut expected, salt);
            let LayerCache::Kv(left) = batch.leave(at).unwrap() else { panic!("a KV cache") };
            let keys = expected.remove(at);
            assert_eq!(to_vec(&left.state().unwrap().unwrap().0), to_vec(&keys), "row {at} at {salt}");
            assert_eq!((batch.rows(), batch.offset), (expected.len(), offset), "after {salt}");
        }
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
