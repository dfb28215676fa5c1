//! Loading one stage of a pipeline: the model's blocks split over the ranks of a group,
//! balanced by the bytes the checkpoint gives each block, and only this rank's tensors
//! read (the embeddings, final norm and head on every rank).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use lamina_backbones::{PipelineStage, layer_of, renumber, split_by_bytes};
use lamina_core::distributed::Group;
use lamina_families::{LanguageModel, Weights};

use crate::error::{LoaderError, Result};

/// Which tensors a load reads and how their keys are numbered.
#[derive(Debug, Clone, Default)]
pub(crate) enum Share {
    /// Every tensor (no pipeline).
    #[default]
    All,
    /// The blocks `layers` (numbered as in the whole model) and every tensor outside the
    /// blocks.
    Stage(Range<usize>),
}

impl Share {
    /// Whether the tensor named `key` (as in the checkpoint) is read.
    pub fn keeps(&self, key: &str) -> bool {
        match self {
            Share::All => true,
            Share::Stage(layers) => layer_of(key).is_none_or(|n| layers.contains(&n)),
        }
    }

    /// `key` with the stage's blocks numbered from 0 (as it is without a pipeline).
    pub fn renumber(&self, key: String) -> String {
        match self {
            Share::All => key,
            Share::Stage(layers) => renumber(&key, layers.start),
        }
    }

    /// The sanitized weights with the stage's blocks numbered from 0.
    pub fn renumbered(&self, weights: Weights) -> Weights {
        match self {
            Share::All => weights,
            Share::Stage(_) => weights.into_iter().map(|(k, v)| (self.renumber(k), v)).collect(),
        }
    }

    /// The blocks this load holds, when it is a stage.
    pub fn layers(&self) -> Option<Range<usize>> {
        match self {
            Share::All => None,
            Share::Stage(layers) => Some(layers.clone()),
        }
    }
}

/// Splits `model` for this rank of `group` (nothing to do without a group, or for a
/// group of one): the blocks balanced by `bytes()` (key -> bytes of every tensor in the
/// checkpoint, asked for only when there is a pipeline; the built blocks' own sizes when
/// the keys do not number every block).
///
/// # Errors
/// [`LoaderError::Model`] when the model cannot be split (more ranks than blocks, a
/// backbone without pipeline support); what `bytes` returns.
pub(crate) fn split<I: IntoIterator<Item = (String, u64)>>(
    model: &mut dyn LanguageModel,
    group: Option<&Arc<Group>>,
    bytes: impl FnOnce() -> Result<I>,
    source: &Path,
) -> Result<Share> {
    let Some(group) = group.filter(|g| g.size() > 1) else { return Ok(Share::All) };
    let built = model.block_bytes();
    let mut per_block: BTreeMap<usize, u64> = BTreeMap::new();
    for (key, size) in bytes()? {
        if let Some(n) = layer_of(&key) {
            *per_block.entry(n).or_default() += size;
        }
    }
    let numbered_all = per_block.len() == built.len() && per_block.keys().copied().eq(0..built.len());
    let sizes: Vec<u64> = if numbered_all { per_block.into_values().collect() } else { built };
    let ranges = split_by_bytes(&sizes, group.size()).map_err(|e| LoaderError::model(source, e))?;
    let layers = ranges.get(group.rank()).cloned().unwrap_or(0..0);
    let stage = PipelineStage { group: Arc::clone(group), layers: layers.clone() };
    model.split_for_pipeline(stage).map_err(|e| LoaderError::model(source, e))?;
    Ok(Share::Stage(layers))
}
