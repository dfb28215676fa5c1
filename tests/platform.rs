//! How lamina's MLX is linked on this platform: the pinned version, OpenBLAS serving the
//! BLAS calls on Linux, and binaries that find libmlx without `LD_LIBRARY_PATH`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use lamina::core::runtime;

#[test]
fn the_pinned_mlx_version_is_loaded() {
    assert_eq!(runtime::mlx_version(), "0.32.2");
}

#[cfg(target_os = "linux")]
#[test]
fn blas_calls_resolve_to_openblas_not_the_reference_blas() {
    // Load libmlx and run an f32 matmul first, as a real program would.
    let a = mlx_rs::Array::ones::<f32>(&[8, 8]).unwrap();
    a.matmul(&a).unwrap().eval().unwrap();
    let library = runtime::blas_library().expect("cblas_sgemm is not in the global scope");
    assert!(library.contains("mlx_blas_shim"), "cblas_sgemm resolves to {library}, not lamina's shim");
    let sgemm = runtime::blas_symbol_library("sgemm_").expect("sgemm_ is not in the global scope");
    assert!(sgemm.contains("openblas"), "the shim's sgemm_ resolves to {sgemm}, not OpenBLAS");
}

/// Runs this test binary again, without `LD_LIBRARY_PATH`, executing only `marker`. It
/// starts only if the binary's rpath locates libmlx, as for a binary built by `cargo build`.
#[test]
fn binaries_find_libmlx_without_the_loader_path() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "marker", "--nocapture"])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH")
        .env_remove("DYLD_FALLBACK_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn marker() {
    assert_eq!(mlx_rs::Array::from_f32(2.0).square().unwrap().item_exact::<f32>(), 4.0);
}
