//! The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF), installed by the build.

use std::path::PathBuf;

/// `model`, or the embedded default when it is `None`.
pub fn model_or_default(model: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = model {
        return Ok(path);
    }
    let path = option_env!("LAMINA_DEFAULT_MODEL")
        .map(PathBuf::from)
        .ok_or("no default model was provisioned at build time; pass --model")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "the default model is not at {} (its install failed at build time); pass --model",
            path.display()
        ))
    }
}
