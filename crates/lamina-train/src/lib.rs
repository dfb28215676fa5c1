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
#![deny(missing_docs)]

mod data;
mod error;
mod lora;
mod model;
mod optimizer;
mod schedule;
mod trainer;
mod weights;

pub use data::{Batch, Batching, TokenDataset, shuffled};
pub use error::{Result, TrainError};
pub use lamina_families::{CheckpointQuantization, QuantizeReport, estimate_model_size, quantize_model};
pub use lora::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, LoraTargets, adapter_weights, apply_lora, fuse_adapters,
    load_adapters, save_adapters,
};
pub use model::TrainableModel;
pub use optimizer::{OptimizerConfig, TrainOptimizer};
pub use schedule::LrSchedule;
pub use trainer::{StepLog, Trainer, TrainerConfig};
