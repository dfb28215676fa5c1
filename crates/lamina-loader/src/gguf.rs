//! GGUF checkpoints (llama.cpp's format).

use std::path::PathBuf;

use crate::error::{LoaderError, Result};
use crate::load::{LoadOptions, LoadedModel};
use crate::resolve::Checkpoint;

/// Loads a GGUF file.
///
/// # Errors
/// Until GGUF support lands: [`LoaderError::Gguf`] saying so.
pub(crate) async fn load_gguf(
    path: PathBuf,
    _checkpoint: Checkpoint,
    _options: LoadOptions,
) -> Result<LoadedModel> {
    Err(LoaderError::Gguf { path, reason: "GGUF loading is not implemented yet".into() })
}
