//! Fine-tuning of whole models, as mlx-lm's `--fine-tune-type`: LoRA or DoRA adapters on
//! linear layers chosen by name, or full fine-tuning of those layers' own weights. Only
//! they train; they save and load (`adapters.safetensors` + `adapter_config.json`,
//! mlx-lm's layout) and fuse into the base weights.

use std::collections::HashMap;
use std::path::Path;

use lamina_components::{AdapterKind, LoraConfig, Quantizable};
use lamina_core::Config;
use lamina_families::LanguageModel;
use mlx_rs::Array;
use mlx_rs::module::Parameter;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::weights;
use lamina_loader::{read_json, write_json};

/// The adapters' file names.
pub const ADAPTER_WEIGHTS: &str = "adapters.safetensors";
/// The adapters' config file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// Which linear layers get adapters: by the last component of their checkpoint path
/// (`q_proj`, `v_proj`, ...), never the LM head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraTargets {
    /// Layer names; empty means every linear layer of attention and feed-forward.
    pub names: Vec<String>,
    /// Only the last this many blocks (`layers.N`); all when absent. Blocks below the
    /// first adapted one need no backward pass.
    #[serde(default)]
    pub last_layers: Option<usize>,
}

impl LoraTargets {
    /// The given names.
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        LoraTargets { names: names.into_iter().map(Into::into).collect(), last_layers: None }
    }

    /// The same targets in the last `n` blocks only.
    pub fn in_last_layers(self, n: usize) -> Self {
        LoraTargets { last_layers: Some(n), ..self }
    }

    /// `q_proj` and `v_proj` (the original LoRA paper's choice).
    pub fn query_value() -> Self {
        Self::names(["q_proj", "v_proj"])
    }

    /// Every linear layer of attention and feed-forward blocks.
    pub fn all_linear() -> Self {
        LoraTargets { names: Vec::new(), last_layers: None }
    }

    fn matches(&self, path: &str, num_layers: usize) -> bool {
        if path == "lm_head" || path.ends_with(".lm_head") {
            return false;
        }
        if let Some(n) = self.last_layers {
            let layer =
                path.split('.').skip_while(|p| *p != "layers").nth(1).and_then(|i| i.parse::<usize>().ok());
            if layer.is_none_or(|i| i + n < num_layers) {
                return false;
            }
        }
        let last = path.rsplit('.').next().unwrap_or(path);
        self.names.is_empty() || self.names.iter().any(|n| n == last)
    }
}

/// What trains.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum FineTuneType {
    /// Low-rank adapters on the targeted layers.
    #[default]
    Lora,
    /// Weight-decomposed low-rank adapters (a learned magnitude per output row).
    Dora,
    /// The targeted layers' own weights and biases (dense layers only).
    Full,
}

/// What `adapter_config.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Rank, alpha, dropout, and LoRA or DoRA (unused for full fine-tuning).
    pub lora: LoraConfig,
    /// Which layers.
    pub targets: LoraTargets,
    /// What trains (LoRA when absent from a saved config).
    #[serde(default)]
    pub fine_tune_type: FineTuneType,
}

impl AdapterConfig {
    /// LoRA or DoRA adapters (as `kind`) of `lora`'s shape on `targets`.
    pub fn adapters(lora: LoraConfig, targets: LoraTargets) -> Self {
        let fine_tune_type = match lora.kind {
            AdapterKind::Lora => FineTuneType::Lora,
            AdapterKind::Dora => FineTuneType::Dora,
        };
        AdapterConfig { lora, targets, fine_tune_type }
    }

    /// Full fine-tuning of `targets`.
    pub fn full(targets: LoraTargets) -> Self {
        AdapterConfig { lora: LoraConfig::default(), targets, fine_tune_type: FineTuneType::Full }
    }
}

/// Freezes the model and makes what `config` names trainable: adapters on the targeted
/// layers (LoRA or DoRA), or the targeted layers' weights (full). Returns their paths.
///
/// # Errors
/// As [`apply_lora`]; full fine-tuning of a quantized layer.
pub fn apply_fine_tuning(model: &mut dyn LanguageModel, config: &AdapterConfig) -> Result<Vec<String>> {
    let kind = match config.fine_tune_type {
        FineTuneType::Lora => AdapterKind::Lora,
        FineTuneType::Dora => AdapterKind::Dora,
        FineTuneType::Full => return unfreeze_targets(model, &config.targets),
    };
    apply_lora(model, &config.targets, LoraConfig { kind, ..config.lora })
}

/// Freezes the model, then unfreezes the targeted linear layers' weights and biases.
fn unfreeze_targets(model: &mut dyn LanguageModel, targets: &LoraTargets) -> Result<Vec<String>> {
    for_targets(model, targets, &mut |linear| {
        if linear.quantization().is_some() {
            return Err(lamina_core::Error::Unsupported(
                "full fine-tuning of a quantized layer (load the model with a float dtype)",
            ));
        }
        linear.weight.unfreeze(true);
        linear.bias.unfreeze(true);
        Ok(())
    })
}

/// Freezes the model and attaches adapters to the targeted linear layers (quantized ones
/// included: QLoRA). Returns the adapted layers' paths.
///
/// # Errors
/// For a bad config, a layer already adapted, or no layer matching the targets.
pub fn apply_lora(
    model: &mut dyn LanguageModel,
    targets: &LoraTargets,
    config: LoraConfig,
) -> Result<Vec<String>> {
    config.validated()?;
    for_targets(model, targets, &mut |linear| linear.attach_lora(config))
}

/// Freezes the model and calls `f` on every targeted linear layer; returns their paths,
/// an error when none matches.
fn for_targets(
    model: &mut dyn LanguageModel,
    targets: &LoraTargets,
    f: &mut dyn FnMut(&mut lamina_components::Linear) -> lamina_core::Result<()>,
) -> Result<Vec<String>> {
    model.freeze_parameters(true);
    let num_layers = model.info().num_layers;
    let mut chosen = Vec::new();
    model.visit_layers("", &mut |path, layer| {
        if let Quantizable::Linear(linear) = layer {
            if targets.matches(path, num_layers) {
                f(linear)?;
                chosen.push(path.to_owned());
            }
        }
        Ok(())
    })?;
    if chosen.is_empty() {
        return Err(TrainError::Data(format!("no linear layer is named any of {:?}", targets.names)));
    }
    Ok(chosen)
}

/// What trains, under full keys: the adapters' arrays
/// (`model.layers.0.self_attn.q_proj.lora_a`, `lora_b`, DoRA's `m`), or for full
/// fine-tuning the layers' `weight` and `bias`.
pub fn adapter_weights(model: &dyn LanguageModel) -> HashMap<String, Array> {
    model.trainable_parameters().flatten().into_iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Writes `adapters.safetensors` and `adapter_config.json` into `dir`.
///
/// # Errors
/// I/O and JSON errors naming the file; MLX errors.
pub fn save_adapters(model: &dyn LanguageModel, config: &AdapterConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let weights = adapter_weights(model);
    if weights.is_empty() {
        return Err(TrainError::Adapters {
            path: dir.to_path_buf(),
            reason: "the model has no adapters".into(),
        });
    }
    weights::save(&dir.join(ADAPTER_WEIGHTS), weights.iter().map(|(k, v)| (k.as_str(), v)))?;
    Ok(write_json(&dir.join(ADAPTER_CONFIG), config)?)
}

/// Attaches the adapters saved in `dir` to a base model (or, for full fine-tuning, makes
/// the saved layers trainable) and loads their weights, strictly: every saved array must
/// have a place, every trainable array a tensor of its shape.
///
/// # Errors
/// [`TrainError::Adapters`] naming the mismatch; I/O and JSON errors naming the file.
pub fn load_adapters(model: &mut dyn LanguageModel, dir: &Path) -> Result<AdapterConfig> {
    let config: AdapterConfig = read_json(&dir.join(ADAPTER_CONFIG))?;
    apply_fine_tuning(model, &config)?;
    let expected = weights::shapes(&adapter_weights(model));
    weights::load_into(model, &dir.join(ADAPTER_WEIGHTS), &expected)?;
    Ok(config)
}

/// Merges every adapter into its base weight (re-quantizing quantized bases) and
/// removes it. Returns how many were fused (none after full fine-tuning, whose weights
/// are the model's own).
///
/// # Errors
/// MLX errors.
pub fn fuse_adapters(model: &mut dyn LanguageModel) -> Result<usize> {
    let mut fused = 0;
    model.visit_layers("", &mut |_, layer| {
        if let Quantizable::Linear(linear) = layer {
            if linear.lora_config().is_some() {
                linear.fuse_lora()?;
                fused += 1;
            }
        }
        Ok(())
    })?;
    Ok(fused)
}
