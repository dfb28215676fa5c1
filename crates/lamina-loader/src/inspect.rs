//! What a checkpoint holds, from its headers alone: nothing but JSON and tensor headers
//! is read.

use std::path::Path;

use serde_json::Value;

use crate::error::{LoaderError, Result};
use crate::gguf;
use crate::json::read_json;
use crate::load::weight_files;
use crate::resolve::{Checkpoint, resolve};
use crate::safetensors::{TensorFile, TensorInfo};

/// A checkpoint described without loading it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Where it is.
    pub checkpoint: Checkpoint,
    /// `config.json` (or the config derived from GGUF metadata).
    pub config: Value,
    /// Every tensor, sorted by name, as stored.
    pub tensors: Vec<TensorInfo>,
}

impl Inspection {
    /// Scalar parameters stored.
    pub fn num_parameters(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::numel).sum()
    }

    /// Bytes the tensors take on disk.
    pub fn bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }
}

/// Reads a checkpoint's config and tensor headers.
///
/// # Errors
/// A [`LoaderError`] naming the file that cannot be read.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let checkpoint = resolve(path)?;
    match &checkpoint {
        Checkpoint::Folder(folder) => {
            let config = read_json(&folder.join("config.json"))?;
            let (files, _) = weight_files(folder)?;
            let mut tensors = Vec::new();
            for file in files {
                tensors.extend(TensorFile::open(&file)?.tensors()?);
            }
            tensors.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Inspection { checkpoint, config, tensors })
        }
        Checkpoint::Gguf(file) => {
            let (header, _, config) = gguf::read_config(file)?;
            let config = serde_json::to_value(&config)
                .map_err(|source| LoaderError::Json { path: file.clone(), source })?;
            let mut tensors: Vec<TensorInfo> = header
                .tensors
                .iter()
                .map(|t| TensorInfo {
                    name: t.name.clone(),
                    dtype: format!("{:?}", t.kind),
                    shape: t.shape.iter().map(|&d| d as usize).collect(),
                    bytes: t.bytes,
                })
                .collect();
            tensors.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Inspection { checkpoint, config, tensors })
        }
    }
}
