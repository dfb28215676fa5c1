//! Backbones: embeddings, a stack of blocks and a final norm.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
