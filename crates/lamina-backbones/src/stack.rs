//! What the three backbones share: their inputs, the cache, and the block loop.

use lamina_blocks::Block;
use std::rc::Rc;

use lamina_components::{
    BatchKvCache, Embedding, KvQuantization, LayerCache, LayerInput, Norm, RotatingKvCache, SsmState,
    VisitLayers, check_ids, checkpointed,
};
use lamina_core::{BackboneOutput, Error, Result};
use mlx_rs::Array;
use mlx_rs::module::{Module, ModuleParameters};
use mlx_rs::ops::indexing::TryIndexOp;

use crate::pipeline::PipelineStage;

/// From this many positions a forward pass with a cache (a prompt's chunk) evaluates each
/// layer's cache as it goes: run as one graph, a whole chunk held more of its layers'
/// buffers at once (SmolLM2-135M, a 256-token prompt: MLX's peak 131.8 -> 126.9 MB, peak
/// RSS 163 -> 155 MiB, prefill as fast). Fewer positions (decoding, a speculative draft's
/// check) keep one graph.
const PROMPT_CHUNK_POSITIONS: i32 = 32;

/// The caches of every block execution of a model, held by the caller.
#[derive(Debug, Clone)]
pub struct ModelCache {
    /// One cache per block execution, in order (with layer sharing, `layers * repeats`).
    pub layers: Vec<LayerCache>,
}

impl ModelCache {
    /// Positions processed so far.
    pub fn offset(&self) -> i32 {
        self.layers.first().map_or(0, LayerCache::offset)
    }

    /// Bytes the caches hold.
    pub fn nbytes(&self) -> usize {
        self.layers.iter().map(LayerCache::nbytes).sum()
    }

    /// Whether every layer can be trimmed back to `len` positions.
    pub fn can_trim_to(&self, len: i32) -> bool {
        self.layers.iter().all(|l| l.can_trim_to(len))
    }

    /// This empty cache with every attention layer keeping at most `max` positions (a
    /// rotating window; mlx-lm's `max_kv_size`): memory stays bounded however long the
    /// sequence, and the oldest positions are forgotten. Windows already smaller stay.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for `max` below 1; [`Error::Unsupported`] for a cache that
    /// holds positions already.
    pub fn bounded(mut self, max: i32) -> Result<Self> {
        if self.offset() != 0 {
            return Err(Error::Unsupported("bounding a cache that holds positions"));
        }
        for layer in &mut self.layers {
            let wider = match layer {
                LayerCache::Kv(_) => true,
                LayerCache::Rotating(c) => c.window() > max,
                LayerCache::Ssm(_) | LayerCache::Batch(_) | LayerCache::Quantized(_) => false,
            };
            if wider {
                *layer = LayerCache::Rotating(RotatingKvCache::new(max)?);
            }
        }
        Ok(self)
    }

    /// Converts every full-attention layer holding more than `how.start` positions to a
    /// quantized cache (see [`LayerCache::quantize_past_start`]).
    ///
    /// # Errors
    /// As [`LayerCache::quantize_past_start`].
    pub fn quantize_past_start(&mut self, how: KvQuantization) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.quantize_past_start(how))
    }

    /// Whether every layer can be trimmed back to its length now after `extra` more
    /// positions (see [`LayerCache::can_rewind`]).
    pub fn can_rewind(&self, extra: i32) -> bool {
        self.layers.iter().all(|l| l.can_rewind(extra))
    }

    /// Forgets every position from `len` on.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when a layer cannot be trimmed to `len` (check
    /// [`ModelCache::can_trim_to`] first).
    pub fn trim(&mut self, len: i32) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.trim(len))
    }

    /// An empty batch shaped like `fresh` (a model's own empty cache): attention layers get
    /// a [`BatchKvCache`] (windowed where `fresh` rotates), Mamba layers a state with a
    /// row per sequence. Rows join with [`ModelCache::join`] and leave with
    /// [`ModelCache::leave`].
    ///
    /// # Errors
    /// [`Error::CacheKind`] when `fresh` is itself a batch.
    pub fn batch_like(fresh: &ModelCache) -> Result<Self> {
        let layers = fresh
            .layers
            .iter()
            .map(|layer| match layer {
                LayerCache::Kv(_) => Ok(LayerCache::Batch(BatchKvCache::new(None))),
                LayerCache::Rotating(c) => Ok(LayerCache::Batch(BatchKvCache::new(Some(c.window())))),
                LayerCache::Ssm(_) => Ok(LayerCache::Ssm(SsmState::new())),
                other => Err(Error::CacheKind { layer: "a batch", cache: other.kind() }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelCache { layers })
    }

    /// A batch shaped like `fresh` for prompts of `lengths` tokens prefilled together
    /// (left-padded; see [`BatchKvCache::padded`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a model with recurrent layers (padding would enter their
    /// state), [`Error::CacheKind`] when `fresh` is itself a batch.
    pub fn padded_batch(fresh: &ModelCache, lengths: &[i32]) -> Result<Self> {
        let layers = fresh
            .layers
            .iter()
            .map(|layer| match layer {
                LayerCache::Kv(_) => Ok(LayerCache::Batch(BatchKvCache::padded(None, lengths))),
                LayerCache::Rotating(c) => {
                    Ok(LayerCache::Batch(BatchKvCache::padded(Some(c.window()), lengths)))
                }
                LayerCache::Ssm(_) => {
                    Err(Error::Unsupported("prefilling padded prompts through a recurrent layer"))
                }
                other => Err(Error::CacheKind { layer: "a batch", cache: other.kind() }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelCache { layers })
    }

    /// Whether every layer is attention (a padded batch can be prefilled).
    pub fn all_attention(&self) -> bool {
        self.layers.iter().all(|l| matches!(l, LayerCache::Kv(_) | LayerCache::Rotating(_)))
    }

    /// Rows in this batch (see [`ModelCache::batch_like`]).
    pub fn rows(&self) -> usize {
        match self.layers.first() {
            Some(LayerCache::Batch(c)) => c.rows(),
            Some(LayerCache::Ssm(s)) => s.conv.as_ref().map_or(0, |c| c.dim(0) as usize),
            _ => 0,
        }
    }

    /// Adds a sequence's own cache (batch 1, after its prefill) as the batch's last row.
    ///
    /// # Errors
    /// As [`ModelCache::join_all`].
    pub fn join(&mut self, row: ModelCache) -> Result<()> {
        self.join_all(vec![row])
    }

    /// Adds sequences' own caches (batch 1 each, after their prefills) as the batch's last
    /// rows, in order, copying the batch once for all of them.
    ///
    /// # Errors
    /// [`Error::CacheLayers`] when the layer counts differ, [`Error::CacheKind`] when a
    /// layer's kinds do not match, [`Error::Shape`] for mismatched sizes.
    pub fn join_all(&mut self, rows: Vec<ModelCache>) -> Result<()> {
        let layers = self.layers.len();
        if let Some(row) = rows.iter().find(|row| row.layers.len() != layers) {
            return Err(Error::CacheLayers { expected: layers, actual: row.layers.len() });
        }
        // Layer by layer: every row's cache of that layer.
        let mut by_layer: Vec<Vec<LayerCache>> =
            (0..layers).map(|_| Vec::with_capacity(rows.len())).collect();
        for row in rows {
            for (layer, cache) in by_layer.iter_mut().zip(row.layers) {
                layer.push(cache);
            }
        }
        for (layer, caches) in self.layers.iter_mut().zip(by_layer) {
            match layer {
                LayerCache::Batch(batch) => batch.join_all(&caches.iter().collect::<Vec<_>>())?,
                LayerCache::Ssm(batch) => join_states(batch, caches)?,
                _ => return Err(Error::CacheKind { layer: "a batch", cache: layer.kind() }),
            }
        }
        Ok(())
    }

    /// Takes row `index` out of the batch, returning that sequence's own cache.
    ///
    /// # Errors
    /// [`Error::Shape`] for a row that does not exist, [`Error::CacheKind`] when this cache
    /// is not a batch.
    pub fn leave(&mut self, index: usize) -> Result<ModelCache> {
        let rows = self.rows();
        if index >= rows {
            let (expected, actual) = (vec![rows as i32], vec![index as i32]);
            return Err(Error::Shape { name: "batch row".into(), expected, actual });
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &mut self.layers {
            layers.push(match layer {
                LayerCache::Batch(batch) => batch.leave(index)?,
                LayerCache::Ssm(state) => LayerCache::Ssm(leave_state(state, index, rows)?),
                other => return Err(Error::CacheKind { layer: "a batch", cache: other.kind() }),
            });
        }
        Ok(ModelCache { layers })
    }

    /// Evaluates every array the caches hold (what a prefill chunk computes), without
    /// evaluating anything else of the graph (such as the chunk's logits).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn eval(&self) -> Result<()> {
        LayerCache::eval_all(&self.layers)
    }
}

/// The inputs of a backbone.
#[derive(Debug)]
pub struct BackboneInput<'a> {
    /// Token ids `[B, L]`.
    pub input_ids: &'a Array,
    /// The caches, when decoding incrementally.
    pub cache: Option<&'a mut ModelCache>,
    /// `[B, offset + L]`: 1 for real tokens, 0 for padding (used by attention layers).
    pub padding_mask: Option<&'a Array>,
    /// Return the embeddings' and every block's output.
    pub output_hidden_states: bool,
    /// Check that every id is inside the vocabulary (a device sync; generation loops whose
    /// ids come from the model itself turn it off).
    pub check_ids: bool,
}

impl<'a> BackboneInput<'a> {
    /// Ids only: no cache, no padding, ids checked.
    pub fn new(input_ids: &'a Array) -> Self {
        BackboneInput {
            input_ids,
            cache: None,
            padding_mask: None,
            output_hidden_states: false,
            check_ids: true,
        }
    }

    /// The same input with a cache.
    pub fn with_cache(self, cache: &'a mut ModelCache) -> Self {
        BackboneInput { cache: Some(cache), ..self }
    }
}

/// A stack of blocks between token embeddings and a final norm.
pub trait Backbone: ModuleParameters + VisitLayers {
    /// Runs the backbone.
    ///
    /// # Shapes
    /// `input_ids [B, L] -> last_hidden_state [B, L, hidden]`
    ///
    /// # Errors
    /// [`Error::Shape`] for ids that are not `[B, L]`, [`Error::TokenOutOfRange`] for ids
    /// outside the vocabulary or a cache that does not fit this model.
    fn forward(&mut self, input: BackboneInput<'_>) -> Result<BackboneOutput>;

    /// The token embedding (also the tied output projection).
    fn embedding(&self) -> &Embedding;

    /// Fresh caches for incremental decoding.
    ///
    /// # Errors
    /// Only for configs that cannot describe a cache.
    fn make_cache(&self) -> Result<ModelCache>;

    /// Model width.
    fn hidden_size(&self) -> usize;

    /// Switches dropout (and other training-only behaviour) on or off in every block.
    fn training_mode(&mut self, training: bool);

    /// Recomputes each block's activations in the backward pass instead of keeping them
    /// (gradient checkpointing), when no cache is in use.
    fn set_gradient_checkpointing(&mut self, on: bool);

    /// Keeps only the blocks of `stage` (dropping the others before any weight is read)
    /// and runs as that stage of a pipeline from then on: its caches are those blocks',
    /// its checkpoint keys number them from 0 (see [`crate::renumber`]), and
    /// `hidden_states` lists only its own blocks' outputs.
    ///
    /// # Errors
    /// [`Error::Distributed`] for a range outside the blocks, [`Error::Unsupported`] for a
    /// backbone that cannot be split (the default).
    fn split_for_pipeline(&mut self, stage: PipelineStage) -> Result<()> {
        let _ = stage;
        Err(Error::Unsupported("splitting this backbone over pipeline ranks"))
    }

    /// Bytes each block's parameters take (as built, before weights are applied).
    fn block_bytes(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// Bytes of each block's parameters.
pub(crate) fn block_bytes<B: ModuleParameters>(blocks: &[B]) -> Vec<u64> {
    blocks.iter().map(|b| b.parameters().flatten().values().map(|a| a.nbytes() as u64).sum()).collect()
}

/// How a backbone runs its blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stack<'a> {
    /// Runs of each block in a row.
    pub repeats: usize,
    /// Gradient checkpointing per block (without a cache).
    pub checkpointing: bool,
    /// A factor on the embeddings.
    pub embedding_scale: Option<f32>,
    /// This rank's share of a pipeline, when the blocks are split over ranks.
    pub pipeline: Option<&'a PipelineStage>,
}

/// Embeds, runs every block `repeats` times in a row, and applies the final norm.
pub(crate) fn run<B: Block + 'static>(
    embedding: &mut Embedding,
    blocks: &mut [B],
    final_norm: &mut Norm,
    stack: Stack<'_>,
    input: BackboneInput<'_>,
) -> Result<BackboneOutput> {
    let Stack { repeats, checkpointing, embedding_scale, pipeline } = stack;
    let ids = input.input_ids;
    if ids.ndim() != 2 {
        return Err(Error::Shape {
            name: "input_ids".into(),
            expected: vec![-1, -1],
            actual: ids.shape().to_vec(),
        });
    }
    if input.check_ids {
        check_ids(ids, embedding.num_embeddings())?;
    }
    let executions = blocks.len() * repeats;
    let mut model_cache = input.cache;
    if let Some(cache) = &model_cache {
        if cache.layers.len() != executions {
            return Err(Error::CacheLayers { expected: executions, actual: cache.layers.len() });
        }
    }
    let mut caches = model_cache.as_deref_mut().map(|c| c.layers.iter_mut());
    let mut h = embedding.forward(ids)?;
    if let Some(scale) = embedding_scale {
        h = h.multiply(Array::from_f32(scale).as_dtype(h.dtype())?)?;
    }
    if let Some(stage) = pipeline {
        h = stage.receive(h)?;
    }
    let mut hidden = input.output_hidden_states.then(|| vec![h.clone()]);
    for block in blocks.iter_mut() {
        for _ in 0..repeats {
            let mut cache = caches.as_mut().and_then(Iterator::next);
            let prompt_chunk = h.dim(1) >= PROMPT_CHUNK_POSITIONS;
            h = if checkpointing && cache.is_none() {
                checkpointed_block(block, &h, input.padding_mask)?
            } else {
                let layer =
                    LayerInput { x: &h, cache: cache.as_deref_mut(), padding_mask: input.padding_mask };
                block.forward(layer)?.hidden_states
            };
            if let Some(cache) = cache.filter(|_| prompt_chunk) {
                LayerCache::eval_all([&*cache])?;
            }
            if let Some(states) = hidden.as_mut() {
                states.push(h.clone());
            }
        }
    }
    if let Some(stage) = pipeline {
        h = stage.pass_on(h, model_cache)?;
    }
    Ok(BackboneOutput { last_hidden_state: final_norm.forward(&h)?, hidden_states: hidden })
}

/// A block under MLX's checkpoint transform. Its trainable parameters are passed as inputs
/// so that their gradients flow (the recomputation in the backward pass uses them); the
/// closure owns a clone of the block (cheap: arrays are shared) as MLX may keep it.
fn checkpointed_block<B: Block + 'static>(block: &B, h: &Array, padding: Option<&Array>) -> Result<Array> {
    let params = block.trainable_parameters().flatten();
    let mut keys: Vec<Rc<str>> = params.keys().cloned().collect();
    keys.sort();
    let mut inputs = Vec::with_capacity(keys.len() + 1);
    inputs.push(h.clone());
    inputs.extend(keys.iter().filter_map(|k| params.get(k).map(|a| (*a).clone())));
    let mut clone = block.clone();
    let padding = padding.cloned();
    let outputs = checkpointed(
        move |args: &[Array]| {
            let (x, values) =
                args.split_first().ok_or(Error::Internal("the checkpointed block got no input"))?;
            clone.update_flattened(keys.iter().cloned().zip(values.iter().cloned()).collect());
            Ok(vec![
                clone.forward(LayerInput { x, cache: None, padding_mask: padding.as_ref() })?.hidden_states,
            ])
        },
        &inputs,
    )?;
    outputs.into_iter().next().ok_or(Error::Internal("the checkpointed block returned nothing"))
}

/// Appends sequences' Mamba states to a batch's (rows stacked on axis 0, in one copy).
fn join_states(batch: &mut SsmState, rows: Vec<LayerCache>) -> Result<()> {
    let mut joining = Vec::with_capacity(rows.len());
    for row in rows {
        let LayerCache::Ssm(row) = row else {
            return Err(Error::CacheKind { layer: "a batch", cache: row.kind() });
        };
        let (Some(conv), Some(ssm)) = (row.conv, row.ssm) else {
            return Err(Error::Unsupported("joining an empty SSM state to a batch"));
        };
        joining.push((conv, ssm, row.offset));
    }
    let (mut conv, mut ssm): (Vec<Array>, Vec<Array>) =
        batch.conv.take().into_iter().zip(batch.ssm.take()).unzip();
    for (row_conv, row_ssm, offset) in joining {
        conv.push(row_conv);
        ssm.push(row_ssm);
        batch.offset = batch.offset.max(offset);
        batch.row_offsets.push(offset);
    }
    let stack = |parts: Vec<Array>| -> Result<Option<Array>> {
        Ok(match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(mlx_rs::ops::concatenate(&parts, 0)?),
        })
    };
    batch.conv = stack(conv)?;
    batch.ssm = stack(ssm)?;
    Ok(())
}

/// Row `index` of a batch's Mamba state, removed from it.
fn leave_state(batch: &mut SsmState, index: usize, rows: usize) -> Result<SsmState> {
    let (Some(conv), Some(ssm)) = (batch.conv.take(), batch.ssm.take()) else {
        return Err(Error::Internal("a batch's SSM state lost its arrays"));
    };
    let at = index as i32;
    let offset = if index < batch.row_offsets.len() { batch.row_offsets.remove(index) } else { batch.offset };
    let row = SsmState {
        conv: Some(conv.try_index(at..at + 1)?),
        ssm: Some(ssm.try_index(at..at + 1)?),
        offset,
        row_offsets: Vec::new(),
    };
    if rows > 1 {
        let rest: Vec<i32> = (0..rows as i32).filter(|&r| r != at).collect();
        let rest = Array::from_slice(&rest, &[rest.len() as i32]);
        batch.conv = Some(conv.take_axis(&rest, 0)?);
        batch.ssm = Some(ssm.take_axis(&rest, 0)?);
        batch.offset = batch.row_offsets.iter().copied().max().unwrap_or(0);
    } else {
        *batch = SsmState::new();
    }
    Ok(row)
}

/// One cache per block execution.
pub(crate) fn caches<B: Block>(blocks: &[B], repeats: usize) -> Result<ModelCache> {
    let mut layers = Vec::with_capacity(blocks.len() * repeats);
    for block in blocks {
        for _ in 0..repeats {
            layers.push(block.make_cache()?);
        }
    }
    Ok(ModelCache { layers })
}
