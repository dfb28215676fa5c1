//! Gives lamina's own binaries (examples, tests) an rpath to libmlx, so that binaries
//! built with `cargo build` run without `LD_LIBRARY_PATH`. (`cargo run` and `cargo test`
//! find it anyway: cargo puts the target folder's native paths on the loader path.)

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_LIBDIR");
    if let Ok(lib_dir) = std::env::var("DEP_MLX_LIBDIR") {
        if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux" || os == "macos") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        }
    }
}
