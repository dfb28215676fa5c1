//! Compiles the C++ kernels against the MLX headers of the wheel `mlx-sys` built with.

fn main() {
    println!("cargo:rerun-if-changed=cpp");
    println!("cargo:rerun-if-env-changed=DEP_MLX_INCLUDE");
    let Some(include) = std::env::var_os("DEP_MLX_INCLUDE") else {
        println!("cargo::error=lamina-kernels needs DEP_MLX_INCLUDE from mlx-sys (the MLX headers)");
        return;
    };
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        // The operations, then one file per instruction set (each compiles to nothing
        // off its architecture) and the start-up choice among them.
        .file("cpp/quantized_matmul.cpp")
        .file("cpp/half_matmul.cpp")
        .file("cpp/fused.cpp")
        .file("cpp/rows.cpp")
        .file("cpp/quantized_decode.cpp")
        .file("cpp/decode_block.cpp")
        .file("cpp/norm_rope.cpp")
        .file("cpp/weights.cpp")
        .file("cpp/portable.cpp")
        .file("cpp/blocks.cpp")
        .file("cpp/avx2.cpp")
        .file("cpp/avx2_int8.cpp")
        .file("cpp/avx2_attention.cpp")
        .file("cpp/avx2_blocks.cpp")
        .file("cpp/avx2_small_blocks.cpp")
        .file("cpp/avx512.cpp")
        .file("cpp/avx512_vbmi.cpp")
        .file("cpp/avx512_vnni_int8.cpp")
        .file("cpp/avx512_vnni_blocks.cpp")
        .file("cpp/avx512_vnni_small_blocks.cpp")
        .file("cpp/neon.cpp")
        .file("cpp/neon_int8.cpp")
        .file("cpp/neon_dotprod.cpp")
        .file("cpp/dispatch.cpp")
        .include(include)
        .opt_level(3)
        // Release code even in debug builds: the kernels are the hot path of decoding.
        .debug(false)
        .flag_if_supported("-fvisibility=hidden")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-psabi")
        // GCC 12's AVX-512 headers trip their own (un)initialized-value warnings.
        .flag_if_supported("-Wno-maybe-uninitialized")
        .flag_if_supported("-Wno-uninitialized")
        // Lets `omp simd` loops reorder their sums (no OpenMP runtime).
        .flag_if_supported("-fopenmp-simd");
    build.compile("lamina_kernels");
    // `cblas_sgemm`: OpenBLAS on Linux (mlx-sys links it ahead of libmlx), Accelerate on
    // Apple platforms.
    if std::env::var("CARGO_CFG_TARGET_VENDOR").as_deref() == Ok("apple") {
        println!("cargo:rustc-link-lib=framework=Accelerate");
    }
}
