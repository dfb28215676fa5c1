//! Pipeline parallelism: a backbone's blocks split over the ranks of a [`Group`] in
//! contiguous ranges, each rank holding only its range (weights and caches), the hidden
//! states sent from rank to rank (as mlx-lm's `pipeline` and `sharded_load` do, with rank
//! 0 holding the first blocks).
//!
//! Every rank still embeds (the shape of what it receives) and applies the final norm
//! and LM head to the last rank's output, which an `all_gather` hands to every rank, so
//! that generation runs the same steps everywhere and samples the same tokens.

use std::ops::Range;
use std::sync::Arc;

use lamina_components::LayerCache;
use lamina_core::distributed::{Group, after};
use lamina_core::{Error, Result};
use mlx_rs::Array;
use mlx_rs::ops::indexing::TryIndexOp;

use crate::stack::ModelCache;

/// One rank's share of a pipeline: the group and the blocks it holds.
#[derive(Debug, Clone)]
pub struct PipelineStage {
    /// The ranks of the pipeline; stage `i` is rank `i`.
    pub group: Arc<Group>,
    /// The blocks this rank holds, numbered as in the whole model (`layers.N`).
    pub layers: Range<usize>,
}

impl PipelineStage {
    /// Whether this rank holds the first blocks (it embeds the tokens).
    pub fn is_first(&self) -> bool {
        self.group.rank() == 0
    }

    /// Whether this rank holds the last blocks (its output is the model's).
    pub fn is_last(&self) -> bool {
        self.group.rank() + 1 == self.group.size()
    }

    /// The hidden states this stage starts from: the embeddings on the first rank, what
    /// the previous rank sent on the others (`embedded` gives the shape and dtype).
    ///
    /// # Errors
    /// [`Error::Distributed`] when MLX refuses the receive.
    pub(crate) fn receive(&self, embedded: Array) -> Result<Array> {
        if self.is_first() {
            return Ok(embedded);
        }
        self.group.recv(embedded.shape(), embedded.dtype(), self.group.rank() - 1)
    }

    /// Passes this stage's output on and returns the last rank's output on every rank.
    /// The send is tied to the last cache written, so that evaluating only the caches
    /// (a prefill chunk) still sends.
    ///
    /// # Errors
    /// [`Error::Distributed`] when MLX refuses a collective.
    pub(crate) fn pass_on(&self, h: Array, cache: Option<&mut ModelCache>) -> Result<Array> {
        let (rank, size) = (self.group.rank(), self.group.size());
        let h = if self.is_last() {
            h
        } else {
            let sent = self.group.send(&h, rank + 1)?;
            if let Some(layer) = cache.and_then(|c| c.layers.last_mut()) {
                tie(layer, &sent)?;
            }
            sent
        };
        let rows = h.dim(0);
        let gathered = self.group.all_gather(&h)?;
        let last = (size as i32 - 1) * rows;
        Ok(gathered.try_index(last..last + rows)?)
    }
}

/// Makes the first array a layer's cache holds depend on `sent`.
fn tie(layer: &mut LayerCache, sent: &Array) -> Result<()> {
    if let Some(array) = layer.arrays_mut().into_iter().next() {
        *array = after(array, std::slice::from_ref(sent))?;
    }
    Ok(())
}

/// Contiguous block ranges for `ranks` stages, balanced by the bytes each block holds:
/// stage `i` ends at the first block where the running total reaches `(i + 1) / ranks`
/// of the whole (the nearer of the two blocks around it), and every stage keeps at least
/// one block.
///
/// ```
/// use lamina_backbones::split_by_bytes;
/// assert_eq!(split_by_bytes(&[1, 1, 1, 1], 2).unwrap(), [0..2, 2..4]);
/// assert_eq!(split_by_bytes(&[3, 1, 1, 1], 2).unwrap(), [0..1, 1..4]);
/// assert!(split_by_bytes(&[1], 2).is_err());
/// ```
///
/// # Errors
/// [`Error::Distributed`] for no ranks or more ranks than blocks.
pub fn split_by_bytes(bytes: &[u64], ranks: usize) -> Result<Vec<Range<usize>>> {
    if ranks == 0 || ranks > bytes.len() {
        return Err(Error::Distributed(format!(
            "{} blocks cannot be split over {ranks} pipeline ranks (each needs at least one)",
            bytes.len()
        )));
    }
    let total: u128 = bytes.iter().map(|&b| u128::from(b.max(1))).sum();
    let mut ranges = Vec::with_capacity(ranks);
    let (mut start, mut running) = (0usize, 0u128);
    for stage in 0..ranks {
        if stage + 1 == ranks {
            ranges.push(start..bytes.len());
            break;
        }
        let target = total * (stage as u128 + 1) / ranks as u128;
        // Leave at least one block for each later stage.
        let last_end = bytes.len() - (ranks - stage - 1);
        let mut end = start + 1;
        running += u128::from(bytes[start].max(1));
        while end < last_end {
            let next = running + u128::from(bytes[end].max(1));
            if next > target && next - target > target.saturating_sub(running) {
                break;
            }
            running = next;
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    Ok(ranges)
}

/// The block a checkpoint key belongs to: `N` in `...layers.N....`, `None` for the
/// embeddings, norms and head.
///
/// ```
/// use lamina_backbones::layer_of;
/// assert_eq!(layer_of("model.layers.12.self_attn.q_proj.weight"), Some(12));
/// assert_eq!(layer_of("backbone.layers.0.mixer.A_log"), Some(0));
/// assert_eq!(layer_of("model.embed_tokens.weight"), None);
/// ```
pub fn layer_of(key: &str) -> Option<usize> {
    split_at_layers(key).map(|(_, n, _)| n)
}

/// `key` with its block renumbered from `first` on (a stage holding blocks `first..`
/// numbers them from 0); keys outside the blocks are returned as they are.
///
/// ```
/// use lamina_backbones::renumber;
/// assert_eq!(renumber("model.layers.12.mlp.up_proj.weight", 10), "model.layers.2.mlp.up_proj.weight");
/// assert_eq!(renumber("model.norm.weight", 10), "model.norm.weight");
/// ```
pub fn renumber(key: &str, first: usize) -> String {
    match split_at_layers(key) {
        Some((head, n, tail)) if n >= first => format!("{head}{}{tail}", n - first),
        _ => key.to_owned(),
    }
}

/// `("...layers.", N, ".rest")` for a key with a `layers.N` component (the tail empty
/// when the key ends at `N`).
fn split_at_layers(key: &str) -> Option<(&str, usize, &str)> {
    const MARK: &str = "layers.";
    let mut from = 0;
    while let Some(found) = key[from..].find(MARK) {
        let at = from + found;
        let starts_component = at == 0 || key.as_bytes()[at - 1] == b'.';
        let after = &key[at + MARK.len()..];
        let digits = after.find('.').unwrap_or(after.len());
        if let (true, Ok(n)) = (starts_component, after[..digits].parse::<usize>()) {
            return Some((&key[..at + MARK.len()], n, &after[digits..]));
        }
        from = at + MARK.len();
    }
    None
}

/// Keeps only `stage.layers` of `blocks` (the rest are dropped, their weights never read).
///
/// # Errors
/// [`Error::Distributed`] for a range outside the blocks or an empty one.
pub(crate) fn keep_stage<B>(blocks: &mut Vec<B>, stage: &PipelineStage) -> Result<()> {
    let range = stage.layers.clone();
    if range.is_empty() || range.end > blocks.len() {
        return Err(Error::Distributed(format!(
            "pipeline stage {range:?} does not fit a model of {} blocks",
            blocks.len()
        )));
    }
    blocks.truncate(range.end);
    blocks.drain(..range.start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_balance_bytes_and_keep_a_block_each() {
        assert_eq!(split_by_bytes(&[1; 7], 2).unwrap(), [0..3, 3..7]);
        assert_eq!(split_by_bytes(&[1; 6], 3).unwrap(), [0..2, 2..4, 4..6]);
        assert_eq!(split_by_bytes(&[10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2).unwrap(), [0..1, 1..11]);
        assert_eq!(split_by_bytes(&[1, 1, 1, 100], 2).unwrap(), [0..3, 3..4]);
        assert_eq!(split_by_bytes(&[100, 1, 1], 3).unwrap(), [0..1, 1..2, 2..3]);
        assert_eq!(split_by_bytes(&[0, 0, 0, 0], 2).unwrap(), [0..2, 2..4]);
        assert_eq!(split_by_bytes(&[5], 1).unwrap(), vec![0..1]);
        assert!(split_by_bytes(&[1, 1], 3).is_err());
        assert!(split_by_bytes(&[1, 1], 0).is_err());
        for ranks in 1..=9 {
            let ranges = split_by_bytes(&[7, 3, 9, 1, 4, 4, 2, 8, 5], ranks).unwrap();
            assert_eq!(ranges.len(), ranks);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[ranks - 1].end, 9);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()));
        }
    }

    #[test]
    fn keys_find_their_block() {
        assert_eq!(layer_of("language_model.model.layers.3.mlp.gate_proj.scales"), Some(3));
        assert_eq!(layer_of("model.layers.x.weight"), None);
        assert_eq!(layer_of("model.sublayers.2.weight"), None);
        assert_eq!(layer_of("model.layers.7"), Some(7));
        assert_eq!(renumber("model.layers.7", 3), "model.layers.4");
        assert_eq!(renumber("model.layers.2.weight", 3), "model.layers.2.weight");
        assert_eq!(renumber("lm_head.weight", 3), "lm_head.weight");
    }
}
