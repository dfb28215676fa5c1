//! Sequence classification, token classification and regression heads.

use lamina_components::Linear;
use lamina_core::{Error, HeadOutput, Pooling, Result};
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};

use crate::losses::{cross_entropy, mse};
use crate::pooling::pool;

/// The inputs of a classification or regression head.
#[derive(Debug, Clone, Copy)]
pub struct HeadInput<'a> {
    /// The backbone's last hidden state `[B, L, H]`.
    pub hidden: &'a Array,
    /// `[B, L]`, 1 for real tokens, 0 for padding.
    pub padding_mask: Option<&'a Array>,
    /// Labels: `[B]` class ids (sequence), `[B, L]` class ids with `-100` ignored (token),
    /// `[B, outputs]` values (regression).
    pub labels: Option<&'a Array>,
}

impl<'a> HeadInput<'a> {
    /// Hidden states only.
    pub fn new(hidden: &'a Array) -> Self {
        HeadInput { hidden, padding_mask: None, labels: None }
    }
}

macro_rules! projection_head {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, ModuleParameters)]
        pub struct $name {
            /// `[outputs, hidden]`.
            #[param]
            pub weight: Param<Array>,
            /// `[outputs]`, when the head has a bias (transformers' `score` has none).
            #[param]
            pub bias: Param<Option<Array>>,
            /// How a sequence is reduced to one vector (sequence heads only).
            pub pooling: Pooling,
        }

        impl $name {
            /// A head projecting `hidden` features to `outputs`, weights uniform in
            /// `±1/sqrt(hidden)`.
            ///
            /// # Errors
            /// When MLX cannot allocate the arrays.
            pub fn new(hidden: i32, outputs: i32, bias: bool, pooling: Pooling) -> Result<Self> {
                let layer = Linear::new(hidden, outputs, bias)?;
                Ok($name { weight: layer.weight, bias: layer.bias, pooling })
            }

            fn project(&self, x: &Array) -> Result<Array> {
                Linear::from_weights(self.weight.value.clone(), self.bias.value.clone()).forward(x)
            }
        }
    };
}

projection_head!(
    /// One label per sequence: pools the hidden states, then projects to `num_labels`.
    SequenceClassifierHead
);
projection_head!(
    /// One label per token.
    TokenClassifierHead
);
projection_head!(
    /// Real values per sequence: pools, then projects to the number of outputs.
    RegressionHead
);

impl<'a> Module<HeadInput<'a>> for SequenceClassifierHead {
    type Output = HeadOutput;
    type Error = Error;

    /// # Shapes
    /// `hidden [B, L, H]`, `labels [B]` -> `logits [B, num_labels]`
    fn forward(&mut self, input: HeadInput<'a>) -> Result<HeadOutput> {
        let logits = self.project(&pool(input.hidden, input.padding_mask, self.pooling)?)?;
        let loss = input.labels.map(|labels| cross_entropy(&logits, labels)).transpose()?;
        Ok(HeadOutput { logits, loss })
    }

    fn training_mode(&mut self, _mode: bool) {}
}

impl<'a> Module<HeadInput<'a>> for TokenClassifierHead {
    type Output = HeadOutput;
    type Error = Error;

    /// # Shapes
    /// `hidden [B, L, H]`, `labels [B, L]` -> `logits [B, L, num_labels]`
    fn forward(&mut self, input: HeadInput<'a>) -> Result<HeadOutput> {
        let logits = self.project(input.hidden)?;
        let loss = match input.labels {
            Some(labels) => {
                let classes = logits.dim(-1);
                Some(cross_entropy(&logits.reshape(&[-1, classes])?, &labels.reshape(&[-1])?)?)
            }
            None => None,
        };
        Ok(HeadOutput { logits, loss })
    }

    fn training_mode(&mut self, _mode: bool) {}
}

impl<'a> Module<HeadInput<'a>> for RegressionHead {
    type Output = HeadOutput;
    type Error = Error;

    /// # Shapes
    /// `hidden [B, L, H]`, `labels [B, outputs]` -> `logits [B, outputs]`
    fn forward(&mut self, input: HeadInput<'a>) -> Result<HeadOutput> {
        let logits = self.project(&pool(input.hidden, input.padding_mask, self.pooling)?)?;
        let loss = input.labels.map(|labels| mse(&logits, labels)).transpose()?;
        Ok(HeadOutput { logits, loss })
    }

    fn training_mode(&mut self, _mode: bool) {}
}

#[cfg(test)]
mod tests {
    use mlx_rs::module::Param;

    use super::*;

    fn hidden() -> Array {
        mlx_rs::random::normal::<f32>(&[2, 4, 8], None, None, None).unwrap()
    }

    #[test]
    fn sequence_head_scores_the_last_real_token_and_its_loss_is_the_cross_entropy() {
        // Hidden states `[2, 4, 2]` whose rows are their positions, and an identity-like
        // head: the logits are the pooled token's features, so a head pooling the wrong
        // token shows.
        let h = Array::from_slice(
            &[0.0f32, 0.0, 1.0, 0.5, 2.0, 1.0, 3.0, 1.5, 0.0, 0.0, -1.0, 0.5, -2.0, 1.0, -3.0, 1.5],
            &[2, 4, 2],
        );
        let mut head = SequenceClassifierHead::new(2, 2, false, Pooling::LastToken).unwrap();
        head.weight = Param::new(Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[2, 2]));
        // Row 0 right-padded after 3 tokens, row 1 left-padded by 1: last real tokens are
        // positions 2 and 3.
        let padding = Array::from_slice(&[1i32, 1, 1, 0, 0, 1, 1, 1], &[2, 4]);
        let labels = Array::from_slice(&[0i32, 1], &[2]);
        let out = head
            .forward(HeadInput { hidden: &h, padding_mask: Some(&padding), labels: Some(&labels) })
            .unwrap();
        assert_eq!(out.logits.as_slice::<f32>(), [2.0, 1.0, -3.0, 1.5]);
        let ce = |logits: [f32; 2], label: usize| {
            let lse = (logits[0].exp() + logits[1].exp()).ln();
            lse - logits[label]
        };
        let expected = (ce([2.0, 1.0], 0) + ce([-3.0, 1.5], 1)) / 2.0;
        assert!((out.loss.unwrap().item_exact::<f32>() - expected).abs() < 1e-6);
        assert!(head.bias.is_none());
    }

    #[test]
    fn token_head_ignores_masked_labels() {
        let mut head = TokenClassifierHead::new(8, 5, true, Pooling::Mean).unwrap();
        let h = hidden();
        let labels = Array::from_slice(&[-100i32; 8], &[2, 4]);
        let out = head.forward(HeadInput { labels: Some(&labels), ..HeadInput::new(&h) }).unwrap();
        assert_eq!(out.logits.shape(), &[2, 4, 5]);
        assert_eq!(out.loss.unwrap().item_exact::<f32>(), 0.0);
    }

    #[test]
    fn regression_head_uses_mse() {
        let mut head = RegressionHead::new(8, 2, true, Pooling::Mean).unwrap();
        let h = hidden();
        let out = head.forward(HeadInput::new(&h)).unwrap();
        assert_eq!(out.logits.shape(), &[2, 2]);
        let labels = out.logits.add(Array::from_f32(1.0)).unwrap();
        let loss =
            head.forward(HeadInput { labels: Some(&labels), ..HeadInput::new(&h) }).unwrap().loss.unwrap();
        assert!((loss.item_exact::<f32>() - 1.0).abs() < 1e-5);
        let bad = Array::zeros::<f32>(&[2]).unwrap();
        assert!(head.forward(HeadInput { labels: Some(&bad), ..HeadInput::new(&h) }).is_err());
    }
}
