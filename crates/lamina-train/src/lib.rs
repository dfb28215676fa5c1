//! Training: losses, optimizers, LoRA fine-tuning, gradient checkpointing, quantization.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
