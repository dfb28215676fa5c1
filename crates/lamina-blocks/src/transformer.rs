//! The pre-norm transformer block of Llama and its descendants.

use lamina_components::{
    Attention, AttentionConfig, FeedForward, FeedForwardConfig, KvCache, LayerCache, LayerInput, Norm,
    NormConfig, RotatingKvCache, dropout,
};
use lamina_core::{BlockOutput, Config, Error, Result};
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::Block;

/// How a [`TransformerBlock`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct TransformerBlockConfig {
    /// The attention layer.
    pub attention: AttentionConfig,
    /// The feed-forward network.
    pub ffn: FeedForwardConfig,
    /// Both norms.
    pub norm: NormConfig,
    /// Dropout on the attention and feed-forward outputs while training.
    #[serde(default)]
    #[validate(range(min = 0.0, exclusive_max = 1.0))]
    pub dropout: f32,
}

impl TransformerBlockConfig {
    /// Scalar parameters of the block this config builds.
    pub fn num_parameters(&self) -> usize {
        lamina_core::count(&[
            &[self.attention.num_parameters()],
            &[self.ffn.num_parameters()],
            &[2, self.norm.num_parameters(self.attention.hidden_size)],
        ])
    }

    /// A block without dropout.
    pub fn new(attention: AttentionConfig, ffn: FeedForwardConfig, norm: NormConfig) -> Self {
        TransformerBlockConfig { attention, ffn, norm, dropout: 0.0 }
    }
}

impl Config for TransformerBlockConfig {
    const NAME: &'static str = "TransformerBlockConfig";

    fn check(&self) -> Result<()> {
        self.attention.validated()?;
        self.ffn.validated()?;
        if self.attention.hidden_size != self.ffn.hidden_size {
            return Err(Error::invalid(
                Self::NAME,
                "ffn.hidden_size",
                format!(
                    "({}) must equal attention.hidden_size ({})",
                    self.ffn.hidden_size, self.attention.hidden_size
                ),
            ));
        }
        Ok(())
    }
}

/// `h = x + attn(norm(x)); out = h + mlp(norm(h))`.
#[derive(Debug, Clone, ModuleParameters)]
pub struct TransformerBlock {
    /// The norm before attention.
    #[param]
    pub input_layernorm: Norm,
    /// Self-attention.
    #[param]
    pub self_attn: Attention,
    /// The norm before the feed-forward network.
    #[param]
    pub post_attention_layernorm: Norm,
    /// The feed-forward network.
    #[param]
    pub mlp: FeedForward,
    dropout: f32,
    training: bool,
}

impl TransformerBlock {
    /// A randomly initialised block.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &TransformerBlockConfig) -> Result<Self> {
        config.validated()?;
        let width =
            lamina_core::to_dim(TransformerBlockConfig::NAME, "hidden_size", config.attention.hidden_size)?;
        Ok(TransformerBlock {
            input_layernorm: Norm::new(width, config.norm)?,
            self_attn: Attention::new(config.attention.clone())?,
            post_attention_layernorm: Norm::new(width, config.norm)?,
            mlp: FeedForward::new(config.ffn)?,
            dropout: config.dropout,
            training: false,
        })
    }
}

impl<'a> Module<LayerInput<'a>> for TransformerBlock {
    type Output = BlockOutput;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden] -> [B, L, hidden]`
    fn forward(&mut self, input: LayerInput<'a>) -> Result<BlockOutput> {
        let x = input.x;
        let normed = self.input_layernorm.forward(x)?;
        let attended = self.self_attn.forward(LayerInput { x: &normed, ..input })?;
        let h = x.add(dropout(&attended, self.dropout, self.training)?)?;
        let mlp = self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?;
        let out = h.add(dropout(&mlp, self.dropout, self.training)?)?;
        Ok(BlockOutput { hidden_states: out })
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
        self.self_attn.training_mode(mode);
        self.mlp.training_mode(mode);
    }
}

impl Block for TransformerBlock {
    fn make_cache(&self) -> Result<LayerCache> {
        attention_cache(&self.self_attn)
    }
}

/// A KV cache, rotating when the attention has a sliding window.
///
/// # Errors
/// For a window that does not fit an `i32`.
pub fn attention_cache(attention: &Attention) -> Result<LayerCache> {
    Ok(match attention.config().sliding_window {
        Some(window) => {
            let window = i32::try_from(window)
                .map_err(|_| Error::invalid("AttentionConfig", "sliding_window", "too large"))?;
            LayerCache::Rotating(RotatingKvCache::new(window)?)
        }
        None => LayerCache::Kv(KvCache::new()),
    })
}

/// Residual helper shared by the blocks: `x + f(x)`.
pub(crate) fn residual(x: &Array, fx: Array) -> Result<Array> {
    Ok(x.add(fx)?)
}

lamina_components::visit_fields!(TransformerBlock { self_attn, mlp });

#[cfg(test)]
mod tests {
    use lamina_components::FeedForwardConfig;
    use mlx_rs::module::ModuleParameters;

    use super::*;

    pub(crate) fn config() -> TransformerBlockConfig {
        TransformerBlockConfig::new(
            AttentionConfig::new(16, 4, 2),
            FeedForwardConfig::swiglu(16, 32),
            NormConfig::rms(1e-5),
        )
    }

    #[test]
    fn names_and_shapes() {
        let mut block = TransformerBlock::new(&config()).unwrap();
        let params = block.parameters().flatten();
        for key in [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_proj.weight",
        ] {
            assert!(params.contains_key(key), "{key}");
        }
        let x = mlx_rs::random::normal::<f32>(&[2, 5, 16], None, None, None).unwrap();
        assert_eq!(block.forward(LayerInput::new(&x)).unwrap().hidden_states.shape(), &[2, 5, 16]);
        assert!(matches!(block.make_cache().unwrap(), LayerCache::Kv(_)));
    }

    #[test]
    fn dropout_applies_only_while_training() {
        let mut block = TransformerBlock::new(&TransformerBlockConfig { dropout: 0.5, ..config() }).unwrap();
        let x = mlx_rs::random::normal::<f32>(&[1, 6, 16], None, None, None).unwrap();
        let run = |b: &mut TransformerBlock| b.forward(LayerInput::new(&x)).unwrap().hidden_states;
        let (a, b) = (run(&mut block), run(&mut block));
        assert!(a.eq_values(&b).unwrap());
        block.training_mode(true);
        assert!(!run(&mut block).eq_values(&a).unwrap());
        assert!(TransformerBlock::new(&TransformerBlockConfig { dropout: 1.0, ..config() }).is_err());
    }

    #[test]
    fn mismatched_widths_are_rejected() {
        let bad = TransformerBlockConfig { ffn: FeedForwardConfig::swiglu(8, 32), ..config() };
        let err = TransformerBlock::new(&bad).unwrap_err().to_string();
        assert!(err.contains("ffn.hidden_size"), "{err}");
    }
}
