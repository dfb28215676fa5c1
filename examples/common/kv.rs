//! The quantized KV cache's flags (mlx-lm's names), shared by `generate`, `chat` and `serve`.

use lamina::components::KvQuantization;

/// `--kv-bits`, `--kv-group-size`, `--quantized-kv-start`.
#[derive(clap::Args, Debug)]
pub struct KvArgs {
    /// Store keys and values quantized to this many bits (4 or 8; also 2, 3, 5, 6) once the
    /// cache passes --quantized-kv-start positions: long contexts in less memory.
    #[arg(long)]
    pub kv_bits: Option<i32>,
    /// Elements of the head dimension sharing a scale and a bias (32, 64 or 128).
    #[arg(long, default_value_t = 64)]
    pub kv_group_size: i32,
    /// Positions kept at full precision before the cache is quantized.
    #[arg(long, default_value_t = 5000)]
    pub quantized_kv_start: usize,
}

impl KvArgs {
    /// The quantization asked for, if any.
    pub fn quantization(&self) -> Option<KvQuantization> {
        self.kv_bits.map(|bits| KvQuantization {
            bits,
            group_size: self.kv_group_size,
            start: self.quantized_kv_start,
        })
    }
}
