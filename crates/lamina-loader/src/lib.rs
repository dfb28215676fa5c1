//! # lamina-loader
//!
//! Loads a checkpoint into a lamina model, asynchronously (tokio):
//!
//! 1. resolves the path ([`resolve`]): a folder, a Hugging Face cache snapshot or entry, or
//!    a `.gguf` file;
//! 2. reads `config.json`, picks the family from `model_type` through the
//!    [`Registry`](lamina_families::Registry), validates the config;
//! 3. reads every safetensors header, estimates memory and refuses above the caller's
//!    limit before any tensor is read;
//! 4. reads the shards concurrently (memory-mapped), casting when asked, reporting
//!    [`Progress`];
//! 5. applies the family's `sanitize`, then the weights, strictly: a [`LoadReport`] of
//!    missing, unexpected and mis-shaped tensors, an error unless the caller allows it;
//! 6. reads `generation_config.json` and the tokenizer.
//!
//! Every failure is a [`LoaderError`] naming the file.
//!
//! ```
//! let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/checkpoints/qwen3_qk_norm");
//! let loaded = lamina_loader::load_blocking(folder, lamina_loader::LoadOptions::default()).unwrap();
//! assert!(loaded.report.is_clean());
//! assert_eq!(loaded.model_type(), "qwen3");
//! assert_eq!(loaded.model.info().family, lamina_families::Family::Qwen3);
//!
//! // A limit below what the config describes refuses before anything is read.
//! let options = lamina_loader::LoadOptions { memory_limit: Some(1000), ..Default::default() };
//! let err = lamina_loader::load_blocking(folder, options).unwrap_err();
//! assert!(matches!(err, lamina_loader::LoaderError::MemoryLimit { .. }));
//! ```
#![deny(missing_docs)]

mod catalog;
mod error;
mod generation;
pub mod gguf;
#[cfg(feature = "hub")]
pub mod hub;
mod inspect;
mod json;
mod load;
mod locate;
mod pipeline;
mod progress;
mod report;
mod resolve;
mod safetensors;
mod save;
mod tokenizer;

pub use catalog::{Format, KNOWN_MODELS, KnownModel, ModelSpec, known_model};
pub use error::{LoaderError, Result};
pub use generation::GenerationConfig;
pub use inspect::{Inspection, inspect};
pub use json::{read_json, write_json};
pub use load::{LoadOptions, LoadedModel, load, load_blocking, read_weights};
pub use locate::locate;
pub use progress::{Progress, ProgressSink};
pub use report::{LoadReport, ShapeMismatch, apply, compare};
pub use resolve::{Checkpoint, resolve};
pub use safetensors::{TensorFile, TensorInfo};
pub use save::save_checkpoint;
pub use tokenizer::Tokenizer;
