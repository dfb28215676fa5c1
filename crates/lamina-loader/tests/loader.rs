//! The loader on good and bad input: every kind of bad input is a typed error naming the
//! file; the strict report; progress; the memory limit; dtype casting; HF cache layouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use lamina_core::{DType, Error};
use lamina_loader::{Checkpoint, LoadOptions, LoaderError, Progress, ProgressSink, load, resolve};
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints").join(case)
}

/// A fresh copy of a fixture checkpoint in a temporary folder.
fn copy(case: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-loader-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(case)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

async fn load_err(path: &Path) -> LoaderError {
    load(path, LoadOptions::default()).await.unwrap_err()
}

fn names(err: &LoaderError, file: &str) {
    let text = err.to_string();
    assert!(text.contains(file), "`{text}` does not name {file}");
}

#[tokio::test]
async fn a_truncated_safetensors_file_is_an_error_naming_it() {
    let dir = copy("llama_tied_smollm", "truncated");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(&dir).await;
    assert!(matches!(err, LoaderError::Safetensors { .. }), "{err}");
    names(&err, "model.safetensors");
}

#[tokio::test]
async fn a_corrupt_header_is_an_error_naming_the_file() {
    let dir = copy("llama_tied_smollm", "corrupt");
    let file = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10..30].copy_from_slice(b"#### not json ######");
    std::fs::write(&file, &bytes).unwrap();
    assert!(matches!(load_err(&dir).await, LoaderError::Safetensors { .. }));
    let mut huge = std::fs::read(&file).unwrap();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&file, &huge).unwrap();
    assert!(matches!(load_err(&dir).await, LoaderError::Safetensors { .. }));
    std::fs::write(&file, b"short").unwrap();
    assert!(matches!(load_err(&dir).await, LoaderError::Safetensors { .. }));
}

#[tokio::test]
async fn an_index_naming_a_missing_shard_is_an_error() {
    let dir = copy("llama_gqa_llama3_sharded", "missing-shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    match load_err(&dir).await {
        LoaderError::MissingShard { shard, .. } => assert_eq!(shard, "model-00002-of-00002.safetensors"),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn an_index_placing_a_key_in_the_wrong_shard_is_an_error() {
    let dir = copy("llama_gqa_llama3_sharded", "wrong-shard");
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors".into();
    index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors".into();
    std::fs::write(&path, index.to_string()).unwrap();
    let err = load_err(&dir).await;
    assert!(err.to_string().contains("but the file lacks it"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_an_error_naming_the_file() {
    let dir = copy("llama_tied_smollm", "bad-json");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\",").unwrap();
    let err = load_err(&dir).await;
    assert!(matches!(err, LoaderError::Json { .. }), "{err}");
    names(&err, "config.json");
    let dir = copy("llama_tied_smollm", "bad-generation-json");
    std::fs::write(dir.join("generation_config.json"), "[1, 2").unwrap();
    names(&load_err(&dir).await, "generation_config.json");
}

#[tokio::test]
async fn a_config_that_fails_validation_names_the_file_and_field() {
    let dir = copy("llama_tied_smollm", "invalid");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["num_attention_heads"] = 5.into();
    std::fs::write(&path, config.to_string()).unwrap();
    match load_err(&dir).await {
        LoaderError::Model { path, source: Error::InvalidConfig { field, .. } } => {
            assert!(path.ends_with("config.json"));
            assert_eq!(field, "num_attention_heads");
        }
        other => panic!("{other}"),
    }
    config["num_attention_heads"] = 4.into();
    config["model_type"] = "gpt_neox".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load_err(&dir).await;
    assert!(matches!(err, LoaderError::Model { source: Error::UnknownVariant { .. }, .. }), "{err}");
    assert!(
        err.to_string().contains("known: gemma2, gemma3, gemma3_text, llama, llama4_text, mamba"),
        "{err}"
    );
}

/// Rewrites the fixture's weights with one tensor missing, one extra, one mis-shaped.
fn tamper(dir: &Path) {
    let file = dir.join("model.safetensors");
    let mut weights = Array::load_safetensors(&file).unwrap();
    mlx_rs::transforms::eval(weights.values()).unwrap(); // MLX reads lazily: read before overwriting
    weights.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    weights.insert("model.layers.0.self_attn.extra.weight".into(), Array::zeros::<f32>(&[2]).unwrap());
    weights.insert("model.norm.weight".into(), Array::ones::<f32>(&[31]).unwrap());
    Array::save_safetensors(weights.iter().map(|(k, v)| (k.as_str(), v)), None, &file).unwrap();
}

#[tokio::test]
async fn the_report_names_missing_extra_and_mis_shaped_tensors() {
    let dir = copy("llama_tied_smollm", "report");
    tamper(&dir);
    let report = match load_err(&dir).await {
        LoaderError::Mismatch(report) => report,
        other => panic!("{other}"),
    };
    assert_eq!(report.missing, ["model.layers.1.mlp.up_proj.weight"]);
    assert_eq!(report.unexpected, ["model.layers.0.self_attn.extra.weight"]);
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(
        (report.mismatched[0].expected.clone(), report.mismatched[0].actual.clone()),
        (vec![32], vec![31])
    );
    let text = LoaderError::Mismatch(report).to_string();
    assert!(
        text.contains("missing [model.layers.1.mlp.up_proj.weight]") && text.contains("model.norm.weight"),
        "{text}"
    );

    let loaded = load(&dir, LoadOptions { allow_mismatch: true, ..LoadOptions::default() }).await.unwrap();
    assert!(!loaded.report.is_clean());
    let params = loaded.model.parameters().flatten();
    assert_eq!(params["model.norm.weight"].shape(), &[32], "a mis-shaped tensor must never be applied");
}

#[tokio::test]
async fn the_memory_limit_is_checked_before_reading() {
    let dir = fixture("llama_tied_smollm");
    let err =
        load(&dir, LoadOptions { memory_limit: Some(1000), ..LoadOptions::default() }).await.unwrap_err();
    match err {
        LoaderError::MemoryLimit { needed, limit } => {
            assert_eq!(limit, 1000);
            assert!(needed > 1000);
        }
        other => panic!("{other}"),
    }
    let loaded =
        load(&dir, LoadOptions { dtype: Some(DType::BF16), ..LoadOptions::default() }).await.unwrap();
    let f32_loaded = load(&dir, LoadOptions::default()).await.unwrap();
    assert_eq!(loaded.memory_bytes * 2, f32_loaded.memory_bytes);
}

#[tokio::test]
async fn dtype_casting_applies_to_every_floating_weight() {
    let loaded = load(fixture("mamba_hf"), LoadOptions { dtype: Some(DType::F16), ..LoadOptions::default() })
        .await
        .unwrap();
    let params = loaded.model.parameters().flatten();
    assert!(params.values().all(|a| a.dtype() == Dtype::Float16));
    let kept = load(fixture("mamba_hf"), LoadOptions::default()).await.unwrap();
    assert!(kept.model.parameters().flatten().values().all(|a| a.dtype() == Dtype::Float32));
}

#[tokio::test]
async fn progress_events_cover_every_tensor() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = LoadOptions { progress: ProgressSink::new(tx), ..LoadOptions::default() };
    load(fixture("llama_gqa_llama3_sharded"), options).await.unwrap();
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    assert!(
        matches!(events.first(), Some(Progress::Started { files: 2, tensors: 23, .. })),
        "{:?}",
        events.first()
    );
    assert!(matches!(events.last(), Some(Progress::Done { tensors: 21 })), "{:?}", events.last());
    let tensors = events.iter().filter(|e| matches!(e, Progress::Tensor { .. })).count();
    let files = events.iter().filter(|e| matches!(e, Progress::FileDone { .. })).count();
    assert_eq!((tensors, files), (23, 2));
}

#[tokio::test]
async fn hugging_face_cache_entries_resolve_to_their_snapshot() {
    let root = std::env::temp_dir().join(format!("lamina-loader-{}-hfcache", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let entry = root.join("models--lamina--tiny");
    let snapshot = entry.join("snapshots").join("0123abcd");
    let blobs = entry.join("blobs");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    for (i, name) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = blobs.join(format!("blob{i}"));
        std::fs::copy(fixture("llama_tied_smollm").join(name), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snapshot.join(name)).unwrap();
    }
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::write(entry.join("refs/main"), "0123abcd\n").unwrap();
    assert_eq!(resolve(&entry).unwrap(), Checkpoint::Folder(snapshot.clone()));
    assert_eq!(resolve(&snapshot).unwrap(), Checkpoint::Folder(snapshot.clone()));
    assert!(load(&entry, LoadOptions::default()).await.unwrap().report.is_clean());
    std::fs::write(entry.join("refs/main"), "feedface").unwrap();
    assert!(matches!(resolve(&entry), Err(LoaderError::NotACheckpoint { .. })));
}

#[tokio::test]
async fn paths_that_are_not_checkpoints_say_why() {
    let empty = std::env::temp_dir().join(format!("lamina-loader-{}-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    assert!(load_err(&empty).await.to_string().contains("without config.json"));
    let text = empty.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    assert!(load_err(&text).await.to_string().contains("not a .gguf"));
    assert!(load_err(&empty.join("nothing-here")).await.to_string().contains("no such file"));
    let no_weights = copy("llama_tied_smollm", "no-weights");
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    assert!(load_err(&no_weights).await.to_string().contains("no model.safetensors"));
}

#[tokio::test]
async fn eos_ids_from_generation_config_win() {
    let dir = copy("mobilellm_r1", "eos");
    let loaded = load(&dir, LoadOptions::default()).await.unwrap();
    assert_eq!(loaded.eos_token_ids(), [2, 3]);
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": 9, "temperature": 0.6}"#).unwrap();
    let loaded = load(&dir, LoadOptions::default()).await.unwrap();
    assert_eq!(loaded.eos_token_ids(), [9]);
    assert_eq!(loaded.generation.temperature, Some(0.6));
    assert_eq!(loaded.model_type(), "llama4_text");
}

#[tokio::test]
async fn a_saved_checkpoint_loads_back_with_the_same_logits() {
    let mut original = load(fixture("mobilellm_r1"), LoadOptions::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("lamina-loader-{}-saved", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    lamina_loader::save_checkpoint(&dir, &original.config, original.model.as_ref()).unwrap();
    let mut again = load(&dir, LoadOptions::default()).await.unwrap();
    assert!(again.report.is_clean(), "{}", again.report);
    let ids = Array::from_slice(&[1i32, 5, 9, 2], &[1, 4]);
    let a = original.model.forward(lamina_heads::ModelInput::new(&ids)).unwrap().logits;
    let b = again.model.forward(lamina_heads::ModelInput::new(&ids)).unwrap().logits;
    assert!(a.eq_values(&b).unwrap());
}

/// Rewrites the index so that every key of shard 2 points at `entry` instead.
fn point_shard_two_at(dir: &Path, entry: &str) {
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for value in index["weight_map"].as_object_mut().unwrap().values_mut() {
        if value == "model-00002-of-00002.safetensors" {
            *value = entry.into();
        }
    }
    std::fs::write(&path, index.to_string()).unwrap();
}

#[tokio::test]
async fn index_entries_must_stay_inside_the_checkpoint() {
    let shard = "model-00002-of-00002.safetensors";
    let outside = |err: LoaderError, expected: &str| match err {
        LoaderError::OutsideCheckpoint { shard, index } => {
            assert_eq!(shard, expected);
            assert!(index.ends_with("model.safetensors.index.json"));
        }
        other => panic!("{expected}: {other}"),
    };
    // `..`, an absolute path, and `..` hidden inside a longer path: refused before any
    // file is opened, even though each names a real, valid shard.
    let dir = copy("llama_gqa_llama3_sharded", "escape");
    let parent_copy = dir.parent().unwrap().join(format!("lamina-escape-{}.safetensors", std::process::id()));
    std::fs::copy(dir.join(shard), &parent_copy).unwrap();
    let up = format!("../{}", parent_copy.file_name().unwrap().to_string_lossy());
    let absolute = dir.join(shard).to_string_lossy().into_owned();
    for entry in [up.as_str(), absolute.as_str(), "sub/../../x.safetensors", "./model.safetensors", ""] {
        let dir = copy("llama_gqa_llama3_sharded", "escape-case");
        point_shard_two_at(&dir, entry);
        outside(load_err(&dir).await, entry);
    }
    // A link inside the folder that leads out of it.
    let dir = copy("llama_gqa_llama3_sharded", "escape-link");
    std::fs::remove_file(dir.join(shard)).unwrap();
    std::os::unix::fs::symlink(&parent_copy, dir.join(shard)).unwrap();
    outside(load_err(&dir).await, shard);
    std::fs::remove_file(&parent_copy).unwrap();
}

#[tokio::test]
async fn sharded_cache_snapshots_link_into_their_blobs() {
    let root = std::env::temp_dir().join(format!("lamina-loader-{}-hfcache-sharded", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let entry = root.join("models--lamina--sharded");
    let snapshot = entry.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(entry.join("blobs")).unwrap();
    for (i, file) in std::fs::read_dir(fixture("llama_gqa_llama3_sharded")).unwrap().enumerate() {
        let path = file.unwrap().path();
        let blob = entry.join("blobs").join(format!("blob{i}"));
        std::fs::copy(&path, &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snapshot.join(path.file_name().unwrap()))
            .unwrap();
    }
    assert!(load(&snapshot, LoadOptions::default()).await.unwrap().report.is_clean());
    std::fs::remove_dir_all(&root).unwrap();
}
