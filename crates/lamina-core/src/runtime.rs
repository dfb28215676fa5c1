//! Facts about the MLX runtime this process linked: its version and, on Linux, which
//! library serves its BLAS calls (OpenBLAS, not the wheel's slow reference BLAS).

use std::ffi::CStr;

/// The version string of the loaded libmlx, e.g. `"0.32.2"`.
pub fn mlx_version() -> String {
    // SAFETY: mlx-c fills a string it allocated; we copy it before freeing it.
    unsafe {
        let handle = mlx_sys::mlx_string_new();
        let mut text = String::new();
        if mlx_sys::mlx_version(&raw const handle as *mut _) == 0 {
            let data = mlx_sys::mlx_string_data(handle);
            if !data.is_null() {
                text = CStr::from_ptr(data).to_string_lossy().into_owned();
            }
        }
        mlx_sys::mlx_string_free(handle);
        text
    }
}

/// The file of the shared library that `cblas_sgemm` resolves to in this process, where
/// the platform can tell (Linux): what MLX's f32 matmuls on the CPU run on (lamina's BLAS
/// shim, which hands the work to OpenBLAS).
pub fn blas_library() -> Option<String> {
    blas_symbol_library("cblas_sgemm")
}

/// Which OpenBLAS kernels serve MLX's f32 products on the CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlasKernel {
    /// OpenBLAS's name for the core whose kernels run (`"SkylakeX"`, `"Haswell"`, ...).
    pub core: String,
    /// The core OpenBLAS chose itself, where that was narrower than the CPU (a release older
    /// than the CPU falls back to its generic `Prescott` kernel) and lamina's BLAS shim chose
    /// again; `None` where OpenBLAS's own choice stands.
    pub detected: Option<String>,
}

impl std::fmt::Display for BlasKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenBLAS {} kernels", self.core)?;
        if let Some(detected) = &self.detected {
            write!(f, " (chosen by lamina: OpenBLAS took this CPU for {detected})")?;
        }
        Ok(())
    }
}

/// The OpenBLAS kernels MLX's f32 products run on (Linux, where lamina's BLAS shim hands
/// them to OpenBLAS); `None` elsewhere, or where OpenBLAS cannot name its core.
pub fn blas_kernel() -> Option<BlasKernel> {
    #[cfg(target_os = "linux")]
    {
        let text = |name: *const std::os::raw::c_char| {
            // SAFETY: the shim returns NUL-terminated strings in static storage (or null).
            (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
        };
        // SAFETY: both only read OpenBLAS's state and the shim's static buffer.
        let core = text(unsafe { mlx_sys::blas_core::lamina_blas_core() }).filter(|core| !core.is_empty())?;
        let detected =
            text(unsafe { mlx_sys::blas_core::lamina_blas_detected_core() }).filter(|d| !d.is_empty());
        Some(BlasKernel { core, detected })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The file of the shared library a C symbol resolves to in this process (Linux).
pub fn blas_symbol_library(name: &str) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: dlsym/dladdr only read the loader's tables; the name is NUL-terminated.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
            if symbol.is_null() {
                return None;
            }
            let mut info: libc::Dl_info = std::mem::zeroed();
            if libc::dladdr(symbol, &mut info) == 0 || info.dli_fname.is_null() {
                return None;
            }
            Some(CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_the_pinned_mlx_version() {
        assert_eq!(super::mlx_version(), mlx_sys::MLX_VERSION);
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    mod openblas {
        use mlx_rs::Array;

        use super::super::{BlasKernel, blas_kernel};

        /// How wide an OpenBLAS core's kernels are: 2 AVX-512, 1 AVX2, 0 narrower.
        fn width(core: &str) -> u8 {
            match core.to_ascii_lowercase().as_str() {
                "skylakex" | "cooperlake" | "sapphirerapids" => 2,
                "haswell" | "zen" => 1,
                _ => 0,
            }
        }

        /// The same for this CPU.
        fn cpu_width() -> u8 {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512cd") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl")
            {
                2
            } else if has!("avx2") && has!("fma") {
                1
            } else {
                0
            }
        }

        fn kernel() -> BlasKernel {
            blas_kernel().unwrap_or_else(|| panic!("OpenBLAS names no core"))
        }

        #[test]
        fn openblas_kernels_are_as_wide_as_the_cpu() {
            if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
                return; // the user's choice stands
            }
            let kernel = kernel();
            assert!(width(&kernel.core) >= cpu_width(), "{kernel} on a CPU of width {}", cpu_width());
        }

        /// OpenBLAS made to run its generic kernel (as a release that does not know the CPU
        /// does) is set right by the shim's choice, and its products stay correct. In a
        /// process of its own: the choice must precede every product.
        #[test]
        fn a_generic_openblas_core_is_chosen_again() {
            let test = "runtime::tests::openblas::generic_core_in_a_process_of_its_own";
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
            let out = std::process::Command::new(exe)
                .args(["--exact", test, "--ignored", "--test-threads=1"])
                .env("OPENBLAS_CORETYPE", "Prescott")
                .env("LAMINA_BLAS_CHILD", "1")
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stdout}\n{stderr}");
            assert!(stdout.contains("1 passed"), "{stdout}");
        }

        #[test]
        #[ignore = "run by a_generic_openblas_core_is_chosen_again, in a process of its own"]
        fn generic_core_in_a_process_of_its_own() {
            if std::env::var_os("LAMINA_BLAS_CHILD").is_none() {
                return;
            }
            // The variable the process started with stood: OpenBLAS runs its generic kernel.
            assert_eq!(kernel(), BlasKernel { core: "Prescott".into(), detected: None });
            // SAFETY: this test runs alone in its process (`--test-threads=1`).
            unsafe { std::env::remove_var("OPENBLAS_CORETYPE") };
            // SAFETY: no BLAS product has run in this process yet.
            unsafe { mlx_sys::blas_core::lamina_blas_choose_core() };
            let kernel = kernel();
            if cpu_width() > 0 {
                assert_eq!(width(&kernel.core), cpu_width(), "{kernel}");
                assert_eq!(kernel.detected.as_deref(), Some("Prescott"), "{kernel}");
            } else {
                assert_eq!(kernel.core, "Prescott");
            }
            // A product large enough for OpenBLAS's sgemm (not the shim's own loops).
            let (m, k, n) = (64, 96, 80);
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 23) as f32 - 11.0) / 13.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 19) as f32 - 9.0) / 17.0).collect();
            let product = Array::from_slice(&a, &[m as i32, k as i32])
                .matmul(Array::from_slice(&b, &[k as i32, n as i32]))
                .unwrap_or_else(|e| panic!("{e}"));
            let got = product.as_slice::<f32>();
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                    assert!((got[i * n + j] - want).abs() < 1e-4, "[{i}, {j}] {} vs {want}", got[i * n + j]);
                }
            }
        }
    }
}
