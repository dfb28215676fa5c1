//! Writing a model as a Hugging Face style folder: `config.json` + `model.safetensors`,
//! which lamina's loader (and mlx-lm) read back.

use std::collections::HashMap;
use std::path::Path;

use lamina_families::LanguageModel;
use mlx_rs::Array;
use serde_json::Value;

use crate::error::{LoaderError, Result};
use crate::json::write_json;

/// Writes `config.json` and `model.safetensors` (every parameter, under its checkpoint
/// name) into `dir`, creating it.
///
/// # Errors
/// [`LoaderError::Io`] naming the file that cannot be written; MLX errors.
pub fn save_checkpoint(dir: &Path, config: &Value, model: &dyn LanguageModel) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LoaderError::io(dir, e))?;
    write_json(&dir.join("config.json"), config)?;
    let params = model.parameters().flatten();
    let arrays: Vec<(String, &Array)> = params.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let metadata = HashMap::from([("format".to_owned(), "mlx".to_owned())]);
    let path = dir.join("model.safetensors");
    Array::save_safetensors(arrays.iter().map(|(k, v)| (k.as_str(), *v)), &metadata, &path)
        .map_err(|e| LoaderError::Safetensors { path, reason: e.to_string() })
}
