//! The model an example runs: what `--model` names (a path, a known model's name such as
//! `qwen3-0.6b`, or a Hub repo id `org/name`), else the embedded default
//! (SmolLM2-135M-Instruct, Q4_1 GGUF) installed by the build.

use std::path::PathBuf;

/// `model`, or the embedded default when it is `None`.
pub fn model_or_default(model: Option<String>) -> Result<String, String> {
    if let Some(model) = model {
        return Ok(model);
    }
    let path = option_env!("LAMINA_DEFAULT_MODEL")
        .map(PathBuf::from)
        .ok_or("no default model was provisioned at build time; pass --model")?;
    if path.exists() {
        Ok(path.to_string_lossy().into_owned())
    } else {
        Err(format!(
            "the default model is not at {} (its install failed at build time); pass --model",
            path.display()
        ))
    }
}

/// The models `--model` knows by name, one per line.
#[allow(dead_code)]
pub fn known_models() -> String {
    let mut text = String::from("name                  format        repository\n");
    for model in lamina::loader::KNOWN_MODELS {
        let repo = match model.file {
            Some(file) => format!("{}:{file}", model.repo),
            None => model.repo.to_owned(),
        };
        let gated = if model.gated { "  (gated: needs HF_TOKEN)" } else { "" };
        text.push_str(&format!("{:<21} {:<13} {repo}{gated}\n", model.name, model.format.to_string()));
    }
    text
}
