//! lamina's CPU quantized matmul against MLX's own, on SmolLM2-135M's shapes: one row
//! (a decoded token), 4 and 16 rows (a decoding batch) and 128 rows (a prefill chunk). Prints microseconds per call
//! (lamina exact, lamina with 8-bit activations, MLX) and the weight bytes lamina's exact
//! kernel reads per second.
//!
//! `cargo run --release --example bench_qmatmul`

use std::time::Instant;

use lamina_kernels::Activations;
use mlx_rs::{Array, ops};

fn time(mut f: impl FnMut() -> Array, reps: usize) -> f64 {
    let _ = f().eval();
    let start = Instant::now();
    for _ in 0..reps {
        let out = f();
        let _ = out.eval();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:>14} {:>5} {:>4} {:>5} {:>12} {:>10} {:>12} {:>8} {:>10}",
        "shape", "bits", "rows", "group", "lamina us", "int8 us", "mlx us", "speedup", "lamina GB/s"
    );
    for (n, k) in [(576, 576), (1536, 576), (576, 1536), (49_152, 576)] {
        for (bits, group) in [(4, 32), (8, 32)] {
            let w = mlx_rs::random::normal::<f32>(&[n, k], None, None, None)?;
            let (packed, scales, biases) = ops::quantize(&w, group, bits)?;
            mlx_rs::transforms::eval([&packed, &scales, &biases])?;
            for m in [1, 4, 16, 128] {
                let x = mlx_rs::random::normal::<f32>(&[m, k], None, None, None)?;
                x.eval()?;
                let reps = if m == 1 { 200 } else { 10 };
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
                let mlx = time(
                    || {
                        ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits)
                            .unwrap_or_else(|_| x.clone())
                    },
                    reps,
                );
                let bytes = (n as f64) * (k as f64) * bits as f64 / 8.0 + (n * k / group) as f64 * 8.0;
                println!(
                    "{:>14} {bits:>5} {m:>4} {group:>5} {:>12.1} {:>10.1} {:>12.1} {:>7.1}x {:>10.1}",
                    format!("{n}x{k}"),
                    ours * 1e6,
                    int8 * 1e6,
                    mlx * 1e6,
                    mlx / ours,
                    bytes / ours / 1e9
                );
            }
        }
    }
    Ok(())
}
