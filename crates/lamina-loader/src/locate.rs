//! From what a user names to a checkpoint on disk: a path, a known model's name, or a
//! repo id fetched from the Hub (feature `hub`).

use std::path::{Path, PathBuf};

use lamina_families::hf::TokenIds;

use crate::catalog::known_model;
use crate::error::{LoaderError, Result};
use crate::load::{LoadOptions, LoadedModel};
use crate::resolve::{Checkpoint, resolve};
use crate::tokenizer::Tokenizer;

/// What to fetch of a repository (mirrors [`crate::hub::Want`] without the feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Model,
    Tokenizer,
}

/// Finds the checkpoint `reference` names: an existing path as it is; a known model's
/// name ([`crate::KNOWN_MODELS`]) as its configuration says, applied to `options`; a repo
/// id through the Hub. Returns the checkpoint and the options to load it with.
///
/// # Errors
/// [`LoaderError::NotACheckpoint`] when it is none of these; the Hub's errors as
/// `LoaderError::Hub`.
pub async fn locate(reference: &Path, options: LoadOptions) -> Result<(Checkpoint, LoadOptions)> {
    if reference.exists() {
        return Ok((resolve(reference)?, options));
    }
    let Some(text) = reference.to_str() else { return Ok((resolve(reference)?, options)) };
    let (text, options) = match known_model(text) {
        Some(model) => (model.repo, model.configuration().apply(options)),
        None => (text, options),
    };
    match fetch(text, &options, Part::Model).await? {
        Some(path) => Ok((resolve(&path)?, options)),
        None => Err(not_found(reference)),
    }
}

/// Replaces the tokenizer when `options.tokenizer_source` names another, and adds
/// `options.extra_eos_tokens` (those the vocabulary holds) to the end-of-sequence ids.
pub(crate) async fn finish(loaded: &mut LoadedModel, options: &LoadOptions) -> Result<()> {
    if let Some(source) = &options.tokenizer_source {
        let path = Path::new(source);
        let folder = if path.exists() {
            if path.is_file() {
                path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            } else {
                path.to_path_buf()
            }
        } else {
            fetch(source, options, Part::Tokenizer).await?.ok_or_else(|| not_found(path))?
        };
        let read = tokio::task::spawn_blocking(move || Tokenizer::from_folder(&folder));
        loaded.tokenizer = Some(read.await.map_err(|e| LoaderError::Task(e.to_string()))??);
    }
    if let (false, Some(tokenizer)) = (options.extra_eos_tokens.is_empty(), &loaded.tokenizer) {
        let mut ids = loaded.eos_token_ids();
        for id in options.extra_eos_tokens.iter().filter_map(|t| tokenizer.token_to_id(t)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        loaded.generation.eos_token_id = Some(TokenIds::Many(ids));
    }
    Ok(())
}

fn not_found(reference: &Path) -> LoaderError {
    let reason = if cfg!(feature = "hub") {
        "no such file or folder, nor a known model name or a repo id `org/name`"
    } else {
        "no such file or folder (repo ids are fetched only with lamina-loader's `hub` feature)"
    };
    LoaderError::NotACheckpoint { path: reference.to_path_buf(), reason: reason.to_owned() }
}

/// Fetches `text` from the Hub when it is a repo id; `None` when it is not one.
#[cfg(feature = "hub")]
async fn fetch(text: &str, options: &LoadOptions, part: Part) -> Result<Option<PathBuf>> {
    use crate::hub::{Hub, HubConfig, RepoRef, Want};
    let mut repo = match text.parse::<RepoRef>() {
        Ok(repo) => repo,
        // `org/name@bad-revision` is a repo id with a bad part, not a path.
        Err(e) if RepoRef::new(text.split(['@', ':']).next().unwrap_or_default()).is_ok() => {
            return Err(e.into());
        }
        Err(_) => return Ok(None),
    };
    if let (None, Some(revision)) = (&repo.revision, &options.revision) {
        repo = repo.at(revision)?;
    }
    if let (Part::Model, None, Some(file)) = (part, &repo.file, &options.file) {
        repo = repo.with_file(file)?;
    }
    let want = match part {
        Part::Model => Want::Model,
        Part::Tokenizer => Want::Tokenizer,
    };
    let hub = Hub::with_download(options.hub.clone().unwrap_or_else(HubConfig::from_env), options.download)?;
    Ok(Some(hub.fetch(&repo, want, &options.progress).await?))
}

#[cfg(not(feature = "hub"))]
async fn fetch(_text: &str, _options: &LoadOptions, _part: Part) -> Result<Option<PathBuf>> {
    Ok(None)
}
