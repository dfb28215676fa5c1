//! # lamina
//!
//! Layered, composable language models on Apple's MLX, through `mlx-rs`, on Linux (CPU,
//! CUDA) and macOS (Metal). Architectures are composed from layers that each live in
//! their own crate, and this facade re-exports them all:
//!
//! ```text
//! Components -> Blocks -> Backbones -> Heads -> Models
//!                                \       /
//!                                 Families (Llama, Mamba, MobileLLM)
//! ```
//!
//! | module | crate | what it holds |
//! | --- | --- | --- |
//! | [`core`] | `lamina-core` | configs, closed-set enums, errors, typed outputs |
//! | [`components`] | `lamina-components` | attention, feed-forward, SSM, norms, caches, LoRA |
//! | [`blocks`] | `lamina-blocks` | transformer, Mamba and hybrid blocks |
//! | [`backbones`] | `lamina-backbones` | block stacks with embeddings and final norm |
//! | [`heads`] | `lamina-heads` | LM, classification and regression heads |
//! | [`families`] | `lamina-families` | Llama, Mamba, MobileLLM and the `model_type` registry |
//! | [`loader`] | `lamina-loader` | async checkpoint loading |
//! | [`generate`] | `lamina-generate` | sampling, the generation loop, chat templates |
//! | [`train`] | `lamina-train` | training, LoRA fine-tuning, quantization |
#![deny(missing_docs)]

pub use lamina_backbones as backbones;
pub use lamina_blocks as blocks;
pub use lamina_components as components;
pub use lamina_core as core;
pub use lamina_families as families;
pub use lamina_generate as generate;
pub use lamina_heads as heads;
pub use lamina_loader as loader;
pub use lamina_train as train;
pub use mlx_rs;
