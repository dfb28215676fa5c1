//! Finds MLX: an existing install named by `MLX_DIR`, or the official wheel pinned to the
//! version mlx-c 0.7.0 matches, installed once into `<target>/mlx-env` and reused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::platform::Platform;
use crate::{prereq, BuildError};

/// The MLX release mlx-c 0.7.0 compiles against (0.32.4 changed `gather_qmm`).
pub const MLX_VERSION: &str = "0.32.2";

/// An MLX install: `lib/`, `include/` and `share/cmake/MLX/` under one prefix.
pub struct Mlx {
    prefix: PathBuf,
}

impl Mlx {
    /// The folder holding libmlx.
    pub fn lib_dir(&self) -> PathBuf {
        self.prefix.join("lib")
    }

    /// The folder holding MLX's C++ headers.
    pub fn include_dir(&self) -> PathBuf {
        self.prefix.join("include")
    }

    /// The folder holding `MLXConfig.cmake`, for cmake's `MLX_DIR`.
    pub fn cmake_dir(&self) -> PathBuf {
        self.prefix.join("share").join("cmake").join("MLX")
    }
}

/// `MLX_DIR` when set, otherwise the cached wheel (installed on first use).
pub fn provision(platform: &Platform, out_dir: &Path) -> Result<Mlx, BuildError> {
    let mlx = match std::env::var_os("MLX_DIR") {
        Some(dir) => from_mlx_dir(PathBuf::from(dir))?,
        None => from_wheel(platform, &target_dir(out_dir)?)?,
    };
    let library = mlx.lib_dir().join(platform.mlx_library());
    if !library.exists() {
        return Err(format!("MLX at {} has no {}", mlx.prefix.display(), library.display()).into());
    }
    check_version(&mlx)?;
    Ok(mlx)
}

/// Accepts the install prefix or its `share/cmake/MLX` folder.
fn from_mlx_dir(dir: PathBuf) -> Result<Mlx, BuildError> {
    if dir.join("share/cmake/MLX/MLXConfig.cmake").exists() {
        return Ok(Mlx { prefix: dir });
    }
    if dir.join("MLXConfig.cmake").exists() {
        if let Some(prefix) = dir.ancestors().nth(3) {
            return Ok(Mlx { prefix: prefix.to_path_buf() });
        }
    }
    Err(format!(
        "MLX_DIR={} is not an MLX install (no share/cmake/MLX/MLXConfig.cmake); \
         point it at the `mlx` folder of an installed {} wheel",
        dir.display(),
        "mlx-cpu/mlx-cuda-12/mlx-metal"
    )
    .into())
}

fn check_version(mlx: &Mlx) -> Result<(), BuildError> {
    let file = mlx.cmake_dir().join("MLXConfigVersion.cmake");
    let text = fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let expected = format!("set(PACKAGE_VERSION \"{MLX_VERSION}\")");
    if text.contains(&expected) {
        Ok(())
    } else {
        let found = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("set(PACKAGE_VERSION \""))
            .map_or("unknown", |rest| rest.trim_end_matches("\")"));
        Err(format!(
            "MLX at {} is version {found}; mlx-c 0.7.0 (mlx-rs 0.33) needs exactly {MLX_VERSION}",
            mlx.prefix.display()
        )
        .into())
    }
}

/// The cargo target folder: OUT_DIR is `<target>/<profile>/build/mlx-sys-<hash>/out`.
/// The wheel is installed there once, shared by debug and release builds.
fn target_dir(out_dir: &Path) -> Result<PathBuf, BuildError> {
    out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()).into())
}

/// The folder of libmlx as the final binaries should see it: inside the profile folder
/// (`<target>/<profile>/mlx-env`, a symlink to the folder holding the install), because
/// cargo puts only native paths under the profile folder on the loader path of `cargo run`
/// and `cargo test`. Linking the install's parent keeps the wheel's relative layout, which
/// libmlx's `$ORIGIN/../../mlx_cpu.libs` RUNPATH relies on.
pub fn exposed_lib_dir(mlx: &Mlx, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let (Some(parent), Some(name)) = (mlx.prefix.parent(), mlx.prefix.file_name()) else {
        return Ok(mlx.lib_dir());
    };
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return Ok(mlx.lib_dir());
    };
    let link = profile_dir.join("mlx-env");
    if fs::read_link(&link).ok().as_deref() != Some(parent) {
        // Made beside and renamed over, so a concurrent build never sees no link.
        let staging = profile_dir.join(format!(".mlx-env-{}", std::process::id()));
        let _ = fs::remove_file(&staging);
        symlink(parent, &staging).map_err(|e| format!("cannot link {}: {e}", staging.display()))?;
        fs::rename(&staging, &link).map_err(|e| format!("cannot create {}: {e}", link.display()))?;
    }
    Ok(link.join(name).join("lib"))
}

#[cfg(unix)]
fn symlink(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

#[cfg(not(unix))]
fn symlink(_original: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("MLX wheels exist for Linux and macOS only"))
}

/// The build's environment folder, `<target>/mlx-env`.
pub fn env_dir(out_dir: &Path) -> Result<PathBuf, BuildError> {
    Ok(target_dir(out_dir)?.join("mlx-env"))
}

fn from_wheel(platform: &Platform, target: &Path) -> Result<Mlx, BuildError> {
    let env_dir = target.join("mlx-env");
    let site = env_dir.join(format!("{}-{MLX_VERSION}", platform.wheel()));
    let mlx = Mlx { prefix: site.join("mlx") };
    if mlx.lib_dir().join(platform.mlx_library()).exists() {
        return Ok(mlx);
    }
    prereq::check_python(platform)?;
    let python = venv_python(&env_dir)?;
    // Install beside the final folder and rename, so that an interrupted or concurrent
    // build never leaves a half-installed wheel where the next build would trust it.
    let staging = env_dir.join(format!(".staging-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let requirement = format!("{}=={MLX_VERSION}", platform.wheel());
    println!("cargo:warning=installing {requirement} into {}", site.display());
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .arg("--target")
        .arg(&staging)
        .arg(&requirement)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !status.success() {
        let _ = fs::remove_dir_all(&staging);
        return Err(format!(
            "`pip install {requirement}` failed; install it yourself and set MLX_DIR to its `mlx` folder"
        )
        .into());
    }
    if fs::rename(&staging, &site).is_err() {
        // Another build won the race; its install is as good as ours.
        let _ = fs::remove_dir_all(&staging);
    }
    Ok(mlx)
}

/// A virtual environment under `env_dir` (made once), returning its interpreter.
fn venv_python(env_dir: &Path) -> Result<PathBuf, BuildError> {
    let venv = env_dir.join("venv");
    let python = venv.join("bin").join("python3");
    if python.exists() {
        return Ok(python);
    }
    fs::create_dir_all(env_dir).map_err(|e| format!("cannot create {}: {e}", env_dir.display()))?;
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if status.success() && python.exists() {
        Ok(python)
    } else {
        Err(format!("`python3 -m venv {}` failed", venv.display()).into())
    }
}
