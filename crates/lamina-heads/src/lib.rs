//! Heads on top of a backbone: language modelling, classification, regression.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
