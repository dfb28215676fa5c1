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

    /// The blob named `etag` (checked to be a hash by whoever got it from the server).
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// Links `snapshots/<commit>/<path>` to `blobs/<etag>` with a relative link that stays
    /// inside this folder (`path` is a checked repository path, `commit` and `etag` hashes);
    /// whatever was at the link's place is replaced.
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<(), HubError> {
        let link = self.snapshot(commit).join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).map_err(|e| HubError::io(&link, e))?;
        }
        let up = "../".repeat(2 + path.matches('/').count());
        let target = PathBuf::from(format!("{up}blobs/{etag}"));
        #[cfg(unix)]
        let linked = std::os::unix::fs::symlink(&target, &link);
        #[cfg(not(unix))]
        let linked = std::fs::copy(self.blob(etag), &link).map(|_| ());
        linked.map_err(|e| HubError::io(&link, e))
    }
}

/// The sha256 of a file's content, in lowercase hex.
pub(crate) fn sha256(path: &Path) -> Result<String, HubError> {
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
