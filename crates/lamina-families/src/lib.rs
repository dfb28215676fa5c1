//! Model families (Llama, Mamba, MobileLLM), their presets and the model_type registry.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
