//! Models by repo id: lists a repository on the Hugging Face Hub, downloads what the
//! loader needs into the standard cache (the layout Python's `huggingface_hub` reads and
//! writes), checks every file against the listing, and answers from the cache alone when
//! offline.
//!
//! Every byte written is lamina's own doing: headers that become path components (ETag,
//! commit) are checked before anything is written; content goes to a temporary file in
//! `blobs/`, in ranged requests that resume after a failure and never pass the listed
//! size, and is renamed into place after its size and sha256 check out; snapshot links
//! stay inside the repository's folder. The token goes to the endpoint's origin only
//! (not to a CDN a download is redirected to), every body has a cap and every request a
//! timeout (`HF_HUB_ETAG_TIMEOUT`, `HF_HUB_DOWNLOAD_TIMEOUT`).
//!
//! ```no_run
//! # async fn run() -> Result<(), lamina_loader::hub::HubError> {
//! use lamina_loader::hub::{Hub, HubConfig, RepoRef, Want};
//! let hub = Hub::new(HubConfig::from_env())?;
//! let repo: RepoRef = "HuggingFaceTB/SmolLM2-135M-Instruct".parse()?;
//! let folder = hub.fetch(&repo, Want::Model, &Default::default()).await?;
//! # Ok(()) }
//! ```

mod cache;
mod config;
mod download;
mod error;
mod http;
mod listing;
mod reference;
mod select;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use config::{DEFAULT_ENDPOINT, DEFAULT_TIMEOUT, HubConfig};
pub use error::HubError;
pub use listing::{LfsInfo, Listing, RepoFile};
pub use reference::{DEFAULT_REVISION, RepoRef};

use crate::progress::{Progress, ProgressSink};
use cache::CacheEntry;
use download::{BlobJob, Remote};
use http::HubClient;
use select::{Layout, MODEL_FILES, TOKENIZER_FILES};

/// What to fetch of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A loadable checkpoint: the config, tokenizer and weights of a folder, or one
    /// `.gguf` file. Fetching returns the snapshot folder or the file.
    Model,
    /// The tokenizer files alone. Fetching returns the snapshot folder.
    Tokenizer,
}

/// How downloads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Files downloaded at once.
    pub parallel_files: usize,
    /// Bytes per ranged request; what arrived in whole chunks survives a failure and is
    /// not fetched again.
    pub chunk_bytes: usize,
    /// Further attempts per file after a failure (each resumes from the chunks kept).
    pub retries: usize,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions { parallel_files: 4, chunk_bytes: 16 << 20, retries: 3 }
    }
}

/// A Hub client over one cache. Its `Debug` never prints the token.
#[derive(Debug, Clone)]
pub struct Hub {
    config: HubConfig,
    download: DownloadOptions,
    client: HubClient,
}

impl Hub {
    /// A client with `config` and the default [`DownloadOptions`].
    ///
    /// # Errors
    /// [`HubError::Network`] when the endpoint is not an `http(s)` URL, the token is not
    /// a valid header value, or the HTTP client cannot be built (no TLS roots).
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        Self::with_download(config, DownloadOptions::default())
    }

    /// A client with `config` and `download`.
    ///
    /// # Errors
    /// As [`Hub::new`].
    pub fn with_download(config: HubConfig, download: DownloadOptions) -> Result<Self, HubError> {
        let client = HubClient::new(&config)?;
        Ok(Hub { config, download, client })
    }

    /// The settings in use.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Lists a repository at its revision (the commit and every file).
    ///
    /// # Errors
    /// [`HubError::RepoNotFound`], [`HubError::RevisionNotFound`],
    /// [`HubError::Unauthorized`], [`HubError::Forbidden`], [`HubError::Network`],
    /// [`HubError::Server`].
    pub async fn list(&self, repo: &RepoRef) -> Result<Listing, HubError> {
        listing::list(&self.client, repo, self.config.token.is_some()).await
    }

    /// Fetches what `want` needs of `repo` into the cache (files already there at that
    /// commit are not fetched again) and returns the snapshot folder, or for a GGUF
    /// repository the `.gguf` file. Offline, or when the Hub cannot be reached and the
    /// cache has the revision, answers from the cache.
    ///
    /// # Errors
    /// Those of [`Hub::list`], [`HubError::NoModel`], [`HubError::NotCached`],
    /// [`HubError::Download`], [`HubError::Integrity`], [`HubError::Io`].
    pub async fn fetch(
        &self,
        repo: &RepoRef,
        want: Want,
        progress: &ProgressSink,
    ) -> Result<PathBuf, HubError> {
        let entry = CacheEntry::new(&self.config.cache_dir, repo);
        if self.config.offline {
            return self.cached(repo, want, &entry, "offline (HF_HUB_OFFLINE)");
        }
        let listing = match self.list(repo).await {
            Err(HubError::Network { reason, .. }) if entry.commit_of(repo.revision()).is_some() => {
                return self.cached(repo, want, &entry, &format!("unreachable ({reason})"));
            }
            other => other?,
        };
        let fetched = self.fetch_listed(repo, want, &listing, progress).await?;
        entry.write_ref(repo.revision(), &listing.commit)?;
        Ok(fetched)
    }

    /// Downloads what `want` needs of a listed repository.
    async fn fetch_listed(
        &self,
        repo: &RepoRef,
        want: Want,
        listing: &Listing,
        progress: &ProgressSink,
    ) -> Result<PathBuf, HubError> {
        let entry = CacheEntry::new(&self.config.cache_dir, repo);
        let snapshot = entry.snapshot(&listing.commit);
        let no_model = |reason: String| HubError::NoModel {
            repo: repo.repo_id.clone(),
            revision: repo.revision().to_owned(),
            reason,
        };
        let present =
            |names: &[&str]| names.iter().filter_map(|n| listing.file(n)).cloned().collect::<Vec<_>>();
        Ok(match want {
            Want::Tokenizer => {
                if listing.file("tokenizer.json").is_none() {
                    return Err(no_model("no tokenizer.json".into()));
                }
                self.download_all(repo, &listing.commit, present(&TOKENIZER_FILES), progress).await?;
                snapshot
            }
            Want::Model => {
                match select::layout(listing.files.iter().map(|f| f.path.as_str()), repo.file.as_deref())
                    .map_err(no_model)?
                {
                    Layout::Gguf(name) => {
                        self.download_all(repo, &listing.commit, present(&[name.as_str()]), progress).await?;
                        snapshot.join(name)
                    }
                    Layout::Folder => {
                        self.download_all(repo, &listing.commit, present(&MODEL_FILES), progress).await?;
                        let index = snapshot.join("model.safetensors.index.json");
                        let shards = if index.is_file() { Some(index_shards(&index)?) } else { None };
                        let weights = select::weight_files(
                            listing.files.iter().map(|f| f.path.as_str()),
                            shards.as_deref(),
                        );
                        let mut files = Vec::with_capacity(weights.len());
                        for name in &weights {
                            let file = listing.file(name).ok_or_else(|| {
                                no_model(format!(
                                    "model.safetensors.index.json names `{name}`, which the repository lacks"
                                ))
                            })?;
                            files.push(file.clone());
                        }
                        if files.is_empty() {
                            return Err(no_model("config.json but no model*.safetensors".into()));
                        }
                        self.download_all(repo, &listing.commit, files, progress).await?;
                        snapshot
                    }
                }
            }
        })
    }

    /// Downloads the files not yet in the snapshot: first every file's metadata (checked
    /// before anything is written), then each distinct blob, `parallel_files` at a time,
    /// then the snapshot's links.
    async fn download_all(
        &self,
        repo: &RepoRef,
        commit: &str,
        files: Vec<RepoFile>,
        progress: &ProgressSink,
    ) -> Result<(), HubError> {
        let entry = CacheEntry::new(&self.config.cache_dir, repo);
        let missing: Vec<RepoFile> = files.into_iter().filter(|f| !entry.has(commit, f)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        progress.send(Progress::Fetching {
            repo: repo.to_string(),
            files: missing.len(),
            bytes: missing.iter().map(RepoFile::content_size).sum(),
        });
        let mut blobs: BTreeMap<String, (RepoFile, Remote)> = BTreeMap::new();
        let mut links = Vec::with_capacity(missing.len());
        for file in missing {
            let remote = download::metadata(&self.client, repo, commit, &file).await?;
            links.push((file.path.clone(), remote.etag.clone()));
            blobs.entry(remote.etag.clone()).or_insert((file, remote));
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(self.download.parallel_files.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (file, remote) in blobs.into_values() {
            let (hub, repo, commit, sink, permits) =
                (self.clone(), repo.clone(), commit.to_owned(), progress.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                hub.download_blob(&repo, &commit, &file, remote, &sink).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.map_err(|e| HubError::Download {
                repo: repo.repo_id.clone(),
                file: String::new(),
                reason: e.to_string(),
            });
            if let Err(error) = result.and_then(|r| r) {
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        for (path, etag) in links {
            entry.link(commit, &path, &etag)?;
        }
        Ok(())
    }

    /// Downloads one blob, retrying (resuming) after network and server failures; each
    /// retry asks for the metadata again (a CDN's signed address may have expired) and
    /// refuses a different ETag.
    async fn download_blob(
        &self,
        repo: &RepoRef,
        commit: &str,
        file: &RepoFile,
        mut remote: Remote,
        progress: &ProgressSink,
    ) -> Result<(), HubError> {
        let entry = CacheEntry::new(&self.config.cache_dir, repo);
        let mut reason = String::new();
        for attempt in 0..=self.download.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
                let fresh = download::metadata(&self.client, repo, commit, file).await?;
                if fresh.etag != remote.etag {
                    return Err(http::untrusted(
                        fresh.location.as_str(),
                        format!("the ETag of `{}` changed from {} to {}", file.path, remote.etag, fresh.etag),
                    ));
                }
                remote = fresh;
            }
            let job = BlobJob {
                client: &self.client,
                repo,
                entry: &entry,
                file,
                remote: &remote,
                chunk_bytes: self.download.chunk_bytes,
                progress,
            };
            match job.run().await {
                Ok(()) => return Ok(()),
                Err(error @ (HubError::Network { .. } | HubError::Server { .. })) => {
                    reason = error.to_string()
                }
                Err(error) => return Err(error),
            }
        }
        Err(HubError::Download { repo: repo.repo_id.clone(), file: file.path.clone(), reason })
    }

    /// Answers from the cache alone.
    fn cached(&self, repo: &RepoRef, want: Want, entry: &CacheEntry, why: &str) -> Result<PathBuf, HubError> {
        let not_cached = |file: &str| HubError::NotCached {
            repo: repo.repo_id.clone(),
            revision: repo.revision().to_owned(),
            file: file.to_owned(),
            cache: self.config.cache_dir.clone(),
            why: why.to_owned(),
        };
        let commit = entry
            .commit_of(repo.revision())
            .ok_or_else(|| not_cached(&format!("refs/{}", repo.revision())))?;
        let snapshot = entry.snapshot(&commit);
        let local = files_under(&snapshot);
        let has = |name: &str| local.iter().any(|p| p == name);
        match want {
            Want::Tokenizer if has("tokenizer.json") => Ok(snapshot),
            Want::Tokenizer => Err(not_cached("tokenizer.json")),
            Want::Model => match select::layout(local.iter().map(String::as_str), repo.file.as_deref()) {
                Ok(Layout::Gguf(name)) => Ok(snapshot.join(name)),
                Ok(Layout::Folder) => {
                    let index = snapshot.join("model.safetensors.index.json");
                    let shards = if index.is_file() { Some(index_shards(&index)?) } else { None };
                    let weights = select::weight_files(local.iter().map(String::as_str), shards.as_deref());
                    match weights.iter().find(|w| !has(w)) {
                        Some(missing) => Err(not_cached(missing)),
                        None if weights.is_empty() => Err(not_cached("model.safetensors")),
                        None => Ok(snapshot),
                    }
                }
                Err(_) => Err(not_cached(repo.file.as_deref().unwrap_or("config.json (or a .gguf file)"))),
            },
        }
    }
}

/// The distinct shard files an index names, each checked to be a path inside the repo.
fn index_shards(index: &Path) -> Result<Vec<String>, HubError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| HubError::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text)
        .map_err(|e| HubError::io(index, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let mut shards: Vec<String> = parsed.weight_map.into_values().collect();
    shards.sort();
    shards.dedup();
    for shard in &shards {
        reference::check_file(shard)?;
    }
    Ok(shards)
}

/// The readable files under a snapshot (links followed), as repository paths.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() && depth < 8 {
                pending.push((path, depth + 1));
            } else if path.is_file() {
                if let Ok(relative) = path.strip_prefix(root) {
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    found
}
