//! The safetensors files lamina-train writes (adapters, trainable parameters, optimizer
//! state) and their strict loading into a model.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

use crate::error::{Result, TrainError};

/// Writes named arrays to a safetensors file.
pub(crate) fn save<'a>(path: &Path, arrays: impl IntoIterator<Item = (&'a str, &'a Array)>) -> Result<()> {
    Array::save_safetensors(arrays, None, path)
        .map_err(|e| TrainError::Adapters { path: path.to_path_buf(), reason: e.to_string() })
}

/// Reads a safetensors file, eagerly: MLX loads lazily, and a lazy array would read the
/// file when first used — after a checkpoint written to the same path truncated it.
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Array>> {
    let failed =
        |e: &dyn std::fmt::Display| TrainError::Adapters { path: path.to_path_buf(), reason: e.to_string() };
    let arrays = Array::load_safetensors(path).map_err(|e| failed(&e))?;
    mlx_rs::transforms::eval(arrays.values()).map_err(|e| failed(&e))?;
    Ok(arrays)
}

/// Loads the file at `path` into the model's parameters `expected` (key and shape),
/// strictly: every expected key must be in the file with its shape, and nothing else.
pub(crate) fn load_into<M: ModuleParameters + ?Sized>(
    model: &mut M,
    path: &Path,
    expected: &HashMap<String, Vec<i32>>,
) -> Result<()> {
    let saved = read(path)?;
    let mismatch = |reason: String| Err(TrainError::Adapters { path: path.to_path_buf(), reason });
    let mut keys: Vec<&String> = expected.keys().collect();
    keys.sort();
    for key in keys {
        match saved.get(key) {
            None => return mismatch(format!("has no `{key}`")),
            Some(v) if v.shape() != expected[key].as_slice() => {
                return mismatch(format!("`{key}` is {:?}, the model needs {:?}", v.shape(), expected[key]));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = saved.keys().find(|k| !expected.contains_key(k.as_str())) {
        return mismatch(format!("`{extra}` has no place in this model"));
    }
    model.update_flattened(saved.into_iter().map(|(k, v)| (Rc::from(k.as_str()), v)).collect());
    Ok(())
}

/// Keys and shapes of named arrays.
pub(crate) fn shapes<'a, K: AsRef<str> + 'a>(
    arrays: impl IntoIterator<Item = (K, &'a Array)>,
) -> HashMap<String, Vec<i32>> {
    arrays.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.shape().to_vec())).collect()
}
