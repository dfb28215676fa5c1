//! `--exact`, shared by `generate`, `chat`, `serve` and `bench_generate`.

use lamina::components::Activations;

/// `--exact`.
#[derive(clap::Args, Debug)]
pub struct ExactArgs {
    /// Quantized products read the activations exactly, as MLX does (mlx-lm's numbers). By
    /// default a GGUF file runs as llama.cpp runs it, the activations of its products
    /// rounded to 8 bits (about 1.7x faster decoding on AVX2), the output head's top 32
    /// logits recomputed exactly; MLX checkpoints are exact either way.
    #[arg(long)]
    pub exact: bool,
}

impl ExactArgs {
    /// `LoadOptions::activations`: exact when asked, else the format's own.
    pub fn activations(&self) -> Option<Activations> {
        self.exact.then_some(Activations::Exact)
    }
}
