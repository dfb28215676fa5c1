//! The optimizers training uses (mlx-rs's AdamW and SGD) behind one type whose learning
//! rate the schedule sets and whose state checkpoints save and restore exactly.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::optimizers::{AdamW, Optimizer, Sgd};
use mlx_rs::{Array, array};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::weights;

/// Which optimizer, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// AdamW as MLX defines it (decoupled weight decay, no bias correction).
    AdamW {
        /// Decoupled weight decay.
        weight_decay: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Added to the denominator.
        eps: f32,
    },
    /// Stochastic gradient descent.
    Sgd {
        /// Momentum (0 = none).
        momentum: f32,
        /// L2 weight decay.
        weight_decay: f32,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::AdamW { weight_decay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// An optimizer.
#[derive(Debug)]
pub enum TrainOptimizer {
    /// AdamW.
    AdamW(AdamW),
    /// SGD.
    Sgd(Sgd),
}

impl TrainOptimizer {
    /// A fresh optimizer at learning rate `lr`.
    pub fn new(config: OptimizerConfig, lr: f32) -> Self {
        match config {
            OptimizerConfig::AdamW { weight_decay, beta1, beta2, eps } => {
                let mut adamw = AdamW::new(lr);
                adamw.weight_decay = array!(weight_decay);
                adamw.betas = (array!(beta1), array!(beta2));
                adamw.eps = array!(eps);
                TrainOptimizer::AdamW(adamw)
            }
            OptimizerConfig::Sgd { momentum, weight_decay } => {
                let mut sgd = Sgd::new(lr);
                sgd.momentum = momentum;
                sgd.weight_decay = weight_decay;
                TrainOptimizer::Sgd(sgd)
            }
        }
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f32) {
        match self {
            TrainOptimizer::AdamW(o) => o.lr = array!(lr),
            TrainOptimizer::Sgd(o) => o.lr = lr,
        }
    }

    /// Applies gradients to the model's parameters.
    ///
    /// # Errors
    /// MLX errors.
    pub fn update(&mut self, model: &mut impl ModuleParameters, grads: &FlattenedModuleParam) -> Result<()> {
        match self {
            TrainOptimizer::AdamW(o) => o.update(model, grads)?,
            TrainOptimizer::Sgd(o) => o.update(model, grads)?,
        }
        Ok(())
    }

    /// The state as named arrays (`<param>.m`/`.v` for AdamW, `<param>.v` for SGD).
    pub fn state(&self) -> HashMap<String, Array> {
        match self {
            TrainOptimizer::AdamW(o) => o
                .state
                .iter()
                .flat_map(|(k, (m, v))| [(format!("{k}.m"), m.clone()), (format!("{k}.v"), v.clone())])
                .collect(),
            TrainOptimizer::Sgd(o) => o.state.iter().map(|(k, v)| (format!("{k}.v"), v.clone())).collect(),
        }
    }

    /// Writes the state to a safetensors file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.state();
        let scalar = array!(0.0);
        // safetensors needs at least one tensor; a fresh optimizer has none.
        let entries: Vec<(&str, &Array)> = if state.is_empty() {
            vec![("__empty__", &scalar)]
        } else {
            state.iter().map(|(k, v)| (k.as_str(), v)).collect()
        };
        weights::save(path, entries)
    }

    /// Restores the state written by [`TrainOptimizer::save`].
    ///
    /// # Errors
    /// When the file cannot be read or holds keys of another optimizer.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let loaded = weights::read(path)?;
        let bad = |key: &str| TrainError::Adapters {
            path: path.to_path_buf(),
            reason: format!("unexpected optimizer state `{key}`"),
        };
        match self {
            TrainOptimizer::AdamW(o) => {
                o.state.clear();
                let mut pairs: HashMap<String, (Option<Array>, Option<Array>)> = HashMap::new();
                for (key, value) in loaded.into_iter().filter(|(k, _)| k != "__empty__") {
                    if let Some(p) = key.strip_suffix(".m") {
                        pairs.entry(p.to_owned()).or_default().0 = Some(value);
                    } else if let Some(p) = key.strip_suffix(".v") {
                        pairs.entry(p.to_owned()).or_default().1 = Some(value);
                    } else {
                        return Err(bad(&key));
                    }
                }
                for (param, (m, v)) in pairs {
                    let (Some(m), Some(v)) = (m, v) else { return Err(bad(&param)) };
                    o.state.insert(Rc::from(param.as_str()), (m, v));
                }
            }
            TrainOptimizer::Sgd(o) => {
                o.state.clear();
                for (key, value) in loaded.into_iter().filter(|(k, _)| k != "__empty__") {
                    let param = key.strip_suffix(".v").ok_or_else(|| bad(&key))?;
                    o.state.insert(Rc::from(param), value);
                }
            }
        }
        Ok(())
    }
}
