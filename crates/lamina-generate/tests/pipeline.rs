//! Pipeline-parallel generation over loopback: ranks (copies of this test binary started
//! with `MLX_RANK` and `MLX_HOSTFILE`, as `mlx.launch` starts them) each load only their
//! share of a checkpoint's blocks and generate together; their greedy tokens equal one
//! process's, for attention (full and windowed), quantized, sharded, GGUF and Mamba models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lamina_backbones::layer_of;
use lamina_core::distributed::{Backend, Group, LocalLaunch, RankOutput};
use lamina_generate::{GenerateParams, generate};
use lamina_heads::ModelInput;
use lamina_loader::{LoadOptions, load_blocking};
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::TryIndexOp;

/// Set in the ranks this test starts.
const RANK_RUN: &str = "LAMINA_PIPELINE_RANK_RUN";

const CASES: [&str; 9] = [
    "checkpoints/llama_gqa_llama3_sharded",
    "checkpoints/llama_mlx_4bit",
    "checkpoints/mamba_hf",
    "checkpoints/gemma3_local_global",
    "checkpoints/qwen3_qk_norm",
    "checkpoints/phi3_fused_longrope",
    "checkpoints/mobilellm_r1",
    "gguf/tiny_quant.gguf",
    "gguf/tiny_qwen3.gguf",
];

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(case)
}

/// A whole forward's last logits over a 13-token prompt, the same prompt prefilled 4 tokens at
/// a time (so that chunks evaluate only the caches), then 12 greedy tokens.
fn run(case: &str, pipeline: Option<Arc<Group>>) -> Result<(Vec<u32>, Vec<f32>, String), String> {
    let options = LoadOptions { tokenizer: false, pipeline, ..LoadOptions::default() };
    let mut loaded = load_blocking(fixture(case), options).map_err(|e| e.to_string())?;
    let mut held: Vec<usize> =
        loaded.model.parameters().flatten().keys().filter_map(|k| layer_of(k)).collect();
    held.sort_unstable();
    held.dedup();
    let layers = loaded.pipeline_layers.clone().map_or_else(|| "all".into(), |l| format!("{l:?}"));
    let params = GenerateParams { max_new_tokens: 12, prefill_step: 4, ..GenerateParams::default() };
    let prompt = [5, 9, 2, 7, 11, 3, 8, 1, 4, 13, 6, 10, 2];
    let ids = Array::from_slice(&prompt.map(|t| t as i32), &[1, prompt.len() as i32]);
    let logits = loaded.model.forward(ModelInput::new(&ids)).map_err(|e| e.to_string())?.logits;
    let last = logits.try_index((.., -1, ..)).map_err(|e| e.to_string())?;
    let logits = last.as_dtype(mlx_rs::Dtype::Float32).map_err(|e| e.to_string())?;
    let out = generate(loaded.model.as_mut(), None, &prompt, &params).map_err(|e| e.to_string())?;
    Ok((out.tokens, logits.as_slice::<f32>().to_vec(), format!("{layers} holding {held:?}")))
}

/// Starts `ranks` ranks running `test` alone and waits (120 s at most).
fn launch(test: &str, ranks: usize) -> Vec<RankOutput> {
    let command = |_| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(RANK_RUN, "1");
        command
    };
    LocalLaunch::start(ranks, ranks, command)
        .unwrap()
        .wait(Duration::from_secs(120), Duration::from_secs(10))
        .unwrap()
}

/// In a rank: one line per case, `case|tokens|layers|logits` or `case|error|message`.
fn rank_main(cases: &[&str]) {
    let group = Arc::new(Group::init(Backend::Ring, Duration::from_secs(30)).unwrap());
    for case in cases {
        match run(case, Some(Arc::clone(&group))) {
            Ok((tokens, logits, layers)) => println!("{case}|{tokens:?}|{layers}|{logits:?}"),
            Err(e) => println!("{case}|error|{e}"),
        }
    }
}

/// Each rank's line for `case`: tokens (or "error"), layers (or the message), logits.
fn lines<'a>(out: &'a RankOutput, case: &str) -> (&'a str, &'a str, Vec<f32>) {
    let mark = format!("{case}|");
    let line = out.stdout.lines().find_map(|l| l.find(&mark).map(|at| &l[at..])).unwrap_or_else(|| {
        panic!("rank {} has no line for {case}:\n{}\n{}", out.rank, out.stdout, out.stderr)
    });
    let mut parts = line.splitn(4, '|').skip(1);
    let (tokens, layers) = (parts.next().unwrap(), parts.next().unwrap());
    let logits = parts.next().map_or_else(Vec::new, |l| {
        l.trim_matches(['[', ']']).split(", ").map(|v| v.parse().unwrap()).collect()
    });
    (tokens, layers, logits)
}

fn check_ranks(test: &str, ranks: usize, cases: &[&str]) -> Vec<RankOutput> {
    let outs = launch(test, ranks);
    for out in &outs {
        let tail = |text: &str| {
            text.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect::<String>()
        };
        assert!(
            out.status.is_some_and(|s| s.success()),
            "rank {}: {}\n{}",
            out.rank,
            tail(&out.stdout),
            out.stderr
        );
    }
    for case in cases {
        let (alone, logits, _) = run(case, None).unwrap();
        for out in &outs {
            let (tokens, layers, got) = lines(out, case);
            assert_eq!(tokens, format!("{alone:?}"), "{case}, rank {} ({layers})", out.rank);
            assert_eq!(got.len(), logits.len(), "{case}");
            let worst = got.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{case}, rank {}: logits differ by {worst}", out.rank);
        }
    }
    outs
}

#[test]
fn two_ranks_generate_the_tokens_of_one_process() {
    if std::env::var_os(RANK_RUN).is_some() {
        return rank_main(&CASES);
    }
    let outs = check_ranks("two_ranks_generate_the_tokens_of_one_process", 2, &CASES);
    // Each rank holds its half of the blocks, numbered from 0.
    let held = |case| (lines(&outs[0], case).1, lines(&outs[1], case).1);
    assert_eq!(held("checkpoints/llama_gqa_llama3_sharded"), ("0..1 holding [0]", "1..2 holding [0]"));
    assert_eq!(held("checkpoints/gemma3_local_global"), ("0..2 holding [0, 1]", "2..3 holding [0]"));
    assert_eq!(held("gguf/tiny_quant.gguf"), ("0..1 holding [0]", "1..2 holding [0]"));
}

const THREE: [&str; 3] =
    ["checkpoints/qwen3_qk_norm", "checkpoints/mobilellm_r1", "checkpoints/llama_mlx_4bit"];

#[test]
fn three_ranks_generate_the_tokens_of_one_process_and_more_ranks_than_blocks_fail() {
    if std::env::var_os(RANK_RUN).is_some() {
        return rank_main(&THREE);
    }
    let test = "three_ranks_generate_the_tokens_of_one_process_and_more_ranks_than_blocks_fail";
    let outs = check_ranks(test, 3, &THREE[..2]);
    for (out, expected) in outs.iter().zip(["0..1 holding [0]", "1..2 holding [0]", "2..3 holding [0]"]) {
        assert_eq!(lines(out, "checkpoints/qwen3_qk_norm").1, expected);
        let (tokens, message, _) = lines(out, "checkpoints/llama_mlx_4bit");
        assert_eq!(tokens, "error");
        assert!(message.contains("2 blocks cannot be split over 3 pipeline ranks"), "{message}");
    }
}
