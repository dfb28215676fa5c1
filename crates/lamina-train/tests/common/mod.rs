//! Helpers shared by the training tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::rc::Rc;

use lamina_families::{LanguageModel, LlamaConfig, LlamaForCausalLM};
use lamina_train::{Batching, LrSchedule, TokenDataset, TrainerConfig};
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

/// A one-layer Llama whose every parameter is a deterministic function of `seed` (MLX's
/// global generator is shared by the tests running in parallel in this process).
pub fn tiny(seed: u64) -> Box<dyn LanguageModel> {
    let config = LlamaConfig { num_hidden_layers: 1, vocab_size: 64, ..LlamaConfig::tiny() };
    let mut model: Box<dyn LanguageModel> = Box::new(LlamaForCausalLM::new(config).unwrap());
    let mut keys: Vec<(String, Vec<i32>)> =
        model.parameters().flatten().iter().map(|(k, v)| (k.to_string(), v.shape().to_vec())).collect();
    keys.sort();
    let filled = keys.into_iter().enumerate().map(|(i, (key, shape))| {
        let n: i32 = shape.iter().product();
        let salt = i as f32 + seed as f32 * 0.37;
        let values: Vec<f32> = (0..n)
            .map(|j| {
                let v = ((j as f32 + 1.0) * 0.7317 + salt).sin();
                if key.ends_with("norm.weight") { 1.0 + 0.2 * v } else { 0.15 * v }
            })
            .collect();
        (Rc::from(key.as_str()), Array::from_slice(&values, &shape))
    });
    model.update_flattened(filled.collect());
    model
}

pub fn data() -> TokenDataset {
    TokenDataset::new((0..12).map(|i| (0..9).map(|j| ((i * 7 + j * 3) % 60 + 1) as u32).collect()).collect())
        .unwrap()
}

pub fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-train-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn config(steps: usize) -> TrainerConfig {
    TrainerConfig {
        batch_size: 4,
        seq_len: 9,
        batching: Batching::Pad,
        steps,
        grad_clip: Some(1.0),
        schedule: LrSchedule { peak: 1e-2, min: 1e-3, warmup_steps: 2, total_steps: steps },
        ..TrainerConfig::default()
    }
}
