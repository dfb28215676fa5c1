//! What a path points at: a checkpoint folder, a Hugging Face cache entry, or a GGUF file.

use std::path::{Path, PathBuf};

use crate::error::{LoaderError, Result};

/// A located checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// A folder holding `config.json` and safetensors files (a plain folder or a Hugging
    /// Face cache snapshot).
    Folder(PathBuf),
    /// A single `.gguf` file.
    Gguf(PathBuf),
}

impl Checkpoint {
    /// The folder or file.
    pub fn path(&self) -> &Path {
        match self {
            Checkpoint::Folder(p) | Checkpoint::Gguf(p) => p,
        }
    }
}

/// Resolves a path: a `.gguf` file; a folder with `config.json`; a cache snapshot
/// (`models--org--name/snapshots/<rev>/`); or the cache entry itself
/// (`models--org--name/`), whose `refs/main` names the snapshot.
///
/// # Errors
/// [`LoaderError::NotACheckpoint`] saying what was looked for.
pub fn resolve(path: &Path) -> Result<Checkpoint> {
    let not =
        |reason: &str| LoaderError::NotACheckpoint { path: path.to_path_buf(), reason: reason.to_owned() };
    if path.is_file() {
        return if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            Ok(Checkpoint::Gguf(path.to_path_buf()))
        } else {
            Err(not("a file, but not a .gguf file"))
        };
    }
    if !path.is_dir() {
        return Err(not("no such file or folder"));
    }
    if path.join("config.json").is_file() {
        return Ok(Checkpoint::Folder(path.to_path_buf()));
    }
    let refs = path.join("refs").join("main");
    if refs.is_file() {
        let revision = std::fs::read_to_string(&refs).map_err(|e| LoaderError::io(&refs, e))?;
        let snapshot = path.join("snapshots").join(revision.trim());
        return if snapshot.join("config.json").is_file() {
            Ok(Checkpoint::Folder(snapshot))
        } else {
            Err(LoaderError::NotACheckpoint {
                path: snapshot,
                reason: "refs/main names this snapshot, which has no config.json".into(),
            })
        };
    }
    let snapshots = path.join("snapshots");
    if snapshots.is_dir() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
            .map_err(|e| LoaderError::io(&snapshots, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("config.json").is_file())
            .collect();
        found.sort();
        return match found.as_slice() {
            [one] => Ok(Checkpoint::Folder(one.clone())),
            [] => Err(not("a Hugging Face cache entry with no snapshot holding config.json")),
            _ => Err(not(
                "a Hugging Face cache entry with several snapshots and no refs/main; pass one snapshot",
            )),
        };
    }
    Err(not("a folder without config.json (nor a Hugging Face cache entry)"))
}
