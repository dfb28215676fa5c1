//! Strict application of weights: a report of missing, unexpected and mis-shaped tensors.

use std::fmt;
use std::rc::Rc;

use lamina_families::{LanguageModel, Weights};

/// A tensor whose shape differs between checkpoint and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The key.
    pub key: String,
    /// The model's shape.
    pub expected: Vec<i32>,
    /// The checkpoint's shape.
    pub actual: Vec<i32>,
}

/// How a checkpoint's tensors match a model's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters the checkpoint lacks (sorted).
    pub missing: Vec<String>,
    /// Tensors the model has no parameter for (sorted).
    pub unexpected: Vec<String>,
    /// Tensors whose shape differs (sorted by key).
    pub mismatched: Vec<ShapeMismatch>,
    /// Tensors applied.
    pub applied: usize,
}

impl LoadReport {
    /// Whether every parameter was found with its shape and nothing was left over.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "all {} tensors matched", self.applied);
        }
        write!(f, "the checkpoint does not match the model:")?;
        if !self.missing.is_empty() {
            write!(f, " missing [{}];", self.missing.join(", "))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, " unexpected [{}];", self.unexpected.join(", "))?;
        }
        for m in &self.mismatched {
            write!(f, " `{}` is {:?} in the checkpoint, {:?} in the model;", m.key, m.actual, m.expected)?;
        }
        Ok(())
    }
}

/// Compares the (sanitized) weights with the model's parameters.
pub fn compare(model: &dyn LanguageModel, weights: &Weights) -> LoadReport {
    let params = model.parameters().flatten();
    let mut report = LoadReport::default();
    for (key, value) in params.iter() {
        match weights.get(key.as_ref()) {
            None => report.missing.push(key.to_string()),
            Some(tensor) if tensor.shape() != value.shape() => report.mismatched.push(ShapeMismatch {
                key: key.to_string(),
                expected: value.shape().to_vec(),
                actual: tensor.shape().to_vec(),
            }),
            Some(_) => report.applied += 1,
        }
    }
    report.unexpected = weights.keys().filter(|k| !params.contains_key(k.as_str())).cloned().collect();
    report.missing.sort();
    report.unexpected.sort();
    report.mismatched.sort_by(|a, b| a.key.cmp(&b.key));
    report
}

/// Applies the tensors that match (name and shape) and returns the report. Tensors that
/// do not match are never applied, strict or not.
pub fn apply(model: &mut dyn LanguageModel, weights: Weights) -> LoadReport {
    let report = compare(model, &weights);
    let skip: Vec<&str> = report.mismatched.iter().map(|m| m.key.as_str()).collect();
    let matching = weights
        .into_iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .map(|(key, value)| (Rc::from(key.as_str()), value))
        .collect();
    model.update_flattened(matching);
    report
}
