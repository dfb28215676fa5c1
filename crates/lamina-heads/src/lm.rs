//! The language-modelling head: logits over the vocabulary, own weight or tied.

use lamina_components::Embedding;
use lamina_core::{HeadOutput, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Param;
use mlx_rs::{Array, ops};

use crate::losses::causal_lm_loss;

/// Next-token logits: `hidden @ weight^T`, with its own `weight [vocab, hidden]` or, when
/// tied, the token embedding's.
#[derive(Debug, Clone, ModuleParameters)]
pub struct LmHead {
    /// `[vocab, hidden]`, absent when tied to the embedding.
    #[param]
    pub weight: Param<Option<Array>>,
}

impl LmHead {
    /// A head with its own weight, drawn uniformly from `±1/sqrt(hidden)`.
    ///
    /// # Errors
    /// When MLX cannot allocate the array.
    pub fn new(hidden: i32, vocab: i32) -> Result<Self> {
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        let weight = mlx_rs::random::uniform::<_, f32>(-bound, bound, &[vocab, hidden], None)?;
        Ok(LmHead { weight: Param::new(Some(weight)) })
    }

    /// A head that reuses the token embedding (`tie_word_embeddings`).
    pub fn tied() -> Self {
        LmHead { weight: Param::new(None) }
    }

    /// Whether the head reuses the embedding.
    pub fn is_tied(&self) -> bool {
        self.weight.is_none()
    }

    /// Logits, and the causal LM loss when labels are given.
    ///
    /// # Shapes
    /// `hidden [B, L, H]`, `labels [B, L]` -> `logits [B, L, vocab]`
    ///
    /// # Errors
    /// When shapes do not line up or a label is out of range.
    pub fn forward(
        &self,
        hidden: &Array,
        embedding: &Embedding,
        labels: Option<&Array>,
    ) -> Result<HeadOutput> {
        let logits = match self.weight.as_ref() {
            Some(weight) => ops::matmul(hidden, weight.t())?,
            None => embedding.as_linear(hidden)?,
        };
        let loss = labels.map(|labels| causal_lm_loss(&logits, labels)).transpose()?;
        Ok(HeadOutput { logits, loss })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tied_head_uses_the_embedding_and_has_no_parameters() {
        let embedding = Embedding::new(10, 4).unwrap();
        let hidden = mlx_rs::random::normal::<f32>(&[2, 3, 4], None, None, None).unwrap();
        let tied = LmHead::tied();
        assert_eq!(lamina_core::count_parameters(&tied), 0);
        let out = tied.forward(&hidden, &embedding, None).unwrap();
        assert_eq!(out.logits.shape(), &[2, 3, 10]);
        assert!(out.loss.is_none());
        let expected = embedding.as_linear(&hidden).unwrap();
        assert!(out.logits.all_close(&expected, 0.0, 0.0, None).unwrap());
    }

    #[test]
    fn own_head_computes_a_loss_with_labels() {
        let embedding = Embedding::new(10, 4).unwrap();
        let head = LmHead::new(4, 10).unwrap();
        assert_eq!(lamina_core::count_parameters(&head), 40);
        let hidden = mlx_rs::random::normal::<f32>(&[1, 5, 4], None, None, None).unwrap();
        let labels = Array::from_slice(&[1i32, 2, 3, -100, 4], &[1, 5]);
        let loss = head.forward(&hidden, &embedding, Some(&labels)).unwrap().loss.unwrap();
        assert!(loss.item_exact::<f32>() > 0.0);
    }
}
