//! mlx-c: its sources come from the published `mlx-sys` 0.7.0 crate (never copied into
//! this repository) and are built with cmake against the provisioned MLX.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mlx::Mlx;
use crate::{env, BuildError};

/// The published crate whose `src/mlx-c` holds the mlx-c sources mlx-rs 0.33 was made for.
const PUBLISHED: &str = "0.7.0";

/// Asks cargo for the published crate: a throwaway manifest in OUT_DIR depends on it, and
/// `cargo metadata` downloads it (without building it) and tells where it was unpacked.
pub fn published_sources(out_dir: &Path) -> Result<PathBuf, BuildError> {
    let dir = out_dir.join("mlx-c-fetch");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The empty `[workspace]` keeps cargo from adopting this manifest into our workspace.
    let manifest = format!(
        "[package]\nname = \"lamina-mlx-c-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         [lib]\npath = \"lib.rs\"\n\
         [dependencies]\nmlx-sys = {{ version = \"={PUBLISHED}\", default-features = false }}\n\
         [workspace]\n"
    );
    write(&dir.join("Cargo.toml"), &manifest)?;
    write(&dir.join("lib.rs"), "")?;
    let cargo = env("CARGO")?;
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cannot fetch mlx-sys {PUBLISHED} (it carries mlx-c's sources): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("unreadable `cargo metadata` output: {e}"))?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "mlx-sys" && p["version"] == PUBLISHED)
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or_else(|| format!("`cargo metadata` did not list mlx-sys {PUBLISHED}"))?;
    let src = Path::new(manifest_path)
        .parent()
        .map(|root| root.join("src").join("mlx-c"))
        .filter(|src| src.join("CMakeLists.txt").exists())
        .ok_or_else(|| format!("mlx-sys {PUBLISHED} at {manifest_path} holds no src/mlx-c"))?;
    Ok(src)
}

/// Builds the static `libmlxc.a` (Release, whatever the Rust profile: mlx-c is a thin
/// wrapper and there is no reason to debug third-party C++) and returns its folder.
pub fn build(src: &Path, mlx: &Mlx, compat: Option<&Path>, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let mut config = cmake::Config::new(src);
    config
        .out_dir(out_dir.join("mlx-c"))
        .profile("Release")
        .define("MLX_C_USE_SYSTEM_MLX", "ON")
        .define("MLX_DIR", mlx.cmake_dir())
        .define("MLX_C_BUILD_EXAMPLES", "OFF")
        .define("BUILD_SHARED_LIBS", "OFF")
        .build_target("mlxc");
    if let Some(header) = compat {
        config.cxxflag(format!("-include {}", header.display()));
    }
    let dst = config.build();
    let lib_dir = dst.join("build");
    if lib_dir.join("libmlxc.a").exists() {
        Ok(lib_dir)
    } else {
        Err(format!("the mlx-c build left no libmlxc.a in {}", lib_dir.display()).into())
    }
}

fn write(path: &Path, text: &str) -> Result<(), BuildError> {
    // Unchanged contents are not rewritten, so cargo's lock file and mtimes stay put.
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}
