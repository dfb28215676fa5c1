//! Rust bindings for mlx-c's public headers, generated as the published crate does.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::BuildError;

/// Writes `$OUT_DIR/bindings.rs` for every header in `mlx/c/`.
pub fn generate(mlx_c: &Path, compat: Option<&Path>, out_dir: &Path) -> Result<(), BuildError> {
    let headers = headers(mlx_c)?;
    let mut builder = bindgen::Builder::default()
        .rust_target("1.73.0".parse().map_err(|e| format!("bad rust target: {e:?}"))?)
        .clang_arg(format!("-I{}", mlx_c.display()))
        // bindgen's `c_ulong` sizes trip rustc's suspicious_runtime_symbol_definitions.
        .blocklist_function("malloc")
        .blocklist_function("realloc")
        // Declared in lib.rs with the string type mlx-rs passes on every target.
        .blocklist_function("mlx_pad");
    if let Some(header) = compat {
        builder = builder.clang_arg("-include").clang_arg(header.display().to_string());
    }
    for header in &headers {
        builder = builder.header(header.display().to_string());
    }
    let bindings = builder.generate().map_err(|e| format!("bindgen failed on mlx-c's headers: {e}"))?;
    let file = out_dir.join("bindings.rs");
    bindings.write_to_file(&file).map_err(|e| format!("cannot write {}: {e}", file.display()).into())
}

fn headers(mlx_c: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let dir = mlx_c.join("mlx").join("c");
    let entries = fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut headers: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension() == Some(OsStr::new("h")))
        .collect();
    headers.sort();
    Ok(headers)
}
