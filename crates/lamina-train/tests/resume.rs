//! Exact resume, alone in its own test binary: dropout draws from MLX's global generator,
//! which the trainer seeds per step, so no other test may draw from it concurrently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config, data, temp, tiny};
use lamina_components::LoraConfig;
use lamina_train::{LoraTargets, Trainer, TrainerConfig, apply_lora};

#[test]
fn resuming_from_a_checkpoint_continues_with_identical_losses() {
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, ..LoraConfig::default() };
    let fresh = || {
        let mut model = tiny(4);
        // The adapters' initial `lora_a` comes from MLX's global generator.
        mlx_rs::random::seed(11).unwrap();
        apply_lora(model.as_mut(), &LoraTargets::all_linear(), lora).unwrap();
        let cfg = TrainerConfig { grad_accumulation: 2, batch_size: 2, ..config(6) };
        Trainer::new(model, cfg)
    };
    let mut straight = fresh();
    let all: Vec<f32> = straight.fit(&data(), None, |_| {}).unwrap().iter().map(|l| l.loss).collect();

    let mut first = fresh();
    let mut partial = Vec::new();
    while first.step() < 3 {
        let log = first.fit_one(&data()).unwrap();
        partial.push(log.loss);
    }
    let dir = temp("resume");
    first.save_checkpoint(&dir).unwrap();
    let mut resumed = fresh();
    resumed.resume(&dir).unwrap();
    let rest: Vec<f32> = resumed.fit(&data(), None, |_| {}).unwrap().iter().map(|l| l.loss).collect();
    partial.extend(rest);
    // Bitwise: the trainer sums in fixed orders, so a resumed run repeats the uninterrupted
    // one exactly.
    assert_eq!(partial, all);
}
