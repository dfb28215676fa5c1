//! Transformer, Mamba and hybrid blocks composed from components.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
