//! mlx-c 0.7.0 bindings for mlx-rs 0.33, built against an official MLX 0.32.2 wheel.
//!
//! This crate stands in for the published `mlx-sys` 0.7.0 (through the workspace's
//! `[patch.crates-io]`), whose build is macOS-only. The bindings are the same; what differs
//! is how MLX is found (see `build/`) and the two Linux shims below.
//!
//! ```
//! // SAFETY: mlx-c fills a string it allocated; it is read, then freed.
//! let version = unsafe {
//!     let handle = mlx_sys::mlx_string_new();
//!     let mut out = handle;
//!     assert_eq!(mlx_sys::mlx_version(&mut out), 0);
//!     let text = std::ffi::CStr::from_ptr(mlx_sys::mlx_string_data(out)).to_string_lossy().into_owned();
//!     mlx_sys::mlx_string_free(out);
//!     text
//! };
//! assert_eq!(version, mlx_sys::MLX_VERSION);
//! ```
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(missing_docs)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

unsafe extern "C" {
    /// mlx-c's `mlx_pad`, with `mode` as mlx-rs 0.33 passes it on every target: `*const i8`
    /// (bindgen's `c_char` is `u8` where C's `char` is unsigned, aarch64 Linux; a `char`
    /// pointer is the same pointer either way).
    #[allow(clippy::too_many_arguments)]
    pub fn mlx_pad(
        res: *mut mlx_array,
        a: mlx_array,
        axes: *const ::std::os::raw::c_int,
        axes_num: usize,
        low_pad_size: *const ::std::os::raw::c_int,
        low_pad_size_num: usize,
        high_pad_size: *const ::std::os::raw::c_int,
        high_pad_size_num: usize,
        pad_value: mlx_array,
        mode: *const i8,
        s: mlx_stream,
    ) -> ::std::os::raw::c_int;
}

/// The MLX version libmlx was built from, as the build found it.
pub const MLX_VERSION: &str = "0.32.2";

/// mlx-rs seeds its default random key with macOS's `mach_approximate_time`; elsewhere this
/// stands in for it so mlx-rs links unchanged. Nanoseconds of wall time: a seed, not a clock.
#[cfg(not(target_os = "macos"))]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Keeps libopenblas in every binary's NEEDED list. rustc links with `--as-needed`, which
/// drops a library nothing references, and the wheel's libmlx would then bind its cblas
/// calls to the reference BLAS it bundles (about 100x slower). Referenced here, OpenBLAS
/// comes first in the global symbol scope and libmlx's cblas calls resolve to it.
#[cfg(target_os = "linux")]
mod openblas {
    extern "C" {
        fn openblas_get_num_threads() -> std::os::raw::c_int;
        fn lamina_blas_shim_present() -> std::os::raw::c_int;
    }

    #[used]
    static KEEP_OPENBLAS: unsafe extern "C" fn() -> std::os::raw::c_int = openblas_get_num_threads;

    /// The same for the BLAS shim (`compat/blas_shim.c`), which must come first: its
    /// `cblas_sgemm` sends single-row products to `sgemv`.
    #[used]
    static KEEP_SHIM: unsafe extern "C" fn() -> std::os::raw::c_int = lamina_blas_shim_present;
}

/// OpenBLAS's kernel choice, as the BLAS shim (`compat/blas_shim.c`) reports and corrects it.
#[cfg(target_os = "linux")]
pub mod blas_core {
    use std::os::raw::c_char;

    extern "C" {
        /// The OpenBLAS core whose kernels serve f32 products now (`"SkylakeX"`,
        /// `"Haswell"`, ...); an empty string where OpenBLAS cannot say. Static storage.
        pub fn lamina_blas_core() -> *const c_char;
        /// The core OpenBLAS had chosen itself where the shim chose a wider one because
        /// OpenBLAS did not know the CPU; an empty string otherwise. Static storage.
        pub fn lamina_blas_detected_core() -> *const c_char;
        /// Chooses OpenBLAS's kernels again where they are narrower than the CPU's
        /// instruction sets (the shim does this once as it loads; `OPENBLAS_CORETYPE`, when
        /// set, is left alone). Call it before any BLAS product runs, from one thread.
        pub fn lamina_blas_choose_core();
    }
}
