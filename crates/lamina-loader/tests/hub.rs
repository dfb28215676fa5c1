//! Models by repo id against a loopback Hub: download into the standard cache and run,
//! the cache's layout, an offline second run, sharded and GGUF repositories, missing repos
//! and revisions, gated repos and tokens, connections cut mid-file, corrupted bytes; and a
//! hostile Hub: headers that would be paths, the token sent elsewhere, endless bodies,
//! stalled servers, redirects without a target.
#![cfg(feature = "hub")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::fake_hub::{FakeHub, Faults, HubRepo};
use lamina_loader::hub::{DownloadOptions, HubConfig, HubError};
use lamina_loader::{LoadOptions, LoadedModel, LoaderError, Progress, ProgressSink, load};
use mlx_rs::Array;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests").join(case)
}

fn scripted_chat(id: &str) -> HubRepo {
    let names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
    HubRepo::from_folder(id, &fixture("fixtures/checkpoints/scripted_chat"), &names)
}

fn repos() -> Vec<HubRepo> {
    let sharded = [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "reference.safetensors",
    ];
    let mut gguf = HubRepo::from_folder(
        "test-org/tiny-GGUF",
        &fixture("fixtures/gguf"),
        &["tiny_qwen3.gguf", "tiny_qwen2.gguf"],
    );
    gguf.files[0].path = "tiny-Q8_0.gguf".into();
    gguf.files[1].path = "tiny-F32.gguf".into();
    let mut gated = scripted_chat("test-org/gated-chat");
    gated.token = Some("hf_good".into());
    vec![
        scripted_chat("test-org/scripted-chat"),
        HubRepo::from_folder(
            "test-org/sharded",
            &fixture("fixtures/checkpoints/llama_gqa_llama3_sharded"),
            &sharded,
        ),
        gguf,
        gated,
        HubRepo::from_folder(
            "test-org/tokenizer-only",
            &fixture("fixtures/checkpoints/scripted_chat"),
            &["tokenizer.json", "tokenizer_config.json"],
        ),
    ]
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-hub-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig::new(&hub.endpoint, cache)
}

fn options(config: HubConfig) -> LoadOptions {
    LoadOptions { hub: Some(config), ..LoadOptions::default() }
}

fn hub_error(err: LoaderError) -> HubError {
    match err {
        LoaderError::Hub(e) => *e,
        other => panic!("not a Hub error: {other}"),
    }
}

fn logits(loaded: &mut LoadedModel) -> Array {
    let ids = Array::from_slice(&[1i32, 5, 9, 2], &[1, 4]);
    loaded.model.forward(lamina_heads::ModelInput::new(&ids)).unwrap().logits
}

/// Every file under a folder, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_repo_id_downloads_into_the_standard_cache_runs_and_then_loads_offline() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("download");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut loaded = load(
        "test-org/scripted-chat",
        LoadOptions { progress: ProgressSink::new(tx), ..options(config(&hub, &cache)) },
    )
    .await
    .unwrap();
    let mut local =
        load(fixture("fixtures/checkpoints/scripted_chat"), LoadOptions::default()).await.unwrap();
    assert!(logits(&mut loaded).eq_values(logits(&mut local)).unwrap());
    assert!(loaded.tokenizer.is_some());
    assert_eq!(loaded.tokenizer.as_ref().unwrap().encode("count", false).unwrap(), [12]);

    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    let fetching: usize =
        events.iter().map(|e| if let Progress::Fetching { files, .. } = e { *files } else { 0 }).sum();
    assert_eq!(fetching, 4, "{events:?}");
    let model_size =
        std::fs::metadata(fixture("fixtures/checkpoints/scripted_chat/model.safetensors")).unwrap().len();
    assert!(events.iter().any(
        |e| matches!(e, Progress::Downloaded { file, bytes, total } if file == "model.safetensors" && bytes == total && *total == model_size)
    ));

    // The layout huggingface_hub reads: refs/main -> commit, snapshot links into blobs/.
    let repo = &repos()[0];
    let entry = cache.join("models--test-org--scripted-chat");
    assert_eq!(std::fs::read_to_string(entry.join("refs/main")).unwrap(), repo.commit);
    let snapshot = entry.join("snapshots").join(&repo.commit);
    let model_sha = repo.files.iter().find(|f| f.path == "model.safetensors").unwrap();
    let model_sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&model_sha.bytes));
    let files = tree(&entry);
    let expected_snapshot: Vec<String> =
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
            .iter()
            .map(|f| format!("snapshots/{}/{f}", repo.commit))
            .collect();
    for file in &expected_snapshot {
        assert!(files.contains(file), "{file} missing from {files:?}");
        let link = entry.join(file);
        assert!(link.is_symlink(), "{file} is not a link");
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.starts_with("../../blobs"), "{file} -> {}", target.display());
    }
    assert!(
        files.contains(&format!("blobs/{model_sha}")),
        "the safetensors blob is named by its sha256: {files:?}"
    );
    assert_eq!(files.iter().filter(|f| f.starts_with("blobs/")).count(), 4, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("refs/")).count(), 1, "{files:?}");
    assert!(!files.iter().any(|f| f.contains("README")), "the model card was fetched");
    assert!(snapshot.join("config.json").is_file());

    // A second run finds every file in place and fetches no file again.
    hub.clear();
    load("test-org/scripted-chat", options(config(&hub, &cache))).await.unwrap();
    assert!(hub.seen().iter().all(|s| s.path.starts_with("/api/")), "{:?}", hub.seen());

    // Offline: the cache alone, not one request.
    hub.clear();
    let offline = HubConfig { offline: true, ..config(&hub, &cache) };
    let mut again = load("test-org/scripted-chat", options(offline.clone())).await.unwrap();
    assert!(logits(&mut again).eq_values(logits(&mut local)).unwrap());
    assert!(hub.seen().is_empty(), "{:?}", hub.seen());
    let err = hub_error(load("test-org/sharded", options(offline)).await.unwrap_err());
    assert!(matches!(&err, HubError::NotCached { file, .. } if file == "refs/main"), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");

    // The Hub unreachable: the cached revision still loads.
    hub.stop();
    let gone = HubConfig { endpoint: "http://127.0.0.1:9".into(), ..config(&hub, &cache) };
    load("test-org/scripted-chat", options(gone.clone())).await.unwrap();
    let err = hub_error(load("test-org/sharded", options(gone)).await.unwrap_err());
    assert!(matches!(err, HubError::Network { .. }), "{err}");
}

#[tokio::test]
async fn a_sharded_repo_fetches_its_index_and_shards_only() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("sharded");
    let loaded = load("test-org/sharded@main", options(config(&hub, &cache))).await.unwrap();
    assert!(loaded.report.is_clean());
    let fetched: Vec<String> = hub
        .seen()
        .iter()
        .filter_map(|s| s.path.strip_prefix("/test-org/sharded/resolve/").map(str::to_owned))
        .collect();
    assert!(fetched.iter().any(|p| p.ends_with("model-00002-of-00002.safetensors")), "{fetched:?}");
    assert!(!fetched.iter().any(|p| p.contains("reference") || p.contains("README")), "{fetched:?}");
    // By commit: the same snapshot, no ref named after the commit.
    let commit = repos()[1].commit.clone();
    load(format!("test-org/sharded@{commit}"), options(config(&hub, &cache))).await.unwrap();
    let refs = tree(&cache.join("models--test-org--sharded/refs"));
    assert_eq!(refs, ["main"]);
}

#[tokio::test]
async fn a_gguf_repo_needs_one_file_named_or_tagged() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("gguf");
    let err = hub_error(load("test-org/tiny-GGUF", options(config(&hub, &cache))).await.unwrap_err());
    assert!(
        matches!(&err, HubError::NoModel { reason, .. } if reason.contains("tiny-Q8_0.gguf") && reason.contains("tiny-F32.gguf")),
        "{err}"
    );
    let tagged = load("test-org/tiny-GGUF:q8_0", options(config(&hub, &cache))).await.unwrap();
    assert_eq!(tagged.model_type(), "qwen3");
    assert!(tagged.checkpoint.path().ends_with("tiny-Q8_0.gguf"));
    let named = LoadOptions { file: Some("tiny-F32.gguf".into()), ..options(config(&hub, &cache)) };
    assert_eq!(load("test-org/tiny-GGUF", named).await.unwrap().model_type(), "qwen2");
    let err = hub_error(load("test-org/tiny-GGUF:Q5_K", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(err, HubError::NoModel { .. }), "{err}");
}

#[tokio::test]
async fn missing_repos_revisions_and_hostile_ids_are_typed_errors() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("missing");
    let err = hub_error(load("test-org/no-such-model", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(&err, HubError::RepoNotFound { repo } if repo == "test-org/no-such-model"), "{err}");
    let err = hub_error(load("test-org/scripted-chat@v9", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(&err, HubError::RevisionNotFound { revision, .. } if revision == "v9"), "{err}");
    let err =
        hub_error(load("test-org/scripted-chat@../../x", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(err, HubError::InvalidReference { .. }), "{err}");
    let err = load("not/a/repo/or/path", options(config(&hub, &cache))).await.unwrap_err();
    assert!(matches!(err, LoaderError::NotACheckpoint { .. }), "{err}");
    assert!(!cache.join("models--test-org--no-such-model").exists());
}

#[tokio::test]
async fn a_gated_repo_needs_a_token_that_may_read_it() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("gated");
    let err = hub_error(load("test-org/gated-chat", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(err, HubError::Unauthorized { had_token: false, .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"));
    let bad = HubConfig { token: Some("hf_bad".into()), ..config(&hub, &cache) };
    let err = hub_error(load("test-org/gated-chat", options(bad)).await.unwrap_err());
    assert!(matches!(err, HubError::Unauthorized { had_token: true, .. }), "{err}");
    let good = HubConfig { token: Some("hf_good".into()), ..config(&hub, &cache) };
    assert!(load("test-org/gated-chat", options(good)).await.unwrap().tokenizer.is_some());
}

fn small_chunks(config: HubConfig, retries: usize) -> LoadOptions {
    LoadOptions {
        download: DownloadOptions { parallel_files: 2, chunk_bytes: 4096, retries },
        ..options(config)
    }
}

#[tokio::test]
async fn a_connection_cut_mid_file_resumes_from_the_chunks_kept() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("cut");
    let size =
        std::fs::metadata(fixture("fixtures/checkpoints/scripted_chat/model.safetensors")).unwrap().len();
    let cdn = |seen: &[common::fake_hub::Seen]| -> Vec<(u64, u64)> {
        seen.iter()
            .filter(|s| s.path.starts_with("/cdn/") && s.range_start.is_some() && s.bytes_sent > 1)
            .map(|s| (s.range_start.unwrap(), s.bytes_sent))
            .collect()
    };

    // Cut on every attempt: a clear error, nothing in the snapshot taken as the file.
    hub.faults(Faults {
        cut: [("model.safetensors".to_owned(), (0, usize::MAX, 1000))].into(),
        ..Faults::default()
    });
    let err =
        hub_error(load("test-org/scripted-chat", small_chunks(config(&hub, &cache), 1)).await.unwrap_err());
    assert!(matches!(&err, HubError::Download { file, .. } if file == "model.safetensors"), "{err}");
    let entry = cache.join("models--test-org--scripted-chat");
    let files = tree(&entry);
    assert!(!files.iter().any(|f| f.ends_with("/model.safetensors")), "{files:?}");
    let commit = &repos()[0].commit;
    assert!(!entry.join("snapshots").join(commit).join("model.safetensors").exists());

    // Cut once, in the sixth chunk: the retry resumes after the chunks already kept. (A
    // fresh server: the failed run's other chunk requests may still be arriving.)
    let hub = FakeHub::start(repos()).await;
    let cache = temp("cut-once");
    hub.faults(Faults { cut: [("model.safetensors".to_owned(), (5, 1, 1000))].into(), ..Faults::default() });
    load("test-org/scripted-chat", small_chunks(config(&hub, &cache), 3)).await.unwrap();
    let ranges = cdn(&hub.seen());
    let cut = ranges.iter().position(|r| r.1 == 1000).unwrap_or_else(|| panic!("no cut: {ranges:?}"));
    let resumed_from = ranges[cut + 1..].iter().map(|r| r.0).min().unwrap();
    assert!(resumed_from >= 4096, "the retry started over at byte {resumed_from}: {ranges:?}");
    let sent: u64 = ranges.iter().map(|r| r.1).sum();
    assert!(sent < size + 3 * 4096, "{sent} bytes sent for a {size}-byte file: {ranges:?}");
    let entry = cache.join("models--test-org--scripted-chat");
    let snapshot_file = entry.join("snapshots").join(commit).join("model.safetensors");
    assert_eq!(
        std::fs::read(snapshot_file).unwrap(),
        std::fs::read(fixture("fixtures/checkpoints/scripted_chat/model.safetensors")).unwrap()
    );
    assert!(!tree(&entry).iter().any(|f| f.ends_with(".part") || f.ends_with(".lock")), "{:?}", tree(&entry));
}

#[tokio::test]
async fn a_download_that_fails_its_checksum_is_discarded() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("corrupt");
    hub.faults(Faults { corrupt: vec!["model.safetensors".into()], ..Faults::default() });
    let err = hub_error(load("test-org/scripted-chat", options(config(&hub, &cache))).await.unwrap_err());
    assert!(
        matches!(&err, HubError::Integrity { what: "sha256", file, .. } if file == "model.safetensors"),
        "{err}"
    );
    let entry = cache.join("models--test-org--scripted-chat");
    let files = tree(&entry);
    assert!(!files.iter().any(|f| f.ends_with("model.safetensors")), "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("blobs/")).count(), 3, "{files:?}");
    hub.faults(Faults::default());
    load("test-org/scripted-chat", options(config(&hub, &cache))).await.unwrap();
}

#[tokio::test]
async fn a_known_model_name_loads_its_repo_with_its_settings() {
    // The catalog's `qwen3-0.6b` is `Qwen/Qwen3-0.6B` with `<|im_end|>` as an extra end
    // token; the stand-in Hub serves the scripted chat model under that id.
    let hub = FakeHub::start(vec![scripted_chat("Qwen/Qwen3-0.6B")]).await;
    let cache = temp("known");
    let loaded = load("qwen3-0.6b", options(config(&hub, &cache))).await.unwrap();
    assert!(loaded.checkpoint.path().starts_with(cache.join("models--Qwen--Qwen3-0.6B/snapshots")));
    let spec = lamina_loader::known_model("qwen3-0.6b").unwrap().configuration();
    assert_eq!(spec.extra_eos_tokens, ["<|im_end|>"]);
    // The scripted vocabulary has no `<|im_end|>`: the extra token is skipped, not an error.
    assert_eq!(
        loaded.eos_token_ids(),
        load(fixture("fixtures/checkpoints/scripted_chat"), LoadOptions::default())
            .await
            .unwrap()
            .eos_token_ids()
    );
}

#[tokio::test]
async fn a_tokenizer_from_another_repo_and_extra_end_tokens() {
    let hub = FakeHub::start(repos()).await;
    let cache = temp("tokenizer");
    let plain = load("test-org/sharded", options(config(&hub, &cache))).await.unwrap();
    assert!(plain.tokenizer.is_none());
    let with = LoadOptions {
        tokenizer_source: Some("test-org/tokenizer-only".into()),
        extra_eos_tokens: vec!["count".into(), "not-a-token".into()],
        ..options(config(&hub, &cache))
    };
    let loaded = load("test-org/sharded", with).await.unwrap();
    assert_eq!(loaded.tokenizer.as_ref().unwrap().encode("count", false).unwrap(), [12]);
    let mut expected = plain.eos_token_ids();
    expected.push(12);
    assert_eq!(loaded.eos_token_ids(), expected);
    assert!(cache.join("models--test-org--tokenizer-only/refs/main").is_file());
}

/// The Hub's cache inside a folder of its own: `(root, cache)`; nothing may appear in
/// `root` but `cache`.
fn sandbox(tag: &str) -> (PathBuf, PathBuf) {
    // One level below this test's own folder: a hostile path that climbs out of the root
    // lands in that folder (checked by `nothing_written`), not in the shared temp folder,
    // where an unrelated `x` may exist.
    let root = temp(tag).join("root");
    let cache = root.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    (root, cache)
}

/// Nothing outside the cache folder; in it, blobs named by hashes only, links that stay
/// inside the repo's folder, and nothing of `file` (whose headers were hostile).
fn nothing_written(root: &Path, cache: &Path, file: &str) {
    let entries: Vec<_> = std::fs::read_dir(root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, ["cache"], "something was written beside the cache");
    assert!(!Path::new("/x").exists() && !root.parent().unwrap().join("x").exists());
    for repo in std::fs::read_dir(cache).unwrap().flatten() {
        let repo = repo.path().canonicalize().unwrap();
        for entry in tree(&repo) {
            let path = repo.join(&entry);
            assert!(!entry.ends_with(&format!("/{file}")), "{entry} was written");
            if let Some(blob) = entry.strip_prefix("blobs/") {
                let name = blob.trim_end_matches(".incomplete");
                assert!(
                    matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{entry}"
                );
            } else if path.is_symlink() {
                assert!(path.canonicalize().unwrap().starts_with(repo.join("blobs")), "{entry}");
            } else {
                assert!(entry.starts_with("refs/") || entry.starts_with("snapshots/"), "{entry}");
            }
        }
    }
}

#[tokio::test]
async fn headers_that_would_be_paths_are_refused_before_anything_is_written() {
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("model.safetensors", vec![("x-linked-etag", "../../../../x".into())]),
        ("model.safetensors", vec![("x-linked-etag", "/tmp/lamina-evil".into())]),
        ("config.json", vec![("etag", "\"../../../../x\"".into())]),
        ("config.json", vec![("etag", "".into())]),
        ("config.json", vec![("x-repo-commit", "../../x".into())]),
        ("config.json", vec![("x-repo-commit", "f".repeat(40))]),
        ("config.json", vec![("x-repo-commit", "".into())]),
        // An LFS file whose ETag is some other (well-formed) hash than its listed sha256.
        ("model.safetensors", vec![("x-linked-etag", "a".repeat(64))]),
        // A size the listing does not give is not downloaded in full.
        ("model.safetensors", vec![("x-linked-size", "1000000000000".into())]),
        ("config.json", vec![("content-length", "99999999".into())]),
    ];
    for (i, (file, headers)) in cases.into_iter().enumerate() {
        let hub = FakeHub::start(repos()).await;
        let (root, cache) = sandbox(&format!("paths-{i}"));
        hub.faults(Faults { headers: [(file.to_owned(), headers.clone())].into(), ..Faults::default() });
        let result = load("test-org/scripted-chat", options(config(&hub, &cache))).await;
        let err = hub_error(result.err().unwrap_or_else(|| panic!("{headers:?} was accepted")));
        assert!(matches!(err, HubError::Untrusted { .. }), "{headers:?}: {err}");
        assert!(err.to_string().contains(file), "{err}");
        nothing_written(&root, &cache, file);
        assert!(!cache.join("models--test-org--scripted-chat/refs/main").exists());
        assert!(!Path::new("/tmp/lamina-evil").exists());
        std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
    }
}

#[tokio::test]
async fn snapshot_links_stay_inside_the_repo_folder() {
    let hub = FakeHub::start(repos()).await;
    let (root, cache) = sandbox("links");
    load("test-org/sharded", options(config(&hub, &cache))).await.unwrap();
    let entry = cache.join("models--test-org--sharded").canonicalize().unwrap();
    let mut links = 0;
    for file in tree(&entry) {
        let path = entry.join(&file);
        if path.is_symlink() {
            links += 1;
            let target = path.canonicalize().unwrap();
            assert!(target.starts_with(entry.join("blobs")), "{file} -> {}", target.display());
        }
    }
    assert!(links >= 4, "{links} links");
    assert!(!tree(&entry).iter().any(|f| f.ends_with(".incomplete")));
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn the_token_goes_to_the_endpoints_origin_only() {
    let hub = FakeHub::start(repos()).await;
    let (_root, cache) = sandbox("token");
    let good = HubConfig { token: Some("hf_good".into()), ..config(&hub, &cache) };
    load("test-org/gated-chat", options(good.clone())).await.unwrap();
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.cdn), "no request reached the CDN: {seen:?}");
    assert!(seen.iter().filter(|s| s.cdn).all(|s| !s.authorization), "the CDN saw the token: {seen:?}");
    assert!(seen.iter().filter(|s| !s.cdn).all(|s| s.authorization), "{seen:?}");

    // A listing page on another origin is refused: not followed, with or without a token.
    let hub = FakeHub::start(repos()).await;
    let (root, cache) = sandbox("token-link");
    let elsewhere = format!("{}/api/models/test-org/gated-chat/tree/x?cursor=2", hub.cdn());
    hub.faults(Faults { tree_link: Some(elsewhere), ..Faults::default() });
    let good = HubConfig { token: Some("hf_good".into()), ..config(&hub, &cache) };
    let err = hub_error(load("test-org/gated-chat", options(good)).await.unwrap_err());
    assert!(matches!(&err, HubError::Untrusted { reason, .. } if reason.contains("origin")), "{err}");
    assert!(hub.seen().iter().all(|s| !s.cdn), "{:?}", hub.seen());
    nothing_written(&root, &cache, "config.json");
    assert!(!cache.join("models--test-org--gated-chat/blobs").exists());

    // Neither the configuration's nor the client's Debug prints the token.
    let hub_client = lamina_loader::hub::Hub::new(HubConfig {
        token: Some("hf_secret_value".into()),
        ..config(&hub, &cache)
    })
    .unwrap();
    let printed = format!("{hub_client:?} {:#?}", hub_client.config());
    assert!(!printed.contains("hf_secret_value"), "{printed}");
}

#[tokio::test]
async fn endless_bodies_stop_at_their_cap() {
    // An endless tree listing: refused at the listing cap (16 MiB), not read on.
    let hub = FakeHub::start(repos()).await;
    let (root, cache) = sandbox("endless-tree");
    hub.faults(Faults { endless_tree: true, ..Faults::default() });
    let started = std::time::Instant::now();
    let err = hub_error(load("test-org/scripted-chat", options(config(&hub, &cache))).await.unwrap_err());
    assert!(matches!(err, HubError::TooLarge { limit, .. } if limit == 16 << 20), "{err}");
    // What the server managed to hand out: the cap plus what the sockets buffer.
    assert!(hub.streamed() < 64 << 20, "{} bytes streamed", hub.streamed());
    assert!(started.elapsed().as_secs() < 30);
    nothing_written(&root, &cache, "config.json");
    assert!(!cache.join("models--test-org--scripted-chat/blobs").exists());

    // An endless file that ignores `Range`: no more than its listed size is written.
    let hub = FakeHub::start(repos()).await;
    let (root, cache) = sandbox("endless-file");
    hub.faults(Faults { endless: vec!["model.safetensors".into()], ..Faults::default() });
    let err =
        hub_error(load("test-org/scripted-chat", small_chunks(config(&hub, &cache), 0)).await.unwrap_err());
    assert!(matches!(err, HubError::TooLarge { .. }), "{err}");
    assert!(hub.streamed() < 64 << 20, "{} bytes streamed", hub.streamed());
    let size =
        std::fs::metadata(fixture("fixtures/checkpoints/scripted_chat/model.safetensors")).unwrap().len();
    let entry = cache.join("models--test-org--scripted-chat");
    for file in tree(&entry) {
        let len = std::fs::symlink_metadata(entry.join(&file)).unwrap().len();
        assert!(len <= size, "{file}: {len} bytes, listed {size}");
    }
    nothing_written(&root, &cache, "model.safetensors");
    std::fs::remove_dir_all(root.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn a_stalled_server_is_an_error_naming_the_url_within_the_timeout() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (_root, cache) = sandbox("stalled");
    let quick = |config: HubConfig| HubConfig {
        etag_timeout: std::time::Duration::from_secs(1),
        download_timeout: std::time::Duration::from_secs(1),
        ..config
    };
    let stalled = quick(HubConfig::new(&format!("http://{address}"), &cache));
    let started = std::time::Instant::now();
    let err = hub_error(load("test-org/scripted-chat", options(stalled)).await.unwrap_err());
    assert!(started.elapsed().as_secs_f64() < 5.0, "{:?}", started.elapsed());
    assert!(
        matches!(&err, HubError::Network { url, reason } if url.contains(&address.to_string()) && reason.contains("timeout")),
        "{err}"
    );
    holder.abort();

    // A file's body that stops mid-way: the download fails within the timeout.
    let hub = FakeHub::start(repos()).await;
    hub.faults(Faults { stall: vec!["model.safetensors".into()], ..Faults::default() });
    let started = std::time::Instant::now();
    let err = hub_error(
        load("test-org/scripted-chat", small_chunks(quick(config(&hub, &cache)), 0)).await.unwrap_err(),
    );
    assert!(started.elapsed().as_secs_f64() < 5.0, "{:?}", started.elapsed());
    assert!(
        matches!(&err, HubError::Download { file, reason, .. } if file == "model.safetensors" && reason.contains("/cdn/")),
        "{err}"
    );
}

#[tokio::test]
async fn a_redirect_without_a_location_names_the_file() {
    let hub = FakeHub::start(repos()).await;
    let (root, cache) = sandbox("no-location");
    hub.faults(Faults {
        headers: [("model.safetensors".to_owned(), vec![("location", String::new())])].into(),
        ..Faults::default()
    });
    let err = hub_error(load("test-org/scripted-chat", options(config(&hub, &cache))).await.unwrap_err());
    assert!(
        matches!(&err, HubError::Untrusted { url, reason } if url.contains("model.safetensors") && reason.contains("Location")),
        "{err}"
    );
    nothing_written(&root, &cache, "model.safetensors");
}
