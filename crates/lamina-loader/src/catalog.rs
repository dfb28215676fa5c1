//! What to load and how (`ModelSpec`, as mlx-swift-lm's `ModelConfiguration`), and the
//! models lamina knows by name (as its `LLMRegistry`).

use crate::load::LoadOptions;

/// How a model is loaded: where from, at which revision, and what to add to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSpec {
    /// A local path (folder, cache snapshot, `.gguf` file) or a repo id `org/name`
    /// (optionally `@revision` and `:file`).
    pub id: String,
    /// A branch, tag or commit of the repository (the id's own `@revision` wins).
    pub revision: Option<String>,
    /// For a GGUF repository: the file, or a quantization tag naming it (`Q4_K_M`).
    pub file: Option<String>,
    /// Read the tokenizer from this path or repository instead.
    pub tokenizer_id: Option<String>,
    /// Tokens that also end generation (e.g. `<|im_end|>`), added to the checkpoint's.
    pub extra_eos_tokens: Vec<String>,
    /// A prompt to try the model with.
    pub default_prompt: Option<String>,
}

impl ModelSpec {
    /// A configuration loading `id` as it is.
    pub fn new(id: impl Into<String>) -> Self {
        ModelSpec { id: id.into(), ..Default::default() }
    }

    /// `options` with this configuration's settings where `options` leaves them unset.
    pub fn apply(&self, options: LoadOptions) -> LoadOptions {
        let mut extra_eos_tokens = options.extra_eos_tokens;
        for token in &self.extra_eos_tokens {
            if !extra_eos_tokens.contains(token) {
                extra_eos_tokens.push(token.clone());
            }
        }
        LoadOptions {
            revision: options.revision.or_else(|| self.revision.clone()),
            file: options.file.or_else(|| self.file.clone()),
            tokenizer_source: options.tokenizer_source.or_else(|| self.tokenizer_id.clone()),
            extra_eos_tokens,
            ..options
        }
    }
}

/// How a known model's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "kebab-case")]
pub enum Format {
    /// Safetensors in bf16/f16 (the publisher's own repository).
    Safetensors,
    /// mlx-community's 4-bit MLX build.
    Mlx4Bit,
    /// A GGUF file.
    Gguf,
}

/// A public checkpoint lamina knows by a short name (`--model qwen3-0.6b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The short name.
    pub name: &'static str,
    /// The repository.
    pub repo: &'static str,
    /// For GGUF repositories, the file.
    pub file: Option<&'static str>,
    /// How the weights are stored.
    pub format: Format,
    /// Whether the repository is gated (a token whose account accepted its terms).
    pub gated: bool,
    /// Tokens that end a turn besides the checkpoint's EOS ids.
    pub extra_eos_tokens: &'static [&'static str],
}

impl KnownModel {
    /// Its [`ModelSpec`].
    pub fn configuration(&self) -> ModelSpec {
        ModelSpec {
            id: self.repo.to_owned(),
            file: self.file.map(str::to_owned),
            extra_eos_tokens: self.extra_eos_tokens.iter().map(|t| (*t).to_owned()).collect(),
            default_prompt: Some("What is the capital of France?".to_owned()),
            ..ModelSpec::default()
        }
    }
}

const IM_END: &[&str] = &["<|im_end|>"];
const EOT: &[&str] = &["<|eot_id|>"];
const END_OF_TURN: &[&str] = &["<end_of_turn>"];
const PHI_END: &[&str] = &["<|end|>"];

const fn known(
    name: &'static str,
    repo: &'static str,
    format: Format,
    eos: &'static [&'static str],
) -> KnownModel {
    KnownModel { name, repo, file: None, format, gated: false, extra_eos_tokens: eos }
}

const fn gated(model: KnownModel) -> KnownModel {
    KnownModel { gated: true, ..model }
}

const fn gguf(
    name: &'static str,
    repo: &'static str,
    file: &'static str,
    eos: &'static [&'static str],
) -> KnownModel {
    KnownModel { name, repo, file: Some(file), format: Format::Gguf, gated: false, extra_eos_tokens: eos }
}

/// The models lamina knows by name: the presets' public checkpoints, mlx-community's 4-bit
/// builds and GGUF files, for every family lamina runs.
pub const KNOWN_MODELS: &[KnownModel] = &[
    known("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", Format::Safetensors, IM_END),
    known("smollm2-360m", "HuggingFaceTB/SmolLM2-360M-Instruct", Format::Safetensors, IM_END),
    known("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", Format::Safetensors, IM_END),
    gguf(
        "smollm2-135m-gguf",
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q4_K_M.gguf",
        IM_END,
    ),
    known("smollm3-3b", "HuggingFaceTB/SmolLM3-3B", Format::Safetensors, IM_END),
    gated(known("llama-3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", Format::Safetensors, EOT)),
    known("llama-3.2-1b-4bit", "mlx-community/Llama-3.2-1B-Instruct-4bit", Format::Mlx4Bit, EOT),
    known("llama-3.2-3b-4bit", "mlx-community/Llama-3.2-3B-Instruct-4bit", Format::Mlx4Bit, EOT),
    gguf(
        "llama-3.2-1b-gguf",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        EOT,
    ),
    known("mistral-7b-4bit", "mlx-community/Mistral-7B-Instruct-v0.3-4bit", Format::Mlx4Bit, &[]),
    known("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", Format::Safetensors, IM_END),
    known("qwen2.5-0.5b-4bit", "mlx-community/Qwen2.5-0.5B-Instruct-4bit", Format::Mlx4Bit, IM_END),
    known("qwen2.5-1.5b-4bit", "mlx-community/Qwen2.5-1.5B-Instruct-4bit", Format::Mlx4Bit, IM_END),
    gguf("qwen2.5-0.5b-gguf", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf", IM_END),
    known("qwen3-0.6b", "Qwen/Qwen3-0.6B", Format::Safetensors, IM_END),
    known("qwen3-0.6b-4bit", "mlx-community/Qwen3-0.6B-4bit", Format::Mlx4Bit, IM_END),
    known("qwen3-1.7b-4bit", "mlx-community/Qwen3-1.7B-4bit", Format::Mlx4Bit, IM_END),
    known("qwen3-4b-4bit", "mlx-community/Qwen3-4B-4bit", Format::Mlx4Bit, IM_END),
    gated(known("gemma-2-2b", "google/gemma-2-2b-it", Format::Safetensors, END_OF_TURN)),
    known("gemma-2-2b-4bit", "mlx-community/gemma-2-2b-it-4bit", Format::Mlx4Bit, END_OF_TURN),
    gated(known("gemma-3-270m", "google/gemma-3-270m-it", Format::Safetensors, END_OF_TURN)),
    known("gemma-3-1b-4bit", "mlx-community/gemma-3-1b-it-4bit", Format::Mlx4Bit, END_OF_TURN),
    known("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", Format::Safetensors, PHI_END),
    known("phi-3-mini-4bit", "mlx-community/Phi-3-mini-4k-instruct-4bit", Format::Mlx4Bit, PHI_END),
    known("mamba-130m", "state-spaces/mamba-130m-hf", Format::Safetensors, &[]),
    known("mobilellm-r1-140m", "facebook/MobileLLM-R1-140M", Format::Safetensors, &[]),
];

/// The known model named `name` (case-insensitive).
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_model_is_well_formed() {
        let mut names = std::collections::HashSet::new();
        for model in KNOWN_MODELS {
            assert!(names.insert(model.name), "{} twice", model.name);
            assert_eq!(model.name, model.name.to_ascii_lowercase());
            assert!(!model.name.contains('/'), "{}: a name must not read as a repo id", model.name);
            #[cfg(feature = "hub")]
            assert!(crate::hub::RepoRef::new(model.repo).is_ok(), "{}", model.repo);
            assert_eq!(model.file.is_some(), model.format == Format::Gguf, "{}", model.name);
            assert!(model.file.is_none_or(|f| f.ends_with(".gguf")));
            assert_eq!(
                model.format == Format::Mlx4Bit,
                model.repo.starts_with("mlx-community/"),
                "{}",
                model.name
            );
        }
        assert_eq!(known_model("Qwen3-0.6B").map(|m| m.repo), Some("Qwen/Qwen3-0.6B"));
        assert!(known_model("nope").is_none());
    }

    #[test]
    fn a_configuration_fills_only_what_the_options_leave_unset() {
        let configuration = known_model("qwen2.5-0.5b-gguf").unwrap().configuration();
        let options =
            configuration.apply(LoadOptions { revision: Some("v1".into()), ..LoadOptions::default() });
        assert_eq!(options.revision.as_deref(), Some("v1"));
        assert_eq!(options.file.as_deref(), Some("qwen2.5-0.5b-instruct-q4_k_m.gguf"));
        assert_eq!(options.extra_eos_tokens, ["<|im_end|>"]);
        let twice = configuration.apply(options);
        assert_eq!(twice.extra_eos_tokens, ["<|im_end|>"]);
    }
}
