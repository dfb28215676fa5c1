//! Quantizing whole models, and preparing a model for a quantized checkpoint.

use std::collections::BTreeMap;

use lamina_components::{Activations, QuantConfig, Quantizable};
use lamina_core::{Config, Result};
use mlx_rs::module::ModuleParameters;
use serde_json::{Value, json};

use crate::model::{LanguageModel, Weights};

/// What [`quantize_model`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// Layers quantized (checkpoint paths).
    pub quantized: Vec<String>,
    /// Layers left dense, with why (their width does not divide into groups).
    pub skipped: Vec<(String, String)>,
}

fn width(layer: &Quantizable<'_>) -> i32 {
    match layer {
        Quantizable::Linear(l) => l.dims().0,
        Quantizable::Embedding(e) => e.dims(),
    }
}

/// Quantizes every linear layer and embedding whose input width is a multiple of the
/// group size (mlx-lm's rule), in place.
///
/// # Errors
/// [`lamina_core::Error::InvalidConfig`] for a bad config; MLX errors.
pub fn quantize_model(model: &mut dyn LanguageModel, config: QuantConfig) -> Result<QuantizeReport> {
    config.validated()?;
    let mut report = QuantizeReport::default();
    model.visit_layers("", &mut |path, layer| {
        if width(&layer) % config.group_size != 0 {
            report.skipped.push((
                path.to_owned(),
                format!("width {} is not a multiple of {}", width(&layer), config.group_size),
            ));
            return Ok(());
        }
        match layer {
            Quantizable::Linear(l) if l.quantization().is_none() => l.quantize(config)?,
            Quantizable::Embedding(e) if e.quantization().is_none() => e.quantize(config)?,
            _ => return Ok(()),
        }
        report.quantized.push(path.to_owned());
        Ok(())
    })?;
    Ok(report)
}

/// The quantization a `config.json` declares (`quantization` or
/// `quantization_config`): the default and any per-layer overrides (a layer mapped to
/// `false` stays dense).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointQuantization {
    /// The default.
    pub default: QuantConfig,
    /// Per-layer settings; `None` means dense.
    pub overrides: BTreeMap<String, Option<QuantConfig>>,
}

impl CheckpointQuantization {
    /// Reads it from `config.json`, if the checkpoint is quantized.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for values lamina cannot use.
    pub fn from_config(config: &Value) -> Result<Option<Self>> {
        let Some(q) = config.get("quantization").or_else(|| config.get("quantization_config")) else {
            return Ok(None);
        };
        let read = |v: &Value, default: Option<QuantConfig>| -> Result<QuantConfig> {
            let field = |k: &str| v.get(k).and_then(Value::as_i64).map(|n| n as i32);
            let parsed = QuantConfig {
                group_size: field("group_size").or(default.map(|d| d.group_size)).unwrap_or(64),
                bits: field("bits").or(default.map(|d| d.bits)).unwrap_or(4),
                activations: Activations::Exact,
                blocks: None,
            };
            parsed.validated()?;
            Ok(parsed)
        };
        let default = read(q, None)?;
        let mut overrides = BTreeMap::new();
        if let Some(map) = q.as_object() {
            for (key, value) in map {
                match value {
                    Value::Bool(false) => {
                        overrides.insert(key.clone(), None);
                    }
                    Value::Object(_) => {
                        overrides.insert(key.clone(), Some(read(value, Some(default))?));
                    }
                    _ => {}
                }
            }
        }
        Ok(Some(CheckpointQuantization { default, overrides }))
    }

    /// The same, each layer's products reading `x` as `activations(layer)` says (the
    /// default's as `activations("")`).
    pub fn with_activations(mut self, activations: impl Fn(&str) -> Activations) -> Self {
        self.default.activations = activations("");
        for (layer, config) in &mut self.overrides {
            if let Some(config) = config {
                config.activations = activations(layer);
            }
        }
        self
    }

    /// The `config.json` entry for a model quantized uniformly with `config`.
    pub fn config_entry(config: QuantConfig) -> Value {
        json!({"group_size": config.group_size, "bits": config.bits})
    }

    /// Turns every layer whose `<path>.scales` the checkpoint holds (mlx-lm's rule), or
    /// whose own entry is a GGUF block format, into a quantized layer of the right shapes, so
    /// the checkpoint applies strictly.
    ///
    /// # Errors
    /// When a layer's width does not fit its groups.
    pub fn prepare(&self, model: &mut dyn LanguageModel, weights: &Weights) -> Result<()> {
        model.visit_layers("", &mut |path, layer| {
            // GGUF super-blocks hold their scales inside: the layer's own entry says so.
            let blocks = matches!(self.overrides.get(path), Some(Some(QuantConfig { blocks: Some(_), .. })));
            if !blocks && !weights.contains_key(&format!("{path}.scales")) {
                return Ok(());
            }
            let Some(config) = self.overrides.get(path).copied().unwrap_or(Some(self.default)) else {
                return Ok(());
            };
            match layer {
                Quantizable::Linear(l) if l.quantization().is_none() => l.quantize_structure(config),
                Quantizable::Embedding(e) if e.quantization().is_none() => e.quantize_structure(config),
                _ => Ok(()),
            }
        })
    }
}

/// The model's size in memory: bytes of its parameters as held, quantized layers at their
/// packed size (weights, scales and biases), so it reflects the bit width
/// (mlx_train's `ModelBuilder.estimate_model_size`).
pub fn estimate_model_size<M: ModuleParameters + ?Sized>(model: &M) -> u64 {
    model.parameters().flatten().values().map(|a| a.nbytes() as u64).sum()
}
