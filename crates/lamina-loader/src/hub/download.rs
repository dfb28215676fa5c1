//! Downloading one file into the cache, as `huggingface_hub` lays it out: the file's
//! metadata from a `HEAD` of `resolve/<commit>/<path>` (ETag, commit, size, where the
//! content is), every header that becomes a path checked before anything is written, the
//! content in ranged requests into `blobs/<etag>.incomplete` (resumed after a failure,
//! never past the listed size), checked (size, sha256) and renamed to `blobs/<etag>`; then
//! the snapshot's relative link to it.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, StatusCode, Url};

use super::cache::{CacheEntry, sha256};
use super::error::HubError;
use super::http::{HubClient, Redirects, error_text, untrusted};
use super::listing::RepoFile;
use super::reference::RepoRef;
use crate::progress::{Progress, ProgressSink};

/// What the Hub says of one file at a commit, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    /// The blob's name: 40 (git) or 64 (sha256) hex digits.
    pub etag: String,
    /// Where the content is (the resolve URL itself, or the CDN it redirects to).
    pub location: Url,
}

/// Asks the Hub for a file's metadata at `commit` and checks every header that will
/// become part of a path or decide what is written.
///
/// # Errors
/// [`HubError::Untrusted`] for an ETag that is not 40 or 64 hex digits, a commit other
/// than `commit`, an LFS file whose ETag is not its listed sha256, a size other than the
/// listed one; [`HubError::Network`], [`HubError::Server`] and the Hub's errors.
pub(crate) async fn metadata(
    client: &HubClient,
    repo: &RepoRef,
    commit: &str,
    file: &RepoFile,
) -> Result<Remote, HubError> {
    let url =
        client.parse(&format!("{}/{}/resolve/{commit}/{}", client.endpoint(), repo.repo_id, file.path))?;
    let (response, answered) =
        client.send(Method::HEAD, url, HeaderMap::new(), Redirects::RelativeOnly).await?;
    let status = response.status();
    let headers = response.headers();
    let here = answered.as_str();
    if !(status.is_success() || status.is_redirection()) {
        return Err(match status.as_u16() {
            401 => HubError::Unauthorized { repo: repo.repo_id.clone(), had_token: false },
            403 => HubError::Forbidden { repo: repo.repo_id.clone() },
            code => {
                HubError::Server { url: here.to_owned(), status: code, reason: error_text(response).await }
            }
        });
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let etag = text("x-linked-etag")
        .or_else(|| text(ETAG.as_str()))
        .map(|e| e.trim_start_matches("W/").trim_matches('"'))
        .ok_or_else(|| untrusted(here, format!("no ETag for `{}`", file.path)))?;
    if !is_blob_name(etag) {
        return Err(untrusted(
            here,
            format!("the ETag `{}` is not 40 or 64 hex digits", etag.escape_debug()),
        ));
    }
    let answered_commit = text("x-repo-commit")
        .ok_or_else(|| untrusted(here, format!("no X-Repo-Commit for `{}`", file.path)))?;
    if answered_commit != commit {
        return Err(untrusted(
            here,
            format!("answered for commit `{}`, the listing is at `{commit}`", answered_commit.escape_debug()),
        ));
    }
    if let Some(lfs) = &file.lfs {
        if !etag.eq_ignore_ascii_case(&lfs.oid) {
            return Err(untrusted(here, format!("the ETag `{etag}` is not the listed sha256 `{}`", lfs.oid)));
        }
    }
    let size =
        text("x-linked-size").or_else(|| if status.is_redirection() { None } else { text("content-length") });
    if let Some(size) = size {
        if size.parse::<u64>().ok() != Some(file.content_size()) {
            return Err(untrusted(
                here,
                format!("claims {} bytes, the listing {}", size.escape_debug(), file.content_size()),
            ));
        }
    }
    let location = if status.is_redirection() {
        super::http::redirect_target(&answered, headers)?
    } else {
        answered.clone()
    };
    Ok(Remote { etag: etag.to_owned(), location })
}

/// Whether an ETag may name a blob: a git object id (40 hex) or a sha256 (64 hex).
pub(crate) fn is_blob_name(etag: &str) -> bool {
    matches!(etag.len(), 40 | 64) && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One blob to download.
pub(crate) struct BlobJob<'a> {
    pub client: &'a HubClient,
    pub repo: &'a RepoRef,
    pub entry: &'a CacheEntry,
    pub file: &'a RepoFile,
    pub remote: &'a Remote,
    pub chunk_bytes: usize,
    pub progress: &'a ProgressSink,
}

impl BlobJob<'_> {
    /// Where the content goes while it arrives.
    fn incomplete(&self) -> PathBuf {
        self.entry.blob(&self.remote.etag).with_extension("incomplete")
    }

    /// Downloads the blob unless the cache holds it (size checked), resuming what an
    /// earlier attempt left in `blobs/<etag>.incomplete`.
    ///
    /// # Errors
    /// [`HubError::Network`], [`HubError::Server`], [`HubError::TooLarge`] (a body past
    /// what was asked for), [`HubError::Integrity`] (then the partial file is removed),
    /// [`HubError::Io`].
    pub async fn run(&self) -> Result<(), HubError> {
        let blob = self.entry.blob(&self.remote.etag);
        let size = self.file.content_size();
        if std::fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(());
        }
        let blobs = self.entry.root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let part = self.incomplete();
        let mut out = open_part(&part)?;
        let mut have = out.metadata().map_err(|e| HubError::io(&part, e))?.len();
        if have > size {
            have = 0;
            out.set_len(0).map_err(|e| HubError::io(&part, e))?;
        }
        while have < size {
            have = self.fetch_range(&mut out, &part, have, size).await?;
        }
        out.sync_all().map_err(|e| HubError::io(&part, e))?;
        drop(out);
        self.check(&part, size)?;
        std::fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))
    }

    /// One ranged request from `have`; returns the bytes held after it.
    async fn fetch_range(
        &self,
        out: &mut std::fs::File,
        part: &Path,
        have: u64,
        size: u64,
    ) -> Result<u64, HubError> {
        let end = (have + self.chunk_bytes.max(1) as u64).min(size) - 1;
        let mut headers = HeaderMap::new();
        let range = HeaderValue::from_str(&format!("bytes={have}-{end}")).map_err(|e| HubError::Server {
            url: self.remote.location.to_string(),
            status: 0,
            reason: e.to_string(),
        })?;
        headers.insert(RANGE, range);
        let (mut response, url) =
            self.client.send(Method::GET, self.remote.location.clone(), headers, Redirects::Follow).await?;
        let (mut at, limit) = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let start = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split_once('-'))
                    .and_then(|(start, _)| start.parse::<u64>().ok());
                if start != Some(have) {
                    return Err(untrusted(
                        url.as_str(),
                        format!("a range that does not start at byte {have}"),
                    ));
                }
                (have, end + 1)
            }
            // The server ignored the range: the whole content, from the start.
            StatusCode::OK => {
                out.set_len(0).map_err(|e| HubError::io(part, e))?;
                (0, size)
            }
            status => {
                return Err(HubError::Server {
                    url: url.to_string(),
                    status: status.as_u16(),
                    reason: error_text(response).await,
                });
            }
        };
        let length =
            response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|n| at + n > limit) {
            return Err(HubError::TooLarge { url: url.to_string(), limit: limit - at });
        }
        out.seek(SeekFrom::Start(at)).map_err(|e| HubError::io(part, e))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.client.network(&url, &e))? {
            if at + chunk.len() as u64 > limit {
                return Err(HubError::TooLarge { url: url.to_string(), limit });
            }
            out.write_all(&chunk).map_err(|e| HubError::io(part, e))?;
            at += chunk.len() as u64;
            self.progress.send(Progress::Downloaded { file: self.file.path.clone(), bytes: at, total: size });
        }
        if at < limit {
            return Err(HubError::Network {
                url: url.to_string(),
                reason: format!("the body ended at byte {at} of {}", limit),
            });
        }
        Ok(at)
    }

    /// Size and (for LFS files) sha256 against the listing; on a mismatch the partial
    /// file is removed.
    fn check(&self, part: &Path, size: u64) -> Result<(), HubError> {
        let integrity = |what, expected: String, actual: String| {
            let _ = std::fs::remove_file(part);
            HubError::Integrity {
                repo: self.repo.repo_id.clone(),
                file: self.file.path.clone(),
                what,
                expected,
                actual,
            }
        };
        let actual = std::fs::metadata(part).map_err(|e| HubError::io(part, e))?.len();
        if actual != size {
            return Err(integrity("size", size.to_string(), actual.to_string()));
        }
        if let Some(lfs) = &self.file.lfs {
            let actual = sha256(part)?;
            if !actual.eq_ignore_ascii_case(&lfs.oid) {
                return Err(integrity("sha256", lfs.oid.clone(), actual));
            }
        }
        Ok(())
    }
}

/// Opens (or creates) the partial file for appending, never through a link.
fn open_part(part: &Path) -> Result<std::fs::File, HubError> {
    if std::fs::symlink_metadata(part).is_ok_and(|m| !m.is_file()) {
        std::fs::remove_file(part).map_err(|e| HubError::io(part, e))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(|e| HubError::io(part, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hashes_name_blobs() {
        assert!(is_blob_name(&"a".repeat(40)));
        assert!(is_blob_name(&"0F".repeat(32)));
        for bad in ["", "../../../../x", "/etc/passwd", &"a".repeat(41), &"g".repeat(40), &"a".repeat(63)] {
            assert!(!is_blob_name(bad), "{bad}");
        }
    }
}
