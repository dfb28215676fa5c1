//! Asynchronous loading of checkpoints: safetensors, sharded indexes, GGUF, tokenizers.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
