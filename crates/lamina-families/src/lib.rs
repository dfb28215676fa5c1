//! # lamina-families
//!
//! The model families, each a thin spec over the stack's layers — no attention or SSM
//! code of their own. A family is a typed config implementing [`FamilyConfig`] (how it
//! maps onto a backbone, its `sanitize`), a row in [`FAMILIES`] (its `model_type`s, how
//! they are read — for the decoder-only transformers a [`DecoderSpec`]: what the family
//! adds over Llama — and its presets). One
//! generic [`FamilyModel`] implements [`LanguageModel`] for all of them.
//!
//! | family | `model_type` | config |
//! | --- | --- | --- |
//! | Llama (2/3.x, Mistral, TinyLlama, SmolLM2, Code Llama) | `llama`, `mistral` | [`DecoderConfig`] |
//! | Qwen2 / Qwen2.5 | `qwen2` | [`DecoderConfig`] |
//! | Qwen3 | `qwen3` | [`DecoderConfig`] |
//! | Gemma 2 | `gemma2` | [`DecoderConfig`] |
//! | Gemma 3 | `gemma3_text`, `gemma3` (`text_config`) | [`DecoderConfig`] |
//! | Phi-3 | `phi3` | [`DecoderConfig`] |
//! | SmolLM3 | `smollm3` | [`DecoderConfig`] |
//! | Mamba | `mamba` | [`MambaConfig`] |
//! | MobileLLM-R1, MobileLLM | `llama4_text`, `mobilellm` | [`Llama4TextConfig`], [`ClassicMobileLlmConfig`] -> [`MobileLlmConfig`] |
//!
//! The [`Registry`] maps `model_type` to a model through that table and takes
//! user-registered types too; [`preset`] looks up `family:name`.
//!
//! ```
//! use lamina_families::{LanguageModel, LlamaConfig, LlamaForCausalLM};
//! use lamina_heads::ModelInput;
//! use mlx_rs::Array;
//!
//! let mut model = LlamaForCausalLM::new(LlamaConfig::tiny()).unwrap();
//! let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]);
//! let out = model.forward(ModelInput::new(&ids)).unwrap();
//! assert_eq!(out.logits.shape(), &[1, 3, 256]);
//! ```
#![deny(missing_docs)]

pub mod decoder;
mod family;
mod family_model;
pub mod hf;
mod mamba;
mod mobilellm;
mod model;
mod preset;
mod quantize;
mod registry;

pub use decoder::{
    DecoderConfig, DecoderForCausalLM, DecoderSpec, EmbedScale, FamilyKey, LlamaConfig, LlamaForCausalLM,
    WindowLayers,
};
pub use family::{AnyConfig, Family, FamilyConfig, ModelType};
pub use family_model::FamilyModel;
pub use mamba::{AutoRank, MambaConfig, MambaForCausalLM, SsmCfg, TimeStepRank};
pub use mobilellm::{
    ClassicMobileLlmConfig, Llama4TextConfig, MobileLlmConfig, MobileLlmForCausalLM, MobileLlmVariant,
    get_mobilellm_config,
};
pub use model::{LanguageModel, ModelInfo, Weights};
pub use preset::preset;
pub use quantize::{CheckpointQuantization, QuantizeReport, estimate_model_size, quantize_model};
pub use registry::{
    Architecture, FAMILIES, FamilyEntry, ModelBuilder, NamedConfig, Registry, decoder_spec, family_entry,
    family_of, model_type, parse_config, row_of,
};
