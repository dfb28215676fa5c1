//! Which MLX build the target gets: Linux CPU, Linux CUDA or macOS Metal.

use crate::{env, BuildError};

/// The MLX flavour for the target being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// `mlx-cpu` wheel; BLAS from Debian's OpenBLAS.
    LinuxCpu,
    /// `mlx-cuda-12` wheel (cargo feature `cuda`).
    LinuxCuda,
    /// `mlx-metal` wheel.
    MacMetal,
}

impl Platform {
    /// Reads the target OS and the `cuda` feature from cargo's environment.
    pub fn from_env() -> Result<Self, BuildError> {
        let os = env("CARGO_CFG_TARGET_OS")?;
        let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
        match (os.as_str(), cuda) {
            ("linux", false) => Ok(Platform::LinuxCpu),
            ("linux", true) => Ok(Platform::LinuxCuda),
            ("macos", false) => Ok(Platform::MacMetal),
            ("macos", true) => Err("the `cuda` feature needs Linux; macOS uses Metal".into()),
            (other, _) => {
                Err(format!("no official MLX wheel for target OS `{other}` (supported: linux, macos)").into())
            }
        }
    }

    /// The PyPI distribution that holds libmlx for this platform.
    pub fn wheel(self) -> &'static str {
        match self {
            Platform::LinuxCpu => "mlx-cpu",
            Platform::LinuxCuda => "mlx-cuda-12",
            Platform::MacMetal => "mlx-metal",
        }
    }

    /// The file name of the MLX shared library.
    pub fn mlx_library(self) -> &'static str {
        match self {
            Platform::MacMetal => "libmlx.dylib",
            _ => "libmlx.so",
        }
    }

    /// The C++ runtime libmlx and mlx-c are built against.
    pub fn cxx_runtime(self) -> &'static str {
        match self {
            Platform::MacMetal => "c++",
            _ => "stdc++",
        }
    }

    /// Whether BLAS calls should be routed to the system OpenBLAS.
    pub fn uses_openblas(self) -> bool {
        self != Platform::MacMetal
    }
}
