//! The engine's smoke run: reports the MLX runtime lamina linked and checks a few
//! computations against plain Rust. Exits non-zero if any result is wrong.
//!
//! ```text
//! cargo run --release --example smoke
//! ```

use clap::Parser;
use lamina::core::runtime;
use mlx_rs::{Array, fast};

/// Checks that MLX builds, links and computes correctly on this machine.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Side of the square matrices multiplied in the check.
    #[arg(long, default_value_t = 256)]
    size: i32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.size < 1 {
        return Err(format!("--size must be positive, got {}", args.size).into());
    }
    println!("MLX {}", runtime::mlx_version());
    println!("BLAS {}", runtime::blas_library().unwrap_or_else(|| "(not visible on this platform)".into()));
    if let Some(kernel) = runtime::blas_kernel() {
        println!("f32 GEMM: {kernel}");
    }
    println!(
        "kernels {} ({} threads; LAMINA_ISA caps the tier)",
        lamina::kernels::isa(),
        lamina::kernels::threads()
    );

    let n = args.size;
    let x = Array::from_iter((0..n * n).map(|i| ((i % 97) as f32 - 48.0) / 97.0), &[n, n]);
    let identity = Array::eye::<f32>(n, None, None)?;
    let product = x.matmul(&identity)?;
    let matmul_ok = product.all_close(&x, 1e-6, 1e-6, None)?;
    println!("matmul  {n}x{n} @ I == x: {matmul_ok}");

    let ones = Array::ones::<f32>(&[2, 8])?;
    let normed = fast::rms_norm(&ones, None, 0.0)?;
    let norm_ok = normed.all_close(&ones, 1e-6, 1e-6, None)?;
    println!("rms_norm(ones) == ones: {norm_ok}");

    if matmul_ok && norm_ok { Ok(()) } else { Err("an MLX computation gave a wrong result".into()) }
}
