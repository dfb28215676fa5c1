//! Prerequisites, each checked up front so that a missing one stops the build with one
//! line naming the package to install instead of a page of cmake or bindgen output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::platform::Platform;
use crate::BuildError;

/// Fails with an install hint when cmake or libclang is missing.
pub fn check_tools(platform: &Platform) -> Result<(), BuildError> {
    if !runs("cmake", &["--version"]) {
        return Err(missing("cmake (builds mlx-c)", "cmake", platform));
    }
    if !libclang_found() {
        return Err(missing("libclang (bindgen parses mlx-c's headers)", "libclang-dev", platform));
    }
    Ok(())
}

/// Fails with an install hint when python3 cannot make a virtual environment.
pub fn check_python(platform: &Platform) -> Result<(), BuildError> {
    if runs("python3", &["-c", "import venv, ensurepip"]) {
        Ok(())
    } else {
        Err(missing("python3 with venv (installs the MLX wheel; or set MLX_DIR)", "python3-venv", platform))
    }
}

/// The folder holding `libopenblas.so` on Linux (empty when it is on the linker's default
/// path), `None` where OpenBLAS is not used.
pub fn openblas_dir(platform: &Platform) -> Result<Option<PathBuf>, BuildError> {
    if !platform.uses_openblas() {
        return Ok(None);
    }
    if let Some(dir) = std::env::var_os("OPENBLAS_LIB_DIR").map(PathBuf::from) {
        return if dir.join("libopenblas.so").exists() {
            Ok(Some(dir))
        } else {
            Err(format!("OPENBLAS_LIB_DIR={} holds no libopenblas.so", dir.display()).into())
        };
    }
    let found = system_lib_dirs().into_iter().any(|dir| dir.join("libopenblas.so").exists());
    if found {
        Ok(Some(PathBuf::new()))
    } else {
        Err(missing("OpenBLAS (fast f32 matmul on the CPU)", "libopenblas-dev", platform))
    }
}

fn missing(what: &str, debian_package: &str, platform: &Platform) -> BuildError {
    let hint = match platform {
        Platform::MacMetal => {
            format!("install it (e.g. `brew install {}`)", debian_package.trim_end_matches("-dev"))
        }
        _ => format!("install it with `apt-get install {debian_package}`"),
    };
    BuildError(format!("lamina's mlx-sys needs {what}, which was not found: {hint}"))
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn system_lib_dirs() -> Vec<PathBuf> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    [format!("/usr/lib/{arch}-linux-gnu"), "/usr/lib64".into(), "/usr/lib".into(), "/usr/local/lib".into()]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// Looks where clang-sys (bindgen's loader) looks: `LIBCLANG_PATH`, `llvm-config`, the
/// system library folders and Debian's `/usr/lib/llvm-*`.
fn libclang_found() -> bool {
    if cfg!(target_os = "macos") {
        return true; // Xcode's command line tools always carry libclang.
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBCLANG_PATH").map(PathBuf::from).into_iter().collect();
    if let Ok(out) = Command::new("llvm-config").arg("--libdir").output() {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    dirs.extend(system_lib_dirs());
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                .map(|e| e.path().join("lib")),
        );
    }
    dirs.iter().any(|dir| holds_libclang(dir))
}

fn holds_libclang(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        (name.starts_with("libclang.so") || name.starts_with("libclang-"))
            && !name.starts_with("libclang-cpp")
            && name.contains(".so")
    })
}
