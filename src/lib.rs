//! # lamina
//!
//! Layered, composable language models on Apple's MLX, through `mlx-rs`, on Linux (CPU,
//! CUDA) and macOS (Metal). Architectures are composed from layers that each live in
//! their own crate, and this facade re-exports them all:
//!
//! ```text
//! Components -> Blocks -> Backbones -> Heads -> Models
//!                                \       /
//!                                 Families (Llama, Qwen, Gemma, Phi-3, SmolLM3, Mamba, MobileLLM)
//! ```
//!
//! Load a checkpoint and generate (here a tiny Qwen3 fixture; any Hugging Face folder,
//! cache entry or `.gguf` file loads the same way):
//!
//! ```
//! use lamina::generate::{GenerateParams, generate};
//! use lamina::loader::{LoadOptions, load_blocking};
//!
//! let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/checkpoints/qwen3_qk_norm");
//! let mut loaded = load_blocking(folder, LoadOptions::default()).unwrap();
//! let params = GenerateParams { max_new_tokens: 8, ..GenerateParams::default() };
//! let out = generate(loaded.model.as_mut(), loaded.tokenizer.as_ref(), &[5, 17, 42], &params).unwrap();
//! assert_eq!(out.tokens.len(), 8);
//! ```
//!
//! Compose an architecture from components and run it:
//!
//! ```
//! use lamina::backbones::{HybridBackbone, HybridBackboneConfig};
//! use lamina::blocks::{HybridBlockConfig, HybridMixerConfig};
//! use lamina::components::{AttentionConfig, FeedForwardConfig, MambaConfig, NormConfig};
//! use lamina::heads::{CausalLm, ModelInput};
//! use mlx_rs::Array;
//! use mlx_rs::module::Module;
//!
//! // One attention layer and one Mamba layer, each followed by SwiGLU.
//! let layer = |mixer| HybridBlockConfig { mixer, ffn: FeedForwardConfig::swiglu(32, 64), norm: NormConfig::rms(1e-6) };
//! let config = HybridBackboneConfig {
//!     vocab_size: 100,
//!     layers: vec![
//!         layer(HybridMixerConfig::Attention(AttentionConfig::new(32, 4, 2))),
//!         layer(HybridMixerConfig::Mamba(MambaConfig::new(32, 2))),
//!     ],
//!     final_norm: NormConfig::rms(1e-6),
//!     gradient_checkpointing: false,
//! };
//! let mut model = CausalLm::new(HybridBackbone::new(&config).unwrap(), true).unwrap();
//! let ids = Array::from_slice(&[1i32, 2, 3, 4], &[1, 4]);
//! let out = model.forward(ModelInput::new(&ids)).unwrap();
//! assert_eq!(out.logits.shape(), &[1, 4, 100]);
//! ```
//!
//! | module | crate | what it holds |
//! | --- | --- | --- |
//! | [`core`] | `lamina-core` | configs, closed-set enums, errors, typed outputs |
//! | [`components`] | `lamina-components` | attention, feed-forward, SSM, norms, caches, LoRA |
//! | [`blocks`] | `lamina-blocks` | transformer, Mamba and hybrid blocks |
//! | [`backbones`] | `lamina-backbones` | block stacks with embeddings and final norm |
//! | [`heads`] | `lamina-heads` | LM, classification and regression heads |
//! | [`families`] | `lamina-families` | the families as specs (Llama, Qwen2, Qwen3, Gemma 2/3, Phi-3, SmolLM3, Mamba, MobileLLM) and the `model_type` registry |
//! | [`kernels`] | `lamina-kernels` | CPU kernels as MLX primitives (quantized matmul) |
//! | [`loader`] | `lamina-loader` | async checkpoint loading |
//! | [`generate`] | `lamina-generate` | sampling, the generation loop, continuous batching, prompt caching, chat templates |
//! | [`server`] | `lamina-server` | an OpenAI-compatible HTTP server (chat, completions, streaming, tool calls) |
//! | [`train`] | `lamina-train` | training, LoRA fine-tuning, quantization |
#![deny(missing_docs)]

pub use lamina_backbones as backbones;
pub use lamina_blocks as blocks;
pub use lamina_components as components;
pub use lamina_core as core;
pub use lamina_families as families;
pub use lamina_generate as generate;
pub use lamina_heads as heads;
pub use lamina_kernels as kernels;
pub use lamina_loader as loader;
pub use lamina_server as server;
pub use lamina_train as train;
pub use mlx_rs;
