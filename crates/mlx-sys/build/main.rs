//! Builds mlx-c 0.7.0 against an official MLX 0.32.2 wheel and generates the bindings
//! mlx-rs 0.33 expects.
//!
//! 1. check the prerequisites (one line naming the Debian package when one is missing);
//! 2. find MLX: `MLX_DIR`, or the pinned wheel installed once into `<target>/mlx-env`;
//! 3. take mlx-c's sources from the published `mlx-sys` 0.7.0 crate through cargo;
//! 4. build mlx-c with cmake (Release) and link it, OpenBLAS ahead of libmlx on Linux;
//! 5. run bindgen over mlx-c's headers.
//!
//! Measured facts behind each step: `notes/mlx-on-linux.md` in the project's shared notes.

mod bindings;
mod mlx;
mod mlx_c;
mod platform;
mod prereq;
mod shim;

use std::path::PathBuf;

use platform::Platform;

/// A build failure: one line for the user, shown by cargo as an error.
pub struct BuildError(pub String);

impl<T: std::fmt::Display> From<T> for BuildError {
    fn from(message: T) -> Self {
        BuildError(message.to_string())
    }
}

fn main() {
    if let Err(BuildError(message)) = run() {
        for line in message.lines() {
            println!("cargo::error={line}");
        }
    }
}

fn run() -> Result<(), BuildError> {
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=compat/mlx_compat.h");
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-env-changed=OPENBLAS_LIB_DIR");

    let platform = Platform::from_env()?;
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    // Force-included everywhere: the header tests the features itself (the half types off
    // aarch64, std::format where the C++ library lacks it; GCC 12 on aarch64 Linux does).
    let compat = Some(manifest_dir.join("compat").join("mlx_compat.h"));

    prereq::check_tools(&platform)?;
    let openblas = prereq::openblas_dir(&platform)?;
    let mlx = mlx::provision(&platform, &out_dir)?;
    let mlx_c_src = mlx_c::published_sources(&out_dir)?;
    let mlx_c_lib = mlx_c::build(&mlx_c_src, &mlx, compat.as_deref(), &out_dir)?;
    bindings::generate(&mlx_c_src, compat.as_deref(), &out_dir)?;

    println!("cargo:rustc-link-search=native={}", mlx_c_lib.display());
    println!("cargo:rustc-link-lib=static=mlxc");
    if let Some(dir) = &openblas {
        // First of all: its cblas_sgemm must win over OpenBLAS's (see compat/blas_shim.c).
        let shim = shim::build(&manifest_dir, &out_dir, dir)?;
        println!("cargo:rerun-if-changed=compat/blas_shim.c");
        println!("cargo:rustc-link-search=native={}", shim.display());
        println!("cargo:rustc-link-lib=dylib=mlx_blas_shim");
        println!("cargo:shimdir={}", shim.display());
    }
    if let Some(dir) = openblas {
        // Before libmlx: the wheel's libmlx needs cblas symbols, and the dynamic loader
        // binds them to the first library in the global scope that defines them. The
        // `#[used]` reference in lib.rs keeps `--as-needed` from dropping this one.
        if !dir.as_os_str().is_empty() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        println!("cargo:rustc-link-lib=dylib=openblas");
    }
    let lib_dir = mlx::exposed_lib_dir(&mlx, &out_dir)?;
    // Inside the target folder, cargo also puts this on the loader path of `cargo run`
    // and `cargo test`; `DEP_MLX_LIBDIR` lets the final package set an rpath.
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-lib=dylib={}", platform.cxx_runtime());
    println!("cargo:libdir={}", lib_dir.display());
    println!("cargo:include={}", mlx.include_dir().display());
    println!("cargo:version={}", mlx::MLX_VERSION);
    // Where the build keeps Python packages (the MLX wheel, and what dependents add).
    let env_dir = mlx::env_dir(&out_dir)?;
    println!("cargo:env_dir={}", env_dir.display());
    let python = env_dir.join("venv").join("bin").join("python3");
    if python.exists() {
        println!("cargo:python={}", python.display());
    }
    Ok(())
}

/// An environment variable cargo sets for every build script.
fn env(name: &str) -> Result<String, BuildError> {
    std::env::var(name).map_err(|_| BuildError(format!("cargo did not set {name}")))
}
