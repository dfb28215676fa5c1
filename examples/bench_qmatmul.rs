//! lamina's CPU quantized matmul against MLX's own, on SmolLM2-135M's shapes (4- and 8-bit)
//! and Gemma 3 270M's (5-bit and its 262144-row 8-bit head), f16 scales as a GGUF file holds
//! them: one row (a decoded token), 4 and 16 rows (a decoding batch) and 128 rows (a prefill
//! chunk). Prints the fastest call's microseconds (lamina exact, lamina with 8-bit activations, MLX)
//! and the weight bytes per second of lamina's exact and 8-bit-activation kernels.
//!
//! `cargo run --release --example bench_qmatmul [-- --decode | --prompt]` (`--decode`: one
//! and four rows only; `--prompt`: 128 rows, lamina's kernels only: MLX's CPU product takes
//! minutes on the head).

use std::time::Instant;

use lamina_kernels::Activations;
use mlx_rs::{Array, ops};

/// The fastest of `reps` calls (this machine's timings vary by up to 2x between runs).
fn time(mut f: impl FnMut() -> Array, reps: usize) -> f64 {
    let _ = f().eval();
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            let _ = f().eval();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let decode_only = std::env::args().any(|a| a == "--decode");
    let prompt_only = std::env::args().any(|a| a == "--prompt");
    let rows: &[i32] = if decode_only {
        &[1, 4]
    } else if prompt_only {
        &[128]
    } else {
        &[1, 4, 16, 128]
    };
    println!(
        "{:>14} {:>5} {:>4} {:>5} {:>12} {:>10} {:>12} {:>8} {:>10} {:>10}",
        "shape",
        "bits",
        "rows",
        "group",
        "lamina us",
        "int8 us",
        "mlx us",
        "speedup",
        "exact GB/s",
        "int8 GB/s"
    );
    let smollm2 = [(576, 576), (1536, 576), (576, 1536), (49_152, 576)].map(|s| (s, &[4, 8][..]));
    let gemma =
        [(2048, 640), (640, 2048)].map(|s| (s, &[5, 8][..])).into_iter().chain([((262_144, 640), &[8][..])]);
    for ((n, k), widths) in smollm2.into_iter().chain(gemma) {
        for &bits in widths {
            let group = 32;
            let w = mlx_rs::random::normal::<f32>(&[n, k], None, None, None)?;
            let (packed, scales, biases) = ops::quantize(&w, group, bits)?;
            let (scales, biases) =
                (scales.as_dtype(mlx_rs::Dtype::Float16)?, biases.as_dtype(mlx_rs::Dtype::Float16)?);
            mlx_rs::transforms::eval([&packed, &scales, &biases])?;
            for &m in rows {
                let x = mlx_rs::random::normal::<f32>(&[m, k], None, None, None)?;
                x.eval()?;
                let reps = if prompt_only && n < 100_000 {
                    40
                } else if n > 100_000 {
                    20
                } else if m == 1 {
                    200
                } else {
                    10
                };
                let lamina = |activations| {
                    time(
                        || {
                            lamina_kernels::quantized_matmul(
                                &x,
                                &packed,
                                &scales,
                                &biases,
                                group,
                                bits,
                                activations,
                            )
                            .unwrap_or_else(|_| x.clone())
                        },
                        reps,
                    )
                };
                let ours = lamina(Activations::Exact);
                let int8 = lamina(Activations::Int8);
                let mlx = if prompt_only {
                    f64::NAN
                } else {
                    time(
                        || {
                            ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits)
                                .unwrap_or_else(|_| x.clone())
                        },
                        reps,
                    )
                };
                let bytes = (n as f64) * (k as f64) * bits as f64 / 8.0 + (n * k / group) as f64 * 4.0;
                println!(
                    "{:>14} {bits:>5} {m:>4} {group:>5} {:>12.1} {:>10.1} {:>12.1} {:>7.1}x {:>10.1} {:>10.1}",
                    format!("{n}x{k}"),
                    ours * 1e6,
                    int8 * 1e6,
                    mlx * 1e6,
                    mlx / ours,
                    bytes / ours / 1e9,
                    bytes / int8 / 1e9
                );
            }
        }
    }
    Ok(())
}
