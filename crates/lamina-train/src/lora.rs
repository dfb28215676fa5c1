//! LoRA fine-tuning of whole models: attach adapters to linear layers chosen by name,
//! train only them, save and load them (`adapters.safetensors` + `adapter_config.json`,
//! mlx-lm's layout), and fuse them into the base weights.

use std::collections::HashMap;
use std::path::Path;

use lamina_components::{LoraConfig, Quantizable};
use lamina_core::Config;
use lamina_families::LanguageModel;
use mlx_rs::Array;
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

/// What `adapter_config.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Rank, alpha, dropout.
    pub lora: LoraConfig,
    /// Which layers.
    pub targets: LoraTargets,
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
    model.freeze_parameters(true);
    let num_layers = model.info().num_layers;
    let mut adapted = Vec::new();
    model.visit_layers("", &mut |path, layer| {
        if let Quantizable::Linear(linear) = layer {
            if targets.matches(path, num_layers) {
                linear.attach_lora(config)?;
                adapted.push(path.to_owned());
            }
        }
        Ok(())
    })?;
    if adapted.is_empty() {
        return Err(TrainError::Data(format!("no linear layer is named any of {:?}", targets.names)));
    }
    Ok(adapted)
}

/// The adapters' arrays under their full keys (`model.layers.0.self_attn.q_proj.lora_a`).
pub fn adapter_weights(model: &dyn LanguageModel) -> HashMap<String, Array> {
    model
        .parameters()
        .flatten()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".lora_a") || k.ends_with(".lora_b"))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
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

/// Attaches the adapters saved in `dir` to a base model and loads their weights,
/// strictly: every saved adapter must have a layer, every attached adapter a tensor of
/// its shape.
///
/// # Errors
/// [`TrainError::Adapters`] naming the mismatch; I/O and JSON errors naming the file.
pub fn load_adapters(model: &mut dyn LanguageModel, dir: &Path) -> Result<AdapterConfig> {
    let config: AdapterConfig = read_json(&dir.join(ADAPTER_CONFIG))?;
    apply_lora(model, &config.targets, config.lora)?;
    let expected = weights::shapes(&adapter_weights(model));
    weights::load_into(model, &dir.join(ADAPTER_WEIGHTS), &expected)?;
    Ok(config)
}

/// Merges every adapter into its base weight (re-quantizing quantized bases) and
/// removes it. Returns how many were fused.
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
