//! The Hub cache's layout, shared with Python's `huggingface_hub`:
//! `models--org--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/<revision>}`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::HubError;
use super::listing::RepoFile;
use super::reference::{RepoRef, is_commit};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    pub root: PathBuf,
}

impl CacheEntry {
    pub fn new(cache_dir: &Path, repo: &RepoRef) -> Self {
        CacheEntry { root: cache_dir.join(repo.folder_name()) }
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// The commit a revision points at in the cache: the revision itself when it is a
    /// commit with a snapshot, else `refs/<revision>`.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) && self.snapshot(revision).is_dir() {
            return Some(revision.to_owned());
        }
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_owned())
    }

    /// Drops the ref the download client names after the commit itself
    /// (`huggingface_hub` writes refs for branches and tags only).
    pub fn drop_commit_ref(&self, commit: &str) -> Result<(), HubError> {
        let by_commit = self.root.join("refs").join(commit);
        if by_commit.is_file() {
            std::fs::remove_file(&by_commit).map_err(|e| HubError::io(&by_commit, e))?;
        }
        Ok(())
    }

    /// Points `refs/<revision>` at `commit` (not for a commit given as the revision, as
    /// `huggingface_hub` does).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit(revision) {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        std::fs::write(&path, commit).map_err(|e| HubError::io(&path, e))
    }

    /// Whether the snapshot holds `file` with the listed size.
    pub fn has(&self, commit: &str, file: &RepoFile) -> bool {
        std::fs::metadata(self.snapshot(commit).join(&file.path))
            .is_ok_and(|m| m.len() == file.content_size())
    }

    /// Removes the lock files the download client leaves beside the blobs.
    pub fn remove_locks(&self) {
        if let Ok(entries) = std::fs::read_dir(self.root.join("blobs")) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "lock") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Checks a downloaded file against the listing (size; sha256 for large files); on a
/// mismatch removes the snapshot's link and the blob behind it.
pub(crate) fn verify(repo: &RepoRef, path: &Path, file: &RepoFile) -> Result<(), HubError> {
    let integrity = |what, expected: String, actual: String| {
        discard(path);
        HubError::Integrity { repo: repo.repo_id.clone(), file: file.path.clone(), what, expected, actual }
    };
    let size = std::fs::metadata(path).map_err(|e| HubError::io(path, e))?.len();
    if size != file.content_size() {
        return Err(integrity("size", file.content_size().to_string(), size.to_string()));
    }
    if let Some(lfs) = &file.lfs {
        let actual = sha256(path)?;
        if !actual.eq_ignore_ascii_case(&lfs.oid) {
            return Err(integrity("sha256", lfs.oid.clone(), actual));
        }
    }
    Ok(())
}

fn sha256(path: &Path) -> Result<String, HubError> {
    let mut file = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| HubError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Removes a snapshot file and, when it is a link, the blob it points at.
fn discard(path: &Path) {
    if let Ok(blob) = path.canonicalize() {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}
