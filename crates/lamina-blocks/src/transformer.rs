//! The transformer block of Llama and its descendants: pre-norm (Llama), sandwich norms
//! (Gemma 2/3) or post-sublayer norms (OLMo 2).

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

/// Where a block's norms sit around its two sublayers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `h = x + attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))`
    /// (Llama: the "post attention" norm is the MLP's input norm).
    #[default]
    Pre,
    /// Gemma 2/3: each sublayer's input and output normalised,
    /// `h = x + post_attention_layernorm(attn(input_layernorm(x)))`,
    /// `out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`.
    Sandwich,
    /// OLMo 2: only the outputs, `h = x + post_attention_layernorm(attn(x))`,
    /// `out = h + post_feedforward_layernorm(mlp(h))`.
    Post,
}

impl NormPlacement {
    /// Norms per block.
    pub fn count(self) -> usize {
        match self {
            NormPlacement::Pre | NormPlacement::Post => 2,
            NormPlacement::Sandwich => 4,
        }
    }
}

/// How a [`TransformerBlock`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct TransformerBlockConfig {
    /// The attention layer.
    pub attention: AttentionConfig,
    /// The feed-forward network.
    pub ffn: FeedForwardConfig,
    /// Every norm of the block.
    pub norm: NormConfig,
    /// Where the norms sit.
    #[serde(default)]
    pub norm_placement: NormPlacement,
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
            &[self.norm_placement.count(), self.norm.num_parameters(self.attention.hidden_size)],
        ])
    }

    /// A block without dropout.
    pub fn new(attention: AttentionConfig, ffn: FeedForwardConfig, norm: NormConfig) -> Self {
        TransformerBlockConfig { attention, ffn, norm, norm_placement: NormPlacement::Pre, dropout: 0.0 }
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

/// Attention and a feed-forward network, each added to the residual stream, with norms
/// placed as [`NormPlacement`] says.
#[derive(Debug, Clone, ModuleParameters)]
pub struct TransformerBlock {
    /// The norm before attention (absent with [`NormPlacement::Post`]).
    #[param]
    pub input_layernorm: Option<Norm>,
    /// Self-attention.
    #[param]
    pub self_attn: Attention,
    /// The norm before the feed-forward network ([`NormPlacement::Pre`]) or after attention
    /// (the others).
    #[param]
    pub post_attention_layernorm: Norm,
    /// The norm before the feed-forward network ([`NormPlacement::Sandwich`]).
    #[param]
    pub pre_feedforward_layernorm: Option<Norm>,
    /// The norm after the feed-forward network ([`NormPlacement::Sandwich`], `Post`).
    #[param]
    pub post_feedforward_layernorm: Option<Norm>,
    /// The feed-forward network.
    #[param]
    pub mlp: FeedForward,
    placement: NormPlacement,
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
        let placement = config.norm_placement;
        let norm_if = |present: bool| present.then(|| Norm::new(width, config.norm)).transpose();
        Ok(TransformerBlock {
            input_layernorm: norm_if(placement != NormPlacement::Post)?,
            self_attn: Attention::new(config.attention.clone())?,
            post_attention_layernorm: Norm::new(width, config.norm)?,
            pre_feedforward_layernorm: norm_if(placement == NormPlacement::Sandwich)?,
            post_feedforward_layernorm: norm_if(placement != NormPlacement::Pre)?,
            mlp: FeedForward::new(config.ffn)?,
            placement,
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
        let normed = apply(&mut self.input_layernorm, x)?;
        let mut attended = self.self_attn.forward(LayerInput { x: &normed, ..input })?;
        if self.placement != NormPlacement::Pre {
            attended = self.post_attention_layernorm.forward(&attended)?;
        }
        let h = x.add(dropout(&attended, self.dropout, self.training)?)?;
        let mlp_in = match self.placement {
            NormPlacement::Pre => self.post_attention_layernorm.forward(&h)?,
            _ => apply(&mut self.pre_feedforward_layernorm, &h)?,
        };
        let mlp = apply(&mut self.post_feedforward_layernorm, &self.mlp.forward(&mlp_in)?)?;
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

/// `norm(x)` when the norm is present, `x` otherwise.
fn apply(norm: &mut Option<Norm>, x: &Array) -> Result<Array> {
    match norm {
        Some(norm) => norm.forward(x),
        None => Ok(x.clone()),
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
