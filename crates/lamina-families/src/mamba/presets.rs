//! Mamba presets with the shapes of the state-spaces `mamba-*-hf` checkpoints.

use super::config::MambaConfig;

impl MambaConfig {
    /// A tiny model for tests: 2 layers, width 32, vocab 256.
    pub fn tiny() -> Self {
        MambaConfig::new(256, 32, 2)
    }

    /// mamba-130m.
    pub fn mamba_130m() -> Self {
        MambaConfig::new(50_280, 768, 24)
    }

    /// mamba-370m.
    pub fn mamba_370m() -> Self {
        MambaConfig::new(50_280, 1024, 48)
    }

    /// mamba-790m.
    pub fn mamba_790m() -> Self {
        MambaConfig::new(50_280, 1536, 48)
    }

    /// mamba-1.4b.
    pub fn mamba_1_4b() -> Self {
        MambaConfig::new(50_280, 2048, 48)
    }

    /// mamba-2.8b.
    pub fn mamba_2_8b() -> Self {
        MambaConfig::new(50_280, 2560, 64)
    }

    /// Every preset by name, as `inspect --preset mamba:<name>` takes them.
    pub fn presets() -> Vec<crate::hf::Preset<MambaConfig>> {
        vec![
            ("tiny", Self::tiny as fn() -> MambaConfig),
            ("mamba_130m", Self::mamba_130m),
            ("mamba_370m", Self::mamba_370m),
            ("mamba_790m", Self::mamba_790m),
            ("mamba_1_4b", Self::mamba_1_4b),
            ("mamba_2_8b", Self::mamba_2_8b),
        ]
    }
}
