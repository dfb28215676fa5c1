//! The Mamba residual block: `x + mixer(norm(x))`.

use lamina_components::{LayerCache, LayerInput, MambaConfig, MambaMixer, Norm, NormConfig, SsmState};
use lamina_core::{BlockOutput, Config, Error, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::Block;
use crate::transformer::residual;

/// How a [`MambaBlock`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct MambaBlockConfig {
    /// The mixer.
    pub mixer: MambaConfig,
    /// The norm before it.
    pub norm: NormConfig,
}

impl MambaBlockConfig {
    /// Scalar parameters of the block this config builds.
    pub fn num_parameters(&self) -> usize {
        self.mixer.num_parameters().saturating_add(self.norm.num_parameters(self.mixer.hidden_size))
    }
}

impl Config for MambaBlockConfig {
    const NAME: &'static str = "MambaBlockConfig";

    fn check(&self) -> Result<()> {
        self.mixer.validated()
    }
}

/// A Mamba block.
#[derive(Debug, Clone, ModuleParameters)]
pub struct MambaBlock {
    /// The norm before the mixer.
    #[param]
    pub norm: Norm,
    /// The selective-SSM mixer.
    #[param]
    pub mixer: MambaMixer,
}

impl MambaBlock {
    /// A block initialised as Mamba does.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &MambaBlockConfig) -> Result<Self> {
        config.validated()?;
        Ok(MambaBlock {
            norm: Norm::new(
                lamina_core::to_dim(MambaBlockConfig::NAME, "hidden_size", config.mixer.hidden_size)?,
                config.norm,
            )?,
            mixer: MambaMixer::new(config.mixer)?,
        })
    }
}

impl<'a> Module<LayerInput<'a>> for MambaBlock {
    type Output = BlockOutput;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden] -> [B, L, hidden]`
    fn forward(&mut self, input: LayerInput<'a>) -> Result<BlockOutput> {
        let normed = self.norm.forward(input.x)?;
        let mixed = self.mixer.forward(LayerInput { x: &normed, ..input })?;
        Ok(BlockOutput { hidden_states: residual(input.x, mixed)? })
    }

    fn training_mode(&mut self, mode: bool) {
        self.mixer.training_mode(mode);
    }
}

impl Block for MambaBlock {
    fn make_cache(&self) -> Result<LayerCache> {
        Ok(LayerCache::Ssm(SsmState::new()))
    }
}

lamina_components::visit_fields!(MambaBlock { mixer });

#[cfg(test)]
mod tests {
    use mlx_rs::module::ModuleParameters;

    use super::*;

    #[test]
    fn names_and_shapes() {
        let config = MambaBlockConfig { mixer: MambaConfig::new(8, 2), norm: NormConfig::rms(1e-5) };
        let mut block = MambaBlock::new(&config).unwrap();
        let params = block.parameters().flatten();
        assert!(params.contains_key("norm.weight") && params.contains_key("mixer.A_log"));
        let x = mlx_rs::random::normal::<f32>(&[1, 4, 8], None, None, None).unwrap();
        let mut cache = block.make_cache().unwrap();
        let out = block.forward(LayerInput { x: &x, cache: Some(&mut cache), padding_mask: None }).unwrap();
        assert_eq!(out.hidden_states.shape(), &[1, 4, 8]);
        assert_eq!(cache.offset(), 4);
    }
}
