//! # lamina-train
//!
//! Training for any [`LanguageModel`](lamina_families::LanguageModel), and for any
//! backbone under an LM, classification or regression head ([`TrainableModel`]):
//!
//! - [`Trainer`]: value and gradient over the trainable parameters only, AdamW or SGD
//!   ([`TrainOptimizer`]), clipping by global norm, warm-up + cosine [`LrSchedule`],
//!   gradient accumulation, held-out evaluation, checkpoints it resumes from exactly;
//! - [`TokenDataset`]: token sequences batched by padding (masked) or packing;
//! - LoRA: [`apply_lora`] by layer name, [`save_adapters`]/[`load_adapters`] in mlx-lm's
//!   layout, [`fuse_adapters`]; on a quantized base it is QLoRA;
//! - quantization: [`quantize_model`] (re-exported from lamina-families, which the loader
//!   shares to read quantized checkpoints).
//!
//! ```
//! use lamina_components::LoraConfig;
//! use lamina_families::{LanguageModel, LlamaConfig, LlamaForCausalLM};
//! use lamina_train::{LoraTargets, apply_lora};
//!
//! let mut model: Box<dyn LanguageModel> = Box::new(LlamaForCausalLM::new(LlamaConfig::tiny()).unwrap());
//! let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() };
//! let adapted = apply_lora(model.as_mut(), &LoraTargets::query_value(), lora).unwrap();
//! // q_proj (64 -> 64) and v_proj (64 -> 32, two KV heads) of both blocks get
//! // `lora_a [in, 4]` and `lora_b [4, out]`; everything else is frozen.
//! assert_eq!(adapted.len(), 4);
//! let trainable = lamina_core::count_trainable_parameters(&model);
//! assert_eq!(trainable, 2 * ((64 * 4 + 4 * 64) + (64 * 4 + 4 * 32)));
//! ```
#![deny(missing_docs)]

mod data;
mod datasets;
mod error;
mod lora;
mod model;
mod optimizer;
mod precision;
mod schedule;
mod trainer;
mod weights;

pub use data::{Batch, Batching, TokenDataset, shuffled};
pub use datasets::{DataFormat, DatasetFolder, Encoder, JsonlSet, Record};
pub use error::{Result, TrainError};
pub use lamina_families::{CheckpointQuantization, QuantizeReport, estimate_model_size, quantize_model};
pub use lora::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, FineTuneType, LoraTargets, adapter_weights,
    apply_fine_tuning, apply_lora, fuse_adapters, load_adapters, save_adapters,
};
pub use model::TrainableModel;
pub use optimizer::{OptimizerConfig, TrainOptimizer};
pub use precision::{LossScale, Precision, cast_frozen};
pub use schedule::LrSchedule;
pub use trainer::{StepLog, Trainer, TrainerConfig};
