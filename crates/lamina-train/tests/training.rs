//! Training: gradients against finite differences, an AdamW step against a hand
//! computation, LoRA (fuse = unfused, adapters round-trip), exact resume, quantized
//! checkpoints reloading to identical logits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use lamina_components::{Activations, AdapterKind, LoraConfig, QuantConfig};
use lamina_families::{LanguageModel, LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM};
use lamina_heads::ModelInput;
use lamina_loader::{LoadOptions, load_blocking, save_checkpoint};
use lamina_train::{
    AdapterConfig, Batching, CheckpointQuantization, LoraTargets, LrSchedule, OptimizerConfig, Precision,
    Trainer, TrainerConfig, apply_fine_tuning, apply_lora, fuse_adapters, load_adapters, quantize_model,
    save_adapters,
};
use mlx_rs::module::{FlattenedModuleParam, ModuleParameters};
use mlx_rs::{Array, Dtype};

mod common;
use common::{config, data, temp, tiny};

fn logits(model: &mut Box<dyn LanguageModel>, ids: &Array) -> Array {
    model.forward(ModelInput::new(ids)).unwrap().logits
}

/// Row-major values (gradients of transposed views are not contiguous).
fn values(a: &Array) -> Vec<f32> {
    a.contiguous().unwrap().as_slice::<f32>().to_vec()
}

fn max_diff(a: &Array, b: &Array) -> f32 {
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
}

#[test]
fn gradients_match_central_finite_differences() {
    let mut trainer = Trainer::new(tiny(1), config(1));
    let batch = data().batches(2, 9, Batching::Pad, 0, None).unwrap().remove(0);
    let (_, grads) = trainer.loss_and_grads(&batch).unwrap();
    let eps = 1e-2f32;
    for key in ["model.layers.0.mlp.down_proj.weight", "model.norm.weight", "model.embed_tokens.weight"] {
        let grad = values(&grads[key]);
        let original = trainer.model.parameters().flatten()[key].clone();
        let flat = values(&original);
        for index in [0usize, 7, flat.len() / 2] {
            let mut loss_at = |delta: f32| {
                let mut values = flat.clone();
                values[index] += delta;
                trainer
                    .model
                    .update_flattened([(Rc::from(key), Array::from_slice(&values, original.shape()))].into());
                trainer.evaluate(std::slice::from_ref(&batch)).unwrap()
            };
            let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
            let analytic = grad[index];
            assert!(
                (numeric - analytic).abs() < 2e-3 + 0.05 * analytic.abs(),
                "{key}[{index}]: {numeric} vs {analytic}"
            );
        }
        trainer.model.update_flattened([(Rc::from(key), original)].into());
    }
}

#[test]
fn one_adamw_step_matches_the_hand_computed_update() {
    let (lr, wd, b1, b2, eps) = (0.01f32, 0.1f32, 0.9f32, 0.999f32, 1e-8f32);
    let optimizer = OptimizerConfig::AdamW { weight_decay: wd, beta1: b1, beta2: b2, eps };
    let cfg = TrainerConfig { optimizer, grad_clip: None, schedule: LrSchedule::constant(lr), ..config(1) };
    let mut trainer = Trainer::new(tiny(2), cfg);
    let batch = data().batches(4, 9, Batching::Pad, 0, None).unwrap().remove(0);
    let key = "model.layers.0.self_attn.q_proj.weight";
    let before = values(trainer.model.parameters().flatten()[key]);
    let (_, grads) = trainer.loss_and_grads(&batch).unwrap();
    let g = values(&grads[key]);
    trainer.train_step(std::slice::from_ref(&batch)).unwrap();
    let after = values(trainer.model.parameters().flatten()[key]);
    for i in [0, 5, 100, before.len() - 1] {
        let (m, v) = ((1.0 - b1) * g[i], (1.0 - b2) * g[i] * g[i]);
        let expected = before[i] * (1.0 - lr * wd) - lr * m / (v.sqrt() + eps);
        assert!((after[i] - expected).abs() < 1e-6, "[{i}] {} vs {expected}", after[i]);
    }
}

#[test]
fn lora_fuse_equals_unfused_and_adapters_round_trip() {
    let ids = Array::from_slice(&[3i32, 9, 27, 14, 5], &[1, 5]);
    let mut model = tiny(3);
    let base = logits(&mut model, &ids);
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() };
    let adapted = apply_lora(model.as_mut(), &LoraTargets::query_value(), lora).unwrap();
    assert_eq!(adapted, ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]);
    // Train a little so the adapters are not the identity.
    let mut trainer = Trainer::new(model, config(3));
    trainer.fit(&data(), None, |_| {}).unwrap();
    let mut model = trainer.model;
    let with_adapters = logits(&mut model, &ids);
    assert!(max_diff(&with_adapters, &base) > 1e-4, "training moved nothing");
    let dir = temp("adapters");
    let adapter_config = lamina_train::AdapterConfig::adapters(lora, LoraTargets::query_value());
    save_adapters(model.as_ref(), &adapter_config, &dir).unwrap();

    let mut reloaded = tiny(3);
    assert!(max_diff(&logits(&mut reloaded, &ids), &base) == 0.0, "same seed, same base");
    assert_eq!(load_adapters(reloaded.as_mut(), &dir).unwrap(), adapter_config);
    assert!(max_diff(&logits(&mut reloaded, &ids), &with_adapters) < 1e-6);

    assert_eq!(fuse_adapters(model.as_mut()).unwrap(), 2);
    assert!(model.parameters().flatten().keys().all(|k| !k.contains("lora")));
    assert!(max_diff(&logits(&mut model, &ids), &with_adapters) < 1e-5);
    // The fused model is a plain checkpoint the ordinary loader reads.
    let fused_dir = temp("fused");
    let mut config =
        serde_json::to_value(LlamaConfig { num_hidden_layers: 1, vocab_size: 64, ..LlamaConfig::tiny() })
            .unwrap();
    config["model_type"] = "llama".into();
    save_checkpoint(&fused_dir, &config, model.as_ref()).unwrap();
    let mut plain = load_blocking(&fused_dir, LoadOptions::default()).unwrap();
    assert!(plain.report.is_clean(), "{}", plain.report);
    assert!(max_diff(&logits(&mut plain.model, &ids), &with_adapters) < 1e-5);

    let mut wrong = tiny(3);
    apply_lora(wrong.as_mut(), &LoraTargets::all_linear(), lora).unwrap();
    let mut other =
        LlamaForCausalLM::new(LlamaConfig { num_hidden_layers: 2, vocab_size: 64, ..LlamaConfig::tiny() })
            .unwrap();
    let err = load_adapters(&mut other, &dir).unwrap_err().to_string();
    assert!(err.contains("adapters.safetensors"), "{err}");
}

/// Trains `config`'s kind of fine-tuning a little, then checks that the saved adapters
/// reload onto a fresh base to the same logits, and that fusing changes nothing.
fn fine_tune_round_trip(adapter_config: AdapterConfig, tag: &str, trainable: &[&str]) {
    let ids = Array::from_slice(&[3i32, 9, 27, 14, 5], &[1, 5]);
    let mut model = tiny(7);
    let base = logits(&mut model, &ids);
    apply_fine_tuning(model.as_mut(), &adapter_config).unwrap();
    let mut names: Vec<String> =
        model.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect();
    names.sort();
    assert_eq!(names, trainable, "{tag}");
    assert!(max_diff(&logits(&mut model, &ids), &base) < 1e-5, "{tag}: untrained, the model is the base");
    let mut trainer = Trainer::new(model, config(3));
    trainer.fit(&data(), None, |_| {}).unwrap();
    let mut model = trainer.model;
    let trained = logits(&mut model, &ids);
    assert!(max_diff(&trained, &base) > 1e-4, "{tag}: training moved nothing");

    let dir = temp(tag);
    save_adapters(model.as_ref(), &adapter_config, &dir).unwrap();
    let mut reloaded = tiny(7);
    assert_eq!(load_adapters(reloaded.as_mut(), &dir).unwrap(), adapter_config);
    assert!(max_diff(&logits(&mut reloaded, &ids), &trained) < 1e-6, "{tag}: reloaded");
    fuse_adapters(model.as_mut()).unwrap();
    assert!(model.parameters().flatten().keys().all(|k| !k.contains("lora") && !k.ends_with(".m")), "{tag}");
    assert!(max_diff(&logits(&mut model, &ids), &trained) < 1e-5, "{tag}: fused");
}

#[test]
fn dora_and_full_fine_tuning_save_load_and_fuse_like_lora() {
    let targets = LoraTargets::query_value();
    let dora = LoraConfig { rank: 4, alpha: 8.0, kind: AdapterKind::Dora, ..LoraConfig::default() };
    let q = "model.layers.0.self_attn.q_proj";
    let v = "model.layers.0.self_attn.v_proj";
    let adapters = |layer: &str| ["lora_a", "lora_b", "m"].map(|p| format!("{layer}.{p}"));
    let expected: Vec<String> = adapters(q).into_iter().chain(adapters(v)).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    fine_tune_round_trip(AdapterConfig::adapters(dora, targets.clone()), "dora", &expected);
    let full = [format!("{q}.weight"), format!("{v}.weight")];
    fine_tune_round_trip(
        AdapterConfig::full(targets),
        "full",
        &full.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // Full fine-tuning needs dense weights.
    let mut quantized = tiny(7);
    quantize_model(
        quantized.as_mut(),
        QuantConfig { group_size: 32, bits: 8, activations: Activations::Exact, blocks: None },
    )
    .unwrap();
    let err =
        apply_fine_tuning(quantized.as_mut(), &AdapterConfig::full(LoraTargets::query_value())).unwrap_err();
    assert!(err.to_string().contains("quantized"), "{err}");
}

#[test]
fn mixed_precision_keeps_f32_masters_and_follows_the_f32_loss_curve() {
    let lora = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
    let run = |precision: Precision| {
        let mut model = tiny(11);
        apply_lora(model.as_mut(), &LoraTargets::all_linear(), lora).unwrap();
        // Deterministic adapters: MLX's generator is shared with the tests running beside.
        let adapters = model.trainable_parameters().flatten();
        let filled = adapters.iter().map(|(key, value)| {
            let n: i32 = value.shape().iter().product();
            let values: Vec<f32> = (0..n).map(|j| 0.05 * ((j as f32 + 1.0) * 0.37).sin()).collect();
            (key.clone(), Array::from_slice(&values, value.shape()))
        });
        let filled: FlattenedModuleParam = filled.collect();
        model.update_flattened(filled);
        let mut trainer = Trainer::new(model, TrainerConfig { precision, ..config(8) });
        let losses: Vec<f32> = trainer.fit(&data(), None, |_| {}).unwrap().iter().map(|l| l.loss).collect();
        (trainer, losses)
    };
    let (_, f32_losses) = run(Precision::F32);
    for precision in [Precision::Bf16, Precision::F16] {
        let (trainer, losses) = run(precision);
        // The same first loss but for rounding; then within 8% a step (at this tiny model's
        // learning rate of 1e-2, bf16's 8-bit mantissa moves Adam's steps a little).
        assert!((losses[0] - f32_losses[0]).abs() < 0.002 * f32_losses[0], "{precision}: {losses:?}");
        for (step, (a, b)) in f32_losses.iter().zip(&losses).enumerate() {
            assert!(
                (a - b).abs() < 0.08 * a.abs(),
                "{precision} step {step}: {losses:?} vs f32 {f32_losses:?}"
            );
        }
        assert!(losses.last() < losses.first(), "{precision}: {losses:?}");
        let trainable: Vec<String> =
            trainer.model.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect();
        for (key, value) in trainer.model.parameters().flatten() {
            let expected =
                if trainable.contains(&key.to_string()) { Dtype::Float32 } else { precision.dtype() };
            assert_eq!(value.dtype(), expected, "{precision}: {key}");
        }
        assert_eq!(trainer.loss_scale().is_some(), precision == Precision::F16);
    }
}

#[test]
fn a_quantized_checkpoint_saved_and_reloaded_gives_identical_logits() {
    let ids = Array::from_slice(&[1i32, 4, 9, 16, 25], &[1, 5]);
    let mut model = tiny(5);
    let dense = logits(&mut model, &ids);
    let report = quantize_model(
        model.as_mut(),
        QuantConfig { group_size: 32, bits: 4, activations: Activations::Exact, blocks: None },
    )
    .unwrap();
    assert!(
        report.quantized.contains(&"model.embed_tokens".to_owned()) && report.skipped.is_empty(),
        "{report:?}"
    );
    let quantized = logits(&mut model, &ids);
    assert!(max_diff(&quantized, &dense) > 0.0, "quantizing changed nothing");
    let mut config =
        serde_json::to_value(LlamaConfig { num_hidden_layers: 1, vocab_size: 64, ..LlamaConfig::tiny() })
            .unwrap();
    config["model_type"] = "llama".into();
    config["quantization"] = CheckpointQuantization::config_entry(QuantConfig {
        group_size: 32,
        bits: 4,
        activations: Activations::Exact,
        blocks: None,
    });
    let dir = temp("quantized");
    save_checkpoint(&dir, &config, model.as_ref()).unwrap();
    let mut reloaded = load_blocking(&dir, LoadOptions::default()).unwrap();
    assert!(reloaded.report.is_clean(), "{}", reloaded.report);
    assert!(logits(&mut reloaded.model, &ids).eq_values(&quantized).unwrap());
    assert!(
        lamina_train::estimate_model_size(reloaded.model.as_ref())
            < lamina_train::estimate_model_size(tiny(5).as_ref()) / 4
    );
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let batch = data().batches(4, 9, Batching::Pad, 0, None).unwrap().remove(0);
    let mut plain = Trainer::new(tiny(6), config(1));
    let (loss_a, grads_a) = plain.loss_and_grads(&batch).unwrap();
    let mut model = tiny(6);
    model.enable_gradient_checkpointing();
    let mut checkpointed = Trainer::new(model, config(1));
    let (loss_b, grads_b) = checkpointed.loss_and_grads(&batch).unwrap();
    assert_same_gradients((loss_a, &grads_a), (loss_b, &grads_b));

    // The same for Mamba's blocks (one model, switched at run time).
    let mamba: Box<dyn LanguageModel> = Box::new(MambaForCausalLM::new(MambaConfig::tiny()).unwrap());
    let mut trainer = Trainer::new(mamba, config(1));
    let (loss_a, grads_a) = trainer.loss_and_grads(&batch).unwrap();
    trainer.model.set_gradient_checkpointing(true);
    let (loss_b, grads_b) = trainer.loss_and_grads(&batch).unwrap();
    assert_same_gradients((loss_a, &grads_a), (loss_b, &grads_b));
}

fn assert_same_gradients(
    (loss_a, grads_a): (f32, &FlattenedModuleParam),
    (loss_b, grads_b): (f32, &FlattenedModuleParam),
) {
    assert!((loss_a - loss_b).abs() < 1e-6, "{loss_a} vs {loss_b}");
    assert_eq!(grads_a.len(), grads_b.len());
    for (key, a) in grads_a {
        let diff = max_diff(a, &grads_b[key]);
        assert!(diff < 1e-5, "{key}: {diff}");
    }
}

#[test]
fn qlora_trains_adapters_on_a_quantized_base() {
    let mut model = tiny(7);
    quantize_model(
        model.as_mut(),
        QuantConfig { group_size: 32, bits: 4, activations: Activations::Exact, blocks: None },
    )
    .unwrap();
    let packed_before = model.parameters().flatten()["model.layers.0.mlp.up_proj.weight"].clone();
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() };
    apply_lora(model.as_mut(), &LoraTargets::all_linear(), lora).unwrap();
    let trainable: Vec<String> =
        model.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect();
    assert!(
        !trainable.is_empty() && trainable.iter().all(|k| k.ends_with("lora_a") || k.ends_with("lora_b")),
        "{trainable:?}"
    );
    let mut trainer = Trainer::new(model, config(8));
    let logs = trainer.fit(&data(), None, |_| {}).unwrap();
    assert!(logs.last().unwrap().loss < logs[0].loss, "{logs:?}");
    let packed_after = trainer.model.parameters().flatten()["model.layers.0.mlp.up_proj.weight"].clone();
    assert_eq!(packed_after.dtype(), mlx_rs::Dtype::Uint32);
    assert!(packed_after.eq_values(&packed_before).unwrap(), "the quantized base moved");
}

#[test]
fn an_sgd_step_is_w_minus_lr_times_g() {
    let cfg = TrainerConfig {
        optimizer: OptimizerConfig::Sgd { momentum: 0.0, weight_decay: 0.0 },
        grad_clip: None,
        schedule: LrSchedule::constant(0.1),
        ..config(1)
    };
    let mut trainer = Trainer::new(tiny(8), cfg);
    let batch = data().batches(4, 9, Batching::Pad, 0, None).unwrap().remove(0);
    let key = "model.norm.weight";
    let before = values(trainer.model.parameters().flatten()[key]);
    let (_, grads) = trainer.loss_and_grads(&batch).unwrap();
    let g = values(&grads[key]);
    trainer.train_step(std::slice::from_ref(&batch)).unwrap();
    let after = values(trainer.model.parameters().flatten()[key]);
    for i in 0..before.len() {
        assert!((after[i] - (before[i] - 0.1 * g[i])).abs() < 1e-6, "[{i}]");
    }
}

#[test]
fn clipping_scales_the_step_to_the_global_norm() {
    let max_norm = 0.05;
    let cfg = TrainerConfig {
        optimizer: OptimizerConfig::Sgd { momentum: 0.0, weight_decay: 0.0 },
        grad_clip: Some(max_norm),
        schedule: LrSchedule::constant(0.1),
        ..config(1)
    };
    let mut trainer = Trainer::new(tiny(9), cfg);
    let batch = data().batches(4, 9, Batching::Pad, 0, None).unwrap().remove(0);
    let key = "model.layers.0.mlp.down_proj.weight";
    let before = values(trainer.model.parameters().flatten()[key]);
    let (_, grads) = trainer.loss_and_grads(&batch).unwrap();
    let norm = grads.values().map(|g| values(g).iter().map(|v| v * v).sum::<f32>()).sum::<f32>().sqrt();
    assert!(norm > max_norm, "the test needs a clipped step: norm {norm}");
    let g = values(&grads[key]);
    let log = trainer.train_step(std::slice::from_ref(&batch)).unwrap();
    assert!((log.grad_norm - norm).abs() < 1e-4 * norm, "{} vs {norm}", log.grad_norm);
    let after = values(trainer.model.parameters().flatten()[key]);
    let scale = max_norm / norm;
    for i in 0..before.len() {
        assert!((after[i] - (before[i] - 0.1 * scale * g[i])).abs() < 1e-6, "[{i}]");
    }
}

#[test]
fn fit_reports_the_held_out_loss_every_eval_every_steps() {
    let (train, held_out) = data().split_every(4).unwrap();
    let cfg = TrainerConfig { eval_every: 2, batch_size: 3, ..config(4) };
    let mut trainer = Trainer::new(tiny(10), cfg);
    let logs = trainer.fit(&train, Some(&held_out), |_| {}).unwrap();
    let evaluated: Vec<usize> = logs.iter().filter(|l| l.eval_loss.is_some()).map(|l| l.step).collect();
    assert_eq!(evaluated, [2, 4]);
    let batches = held_out.batches(3, 9, Batching::Pad, 0, None).unwrap();
    assert_eq!(logs[3].eval_loss, Some(trainer.evaluate(&batches).unwrap()));
    // A held-out set too small for one batch is an error, not a silent zero.
    let packed = TrainerConfig { eval_every: 2, batching: Batching::Pack, seq_len: 30, ..config(4) };
    let mut trainer = Trainer::new(tiny(10), packed);
    let err = trainer.fit(&train, Some(&held_out), |_| {}).unwrap_err();
    assert!(err.to_string().contains("packing 27 tokens leaves no row of 30"), "{err}");
}

#[test]
fn resuming_into_a_differently_adapted_model_is_an_error() {
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() };
    let mut model = tiny(11);
    apply_lora(model.as_mut(), &LoraTargets::all_linear(), lora).unwrap();
    let dir = temp("resume-mismatch");
    Trainer::new(model, config(1)).save_checkpoint(&dir).unwrap();

    let mut fewer = tiny(11);
    apply_lora(fewer.as_mut(), &LoraTargets::query_value(), lora).unwrap();
    let err = Trainer::new(fewer, config(1)).resume(&dir).unwrap_err().to_string();
    assert!(err.contains("trainable.safetensors") && err.contains("has no place in this model"), "{err}");

    let mut wider = tiny(11);
    apply_lora(wider.as_mut(), &LoraTargets::all_linear(), LoraConfig { rank: 8, ..lora }).unwrap();
    let err = Trainer::new(wider, config(1)).resume(&dir).unwrap_err().to_string();
    assert!(err.contains("the model needs"), "{err}");
}
