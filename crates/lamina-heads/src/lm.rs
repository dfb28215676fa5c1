//! The language-modelling head: logits over the vocabulary, from its own [`Linear`]
//! (`lm_head.weight`, quantizable) or, when tied, from the token embedding.

use lamina_components::{Embedding, Linear};
use lamina_core::{HeadOutput, Result};
use mlx_rs::Array;
use mlx_rs::module::Module;

use crate::losses::causal_lm_loss;

/// An LM head: `Some(linear)` with its own weight `[vocab, hidden]` (no bias), or `None`
/// to reuse the token embedding (`tie_word_embeddings`). As a model field named `lm_head`
/// its keys read `lm_head.weight` (and `lm_head.scales`/`biases` when quantized).
pub type LmHead = Option<Linear>;

/// A head with its own weight (uniform in `±1/sqrt(hidden)`), or a tied one.
///
/// # Errors
/// When MLX cannot allocate the weight.
pub fn lm_head(hidden: i32, vocab: i32, tied: bool) -> Result<LmHead> {
    if tied { Ok(None) } else { Linear::new(hidden, vocab, false).map(Some) }
}

/// Logits, soft-capped to `cap * tanh(logits / cap)` when `softcap` is given (Gemma 2's
/// `final_logit_softcapping`), and the causal LM loss of those logits when labels are
/// given.
///
/// # Shapes
/// `hidden [B, L, H]`, `labels [B, L]` -> `logits [B, L, vocab]`
///
/// # Errors
/// When shapes do not line up or a label is out of range.
pub fn lm_logits(
    head: &mut LmHead,
    hidden: &Array,
    embedding: &Embedding,
    softcap: Option<f32>,
    labels: Option<&Array>,
) -> Result<HeadOutput> {
    let logits = match head {
        Some(linear) => linear.forward(hidden)?,
        None => embedding.as_linear(hidden)?,
    };
    let logits = match softcap {
        Some(cap) => lamina_components::softcap(&logits, cap)?,
        None => logits,
    };
    let loss = labels.map(|labels| causal_lm_loss(&logits, labels)).transpose()?;
    Ok(HeadOutput { logits, loss })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tied_head_uses_the_embedding_and_has_no_parameters() {
        let embedding = Embedding::new(10, 4).unwrap();
        let hidden = mlx_rs::random::normal::<f32>(&[2, 3, 4], None, None, None).unwrap();
        let mut tied = lm_head(4, 10, true).unwrap();
        assert!(tied.is_none());
        let out = lm_logits(&mut tied, &hidden, &embedding, None, None).unwrap();
        assert_eq!(out.logits.shape(), &[2, 3, 10]);
        assert!(out.loss.is_none());
        let expected = embedding.as_linear(&hidden).unwrap();
        assert!(out.logits.all_close(&expected, 0.0, 0.0, None).unwrap());
    }

    #[test]
    fn own_head_computes_the_shifted_cross_entropy() {
        let embedding = Embedding::new(3, 2).unwrap();
        let mut head = lm_head(2, 3, false).unwrap();
        assert_eq!(head.as_ref().map(lamina_core::count_parameters), Some(6));
        // Logits = hidden @ W^T with W = [[1, 0], [0, 1], [1, 1]].
        head =
            Some(Linear::from_weights(Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]), None));
        let hidden = Array::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 1.0, -1.0, 0.5, 0.5], &[1, 4, 2]);
        // Position t predicts label t + 1; -100 is not counted.
        let labels = Array::from_slice(&[0i32, 2, -100, 1], &[1, 4]);
        let out = lm_logits(&mut head, &hidden, &embedding, None, Some(&labels)).unwrap();
        let rows = [[1.0f32, 0.0, 1.0], [0.0, 2.0, 2.0], [1.0, -1.0, 0.0]];
        let ce = |row: [f32; 3], label: usize| row.iter().map(|v| v.exp()).sum::<f32>().ln() - row[label];
        let expected = (ce(rows[0], 2) + ce(rows[2], 1)) / 2.0;
        let loss = out.loss.unwrap().item_exact::<f32>();
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        assert_eq!(out.logits.shape(), &[1, 4, 3]);
    }
}
