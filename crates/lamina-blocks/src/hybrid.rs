//! A Jamba-style block whose mixer is attention or Mamba, chosen per layer, followed by
//! a feed-forward network.

use lamina_components::{
    Attention, AttentionConfig, FeedForward, FeedForwardConfig, LayerCache, LayerInput, MambaConfig,
    MambaMixer, Norm, NormConfig, SsmState,
};
use lamina_core::{BlockOutput, Config, Error, MixerKind, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::Block;
use crate::transformer::{attention_cache, residual};

/// The mixer of a hybrid layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HybridMixerConfig {
    /// Self-attention.
    Attention(AttentionConfig),
    /// A Mamba mixer.
    Mamba(MambaConfig),
}

impl HybridMixerConfig {
    /// Which kind of mixer this is.
    pub fn kind(&self) -> MixerKind {
        match self {
            HybridMixerConfig::Attention(_) => MixerKind::Attention,
            HybridMixerConfig::Mamba(_) => MixerKind::Mamba,
        }
    }

    /// Scalar parameters of the mixer.
    pub fn num_parameters(&self) -> usize {
        match self {
            HybridMixerConfig::Attention(c) => c.num_parameters(),
            HybridMixerConfig::Mamba(c) => c.num_parameters(),
        }
    }

    fn hidden_size(&self) -> usize {
        match self {
            HybridMixerConfig::Attention(c) => c.hidden_size,
            HybridMixerConfig::Mamba(c) => c.hidden_size,
        }
    }
}

/// How a [`HybridBlock`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct HybridBlockConfig {
    /// The token mixer.
    pub mixer: HybridMixerConfig,
    /// The feed-forward network.
    pub ffn: FeedForwardConfig,
    /// Both norms.
    pub norm: NormConfig,
}

impl HybridBlockConfig {
    /// Scalar parameters of the block this config builds.
    pub fn num_parameters(&self) -> usize {
        lamina_core::count(&[
            &[self.mixer.num_parameters()],
            &[self.ffn.num_parameters()],
            &[2, self.norm.num_parameters(self.ffn.hidden_size)],
        ])
    }
}

impl Config for HybridBlockConfig {
    const NAME: &'static str = "HybridBlockConfig";

    fn check(&self) -> Result<()> {
        match &self.mixer {
            HybridMixerConfig::Attention(c) => c.validated()?,
            HybridMixerConfig::Mamba(c) => c.validated()?,
        }
        self.ffn.validated()?;
        if self.mixer.hidden_size() != self.ffn.hidden_size {
            return Err(Error::invalid(
                Self::NAME,
                "ffn.hidden_size",
                format!(
                    "({}) must equal the mixer's hidden_size ({})",
                    self.ffn.hidden_size,
                    self.mixer.hidden_size()
                ),
            ));
        }
        Ok(())
    }
}

/// `h = x + mixer(norm(x)); out = h + feed_forward(norm(h))`, where exactly one of
/// `self_attn` and `mamba` is present.
#[derive(Debug, Clone, ModuleParameters)]
pub struct HybridBlock {
    /// The norm before the mixer.
    #[param]
    pub input_layernorm: Norm,
    /// The attention mixer, on attention layers.
    #[param]
    pub self_attn: Option<Attention>,
    /// The Mamba mixer, on SSM layers.
    #[param]
    pub mamba: Option<MambaMixer>,
    /// The norm before the feed-forward network.
    #[param]
    pub pre_ff_layernorm: Norm,
    /// The feed-forward network.
    #[param]
    pub feed_forward: FeedForward,
}

impl HybridBlock {
    /// A randomly initialised block.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &HybridBlockConfig) -> Result<Self> {
        config.validated()?;
        let width = lamina_core::to_dim(HybridBlockConfig::NAME, "hidden_size", config.ffn.hidden_size)?;
        let (self_attn, mamba) = match &config.mixer {
            HybridMixerConfig::Attention(c) => (Some(Attention::new(c.clone())?), None),
            HybridMixerConfig::Mamba(c) => (None, Some(MambaMixer::new(*c)?)),
        };
        Ok(HybridBlock {
            input_layernorm: Norm::new(width, config.norm)?,
            self_attn,
            mamba,
            pre_ff_layernorm: Norm::new(width, config.norm)?,
            feed_forward: FeedForward::new(config.ffn)?,
        })
    }

    /// Which kind of mixer this layer has.
    pub fn mixer_kind(&self) -> MixerKind {
        if self.self_attn.is_some() { MixerKind::Attention } else { MixerKind::Mamba }
    }
}

impl<'a> Module<LayerInput<'a>> for HybridBlock {
    type Output = BlockOutput;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden] -> [B, L, hidden]`
    fn forward(&mut self, input: LayerInput<'a>) -> Result<BlockOutput> {
        let x = input.x;
        let normed = self.input_layernorm.forward(x)?;
        let inner = LayerInput { x: &normed, ..input };
        let mixed = match (&mut self.self_attn, &mut self.mamba) {
            (Some(attn), _) => attn.forward(inner)?,
            (None, Some(mamba)) => mamba.forward(inner)?,
            (None, None) => return Err(Error::Internal("a hybrid block has no mixer")),
        };
        let h = residual(x, mixed)?;
        let out = residual(&h, self.feed_forward.forward(&self.pre_ff_layernorm.forward(&h)?)?)?;
        Ok(BlockOutput { hidden_states: out })
    }

    fn training_mode(&mut self, mode: bool) {
        if let Some(attn) = &mut self.self_attn {
            attn.training_mode(mode);
        }
        if let Some(mamba) = &mut self.mamba {
            mamba.training_mode(mode);
        }
        self.feed_forward.training_mode(mode);
    }
}

impl Block for HybridBlock {
    fn make_cache(&self) -> Result<LayerCache> {
        match &self.self_attn {
            Some(attn) => attention_cache(attn),
            None => Ok(LayerCache::Ssm(SsmState::new())),
        }
    }
}

lamina_components::visit_fields!(HybridBlock { self_attn, mamba, feed_forward });

#[cfg(test)]
mod tests {
    use mlx_rs::module::ModuleParameters;

    use super::*;

    fn config(mixer: HybridMixerConfig) -> HybridBlockConfig {
        HybridBlockConfig { mixer, ffn: FeedForwardConfig::swiglu(16, 24), norm: NormConfig::rms(1e-6) }
    }

    #[test]
    fn each_layer_has_exactly_its_mixer() {
        let attn =
            HybridBlock::new(&config(HybridMixerConfig::Attention(AttentionConfig::new(16, 4, 4)))).unwrap();
        let ssm = HybridBlock::new(&config(HybridMixerConfig::Mamba(MambaConfig::new(16, 2)))).unwrap();
        assert_eq!((attn.mixer_kind(), ssm.mixer_kind()), (MixerKind::Attention, MixerKind::Mamba));
        let keys =
            |b: &HybridBlock| b.parameters().flatten().keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert!(
            keys(&attn).iter().any(|k| k.starts_with("self_attn."))
                && !keys(&attn).iter().any(|k| k.starts_with("mamba."))
        );
        assert!(
            keys(&ssm).iter().any(|k| k == "mamba.A_log")
                && keys(&ssm).iter().any(|k| k == "pre_ff_layernorm.weight")
        );
        assert!(matches!(ssm.make_cache().unwrap(), LayerCache::Ssm(_)));
        let mut ssm = ssm;
        let x = mlx_rs::random::normal::<f32>(&[1, 3, 16], None, None, None).unwrap();
        assert_eq!(ssm.forward(LayerInput::new(&x)).unwrap().hidden_states.shape(), &[1, 3, 16]);
    }

    #[test]
    fn the_mixer_and_ffn_widths_must_agree() {
        let bad = HybridBlockConfig {
            ffn: FeedForwardConfig::swiglu(8, 24),
            ..config(HybridMixerConfig::Mamba(MambaConfig::new(16, 2)))
        };
        assert!(HybridBlock::new(&bad).is_err());
    }
}
