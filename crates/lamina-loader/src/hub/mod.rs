//! Models by repo id: lists a repository on the Hugging Face Hub, downloads what the
//! loader needs into the standard cache (the layout Python's `huggingface_hub` reads and
//! writes), checks every file against the listing, and answers from the cache alone when
//! offline.
//!
//! Downloads go through the official `hf-hub` client (resumable `Range` chunks, blobs
//! named by ETag, snapshot links); the listings are the Hub's JSON API.
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
mod error;
mod listing;
mod reference;
mod select;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hf_hub::api::tokio::{Api, ApiBuilder};
use hf_hub::{Repo, RepoType};

pub use config::{DEFAULT_ENDPOINT, HubConfig};
pub use error::HubError;
pub use listing::{LfsInfo, Listing, RepoFile};
pub use reference::{DEFAULT_REVISION, RepoRef};

use crate::progress::{Progress, ProgressSink};
use cache::{CacheEntry, verify};
use listing::error_chain;
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

/// A Hub client over one cache.
#[derive(Debug, Clone)]
pub struct Hub {
    config: HubConfig,
    download: DownloadOptions,
    client: reqwest::Client,
    api: Api,
}

impl Hub {
    /// A client with `config` and the default [`DownloadOptions`].
    ///
    /// # Errors
    /// [`HubError::Network`] when the HTTP client cannot be built (a token that is not a
    /// valid header value, no TLS roots).
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        Self::with_download(config, DownloadOptions::default())
    }

    /// A client with `config` and `download`.
    ///
    /// # Errors
    /// As [`Hub::new`].
    pub fn with_download(config: HubConfig, download: DownloadOptions) -> Result<Self, HubError> {
        let failed = |e: &dyn std::error::Error| HubError::Network {
            url: config.endpoint.clone(),
            reason: error_chain(e),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &config.token {
            let value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| failed(&e))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("lamina/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| failed(&e))?;
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(config.cache_dir.clone()))
            .with_endpoint(config.endpoint.clone())
            .with_token(config.token.clone())
            .with_progress(false)
            .with_max_files(2)
            .with_chunk_size(Some(download.chunk_bytes.max(1)))
            .with_user_agent("lamina", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| failed(&e))?;
        Ok(Hub { config, download, client, api })
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
        listing::list(&self.client, &self.config.endpoint, repo, self.config.token.is_some()).await
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
        let fetched = self.fetch_listed(repo, want, &listing, progress).await;
        entry.remove_locks();
        entry.drop_commit_ref(&listing.commit)?;
        let fetched = fetched?;
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

    /// Downloads the files not yet in the snapshot, `parallel_files` at a time.
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
        let permits = Arc::new(tokio::sync::Semaphore::new(self.download.parallel_files.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for file in missing {
            let (hub, repo, commit, sink, permits) =
                (self.clone(), repo.clone(), commit.to_owned(), progress.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                hub.download_one(&repo, &commit, &file, sink).await
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
        first_error.map_or(Ok(()), Err)
    }

    /// Downloads one file at `commit`, retrying (resuming) after failures, and checks it.
    async fn download_one(
        &self,
        repo: &RepoRef,
        commit: &str,
        file: &RepoFile,
        sink: ProgressSink,
    ) -> Result<(), HubError> {
        let expected = CacheEntry::new(&self.config.cache_dir, repo).snapshot(commit).join(&file.path);
        let remote =
            self.api.repo(Repo::with_revision(repo.repo_id.clone(), RepoType::Model, commit.to_owned()));
        let mut reason = String::new();
        for attempt in 0..=self.download.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * attempt as u64)).await;
            }
            let progress = FileProgress {
                sink: sink.clone(),
                file: file.path.clone(),
                total: file.content_size(),
                done: Arc::default(),
            };
            match remote.download_with_progress(&file.path, progress).await {
                Ok(path) if path == expected => return verify(repo, &path, file),
                Ok(path) => {
                    return Err(HubError::Server {
                        url: remote.url(&file.path),
                        status: 200,
                        reason: format!("answered for another commit (stored at {})", path.display()),
                    });
                }
                Err(error) => reason = error_chain(&error),
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

/// Forwards the download client's byte counts as [`Progress::Downloaded`] events.
#[derive(Debug, Clone)]
struct FileProgress {
    sink: ProgressSink,
    file: String,
    total: u64,
    /// Shared by the clones the client hands to each chunk's task.
    done: Arc<AtomicU64>,
}

impl hf_hub::api::tokio::Progress for FileProgress {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
    }

    async fn update(&mut self, size: usize) {
        let done = self.done.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
        self.sink.send(Progress::Downloaded { file: self.file.clone(), bytes: done, total: self.total });
    }

    async fn finish(&mut self) {}
}
