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
}
