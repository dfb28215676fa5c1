//! The examples as a user runs them: `forward` writes the reference logits, `inspect`
//! describes checkpoints and presets, and bad input exits non-zero with one line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use mlx_rs::Array;

#[path = "../crates/lamina-loader/tests/common/fake_hub.rs"]
#[allow(dead_code)]
mod fake_hub;

/// `cargo test` builds the examples next to the test binaries' folder.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples").join(name);
    assert!(path.exists(), "{} is not built; run `cargo test` (which builds the examples)", path.display());
    Command::new(path)
}

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints").join(case)
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn forward_writes_the_reference_logits() {
    let reference = Array::load_safetensors(fixture("mamba_hf").join("reference.safetensors")).unwrap();
    let ids = reference["input_ids"]
        .as_slice::<i32>()
        .chunks(8)
        .map(|row| row.iter().map(i32::to_string).collect::<Vec<_>>().join(","));
    let tokens = ids.collect::<Vec<_>>().join(";");
    let out_file = std::env::temp_dir().join(format!("lamina-forward-{}.safetensors", std::process::id()));
    let out = example("forward")
        .args([
            "--model",
            fixture("mamba_hf").to_str().unwrap(),
            "--tokens",
            &tokens,
            "--out",
            out_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = Array::load_safetensors(&out_file).unwrap();
    let diff = written["logits"].subtract(&reference["logits"]).unwrap().abs().unwrap().max(None).unwrap();
    assert!(diff.item_exact::<f32>() < 1e-4);
}

#[test]
fn forward_rejects_bad_input_with_one_line() {
    let model = fixture("llama_tied_smollm");
    let run = |tokens: &str, model: &str| {
        example("forward")
            .args(["--model", model, "--tokens", tokens, "--out", "/tmp/lamina-unused.safetensors"])
            .output()
            .unwrap()
    };
    assert!(one_line_error(&run("1,2,999", model.to_str().unwrap())).contains("outside the vocabulary"));
    assert!(one_line_error(&run("1,x", model.to_str().unwrap())).contains("`x` is not a token id"));
    assert!(one_line_error(&run("1,2;3", model.to_str().unwrap())).contains("equal"));
    assert!(one_line_error(&run("1", "/nonexistent/model")).contains("no such file"));
}

#[test]
fn inspect_describes_checkpoints_and_presets() {
    let out =
        example("inspect").args(["--model", fixture("mobilellm_r1").to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("family: mobilellm (model_type \"llama4_text\")"), "{text}");
    assert!(text.contains("model.layers.0.feed_forward.down_proj.weight [32, 96] F32"), "{text}");
    let out = example("inspect").args(["--preset", "mobilellm:950m", "--limit", "0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("parameters: 949685760"), "{text}");
    for (preset, count) in
        [("qwen3:0.6b", "596049920"), ("gemma3:270m", "268098176"), ("phi3:mini", "3821079552")]
    {
        let out = example("inspect").args(["--preset", preset, "--limit", "0"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("parameters: {count}")), "{preset}: {text}");
    }
    one_line_error(&example("inspect").args(["--preset", "llama:gpt5"]).output().unwrap());
}

#[test]
fn a_family_defined_in_an_example_loads_and_matches_mlx_lm() {
    // StableLM 2, and StableLM 3B/Zephyr's parallel residual (a block option: no kernel or
    // fast-path change).
    for (case, tensors) in [("stablelm_custom", 32), ("stablelm_parallel", 28)] {
        let out =
            example("custom_family").args(["--model", fixture(case).to_str().unwrap()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("loaded stablelm ({tensors} tensors, strict)")), "{text}");
        assert!(text.contains("greedy continuation identical: true"), "{text}");
    }
    // Without the registration the same folder is an unknown model_type.
    let err = one_line_error(
        &example("inspect").args(["--model", fixture("stablelm_custom").to_str().unwrap()]).output().unwrap(),
    );
    assert!(err.contains("unknown model_type `stablelm`"), "{err}");
}

#[test]
fn generate_answers_with_the_default_model_as_json() {
    let out = example("generate").args(["--json", "--max-new-tokens", "24"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["text"].as_str().unwrap().contains("Paris"), "{json}");
    assert!(!json["tokens"].as_array().unwrap().is_empty());
    for key in ["prompt_tokens_per_s", "generation_tokens_per_s", "peak_memory_bytes"] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}: {json}");
    }
    let err = example("generate").args(["--prompt-tokens", "1,99999"]).output().unwrap();
    assert!(one_line_error(&err).contains("outside the vocabulary"));
    let err = example("generate").args(["--top-p", "0"]).output().unwrap();
    assert!(one_line_error(&err).contains("top_p"));
}

#[test]
fn generate_takes_a_repo_id_from_hf_endpoint_then_runs_offline() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];
    let repo = fake_hub::HubRepo::from_folder("test-org/scripted-chat", &fixture("scripted_chat"), &names);
    let hub = runtime.block_on(fake_hub::FakeHub::start(vec![repo]));
    let home = std::env::temp_dir().join(format!("lamina-cli-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let run = |model: &str, offline: bool| {
        let mut command = example("generate");
        command.args(["--model", model, "--prompt", "count", "--max-new-tokens", "6", "--json"]);
        command.env("HF_HOME", &home).env("HF_ENDPOINT", &hub.endpoint).env_remove("HF_TOKEN");
        if offline {
            command.env("HF_HUB_OFFLINE", "1");
        }
        command.output().unwrap()
    };
    let first = run("test-org/scripted-chat", false);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(home.join("hub/models--test-org--scripted-chat/refs/main").is_file());
    hub.clear();
    let second = run("test-org/scripted-chat", true);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(first["tokens"], second["tokens"]);
    assert!(!first["tokens"].as_array().unwrap().is_empty());
    assert!(hub.seen().is_empty(), "the offline run asked the Hub: {:?}", hub.seen());
    let err = one_line_error(&run("test-org/other-model", true));
    assert!(err.contains("not in the cache") && err.contains("HF_HUB_OFFLINE"), "{err}");
    let err = one_line_error(&run("test-org/other-model", false));
    assert!(err.contains("no such repository"), "{err}");

    let listed = example("generate").arg("--list-models").output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.lines().any(|l| l.starts_with("qwen3-0.6b ") && l.contains("Qwen/Qwen3-0.6B")),
        "{listed}"
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn launch_runs_train_lora_as_two_ranks_and_ends_the_rest_when_one_fails() {
    let data = std::env::temp_dir().join(format!("lamina-cli-launch-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let row = r#"{"messages": [{"role": "user", "content": "count"}, {"role": "assistant", "content": "Hello world !"}]}"#;
    std::fs::write(data.join("train.jsonl"), [row; 12].join("\n")).unwrap();
    let train_lora = example("train_lora").get_program().to_owned();
    let args = |out: &str| {
        let out = data.join(out);
        vec![
            "--model".to_owned(),
            fixture("scripted_chat").to_string_lossy().into_owned(),
            "--data".to_owned(),
            data.to_string_lossy().into_owned(),
            "--layers".to_owned(),
            "1".to_owned(),
            "--steps".to_owned(),
            "3".to_owned(),
            "--out".to_owned(),
            out.to_string_lossy().into_owned(),
        ]
    };
    let single = Command::new(&train_lora).args(args("single")).output().unwrap();
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));
    let launched = example("launch").args(["-n", "2"]).arg(&train_lora).args(args("ranks")).output().unwrap();
    let text = String::from_utf8_lossy(&launched.stdout);
    assert!(launched.status.success(), "{text}\n{}", String::from_utf8_lossy(&launched.stderr));
    assert!(text.contains("[0] rank 0 of 2 ranks, training data-parallel"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("[1]")), "rank 1 printed: {text}");
    // The first step's loss is the whole batch's (later steps differ by float rounding).
    let first = |t: &str| {
        t.lines().find(|l| l.contains("step   1  loss")).map(|l| l.split("  ").nth(1).unwrap().to_owned())
    };
    assert_eq!(first(&text), first(&String::from_utf8_lossy(&single.stdout)), "{text}");

    let started = std::time::Instant::now();
    let script = r#"if [ "$MLX_RANK" = 1 ]; then echo dying; exit 3; fi; sleep 60"#;
    let failed = example("launch").args(["-n", "2", "--grace", "1", "sh", "-c", script]).output().unwrap();
    let err = one_line_error(&failed);
    assert!(err.contains("rank 1 exited with exit status: 3") && err.contains("rank 0 was ended"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());

    // Ctrl-C (SIGINT) on the launcher ends both ranks, whose process groups it does not reach.
    let marker = format!("lamina-launch-sleeper-{}", std::process::id());
    let script = format!("exec -a {marker} sleep 60");
    let mut launcher = example("launch").args(["-n", "2", "bash", "-c", &script]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Processes whose command line is exactly `<marker> 60` (the renamed sleeps).
    let running = || {
        let wanted = format!("{marker}\060\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
            .count()
    };
    assert_eq!(running(), 2, "both ranks should be running");
    // SAFETY: signals the launcher this test started.
    unsafe {
        libc_kill(launcher.id() as i32, 2);
    }
    let started = std::time::Instant::now();
    let status = launcher.wait().unwrap();
    assert!(!status.success() && started.elapsed() < std::time::Duration::from_secs(10));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(running(), 0, "a rank outlived the interrupted launcher");
}

#[test]
fn generate_runs_pipeline_parallel_as_local_ranks_and_as_ranks_over_ssh() {
    let generate = example("generate").get_program().to_owned();
    let args = |case: &str| {
        let model = fixture(case).to_string_lossy().into_owned();
        ["--model", &model, "--prompt-tokens", "5,9,2,7,11,3,8,1,4", "--max-new-tokens", "8", "--json"]
            .map(str::to_owned)
    };
    let tokens = |text: &str| {
        let line = text.lines().find_map(|l| l.find("{\"tokens\"").map(|at| &l[at..])).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(line).map(|v| v["tokens"].clone()).unwrap_or_default()
    };
    for case in ["llama_gqa_llama3_sharded", "mamba_hf"] {
        let single = Command::new(&generate).args(args(case)).output().unwrap();
        assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));
        let alone = tokens(&String::from_utf8_lossy(&single.stdout));
        assert!(alone.as_array().is_some_and(|t| t.len() == 8), "{alone}");

        let launched = example("launch").args(["-n", "2"]).arg(&generate).args(args(case)).output().unwrap();
        let (out, err) =
            (String::from_utf8_lossy(&launched.stdout), String::from_utf8_lossy(&launched.stderr));
        assert!(launched.status.success(), "{out}\n{err}");
        assert_eq!(tokens(&out), alone, "{case}: {out}");
        assert!(!out.lines().any(|l| l.starts_with("[1]")), "rank 1 printed: {out}");
        assert!(err.contains("[0] [rank 0: layers 0..1; peak memory"), "{err}");
        assert!(err.contains("[1] [rank 1: layers 1..2; peak memory"), "{err}");
    }

    // --hosts: each rank started through `ssh HOST COMMAND` (here a stand-in that runs the
    // command locally), which writes its hostfile and sets the variables itself.
    let dir = std::env::temp_dir().join(format!("lamina-cli-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ssh = dir.join("ssh");
    // The stand-in refuses a call whose options are not ended by `--` before the host.
    std::fs::write(
        &ssh,
        "#!/bin/sh\n[ \"$1\" = -- ] || exit 9\nshift\necho \"$1\" >> \"$0.hosts\"\nshift\nexec sh -c \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let launched = example("launch")
        .args(["--hosts", "127.0.0.1,me@127.0.0.1", "--starting-port", &port.to_string(), "--ssh"])
        .arg(&ssh)
        .arg(&generate)
        .args(args("llama_gqa_llama3_sharded"))
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&launched.stdout), String::from_utf8_lossy(&launched.stderr));
    assert!(launched.status.success(), "{out}\n{err}");
    let single = Command::new(&generate).args(args("llama_gqa_llama3_sharded")).output().unwrap();
    assert_eq!(tokens(&out), tokens(&String::from_utf8_lossy(&single.stdout)), "{out}");
    let reached = std::fs::read_to_string(dir.join("ssh.hosts")).unwrap();
    let mut reached: Vec<&str> = reached.lines().collect();
    reached.sort_unstable();
    assert_eq!(reached, ["127.0.0.1", "me@127.0.0.1"]);
    let bad = example("launch").args(["--hosts", "a b", "true"]).output().unwrap();
    assert!(one_line_error(&bad).contains("`a b` is not a host name"));
    // A host or user that ssh would read as an option never reaches it.
    for hostile in ["-oProxyCommand=touch /tmp/x", "me@-oProxyCommand=x", "-l@host"] {
        let bad =
            example("launch").args(["--hosts", hostile, "--ssh"]).arg(&ssh).arg("true").output().unwrap();
        assert!(!bad.status.success());
        assert!(one_line_error(&bad).contains("is not a host name"), "{hostile}: {}", one_line_error(&bad));
    }
    assert_eq!(std::fs::read_to_string(dir.join("ssh.hosts")).unwrap().lines().count(), 2, "ssh was called");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_lora_and_quantize_run_on_a_tiny_model() {
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny_f32.gguf");
    let out = std::env::temp_dir().join(format!("lamina-cli-lora-{}", std::process::id()));
    let run = example("train_lora")
        .args([
            "--model",
            gguf.to_str().unwrap(),
            "--steps",
            "4",
            "--layers",
            "2",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
        ])
        .args(["--out", out.to_str().unwrap(), "--prompt", "The capital of"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(text.contains("step   4") && text.contains("% of the start"), "{text}");
    assert!(out.join("adapters.safetensors").exists() && out.join("adapter_config.json").exists());

    // A JSONL chat folder, prompts masked, DoRA in bf16, then resumed to more steps.
    let data = std::env::temp_dir().join(format!("lamina-cli-chat-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let row = r#"{"messages": [{"role": "user", "content": "count"}, {"role": "assistant", "content": "Hello world !"}]}"#;
    std::fs::write(data.join("train.jsonl"), [row; 12].join("\n")).unwrap();
    std::fs::write(data.join("test.jsonl"), row).unwrap();
    let chat_out = std::env::temp_dir().join(format!("lamina-cli-dora-{}", std::process::id()));
    let train = |kind: &str, precision: &str, resume: bool| {
        let mut command = example("train_lora");
        command.args([
            "--model",
            fixture("scripted_chat").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        command.args(["--mask-prompt", "--fine-tune-type", kind, "--precision", precision, "--layers", "1"]);
        command.args([
            "--steps",
            "6",
            "--eval-every",
            "2",
            "--save-every",
            "2",
            "--out",
            chat_out.to_str().unwrap(),
        ]);
        if resume {
            command.args(["--resume", chat_out.join("checkpoints/step-000004").to_str().unwrap()]);
        }
        command.output().unwrap()
    };
    let step_lines =
        |text: &str| text.lines().filter(|l| l.starts_with("step ")).map(str::to_owned).collect::<Vec<_>>();
    let run = train("dora", "bf16", false);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for expected in [
        "12 rows (chat)",
        "prompt masked",
        "dora on",
        "bf16",
        "step   6  loss",
        "held-out loss",
        "test loss",
        "perplexity",
    ] {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chat_out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["fine_tune_type"], "dora");
    // LoRA in f32, then resumed from step 4: steps 5 and 6 print what the whole run did.
    let whole = train("lora", "f32", false);
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let whole = step_lines(&String::from_utf8_lossy(&whole.stdout));
    let resumed = train("lora", "f32", true);
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(text.contains("resumed at step 4"), "{text}");
    let strip = |l: &String| l.split("  ").take(4).collect::<Vec<_>>().join("  "); // without tok/s
    let continued: Vec<String> = step_lines(&text).iter().map(strip).collect();
    assert_eq!(continued, whole[4..].iter().map(strip).collect::<Vec<_>>(), "{text}");
    std::fs::write(data.join("train.jsonl"), format!("{row}\n{{\"text\": \"x\"}}")).unwrap();
    let err = one_line_error(&train("lora", "f32", false));
    assert!(err.contains("train.jsonl:2") && err.contains("a text row in a file of chat rows"), "{err}");

    let quantized = std::env::temp_dir().join(format!("lamina-cli-quant-{}", std::process::id()));
    let run = example("quantize")
        .args([
            "--model",
            fixture("llama_tied_smollm").to_str().unwrap(),
            "--bits",
            "8",
            "--group-size",
            "32",
        ])
        .args(["--out", quantized.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(text.contains("8-bit") && text.contains("mean KL"), "{text}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(quantized.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization"]["bits"], 8);
    let err = example("quantize")
        .args(["--model", fixture("llama_tied_smollm").to_str().unwrap(), "--bits", "7", "--out", "/tmp/x"])
        .output()
        .unwrap();
    assert!(one_line_error(&err).contains("bits"));
}

#[test]
fn chat_keeps_the_conversation_in_the_cache_saves_and_loads_it() {
    let dir = std::env::temp_dir().join(format!("lamina-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("chat.safetensors");
    let input = format!(
        "What is the capital of France?\nAnd the capital of Italy?\n/save {0}\n/reset\n/load {0}\nAnd of Spain?\n/bogus\n",
        saved.display()
    );
    let mut child = example("chat")
        .args(["--max-tokens", "40"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let answers: Vec<&str> = stdout.lines().collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    for (answer, city) in answers.iter().zip(["Paris", "Rome", "Madrid"]) {
        assert!(answer.contains(city), "{stdout}");
    }
    // Each turn after the first computes only its own tokens: the earlier turns (and, after
    // /load, the saved ones) come from the cache.
    let cached: Vec<(usize, usize)> = stderr
        .lines()
        .filter_map(|l| {
            let (total, rest) = l.strip_prefix(">> [")?.split_once(" prompt tokens (")?;
            Some((total.parse().ok()?, rest.split_once(' ')?.0.parse().ok()?))
        })
        .collect();
    assert_eq!(cached.len(), 3, "{stderr}");
    assert_eq!(cached[0].1, 0, "{stderr}");
    for &(total, from_cache) in &cached[1..] {
        assert!(from_cache > 0 && total - from_cache < 24, "{stderr}");
    }
    assert!(stderr.contains("[loaded") && stderr.contains("[commands:"), "{stderr}");
    assert!(saved.exists() && dir.join("chat.safetensors.chat.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    use std::io::{BufRead, Read, Write};
    let mut child = example("chat")
        .args(["--max-tokens", "400"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Write a very long story about a dragon and a knight.\n").unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Once the answer is streaming, interrupt it.
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(unsafe { libc_kill(child.id() as i32, 2) }, 0);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.ends_with(" [stopped]\n"), "{line:?}");
    stdin.write_all(b"What is the capital of France?\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(rest.contains("Paris"), "{rest:?}");
}

#[test]
fn generate_holds_output_to_a_schema_and_drafts_from_the_prompt() {
    let schema = r#"{"type":"object","properties":{"capital":{"enum":["Paris","Lyon"]}},"required":["capital"],"additionalProperties":false}"#;
    let out = example("generate")
        .args(["--json", "--max-new-tokens", "40", "--json-schema", schema])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer: serde_json::Value = serde_json::from_str(json["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer, serde_json::json!({"capital": "Paris"}));
    let prompt = "Repeat exactly: the quick brown fox jumps over the lazy dog near the river bank.";
    let run = |extra: &[&str]| {
        let out = example("generate")
            .args(["--json", "--max-new-tokens", "30", "--prompt", prompt])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (plain, drafted) = (run(&[]), run(&["--prompt-lookup", "3"]));
    assert_eq!(plain["tokens"], drafted["tokens"]);
    assert!(drafted["accepted_draft_tokens"].as_u64().unwrap() > 0, "{drafted}");
    let err = example("generate").args(["--json-schema", "{not json"]).output().unwrap();
    assert!(one_line_error(&err).contains("--json-schema"));
}
