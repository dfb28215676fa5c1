//! Times square f32 matmuls on MLX's default device and prints GFLOP/s; the last line
//! reads `matmul_f32_<n>_gflops=<number>`.
//!
//! ```text
//! cargo run --release --example bench_matmul -- --size 1024 --iters 20
//! ```

use std::time::Instant;

use clap::Parser;
use lamina::core::runtime;
use mlx_rs::random;

/// Measures f32 matmul throughput.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Side of the square matrices.
    #[arg(long, default_value_t = 1024)]
    size: i32,
    /// Timed multiplications (after two untimed warm-ups).
    #[arg(long, default_value_t = 20)]
    iters: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.size < 1 || args.iters < 1 {
        return Err("--size and --iters must be positive".into());
    }
    let n = args.size;
    let key = random::key(0)?;
    let a = random::normal::<f32>(&[n, n], None, None, &key)?;
    let b = random::normal::<f32>(&[n, n], None, None, &key)?;
    let run = || -> Result<(), mlx_rs::error::Exception> { a.matmul(&b)?.eval() };
    run()?;
    run()?;
    let start = Instant::now();
    for _ in 0..args.iters {
        run()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let gflops = 2.0 * f64::from(n).powi(3) * f64::from(args.iters) / seconds / 1e9;
    println!(
        "MLX {}, BLAS {}",
        runtime::mlx_version(),
        runtime::blas_library().unwrap_or_else(|| "?".into())
    );
    if let Some(kernel) = runtime::blas_kernel() {
        println!("f32 GEMM: {kernel}");
    }
    println!(
        "{} x {n}x{n} f32 matmuls in {:.3} s ({:.2} ms each)",
        args.iters,
        seconds,
        seconds * 1e3 / f64::from(args.iters)
    );
    println!("matmul_f32_{n}_gflops={gflops:.1}");
    Ok(())
}
