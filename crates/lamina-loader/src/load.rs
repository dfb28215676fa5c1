//! The load itself: resolve, read config, estimate, read shards concurrently, sanitize,
//! apply strictly, read the generation config and tokenizer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use lamina_components::Activations;
use lamina_core::{Budget, DType};
use lamina_families::{CheckpointQuantization, LanguageModel, Registry, Weights, model_type};
use mlx_rs::module::ModuleParameters;
use serde_json::Value;

use serde::de::DeserializeOwned;

use crate::error::{LoaderError, Result};
use crate::generation::GenerationConfig;
use crate::json::{parse_json, read_json};
use crate::locate::{finish, locate};
use crate::pipeline::{Share, split};
use crate::progress::{Progress, ProgressSink};
use crate::report::{LoadReport, apply};
use crate::resolve::Checkpoint;
use crate::safetensors::TensorFile;
use crate::tokenizer::Tokenizer;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Cast floating-point weights to this dtype; keep the checkpoint's when `None`.
    pub dtype: Option<DType>,
    /// How quantized layers' products read `x` on the CPU (prompts and decoding);
    /// when `None`, as the format's own runtime does: rounded to 8 bits for GGUF files
    /// (llama.cpp's Q8_0 activations, ~1.7x faster decoding on AVX2), the output head's top
    /// logits recomputed exactly (`Int8ExactTop`); exact for MLX checkpoints (mlx-lm's
    /// numbers). `Some(Activations::Exact)` is the
    /// CLI's `--exact`.
    pub activations: Option<Activations>,
    /// Load even when tensors are missing, unexpected or mis-shaped (they are reported,
    /// and mis-shaped ones are never applied). Off by default: a mismatch is an error.
    pub allow_mismatch: bool,
    /// Refuse to load when the estimated memory exceeds this many bytes; the machine's
    /// memory when `None`. Checked twice: from `config.json` alone before any layer is
    /// built, and from the tensors' headers before any tensor is read.
    pub memory_limit: Option<u64>,
    /// `model_type` -> builder.
    pub registry: Arc<Registry>,
    /// Where progress events go.
    pub progress: ProgressSink,
    /// Read the tokenizer when the checkpoint has one.
    pub tokenizer: bool,
    /// For a repo id: the branch, tag or commit (the id's own `@revision` wins; `main`
    /// when neither).
    pub revision: Option<String>,
    /// For a GGUF repository: the `.gguf` file, or a quantization tag naming it.
    pub file: Option<String>,
    /// Read the tokenizer from this path or repo id instead of the checkpoint's.
    pub tokenizer_source: Option<String>,
    /// Tokens that also end generation, added to the checkpoint's end-of-sequence ids
    /// (those the vocabulary lacks are skipped).
    pub extra_eos_tokens: Vec<String>,
    /// The Hub's settings; from the environment when `None`.
    #[cfg(feature = "hub")]
    pub hub: Option<crate::hub::HubConfig>,
    /// How Hub downloads run.
    #[cfg(feature = "hub")]
    pub download: crate::hub::DownloadOptions,
    /// Load one stage of a pipeline over this group (when it has more than one rank): the
    /// model's blocks split over the ranks in contiguous ranges balanced by their bytes in
    /// the checkpoint, this rank building and reading only its own blocks (plus the
    /// embeddings, final norm and head). Every rank then runs generation alike.
    pub pipeline: Option<Arc<lamina_core::distributed::Group>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            activations: None,
            allow_mismatch: false,
            memory_limit: None,
            registry: Arc::new(Registry::with_builtins()),
            progress: ProgressSink::default(),
            tokenizer: true,
            revision: None,
            file: None,
            tokenizer_source: None,
            extra_eos_tokens: Vec::new(),
            #[cfg(feature = "hub")]
            hub: None,
            #[cfg(feature = "hub")]
            download: crate::hub::DownloadOptions::default(),
            pipeline: None,
        }
    }
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model, weights applied.
    pub model: Box<dyn LanguageModel>,
    /// `config.json` as read (or, for GGUF, as derived from the metadata).
    pub config: Value,
    /// Where it came from.
    pub checkpoint: Checkpoint,
    /// `generation_config.json` (defaults when absent).
    pub generation: GenerationConfig,
    /// The tokenizer, when the checkpoint has one and it was asked for.
    pub tokenizer: Option<Tokenizer>,
    /// How the tensors matched.
    pub report: LoadReport,
    /// Estimated bytes of the loaded weights.
    pub memory_bytes: u64,
    /// The blocks this process holds, numbered as in the whole model, when it is one
    /// stage of a pipeline ([`LoadOptions::pipeline`]).
    pub pipeline_layers: Option<std::ops::Range<usize>>,
}

impl LoadedModel {
    /// The end-of-sequence ids: `generation_config.json`'s when it has them, otherwise
    /// `config.json`'s.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        match &self.generation.eos_token_id {
            Some(ids) => ids.to_vec(),
            None => self.model.info().eos_token_ids,
        }
    }

    /// The config's `model_type`.
    pub fn model_type(&self) -> &str {
        model_type(&self.config).unwrap_or("unknown")
    }
}

/// Loads a checkpoint (see the crate docs for the steps). `reference` is a path, a known
/// model's name ([`crate::KNOWN_MODELS`]) or, with the `hub` feature, a repo id
/// (`org/name`, `org/name@revision`, `org/name:file.gguf`) fetched into the Hub cache.
///
/// # Errors
/// A [`LoaderError`] naming the file at fault.
pub async fn load(reference: impl AsRef<Path>, options: LoadOptions) -> Result<LoadedModel> {
    let (checkpoint, options) = locate(reference.as_ref(), options).await?;
    let finishing = options.clone();
    let mut loaded = match &checkpoint {
        Checkpoint::Folder(folder) => load_folder(folder.clone(), checkpoint.clone(), options).await?,
        Checkpoint::Gguf(file) => crate::gguf::load_gguf(file.clone(), checkpoint.clone(), options).await?,
    };
    finish(&mut loaded, &finishing).await?;
    Ok(loaded)
}

/// [`load`] on a runtime of its own, for callers without one.
///
/// # Errors
/// As [`load`].
pub fn load_blocking(path: impl AsRef<Path>, options: LoadOptions) -> Result<LoadedModel> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoaderError::Task(e.to_string()))?;
    runtime.block_on(load(path, options))
}

async fn read_json_async<T: DeserializeOwned>(path: PathBuf) -> Result<T> {
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| LoaderError::io(&path, e))?;
    parse_json(&path, &text)
}

async fn load_folder(folder: PathBuf, checkpoint: Checkpoint, options: LoadOptions) -> Result<LoadedModel> {
    let config_path = folder.join("config.json");
    let config: Value = read_json_async(config_path.clone()).await?;
    let budget = Budget { limit: options.memory_limit, bits: weight_bits(&config, options.dtype) };
    let mut model =
        options.registry.build_within(&config, budget).map_err(|e| LoaderError::model(&config_path, e))?;
    let share = split(model.as_mut(), options.pipeline.as_ref(), || tensor_bytes(&folder), &config_path)?;

    let (weights, memory_bytes) =
        read_shared_weights(&folder, options.dtype, options.memory_limit, &options.progress, &share).await?;
    let weights = model.sanitize(weights).map_err(|e| LoaderError::model(&config_path, e))?;
    let weights = share.renumbered(weights);
    if let Some(quantization) =
        CheckpointQuantization::from_config(&config).map_err(|e| LoaderError::model(&config_path, e))?
    {
        let quantization =
            quantization.with_activations(|_| options.activations.unwrap_or(Activations::Exact));
        quantization.prepare(model.as_mut(), &weights).map_err(|e| LoaderError::model(&config_path, e))?;
    }
    let report = apply_strictly(model.as_mut(), weights, options.allow_mismatch, &options.progress)?;

    let generation_path = folder.join("generation_config.json");
    let generation = if generation_path.is_file() {
        read_json_async(generation_path).await?
    } else {
        GenerationConfig::default()
    };
    let tokenizer_path = folder.join("tokenizer.json");
    let tokenizer = if options.tokenizer && tokenizer_path.is_file() {
        let read = tokio::task::spawn_blocking(move || Tokenizer::from_folder(&folder));
        Some(read.await.map_err(|e| LoaderError::Task(e.to_string()))??)
    } else {
        None
    };
    let pipeline_layers = share.layers();
    Ok(LoadedModel {
        model,
        config,
        checkpoint,
        generation,
        tokenizer,
        report,
        memory_bytes,
        pipeline_layers,
    })
}

/// Bits per parameter the loaded weights will take, from the config alone: the
/// quantization's bits, else the requested or saved dtype's, else 16 (the usual bf16).
/// A lower bound on purpose: the config check refuses only what cannot possibly fit.
fn weight_bits(config: &Value, dtype: Option<DType>) -> u64 {
    let quantized = config.pointer("/quantization/bits").and_then(Value::as_u64);
    let saved = config
        .get("torch_dtype")
        .or_else(|| config.get("dtype"))
        .and_then(|v| serde_json::from_value::<DType>(v.clone()).ok());
    let bytes = |d: DType| 8 * d.size_of() as u64;
    quantized.unwrap_or_else(|| dtype.or(saved).map_or(16, bytes)).clamp(1, 32)
}

/// Applies sanitized weights; an error unless they match or the caller allows a mismatch.
pub(crate) fn apply_strictly(
    model: &mut dyn LanguageModel,
    weights: Weights,
    allow_mismatch: bool,
    progress: &ProgressSink,
) -> Result<LoadReport> {
    let report = apply(model, weights);
    if !report.is_clean() && !allow_mismatch {
        return Err(LoaderError::Mismatch(report));
    }
    let params: Vec<_> = model.parameters().flatten().into_values().cloned().collect();
    mlx_rs::transforms::eval(params.iter())?;
    progress.send(Progress::Done { tensors: report.applied });
    Ok(report)
}

/// A shard index: its path and its key -> shard file map.
type ShardIndex = (PathBuf, BTreeMap<String, String>);

/// The safetensors files of a folder: the shards of `model.safetensors.index.json`, or
/// every `model*.safetensors`. Returns the files and the index.
pub(crate) fn weight_files(folder: &Path) -> Result<(Vec<PathBuf>, Option<ShardIndex>)> {
    let index_path = folder.join("model.safetensors.index.json");
    if index_path.is_file() {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let index: Index = read_json(&index_path)?;
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut files = Vec::with_capacity(shards.len());
        for shard in shards {
            let outside =
                || LoaderError::OutsideCheckpoint { index: index_path.clone(), shard: shard.clone() };
            let relative = Path::new(shard);
            if shard.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(outside());
            }
            let file = folder.join(relative);
            if !file.is_file() {
                return Err(LoaderError::MissingShard { index: index_path, shard: shard.clone() });
            }
            if !inside_checkpoint(folder, &file)? {
                return Err(outside());
            }
            files.push(file);
        }
        return Ok((files, Some((index_path, index.weight_map))));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| LoaderError::io(folder, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("model") && name.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoaderError::NotACheckpoint {
            path: folder.to_path_buf(),
            reason: "no model.safetensors, model.safetensors.index.json or model*.safetensors".into(),
        });
    }
    Ok((files, None))
}

/// Whether `file` (in `folder`) resolves inside the folder, or — for a Hugging Face cache
/// snapshot (`models--org--name/snapshots/<rev>/`), whose files link into the entry's
/// `blobs/` — inside that `blobs/` folder.
fn inside_checkpoint(folder: &Path, file: &Path) -> Result<bool> {
    let canonical = |p: &Path| p.canonicalize().map_err(|e| LoaderError::io(p, e));
    let target = canonical(file)?;
    let root = canonical(folder)?;
    if target.starts_with(&root) {
        return Ok(true);
    }
    let snapshots = root.parent().filter(|p| p.file_name().is_some_and(|n| n == "snapshots"));
    let blobs = snapshots.and_then(Path::parent).map(|entry| entry.join("blobs"));
    Ok(blobs.is_some_and(|blobs| target.starts_with(blobs)))
}

/// Reads every tensor of a folder's safetensors files, the files concurrently, after
/// checking the memory estimate against `limit`. Returns the tensors and the estimate.
///
/// # Errors
/// A [`LoaderError`] naming the file: unreadable, truncated or corrupt, a missing shard,
/// a key the index places in a shard that lacks it, a key in two files, the memory limit.
pub async fn read_weights(
    folder: &Path,
    dtype: Option<DType>,
    limit: Option<u64>,
    progress: &ProgressSink,
) -> Result<(Weights, u64)> {
    read_shared_weights(folder, dtype, limit, progress, &Share::All).await
}

/// Every tensor's key and bytes, from the headers of a folder's safetensors files.
fn tensor_bytes(folder: &Path) -> Result<Vec<(String, u64)>> {
    let (paths, _) = weight_files(folder)?;
    let mut bytes = Vec::new();
    for path in paths {
        bytes.extend(TensorFile::open(&path)?.tensors()?.into_iter().map(|t| (t.name, t.bytes)));
    }
    Ok(bytes)
}

/// [`read_weights`] of the tensors `share` keeps (the estimate counts only those).
async fn read_shared_weights(
    folder: &Path,
    dtype: Option<DType>,
    limit: Option<u64>,
    progress: &ProgressSink,
    share: &Share,
) -> Result<(Weights, u64)> {
    let (paths, index) = weight_files(folder)?;
    let opened = tokio::task::spawn_blocking(move || {
        paths.iter().map(|p| TensorFile::open(p)).collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| LoaderError::Task(e.to_string()))??;
    let mut tensors = 0;
    let (mut disk, mut needed) = (0u64, 0u64);
    let mut owner: HashMap<String, PathBuf> = HashMap::new();
    for file in &opened {
        for info in file.tensors()? {
            if share.keeps(&info.name) {
                tensors += 1;
                disk += info.bytes;
                needed += info.loaded_bytes(dtype);
            }
            if let Some(first) = owner.insert(info.name.clone(), file.path().to_path_buf()) {
                return Err(LoaderError::Safetensors {
                    path: file.path().to_path_buf(),
                    reason: format!("tensor `{}` is also in {}", info.name, first.display()),
                });
            }
        }
    }
    if let Some((index_path, map)) = &index {
        for (key, shard) in map {
            let found = owner.get(key).and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            if found.as_deref() != Some(shard.as_str()) {
                return Err(LoaderError::Safetensors {
                    path: folder.join(shard),
                    reason: format!("{} places `{key}` here, but the file lacks it", index_path.display()),
                });
            }
        }
    }
    if let Some(limit) = limit {
        if needed > limit {
            return Err(LoaderError::MemoryLimit { needed, limit });
        }
    }
    progress.send(Progress::Started { files: opened.len(), tensors, bytes: disk });

    let mut tasks = tokio::task::JoinSet::new();
    for file in opened {
        let sink = progress.clone();
        let share = share.clone();
        tasks.spawn_blocking(move || {
            sink.send(Progress::FileStarted { path: file.path().to_path_buf() });
            let read = file.read_where(&sink, |name| share.keeps(name));
            sink.send(Progress::FileDone { path: file.path().to_path_buf() });
            read
        });
    }
    let mut weights = Weights::with_capacity(tensors);
    while let Some(joined) = tasks.join_next().await {
        for (name, array) in joined.map_err(|e| LoaderError::Task(e.to_string()))?? {
            weights.insert(name, array);
        }
    }
    if let Some(target) = dtype {
        for array in weights.values_mut() {
            if array.dtype().is_float() && array.dtype() != target.into() {
                *array = array.as_dtype(target.into())?;
            }
        }
        mlx_rs::transforms::eval(weights.values())?;
    }
    Ok((weights, needed))
}
