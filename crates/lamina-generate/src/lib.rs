//! Text generation: sampling, the generation loop, streaming and chat templates.
//!
//! Part of [lamina](https://example.invalid/lamina); see the workspace README.
