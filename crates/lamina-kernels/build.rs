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
        .file("cpp/quantized_matmul.cpp")
        .file("cpp/half_matmul.cpp")
        .file("cpp/fused.cpp")
        .file("cpp/norm_rope.cpp")
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
}
