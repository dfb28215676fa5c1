//! Attention, feed-forward, SSM, norms, embeddings, caches and LoRA: the pieces every architecture is built from.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
