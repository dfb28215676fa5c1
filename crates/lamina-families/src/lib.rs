//! # lamina-families
//!
//! The model families: thin layers of config parsing, presets, `sanitize` and
//! composition of the stack's blocks — no attention or SSM code of their own.
//!
//! | `model_type` | model | config |
//! | --- | --- | --- |
//! | `llama`, `mistral` | [`LlamaForCausalLM`] | [`LlamaConfig`] |
//! | `mamba` | [`MambaForCausalLM`] | [`MambaConfig`] |
//! | `llama4_text` (MobileLLM-R1) | [`MobileLlmForCausalLM`] | [`Llama4TextConfig`] -> [`MobileLlmConfig`] |
//! | `mobilellm` (classic) | [`MobileLlmForCausalLM`] | [`ClassicMobileLlmConfig`] -> [`MobileLlmConfig`] |
//!
//! Every model implements [`LanguageModel`]; the [`Registry`] maps `model_type` to a
//! builder and takes user-registered types too.
//!
//! ```
//! use lamina_families::{LlamaConfig, LlamaForCausalLM, LanguageModel};
//! use lamina_heads::ModelInput;
//! use mlx_rs::Array;
//!
//! let mut model = LlamaForCausalLM::new(LlamaConfig::tiny()).unwrap();
//! let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]);
//! let out = model.forward(ModelInput::new(&ids)).unwrap();
//! assert_eq!(out.logits.shape(), &[1, 3, 256]);
//! ```
#![deny(missing_docs)]

pub mod hf;
mod llama;
mod mamba;
mod mobilellm;
mod model;
mod preset;
mod quantize;
mod registry;

pub use llama::{LlamaConfig, LlamaForCausalLM, LlamaModelType};
pub use mamba::{AutoRank, MambaConfig, MambaForCausalLM, SsmCfg, TimeStepRank};
pub use mobilellm::{
    ClassicMobileLlmConfig, Llama4TextConfig, MOBILELLM_PRESETS, MobileLlmConfig, MobileLlmForCausalLM,
    MobileLlmVariant, get_mobilellm_config,
};
pub use model::{LanguageModel, ModelInfo, Weights};
pub use preset::PresetConfig;
pub use quantize::{CheckpointQuantization, QuantizeReport, estimate_model_size, quantize_model};
pub use registry::{Family, ModelBuilder, Registry, model_type, parse_config};
