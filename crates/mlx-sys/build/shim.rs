//! The BLAS shim (`compat/blas_shim.c`): a small shared library whose `cblas_sgemm`
//! routes single-row and single-column products to `sgemv`. It is linked before OpenBLAS
//! and libmlx, so it comes first in the global symbol scope and MLX's calls resolve to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BuildError;

/// Compiles `libmlx_blas_shim.so` into `<out_dir>/blas-shim` and returns that folder.
pub fn build(manifest_dir: &Path, out_dir: &Path, openblas: &Path) -> Result<PathBuf, BuildError> {
    let source = manifest_dir.join("compat").join("blas_shim.c");
    let dir = out_dir.join("blas-shim");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let library = dir.join("libmlx_blas_shim.so");
    let compiler = cc::Build::new().opt_level(2).cargo_metadata(false).get_compiler();
    let mut command = Command::new(compiler.path());
    command.args(["-shared", "-fPIC", "-O3", "-fopenmp-simd", "-Wall", "-o"]).arg(&library).arg(&source);
    if !openblas.as_os_str().is_empty() {
        command.arg(format!("-L{}", openblas.display()));
    }
    command.arg("-lopenblas");
    let status = command.status().map_err(|e| format!("cannot run {}: {e}", compiler.path().display()))?;
    if status.success() && library.exists() {
        Ok(dir)
    } else {
        Err(format!("compiling {} failed", source.display()).into())
    }
}
