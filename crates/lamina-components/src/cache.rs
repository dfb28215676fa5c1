//! Per-layer caches for incremental decoding, held by the caller: a growing KV cache, a
//! rotating KV cache for sliding-window attention, the Mamba mixer's state, and a batch of
//! independent per-sequence caches (continuous batching: sequences of different lengths
//! decode together, joining and leaving between steps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lamina_core::{Error, Result};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexMutOp, TryIndexOp};
use mlx_rs::{Array, ops};

pub use crate::batch_cache::BatchKvCache;
use crate::quantized_cache::{KvQuantization, QuantizedKvCache};

/// Keys and values grow in blocks of this many positions, so that decoding does not
/// reallocate (or concatenate) on every token.
pub const KV_STEP: i32 = 256;

/// The cache of one layer.
#[derive(Debug, Clone)]
pub enum LayerCache {
    /// Keys and values of every position so far (full attention).
    Kv(KvCache),
    /// Keys and values of the last `window` positions (sliding-window attention).
    Rotating(RotatingKvCache),
    /// The convolution window and SSM state of a Mamba mixer.
    Ssm(SsmState),
    /// Keys and values of a batch of sequences of different lengths, left-padded into one
    /// array (continuous batching).
    Batch(BatchKvCache),
    /// Keys and values of every position so far, quantized (a long context in less memory).
    Quantized(QuantizedKvCache),
}

impl LayerCache {
    /// Positions processed so far (for a batch, the longest row's).
    pub fn offset(&self) -> i32 {
        match self {
            LayerCache::Kv(c) => c.offset,
            LayerCache::Rotating(c) => c.offset,
            LayerCache::Ssm(c) => c.offset,
            LayerCache::Batch(c) => c.offset,
            LayerCache::Quantized(c) => c.offset(),
        }
    }

    /// The arrays the cache holds. They are handed out: the cache stops writing into
    /// these buffers in place (its next decoded position goes to a copy), so an array
    /// cloned from here never changes under its holder.
    pub fn arrays(&self) -> Vec<&Array> {
        self.lend();
        self.held()
    }

    /// The arrays the cache holds, to replace (e.g. by the same values with a
    /// dependency); handed out as [`LayerCache::arrays`] hands them.
    pub fn arrays_mut(&mut self) -> Vec<&mut Array> {
        self.lend();
        match self {
            LayerCache::Kv(c) => c.keys.iter_mut().chain(c.values.iter_mut()).collect(),
            LayerCache::Rotating(c) => c.keys.iter_mut().chain(c.values.iter_mut()).collect(),
            LayerCache::Ssm(c) => c.conv.iter_mut().chain(c.ssm.iter_mut()).collect(),
            LayerCache::Batch(c) => c.held_mut(),
            LayerCache::Quantized(c) => c.held_mut(),
        }
    }

    /// Evaluates the arrays `caches` hold (what a prefill chunk computed), in one call,
    /// without handing them out.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn eval_all<'a>(caches: impl IntoIterator<Item = &'a LayerCache>) -> Result<()> {
        let held: Vec<&Array> = caches.into_iter().flat_map(LayerCache::held).collect();
        mlx_rs::transforms::eval(held)?;
        Ok(())
    }

    /// Bytes of the arrays the cache holds (allocated capacity, not only the used part).
    pub fn nbytes(&self) -> usize {
        self.held().iter().map(|a| a.nbytes()).sum()
    }

    fn held(&self) -> Vec<&Array> {
        match self {
            LayerCache::Kv(c) => c.keys.iter().chain(c.values.iter()).collect(),
            LayerCache::Rotating(c) => c.keys.iter().chain(c.values.iter()).collect(),
            LayerCache::Ssm(c) => c.conv.iter().chain(c.ssm.iter()).collect(),
            LayerCache::Batch(c) => c.held(),
            LayerCache::Quantized(c) => c.held(),
        }
    }

    /// Marks the buffers of a cache the decode kernel writes in place as shared.
    fn lend(&self) {
        match self {
            LayerCache::Kv(c) => c.ownership.lend(),
            LayerCache::Rotating(c) => c.ownership.lend(),
            LayerCache::Quantized(c) => c.ownership.lend(),
            LayerCache::Batch(c) => c.ownership.lend(),
            LayerCache::Ssm(_) => {}
        }
    }

    /// The kind's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerCache::Kv(_) => "KV cache",
            LayerCache::Rotating(_) => "rotating KV cache",
            LayerCache::Ssm(_) => "SSM state",
            LayerCache::Batch(_) => "batch KV cache",
            LayerCache::Quantized(_) => "quantized KV cache",
        }
    }

    /// Whether [`LayerCache::trim`] can bring the cache back to `len` positions: a KV cache
    /// always (for `len <= offset`), a rotating cache while it has not wrapped around, a
    /// recurrent state only at its own length.
    pub fn can_trim_to(&self, len: i32) -> bool {
        match self {
            _ if len == self.offset() => true,
            LayerCache::Kv(c) => (0..=c.offset).contains(&len),
            LayerCache::Quantized(c) => c.can_trim_to(len),
            LayerCache::Rotating(c) => c.offset <= c.window && (0..=c.offset).contains(&len),
            LayerCache::Ssm(_) | LayerCache::Batch(_) => false,
        }
    }

    /// Converts a KV or rotating cache holding more than `how.start` positions into a
    /// quantized one (mlx-lm's `maybe_quantize_kv_cache`, which leaves rotating caches at
    /// full precision), and a full-attention batch's
    /// keys and values ([`BatchKvCache::quantize_past_start`]); other caches stay as they
    /// are.
    ///
    /// # Errors
    /// As [`QuantizedKvCache::from_kv`].
    pub fn quantize_past_start(&mut self, how: KvQuantization) -> Result<()> {
        match self {
            LayerCache::Kv(c) if c.offset as usize > how.start => {
                *self = LayerCache::Quantized(QuantizedKvCache::from_kv(c, how)?);
            }
            LayerCache::Rotating(c) if c.offset as usize > how.start => {
                *self = LayerCache::Quantized(QuantizedKvCache::from_rotating(c, how)?);
            }
            LayerCache::Batch(c) => c.quantize_past_start(how)?,
            _ => {}
        }
        Ok(())
    }

    /// Whether, after `extra` more positions, [`LayerCache::trim`] can bring the cache back
    /// to its length now: a KV cache always, a rotating cache while they do not wrap around
    /// its window, a recurrent state or a batch never (for `extra > 0`).
    pub fn can_rewind(&self, extra: i32) -> bool {
        match self {
            _ if extra == 0 => true,
            LayerCache::Kv(_) => true,
            LayerCache::Quantized(c) => c.can_rewind(extra),
            LayerCache::Rotating(c) => c.offset + extra <= c.window,
            LayerCache::Ssm(_) | LayerCache::Batch(_) => false,
        }
    }

    /// Forgets every position from `len` on (see [`LayerCache::can_trim_to`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the cache cannot be trimmed to `len`.
    pub fn trim(&mut self, len: i32) -> Result<()> {
        if !self.can_trim_to(len) {
            return Err(Error::Unsupported("trimming this cache to that length"));
        }
        match self {
            LayerCache::Kv(c) => c.offset = len,
            LayerCache::Quantized(c) => c.set_offset(len),
            LayerCache::Rotating(c) => c.offset = len,
            LayerCache::Ssm(_) | LayerCache::Batch(_) => {}
        }
        Ok(())
    }
}

/// Keys and values `[B, H_kv, capacity, D]`, valid up to `offset`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    ownership: Ownership,
}

/// Whether a cache's buffers may be written in place by the decode attention kernel:
/// nothing but the cache (and the graph nodes it made, which run in order on one stream)
/// holds them. A clone of the cache shares the token, and handing out the stored arrays
/// marks it lent; either way the next write goes to a copy, which gets a fresh token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ownership(Arc<AtomicBool>);

impl Ownership {
    /// Ownership of buffers someone else may hold too.
    pub(crate) fn lent() -> Self {
        let ownership = Ownership::default();
        ownership.lend();
        ownership
    }

    pub(crate) fn exclusive(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && !self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn lend(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions stored.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// A cache holding `keys` and `values` (`[B, H_kv, capacity, D]`), valid up to `offset`
    /// (how a saved cache is restored).
    ///
    /// # Errors
    /// [`Error::Shape`] when the arrays do not agree or hold fewer than `offset` positions.
    pub fn from_state(keys: Array, values: Array, offset: i32) -> Result<Self> {
        check_state(&keys, &values, offset, None)?;
        Ok(KvCache { keys: Some(keys), values: Some(values), offset, ownership: Ownership::lent() })
    }

    /// The keys and values of the positions stored, `[B, H_kv, offset, D]` (`None` while
    /// empty).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn state(&self) -> Result<Option<(Array, Array)>> {
        self.ownership.lend();
        match (&self.keys, &self.values) {
            (Some(k), Some(v)) => Ok(Some((
                k.try_index((Ellipsis, ..self.offset, ..))?,
                v.try_index((Ellipsis, ..self.offset, ..))?,
            ))),
            _ => Ok(None),
        }
    }

    /// Positions that fit before the next reallocation.
    pub fn capacity(&self) -> i32 {
        self.keys.as_ref().map_or(0, |k| k.dim(2))
    }

    /// Appends `L` positions and returns the keys and values of all `offset + L`.
    ///
    /// # Shapes
    /// `keys [B, H_kv, L, D_k]`, `values [B, H_kv, L, D_v]` -> both `[B, H_kv, offset + L, D]`
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch, heads or head size differ from earlier calls.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let out = append(&mut self.keys, &mut self.values, keys, values, self.offset)?;
        self.offset += keys.dim(2);
        Ok(out)
    }
}

/// How a decoded position attends: the score scale, window and soft-cap
/// ([`LayerCache::decode_attention`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeScores {
    /// Score scale.
    pub scale: f32,
    /// Attend to the last `window` positions only.
    pub window: Option<i32>,
    /// Soft-capping of the scores.
    pub softcap: Option<f32>,
}

impl LayerCache {
    /// Whether [`LayerCache::decode_attention`] serves this cache: a KV or rotating cache,
    /// or a quantized one of a width the CPU's kernels dequantize.
    pub fn has_decode_attention(&self) -> bool {
        match self {
            LayerCache::Quantized(c) => c.has_decode_attention(),
            other => other.holds_dense_kv(),
        }
    }

    /// Whether the cache keeps full-precision key and value buffers that the decode
    /// kernels write in place (a KV or rotating cache).
    pub(crate) fn holds_dense_kv(&self) -> bool {
        matches!(self, LayerCache::Kv(_) | LayerCache::Rotating(_))
    }

    /// Whether [`LayerCache::decode_in_place`] may take this cache: one that
    /// [`LayerCache::holds_dense_kv`], or a full-precision batch.
    pub(crate) fn decodes_in_place(&self) -> bool {
        match self {
            LayerCache::Batch(c) => c.quantization().is_none(),
            other => other.holds_dense_kv(),
        }
    }

    /// Appends one position's key and value and attends `q` to what the cache keeps, in
    /// one graph node (lamina's decode attention kernel; the buffers are updated in place;
    /// a quantized cache is read packed). f32 on the CPU only.
    ///
    /// # Shapes
    /// `q [B, H, 1, D]`, `k [B, H_kv, 1, D]`, `v [B, H_kv, 1, D_v]` -> `[B, 1, H * D_v]`
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch, heads or head size differ from earlier calls,
    /// [`Error::CacheKind`] for a cache without the kernel, or the kernel's error.
    pub fn decode_attention(&mut self, q: &Array, k: &Array, v: &Array, how: DecodeScores) -> Result<Array> {
        if let LayerCache::Quantized(c) = self {
            return c.decode_attention(q, k, v, how);
        }
        let step = self.decode_step(k, v, how)?;
        let scores = step.attention;
        let in_place = step.ownership.exclusive();
        let (keys, values) = (&step.stored_keys, &step.stored_values);
        let (out, new_keys, new_values) = if in_place {
            // SAFETY: the ownership token says no clone, saved state or handed-out array
            // shares these buffers: this cache is their only reader.
            unsafe { lamina_kernels::decode_attention_in_place(q, k, v, [keys, values], scores, None)? }
        } else {
            lamina_kernels::decode_attention(q, k, v, [keys, values], scores, None)?
        };
        step.finish(new_keys, new_values, in_place);
        Ok(out)
    }

    /// One decoded position written into this cache's buffers in place by `kernel`, which
    /// gets the buffers, how the position attends (its slot, the slots attended and `how`'s
    /// scores) and, for a batch, each row's places (`lamina_kernels::decode_attention`), and
    /// returns its output and the buffers written; `None` (and `kernel` not called) when the
    /// buffers are shared with a clone, a saved state or a handed-out array, or are
    /// quantized. `k`/`v` `[B, H_kv, 1, D]` give the shapes the buffers hold (for a first
    /// position, the buffers are made from them).
    ///
    /// # Errors
    /// As [`LayerCache::decode_attention`], and `kernel`'s.
    pub(crate) fn decode_in_place(
        &mut self,
        k: &Array,
        v: &Array,
        how: DecodeScores,
        kernel: impl DecodeKernel,
    ) -> Result<Option<Array>> {
        if let LayerCache::Batch(c) = self {
            return c.decode_in_place(k, v, how, kernel);
        }
        let step = self.decode_step(k, v, how)?;
        if !step.ownership.exclusive() {
            return Ok(None);
        }
        let (out, new_keys, new_values) =
            kernel([&step.stored_keys, &step.stored_values], step.attention, None)?;
        step.finish(new_keys, new_values, true);
        Ok(Some(out))
    }

    /// Room for one more position in the buffers, and how it attends.
    fn decode_step(&mut self, k: &Array, v: &Array, how: DecodeScores) -> Result<DecodeStep<'_>> {
        let (keys, values, offset, ownership, slot, length, window) = match self {
            LayerCache::Kv(c) => {
                let prev = c.offset;
                if reserve(&mut c.keys, &mut c.values, k, v, prev)? {
                    c.ownership = Ownership::default();
                }
                (&mut c.keys, &mut c.values, &mut c.offset, &mut c.ownership, prev, prev + 1, how.window)
            }
            LayerCache::Rotating(c) => {
                c.allocate(k, v)?;
                let (prev, slots) = (c.offset, c.window);
                let (slot, length) = (prev % slots, (prev + 1).min(slots));
                (&mut c.keys, &mut c.values, &mut c.offset, &mut c.ownership, slot, length, None)
            }
            other => return Err(Error::CacheKind { layer: "decode attention", cache: other.kind() }),
        };
        let (Some(stored_keys), Some(stored_values)) = (keys.as_ref(), values.as_ref()) else {
            return Err(Error::Internal("a KV cache lost its buffers"));
        };
        let (stored_keys, stored_values) = (stored_keys.clone(), stored_values.clone());
        let attention =
            lamina_kernels::DecodeAttention { slot, length, scale: how.scale, window, softcap: how.softcap };
        Ok(DecodeStep { stored_keys, stored_values, keys, values, offset, ownership, attention })
    }
}

/// What [`LayerCache::decode_in_place`] runs on a cache's buffers: given the key and value
/// buffers, how the position attends and (for a batch) each row's places, it returns the
/// output and the buffers written.
pub(crate) trait DecodeKernel:
    FnOnce([&Array; 2], lamina_kernels::DecodeAttention, Option<&Array>) -> Result<(Array, Array, Array)>
{
}

impl<F> DecodeKernel for F where
    F: FnOnce([&Array; 2], lamina_kernels::DecodeAttention, Option<&Array>) -> Result<(Array, Array, Array)>
{
}

/// A decoded position's place in a cache ([`LayerCache::decode_step`]).
struct DecodeStep<'a> {
    stored_keys: Array,
    stored_values: Array,
    keys: &'a mut Option<Array>,
    values: &'a mut Option<Array>,
    offset: &'a mut i32,
    ownership: &'a mut Ownership,
    /// The slot written, the slots attended and the scores.
    attention: lamina_kernels::DecodeAttention,
}

impl DecodeStep<'_> {
    /// The buffers written (in place, or copies) become the cache's.
    fn finish(self, keys: Array, values: Array, in_place: bool) {
        *self.keys = Some(keys);
        *self.values = Some(values);
        *self.offset += 1;
        if !in_place {
            *self.ownership = Ownership::default(); // the kernel wrote into copies
        }
    }
}

/// Makes room for `keys`' positions after `prev` in the stored buffers: grows them by
/// whole [`KV_STEP`] blocks when full (or allocates them). Returns whether the buffers are
/// new.
fn reserve(
    stored_keys: &mut Option<Array>,
    stored_values: &mut Option<Array>,
    keys: &Array,
    values: &Array,
    prev: i32,
) -> Result<bool> {
    if let Some(stored) = stored_keys.as_ref() {
        check_compatible(stored, keys, "keys")?;
    }
    if let Some(stored) = stored_values.as_ref() {
        check_compatible(stored, values, "values")?;
    }
    let end = prev + keys.dim(2);
    if end > stored_keys.as_ref().map_or(0, |k| k.dim(2)) {
        let steps = (keys.dim(2) + KV_STEP - 1) / KV_STEP;
        let grow = |stored: Option<Array>, new: &Array| -> Result<Array> {
            let s = new.shape();
            let block = ops::zeros_dtype(&[s[0], s[1], steps * KV_STEP, s[3]], new.dtype())?;
            Ok(match stored {
                Some(old) => ops::concatenate(&[old.try_index((Ellipsis, ..prev, ..))?, block], 2)?,
                None => block,
            })
        };
        *stored_keys = Some(grow(stored_keys.take(), keys)?);
        *stored_values = Some(grow(stored_values.take(), values)?);
        return Ok(true);
    }
    Ok(false)
}

/// Writes `keys` and `values` (`[B, H, L, D]`) at positions `prev..prev + L` of the stored
/// buffers, growing them by whole [`KV_STEP`] blocks when full (or allocating them);
/// returns positions `..prev + L`.
pub(crate) fn append(
    stored_keys: &mut Option<Array>,
    stored_values: &mut Option<Array>,
    keys: &Array,
    values: &Array,
    prev: i32,
) -> Result<(Array, Array)> {
    let end = prev + keys.dim(2);
    reserve(stored_keys, stored_values, keys, values, prev)?;
    let (Some(k), Some(v)) = (stored_keys.as_mut(), stored_values.as_mut()) else {
        return Err(Error::Internal("a KV cache lost its buffers"));
    };
    k.try_index_mut((Ellipsis, prev..end, ..), keys)?;
    v.try_index_mut((Ellipsis, prev..end, ..), values)?;
    Ok((k.try_index((Ellipsis, ..end, ..))?, v.try_index((Ellipsis, ..end, ..))?))
}

/// Keys and values of the last `window` positions, position `p` at slot `p % window`.
///
/// A single decoded token attends to every stored slot in any order (attention does not
/// care about order once RoPE is applied), so decoding writes in place; a chunk of
/// several tokens is attended against the temporally ordered window with an explicit mask.
#[derive(Debug, Clone)]
pub struct RotatingKvCache {
    window: i32,
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    ownership: Ownership,
}

/// What a [`RotatingKvCache`] returns: keys and values plus the position of the first.
#[derive(Debug, Clone)]
pub struct WindowedKv {
    /// `[B, H_kv, K, D_k]`.
    pub keys: Array,
    /// `[B, H_kv, K, D_v]`.
    pub values: Array,
    /// Position of the first key, when the keys are in temporal order; `None` for a single
    /// query attending to an unordered full window (no mask needed).
    pub key_start: Option<i32>,
}

impl RotatingKvCache {
    /// An empty cache keeping `window` positions.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a window below 1.
    pub fn new(window: i32) -> Result<Self> {
        if window < 1 {
            return Err(Error::invalid("RotatingKvCache", "window", format!("must be >= 1, got {window}")));
        }
        Ok(RotatingKvCache { window, keys: None, values: None, offset: 0, ownership: Ownership::default() })
    }

    /// Positions processed so far (not all of them are kept).
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The kept positions in temporal order, `[B, H_kv, kept, D]` each, and how many.
    pub(crate) fn temporal(&self) -> Result<Option<(Array, Array, i32)>> {
        let kept = self.offset.min(self.window);
        let (keys, values) = self.ordered(self.offset, kept)?;
        Ok(keys.zip(values).map(|(k, v)| (k, v, kept)))
    }

    /// A cache of `window` slots holding `keys` and `values` (`[B, H_kv, window, D]`,
    /// position `p` at slot `p % window`) after `offset` positions.
    ///
    /// # Errors
    /// [`Error::Shape`] when the arrays do not agree with each other or with `window`;
    /// [`Error::InvalidConfig`] for a window below 1.
    pub fn from_state(window: i32, keys: Array, values: Array, offset: i32) -> Result<Self> {
        let mut cache = Self::new(window)?;
        check_state(&keys, &values, offset.min(window), Some(window))?;
        cache.keys = Some(keys);
        cache.values = Some(values);
        cache.offset = offset;
        cache.ownership = Ownership::lent();
        Ok(cache)
    }

    /// The slot buffers `[B, H_kv, window, D]` (`None` while empty).
    pub fn state(&self) -> Option<(&Array, &Array)> {
        self.ownership.lend();
        self.keys.as_ref().zip(self.values.as_ref())
    }

    /// The number of positions kept.
    pub fn window(&self) -> i32 {
        self.window
    }

    /// Adds `L` positions; returns what the `L` queries must attend to.
    ///
    /// # Shapes
    /// `keys [B, H_kv, L, D_k]`, `values [B, H_kv, L, D_v]`
    ///
    /// # Errors
    /// [`Error::Shape`] when the batch, heads or head size differ from earlier calls.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<WindowedKv> {
        let len = keys.dim(2);
        let prev = self.offset;
        let stored = prev.min(self.window);
        let out = if len == 1 && self.keys.is_some() {
            self.write(keys, values, prev)?;
            let kept = (prev + 1).min(self.window);
            let (k, v) = self.slots(kept)?;
            WindowedKv { keys: k, values: v, key_start: None }
        } else {
            let (old_k, old_v) = self.ordered(prev, stored.min(self.window - 1))?;
            let keys_all = concat_opt(old_k, keys)?;
            let values_all = concat_opt(old_v, values)?;
            let start = prev - stored.min(self.window - 1);
            let keep = len.min(self.window);
            let tail = |a: &Array| a.try_index((Ellipsis, (len - keep).., ..));
            self.write(&tail(keys)?, &tail(values)?, prev + len - keep)?;
            WindowedKv { keys: keys_all, values: values_all, key_start: Some(start) }
        };
        self.offset += len;
        Ok(out)
    }

    /// The first `n` slots.
    fn slots(&self, n: i32) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Error::Internal("the rotating cache is empty"));
        };
        Ok((k.try_index((Ellipsis, ..n, ..))?, v.try_index((Ellipsis, ..n, ..))?))
    }

    /// The last `n` stored positions before `end`, in temporal order.
    fn ordered(&self, end: i32, n: i32) -> Result<(Option<Array>, Option<Array>)> {
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Ok((None, None));
        };
        if n == 0 {
            return Ok((None, None));
        }
        let pick = |a: &Array| -> Result<Array> {
            let positions = ops::arange::<_, i32>(end - n, end, None)?;
            let slots = ops::remainder(&positions, Array::from_int(self.window))?;
            Ok(a.take_axis(&slots, 2)?)
        };
        Ok((Some(pick(k)?), Some(pick(v)?)))
    }

    /// Allocates the slot buffers for entries shaped like `keys` and `values` (on first
    /// use), and checks that later entries match them.
    fn allocate(&mut self, keys: &Array, values: &Array) -> Result<()> {
        if self.keys.is_none() {
            let alloc = |a: &Array| {
                let s = a.shape();
                ops::zeros_dtype(&[s[0], s[1], self.window, s[3]], a.dtype())
            };
            self.keys = Some(alloc(keys)?);
            self.values = Some(alloc(values)?);
            self.ownership = Ownership::default();
        }
        let (Some(k), Some(v)) = (&self.keys, &self.values) else {
            return Err(Error::Internal("the rotating cache lost its buffers"));
        };
        check_compatible(k, keys, "keys")?;
        check_compatible(v, values, "values")
    }

    /// Writes positions `first..first + L` into their slots (`L <= window`).
    fn write(&mut self, keys: &Array, values: &Array, first: i32) -> Result<()> {
        self.allocate(keys, values)?;
        let (Some(k), Some(v)) = (self.keys.as_mut(), self.values.as_mut()) else {
            return Err(Error::Internal("the rotating cache lost its buffers"));
        };
        let len = keys.dim(2);
        let start = first % self.window;
        let first_run = len.min(self.window - start);
        k.try_index_mut(
            (Ellipsis, start..start + first_run, ..),
            keys.try_index((Ellipsis, ..first_run, ..))?,
        )?;
        v.try_index_mut(
            (Ellipsis, start..start + first_run, ..),
            values.try_index((Ellipsis, ..first_run, ..))?,
        )?;
        if first_run < len {
            let rest = len - first_run;
            k.try_index_mut((Ellipsis, ..rest, ..), keys.try_index((Ellipsis, first_run.., ..))?)?;
            v.try_index_mut((Ellipsis, ..rest, ..), values.try_index((Ellipsis, first_run.., ..))?)?;
        }
        Ok(())
    }
}

/// The recurrent state of a Mamba mixer.
#[derive(Debug, Clone, Default)]
pub struct SsmState {
    /// The last `conv_kernel - 1` inputs of the causal convolution, `[B, K - 1, D_inner]`.
    pub conv: Option<Array>,
    /// The SSM state `h`, `[B, D_inner, N]`.
    pub ssm: Option<Array>,
    /// Positions processed so far (the longest row's, for a batch).
    pub offset: i32,
    /// Each row's positions when the state holds a decoding batch of sequences of
    /// different lengths (empty otherwise).
    pub row_offsets: Vec<i32>,
}

impl SsmState {
    /// An empty state (zeros on first use).
    pub fn new() -> Self {
        Self::default()
    }
}

fn concat_opt(old: Option<Array>, new: &Array) -> Result<Array> {
    Ok(match old {
        Some(old) => ops::concatenate(&[&old, new], 2)?,
        None => new.clone(),
    })
}

/// Restored keys and values: 4-D, the same batch and heads, at least `len` positions (exactly
/// `slots` when given).
pub(crate) fn check_state(keys: &Array, values: &Array, len: i32, slots: Option<i32>) -> Result<()> {
    let (k, v) = (keys.shape(), values.shape());
    let agree = k.len() == 4 && v.len() == 4 && k[..3] == v[..3];
    let long_enough = agree && len >= 0 && k[2] >= len && slots.is_none_or(|s| k[2] == s);
    if long_enough {
        return Ok(());
    }
    Err(Error::Shape {
        name: "restored keys and values".into(),
        expected: vec![k.first().copied().unwrap_or(-1), -1, slots.unwrap_or(len), -1],
        actual: v.to_vec(),
    })
}

/// New entries must match the stored batch, heads and head size.
pub(crate) fn check_compatible(stored: &Array, new: &Array, name: &str) -> Result<()> {
    let (s, n) = (stored.shape(), new.shape());
    if n.len() != 4 || s[0] != n[0] || s[1] != n[1] || s[3] != n[3] {
        // Batch, heads and head size must match what is stored; any length.
        return Err(Error::Shape {
            name: format!("new {name}"),
            expected: vec![s[0], s[1], -1, s[3]],
            actual: n.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{array, to_vec};

    fn kv(len: i32, salt: f32) -> (Array, Array) {
        (array(&[1, 2, len, 3], salt), array(&[1, 2, len, 3], salt + 10.0))
    }

    const SCORES: DecodeScores = DecodeScores { scale: 0.5, window: None, softcap: None };

    /// One decoded position through the decode attention kernel: `[1, 1, 4 * 3]`.
    fn decode(cache: &mut LayerCache, salt: f32) -> Vec<f32> {
        let q = array(&[1, 4, 1, 3], salt + 20.0);
        let (k, v) = kv(1, salt);
        to_vec(&cache.decode_attention(&q, &k, &v, SCORES).unwrap())
    }

    fn stored(cache: &LayerCache) -> Vec<Vec<f32>> {
        cache.arrays().into_iter().map(to_vec).collect()
    }

    #[test]
    fn a_clone_decodes_without_touching_the_original() {
        for mut cache in
            [LayerCache::Kv(KvCache::new()), LayerCache::Rotating(RotatingKvCache::new(3).unwrap())]
        {
            let mut fresh = cache.clone();
            for step in 0..4 {
                decode(&mut cache, step as f32);
                decode(&mut fresh, step as f32);
            }
            let before = stored(&cache);
            // The clone shares the buffers until its first write, which goes to a copy.
            let mut clone = cache.clone();
            for step in 0..5 {
                decode(&mut clone, 100.0 + step as f32);
            }
            assert_eq!(stored(&cache), before, "{}: the clone wrote into the original", cache.kind());
            // The original then decodes exactly as a cache that was never cloned.
            for step in 4..9 {
                assert_eq!(
                    decode(&mut cache, step as f32),
                    decode(&mut fresh, step as f32),
                    "{}",
                    cache.kind()
                );
            }
        }
    }

    #[test]
    fn arrays_handed_out_never_change_with_the_next_token() {
        for mut cache in
            [LayerCache::Kv(KvCache::new()), LayerCache::Rotating(RotatingKvCache::new(3).unwrap())]
        {
            for step in 0..3 {
                decode(&mut cache, step as f32);
            }
            let held: Vec<Array> = cache.arrays().into_iter().cloned().collect();
            let before: Vec<Vec<f32>> = held.iter().map(to_vec).collect();
            for step in 3..6 {
                decode(&mut cache, step as f32);
            }
            assert_eq!(held.iter().map(to_vec).collect::<Vec<_>>(), before, "{}", cache.kind());
            let replaced: Vec<Array> = cache.arrays_mut().into_iter().map(|a| a.clone()).collect();
            let before: Vec<Vec<f32>> = replaced.iter().map(to_vec).collect();
            decode(&mut cache, 9.0);
            assert_eq!(replaced.iter().map(to_vec).collect::<Vec<_>>(), before, "{}", cache.kind());
        }
    }

    #[test]
    fn a_saved_state_survives_trimming_and_decoding_on() {
        let mut cache = LayerCache::Kv(KvCache::new());
        for step in 0..6 {
            decode(&mut cache, step as f32);
        }
        let LayerCache::Kv(kv_cache) = &cache else { unreachable!() };
        let (keys, values) = kv_cache.state().unwrap().unwrap();
        let saved = (to_vec(&keys), to_vec(&values));
        cache.trim(2).unwrap();
        for step in 0..6 {
            decode(&mut cache, 50.0 + step as f32);
        }
        assert_eq!((to_vec(&keys), to_vec(&values)), saved);
        // A restored cache writes into a copy of what it was given.
        let restored_keys = array(&[1, 2, 8, 3], 1.0);
        let restored_values = array(&[1, 2, 8, 3], 2.0);
        let given = (to_vec(&restored_keys), to_vec(&restored_values));
        let mut restored =
            LayerCache::Kv(KvCache::from_state(restored_keys.clone(), restored_values.clone(), 4).unwrap());
        decode(&mut restored, 7.0);
        assert_eq!((to_vec(&restored_keys), to_vec(&restored_values)), given);
    }

    #[test]
    fn decode_attention_grows_the_cache_and_refuses_other_kinds() {
        let mut cache = LayerCache::Kv(KvCache::new());
        for step in 0..(KV_STEP + 2) {
            decode(&mut cache, step as f32 * 0.01);
        }
        assert_eq!(cache.offset(), KV_STEP + 2);
        let LayerCache::Kv(c) = &cache else { unreachable!() };
        assert_eq!(c.capacity(), 2 * KV_STEP);
        let (k, _) = kv(1, 0.0);
        let wrong = array(&[1, 3, 1, 3], 0.0);
        let q = array(&[1, 4, 1, 3], 0.0);
        assert!(cache.decode_attention(&q, &wrong, &wrong, SCORES).is_err(), "other heads");
        assert_eq!(cache.offset(), KV_STEP + 2, "a failed call leaves the cache as it was");
        let mut ssm = LayerCache::Ssm(SsmState::new());
        assert!(ssm.decode_attention(&q, &k, &k, SCORES).is_err());
    }

    #[test]
    fn kv_cache_returns_everything_so_far_and_grows_in_steps() {
        let mut cache = KvCache::new();
        let (k1, v1) = kv(5, 0.0);
        let (k, v) = cache.update_and_fetch(&k1, &v1).unwrap();
        assert_eq!(k.shape(), &[1, 2, 5, 3]);
        assert_eq!(cache.capacity(), KV_STEP);
        let (k2, v2) = kv(1, 1.0);
        let (k, v2_all) = cache.update_and_fetch(&k2, &v2).unwrap();
        assert_eq!((k.shape(), cache.offset(), cache.capacity()), (&[1, 2, 6, 3][..], 6, KV_STEP));
        let expected = ops::concatenate(&[&k1, &k2], 2).unwrap();
        assert_eq!(to_vec(&k), to_vec(&expected));
        assert_eq!(to_vec(&v2_all.try_index((Ellipsis, ..5, ..)).unwrap()), to_vec(&v1));
        drop(v);
        let (k3, v3) = kv(KV_STEP, 2.0);
        let (k, _) = cache.update_and_fetch(&k3, &v3).unwrap();
        assert_eq!(k.dim(2), KV_STEP + 6);
        assert_eq!(cache.capacity(), KV_STEP + 6, "kept 6, grew by one step");
    }

    #[test]
    fn kv_cache_rejects_a_different_batch() {
        let mut cache = KvCache::new();
        let (k, v) = kv(2, 0.0);
        cache.update_and_fetch(&k, &v).unwrap();
        let other = array(&[2, 2, 1, 3], 0.0);
        assert!(matches!(cache.update_and_fetch(&other, &other), Err(Error::Shape { .. })));
    }

    #[test]
    fn rotating_cache_keeps_the_last_window_positions() {
        let window = 4;
        let mut cache = RotatingKvCache::new(window).unwrap();
        let all = array(&[1, 1, 10, 2], 0.5);
        let at = |p: i32| to_vec(&all.try_index((Ellipsis, p..p + 1, ..)).unwrap());
        // A chunk of three, then single tokens: after each, the stored slots hold the last
        // `window` positions, position p at slot p % window.
        let first = all.try_index((Ellipsis, ..3, ..)).unwrap();
        let out = cache.update_and_fetch(&first, &first).unwrap();
        assert_eq!((out.key_start, out.keys.dim(2)), (Some(0), 3));
        for p in 3..8 {
            let token = all.try_index((Ellipsis, p..p + 1, ..)).unwrap();
            let out = cache.update_and_fetch(&token, &token).unwrap();
            assert_eq!(out.key_start, None);
            assert_eq!(out.keys.dim(2), (p + 1).min(window));
            for q in (p + 1 - window).max(0)..=p {
                let slot = to_vec(&out.keys.try_index((Ellipsis, q % window..q % window + 1, ..)).unwrap());
                assert_eq!(slot, at(q), "position {q} after {p}");
            }
        }
        // A chunk of two at offset 8 sees positions 5..10 in order: window - 1 old + 2 new.
        let chunk = all.try_index((Ellipsis, 8..10, ..)).unwrap();
        let out = cache.update_and_fetch(&chunk, &chunk).unwrap();
        assert_eq!(out.key_start, Some(5));
        assert_eq!(to_vec(&out.keys), to_vec(&all.try_index((Ellipsis, 5..10, ..)).unwrap()));
        assert_eq!(cache.offset(), 10);
        assert!(RotatingKvCache::new(0).is_err());
    }
}
