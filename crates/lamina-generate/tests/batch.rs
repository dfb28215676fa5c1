//! Continuous batching: every sequence of a batch, joining and leaving at different steps,
//! gets the greedy tokens it gets alone (KV, rotating-window and Mamba caches); the prompt
//! cache reuses a finished conversation's positions; a saved prompt cache continues as the
//! live one; log-probabilities are those of the model's distribution.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;

use lamina_generate::{
    BatchConfig, BatchEvent, BatchGenerator, BatchRequest, FinishReason, GenerateParams, SamplerConfig,
    TokenLogprobs, batch_generate, generate, load_prompt_cache, save_prompt_cache,
};
use lamina_loader::{LoadOptions, LoadedModel, load_blocking};

fn fixture(case: &str) -> LoadedModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints").join(case);
    load_blocking(path, LoadOptions::default()).unwrap()
}

/// Prompts of different lengths, from ids valid in every fixture.
fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 2, 7, 11, 3, 8],
        vec![1, 4],
        vec![13, 6, 10, 2, 2, 9, 14, 3, 5, 7, 12, 1, 4],
        vec![7],
        vec![3, 3, 8, 1, 9],
    ]
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { max_new_tokens: n, prefill_step: 4, ..GenerateParams::default() }
}

/// What a sequence of [`run_batch`] produced.
struct Finished {
    streamed: Vec<u32>,
    tokens: Vec<u32>,
    reason: FinishReason,
    /// Each streamed token's log-probabilities (when requested).
    logprobs: Vec<TokenLogprobs>,
}

/// Runs `requests` through `generator`, inserting request `k` before step `join[k]`;
/// returns each sequence's streamed tokens, final output and log-probabilities.
fn run_on(generator: &mut BatchGenerator<'_>, requests: &[(usize, BatchRequest)]) -> HashMap<u64, Finished> {
    let mut ids = HashMap::new();
    let mut streamed: HashMap<u64, (Vec<u32>, Vec<TokenLogprobs>)> = HashMap::new();
    let mut done = HashMap::new();
    let mut step = 0;
    while done.len() < requests.len() {
        for (k, (at, request)) in requests.iter().enumerate() {
            if *at == step {
                ids.insert(generator.insert(request.clone()), k);
            }
        }
        for event in generator.step().unwrap() {
            match event {
                BatchEvent::Token { sequence, token, logprobs } => {
                    let entry = streamed.entry(sequence).or_default();
                    entry.0.push(token.id);
                    entry.1.extend(logprobs);
                }
                BatchEvent::Done { sequence, output, .. } => {
                    let (streamed, logprobs) = streamed.remove(&sequence).unwrap_or_default();
                    let finished =
                        Finished { streamed, tokens: output.tokens, reason: output.finish_reason, logprobs };
                    done.insert(ids[&sequence] as u64, finished);
                }
                BatchEvent::Failed { error, .. } => panic!("{error}"),
            }
        }
        step += 1;
        assert!(step < 500, "the batch never finished");
    }
    assert!(generator.is_idle());
    done
}

/// [`run_on`] a new batch of `config`.
fn run_batch(
    loaded: &mut LoadedModel,
    requests: &[(usize, BatchRequest)],
    config: BatchConfig,
) -> HashMap<u64, Finished> {
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, config).unwrap();
    run_on(&mut generator, requests)
}

#[test]
fn batched_greedy_equals_each_sequence_alone_with_joins_and_leaves() {
    for case in ["llama_tied_smollm", "mamba_hf", "gemma2_softcap", "gemma3_local_global", "qwen3_qk_norm"] {
        let mut loaded = fixture(case);
        // Different budgets so that sequences leave at different steps; joins at steps
        // 0, 0, 3, 5, 9 (the last after the first has left).
        let budgets = [6, 14, 9, 12, 4];
        let joins = [0, 0, 3, 5, 9];
        let alone: Vec<Vec<u32>> = prompts()
            .iter()
            .zip(budgets)
            .map(|(p, n)| generate(loaded.model.as_mut(), None, p, &greedy(n)).unwrap().tokens)
            .collect();
        let requests: Vec<_> = prompts()
            .into_iter()
            .zip(budgets)
            .zip(joins)
            .map(|((p, n), at)| (at, BatchRequest::new(p, greedy(n))))
            .collect();
        for max_batch in [2, 8] {
            let config = BatchConfig { max_batch, prompt_cache_bytes: 0, ..BatchConfig::default() };
            let batch = run_batch(&mut loaded, &requests, config);
            for (k, expected) in alone.iter().enumerate() {
                let Finished { streamed, tokens, reason, .. } = &batch[&(k as u64)];
                assert_eq!(tokens, expected, "{case}, sequence {k}, max_batch {max_batch}");
                assert_eq!(streamed, expected, "{case}, sequence {k}: the stream is the output");
                assert_eq!(*reason, FinishReason::MaxTokens);
            }
        }
    }
}

#[test]
fn eos_and_repetition_penalty_behave_in_a_batch_as_alone() {
    let mut loaded = fixture("llama_tied_smollm");
    let sampler = SamplerConfig { repetition_penalty: 1.5, ..SamplerConfig::default() };
    let mut params: Vec<GenerateParams> =
        (0..5).map(|k| GenerateParams { sampler: sampler.clone(), ..greedy(10 + k) }).collect();
    // The third sequence stops at the fourth token it would produce alone.
    let free = generate(loaded.model.as_mut(), None, &prompts()[2], &params[2]).unwrap().tokens;
    params[2].eos_token_ids = vec![free[3]];
    params[1].sampler = SamplerConfig::default();
    let alone: Vec<_> = prompts()
        .iter()
        .zip(&params)
        .map(|(p, g)| generate(loaded.model.as_mut(), None, p, g).unwrap())
        .collect();
    assert_eq!(alone[2].finish_reason, FinishReason::Eos);
    let requests: Vec<_> = prompts()
        .into_iter()
        .zip(params)
        .enumerate()
        .map(|(k, (p, g))| (k, BatchRequest::new(p, g)))
        .collect();
    let batch = run_batch(&mut loaded, &requests, BatchConfig::default());
    for (k, expected) in alone.iter().enumerate() {
        let Finished { tokens, reason, .. } = &batch[&(k as u64)];
        assert_eq!((tokens, *reason), (&expected.tokens, expected.finish_reason), "sequence {k}");
    }
}

#[test]
fn the_prompt_cache_reuses_a_finished_conversation() {
    let mut loaded = fixture("llama_tied_smollm");
    let first = prompts()[2].clone();
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    generator.insert(BatchRequest::new(first.clone(), greedy(5)));
    let mut answer = Vec::new();
    while !generator.is_idle() {
        for event in generator.step().unwrap() {
            if let BatchEvent::Done { output, cached_tokens, .. } = event {
                assert_eq!(cached_tokens, 0);
                answer = output.tokens;
            }
        }
    }
    assert_eq!(generator.prompt_cache().len(), 1);
    // The next turn: the first prompt, the answer, and a new question.
    let second: Vec<u32> = first.iter().chain(&answer).chain(&[4, 8, 15]).copied().collect();
    generator.insert(BatchRequest::new(second.clone(), greedy(7)));
    let mut reused = None;
    let mut tokens = Vec::new();
    while !generator.is_idle() {
        for event in generator.step().unwrap() {
            if let BatchEvent::Done { output, cached_tokens, .. } = event {
                reused = Some(cached_tokens);
                tokens = output.tokens;
            }
        }
    }
    // Pipelined decoding fed the first answer's tokens but the last: every position up to
    // the answer's end is reused.
    assert!(reused.unwrap() >= first.len() + answer.len() - 1, "{reused:?}");
    assert!(reused.unwrap() < second.len());
    drop(generator);
    let alone = generate(loaded.model.as_mut(), None, &second, &greedy(7)).unwrap();
    assert_eq!(tokens, alone.tokens);
}

#[test]
fn the_prompt_cache_stays_within_its_bytes() {
    let mut loaded = fixture("llama_tied_smollm");
    let run =
        |loaded: &mut LoadedModel, limit: usize, check: &mut dyn FnMut(&mut lamina_generate::PromptCache)| {
            let config = BatchConfig { prompt_cache_bytes: limit, ..BatchConfig::default() };
            let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, config).unwrap();
            for prompt in prompts() {
                generator.insert(BatchRequest::new(prompt, greedy(3)));
            }
            while !generator.is_idle() {
                generator.step().unwrap();
            }
            check(generator.prompt_cache());
        };
    let mut total = 0;
    run(&mut loaded, usize::MAX, &mut |cache| {
        assert_eq!(cache.len(), 5);
        total = cache.nbytes();
    });
    run(&mut loaded, total / 2, &mut |cache| {
        assert!((1..5).contains(&cache.len()), "{}", cache.len());
        assert!(cache.nbytes() <= total / 2);
        // The batch retires its rows last to first: the first prompt went in last and stays.
        let first = &prompts()[0];
        let query: Vec<u32> = first.iter().chain(&[1]).copied().collect();
        assert_eq!(cache.fetch(&query).unwrap().map(|hit| hit.reused), Some(first.len()));
    });
    run(&mut loaded, 0, &mut |cache| assert!(cache.is_empty()));
}

#[test]
fn a_saved_prompt_cache_continues_as_the_live_one() {
    for case in ["llama_tied_smollm", "mamba_hf", "gemma2_softcap"] {
        let mut loaded = fixture(case);
        let prompt = prompts()[2].clone();
        let mut cache = loaded.model.make_cache().unwrap();
        let input = mlx_rs::Array::from_slice(
            &prompt.iter().map(|&t| t as i32).collect::<Vec<_>>(),
            &[1, prompt.len() as i32],
        );
        loaded.model.forward(lamina_heads::ModelInput::new(&input).with_cache(&mut cache)).unwrap();
        let dir = std::env::temp_dir().join(format!("lamina-prompt-cache-{case}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prompt.safetensors");
        save_prompt_cache(&path, &cache, &prompt).unwrap();
        let (restored, tokens) = load_prompt_cache(&path, &loaded.model.make_cache().unwrap()).unwrap();
        assert_eq!(tokens, prompt);
        // Seed a batch's prompt cache with it: a longer prompt reuses every saved position.
        let longer: Vec<u32> = prompt.iter().chain(&[2, 6, 1]).copied().collect();
        let alone = generate(loaded.model.as_mut(), None, &longer, &greedy(6)).unwrap().tokens;
        let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
        generator.prompt_cache().insert(tokens, restored);
        generator.insert(BatchRequest::new(longer.clone(), greedy(6)));
        let mut got = None;
        while !generator.is_idle() {
            for event in generator.step().unwrap() {
                if let BatchEvent::Done { output, cached_tokens, .. } = event {
                    got = Some((output.tokens, cached_tokens));
                }
            }
        }
        assert_eq!(got, Some((alone, prompt.len())), "{case}");
        // Another model's cache file is refused with a reason.
        let other = fixture(if case == "mamba_hf" { "llama_tied_smollm" } else { "mamba_hf" });
        let err = load_prompt_cache(&path, &other.model.make_cache().unwrap()).unwrap_err();
        assert!(err.to_string().contains("prompt cache"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn logprobs_are_the_distribution_of_the_model() {
    let mut loaded = fixture("llama_tied_smollm");
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    generator
        .insert(BatchRequest { top_logprobs: Some(3), ..BatchRequest::new(prompts()[0].clone(), greedy(5)) });
    let mut seen = 0;
    while !generator.is_idle() {
        for event in generator.step().unwrap() {
            if let BatchEvent::Token { token, logprobs, .. } = event {
                let lp = logprobs.unwrap();
                assert_eq!(lp.top.len(), 3);
                assert_eq!(lp.top[0], (token.id, lp.logprob), "greedy picks the most likely token");
                assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
                let mass: f32 = lp.top.iter().map(|(_, l)| l.exp()).sum();
                assert!(lp.logprob <= 0.0 && mass <= 1.0 + 1e-5);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn batch_generate_keeps_order_reports_progress_and_isolates_bad_prompts() {
    let mut loaded = fixture("llama_tied_smollm");
    let mut all = prompts();
    all.insert(2, Vec::new());
    let alone: Vec<_> = prompts()
        .iter()
        .map(|p| generate(loaded.model.as_mut(), None, p, &greedy(5)).unwrap().tokens)
        .collect();
    let mut calls = Vec::new();
    let config = BatchConfig { max_batch: 3, ..BatchConfig::default() };
    let out = batch_generate(loaded.model.as_mut(), None, &all, &greedy(5), config, |done, total| {
        calls.push((done, total))
    })
    .unwrap();
    assert!(matches!(out[2], Err(lamina_generate::GenerateError::EmptyPrompt)));
    let good: Vec<_> = out.into_iter().filter_map(Result::ok).map(|o| o.tokens).collect();
    assert_eq!(good, alone);
    assert_eq!(calls.last(), Some(&(6, 6)));
    assert_eq!(calls.len(), 6);
}

#[test]
fn a_cancelled_sequence_leaves_without_disturbing_the_others() {
    let mut loaded = fixture("llama_tied_smollm");
    let alone = generate(loaded.model.as_mut(), None, &prompts()[0], &greedy(8)).unwrap().tokens;
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    let keep = generator.insert(BatchRequest::new(prompts()[0].clone(), greedy(8)));
    let drop = generator.insert(BatchRequest::new(prompts()[1].clone(), greedy(50)));
    let queued = generator.insert(BatchRequest::new(prompts()[2].clone(), greedy(50)));
    assert!(generator.cancel(queued));
    let mut tokens = Vec::new();
    let mut ended = Vec::new();
    for step in 0.. {
        if step == 2 {
            assert!(generator.cancel(drop));
        }
        for event in generator.step().unwrap() {
            match event {
                BatchEvent::Token { sequence, token, .. } if sequence == keep => tokens.push(token.id),
                BatchEvent::Done { sequence, .. } => ended.push(sequence),
                _ => {}
            }
        }
        if generator.is_idle() {
            break;
        }
    }
    assert_eq!(tokens, alone);
    assert_eq!(ended, vec![keep], "cancelled sequences are not reported");
    assert!(!generator.cancel(999));
}

#[test]
fn a_request_that_fails_at_its_first_token_fails_alone() {
    let mut loaded = fixture("llama_tied_smollm");
    let alone: Vec<_> = prompts()
        .iter()
        .map(|p| generate(loaded.model.as_mut(), None, p, &greedy(5)).unwrap().tokens)
        .collect();
    // A logit bias on an id outside the vocabulary fails when the request's first token
    // is sampled, among requests admitted in the same step.
    let vocab = loaded.model.info().vocab_size as u32;
    let bad = GenerateParams {
        sampler: SamplerConfig { logit_bias: [(vocab + 7, 1.0)].into(), ..SamplerConfig::default() },
        ..greedy(5)
    };
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    let mut ids: Vec<_> =
        prompts().into_iter().map(|p| generator.insert(BatchRequest::new(p, greedy(5)))).collect();
    let bad_id = generator.insert(BatchRequest::new(prompts()[1].clone(), bad));
    ids.insert(2, bad_id);
    let mut done = HashMap::new();
    let mut failed = Vec::new();
    while !generator.is_idle() {
        for event in generator.step().unwrap() {
            match event {
                BatchEvent::Done { sequence, output, .. } => {
                    done.insert(sequence, output.tokens);
                }
                BatchEvent::Failed { sequence, error } => failed.push((sequence, error.to_string())),
                BatchEvent::Token { .. } => {}
            }
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, bad_id);
    assert!(failed[0].1.contains(&(vocab + 7).to_string()), "{}", failed[0].1);
    let good: Vec<_> = ids.iter().filter(|&&id| id != bad_id).map(|id| done[id].clone()).collect();
    assert_eq!(good, alone);
}

#[test]
fn requests_with_the_same_prompt_share_a_prefill_and_sample_apart() {
    let mut loaded = fixture("llama_tied_smollm");
    let prompt = prompts()[2].clone();
    let sampled = |seed| GenerateParams {
        max_new_tokens: 10,
        sampler: SamplerConfig { temperature: 1.0, seed: Some(seed), ..SamplerConfig::default() },
        ..GenerateParams::default()
    };
    let alone: Vec<Vec<u32>> = (0..3)
        .map(|seed| generate(loaded.model.as_mut(), None, &prompt, &sampled(seed)).unwrap().tokens)
        .collect();
    assert!(alone[0] != alone[1] || alone[1] != alone[2], "{alone:?}");
    // Three choices of one prompt and another prompt, admitted together (the three share
    // one prefill): each gets what it gets alone.
    let mut requests: Vec<_> =
        (0..3).map(|seed| (0, BatchRequest::new(prompt.clone(), sampled(seed)))).collect();
    requests.push((0, BatchRequest::new(prompts()[0].clone(), greedy(5))));
    let other = generate(loaded.model.as_mut(), None, &prompts()[0], &greedy(5)).unwrap().tokens;
    let batch =
        run_batch(&mut loaded, &requests, BatchConfig { prompt_cache_bytes: 0, ..BatchConfig::default() });
    for (k, expected) in alone.iter().chain([&other]).enumerate() {
        assert_eq!(&batch[&(k as u64)].tokens, expected, "sequence {k}");
    }
}

/// Log-probabilities as bits: equal only when computed to the same float.
fn bits(logprobs: &[TokenLogprobs]) -> Vec<Vec<(u32, u32)>> {
    logprobs
        .iter()
        .map(|l| {
            [(u32::MAX, l.logprob.to_bits())]
                .into_iter()
                .chain(l.top.iter().map(|&(id, p)| (id, p.to_bits())))
                .collect()
        })
        .collect()
}

#[test]
fn a_quantized_request_computes_alike_in_any_batch_and_from_the_prompt_cache() {
    // A GGUF file's products read x in 8 bits: a value at a rounding boundary moves a whole
    // step, so any float difference shows. Each request's log-probabilities, bit for bit:
    // alone; decoding beside others that join and leave (a grouped admission included); and
    // with its prompt, or a part of it, already in the prompt cache.
    let mut loaded = load_blocking(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf/tiny_quant.gguf"),
        LoadOptions::default(),
    )
    .unwrap();
    let request = |prompt: &[u32], n: usize| BatchRequest {
        top_logprobs: Some(5),
        ..BatchRequest::new(prompt.to_vec(), greedy(n))
    };
    let budgets = [6, 14, 9, 12, 4];
    let alone: Vec<Finished> = prompts()
        .iter()
        .zip(budgets)
        .map(|(p, n)| {
            let config = BatchConfig { max_batch: 1, prompt_cache_bytes: 0, ..BatchConfig::default() };
            run_batch(&mut loaded, &[(0, request(p, n))], config).remove(&0).unwrap()
        })
        .collect();
    let joins = [0, 0, 3, 5, 9];
    let requests: Vec<_> =
        prompts().iter().zip(budgets).zip(joins).map(|((p, n), at)| (at, request(p, n))).collect();
    let config = BatchConfig { max_batch: 8, prompt_cache_bytes: 0, ..BatchConfig::default() };
    let together = run_batch(&mut loaded, &requests, config);
    for (k, expected) in alone.iter().enumerate() {
        assert_eq!(expected.logprobs.len(), budgets[k]);
        assert_eq!(
            bits(&together[&(k as u64)].logprobs),
            bits(&expected.logprobs),
            "sequence {k} in a batch"
        );
    }
    // The prompt cache: the same request again (its whole prompt cached), and a longer
    // prompt whose beginning is cached.
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    let first = run_on(&mut generator, &[(0, request(&prompts()[2], 9))]);
    let again = run_on(&mut generator, &[(0, request(&prompts()[2], 9))]);
    assert_eq!(bits(&first[&0].logprobs), bits(&alone[2].logprobs));
    assert_eq!(bits(&again[&0].logprobs), bits(&alone[2].logprobs), "from the prompt cache");
    let longer: Vec<u32> = prompts()[2].iter().chain(&first[&0].tokens).chain(&[4, 8]).copied().collect();
    let continued = run_on(&mut generator, &[(0, request(&longer, 5))]);
    drop(generator);
    let config = BatchConfig { max_batch: 1, prompt_cache_bytes: 0, ..BatchConfig::default() };
    let fresh = run_batch(&mut loaded, &[(0, request(&longer, 5))], config);
    assert_eq!(bits(&continued[&0].logprobs), bits(&fresh[&0].logprobs), "a cached beginning");
}

#[test]
fn prompts_admitted_together_share_their_beginning_and_the_batch_stays_within_max_batch() {
    let mut loaded = fixture("llama_tied_smollm");
    // A chat template's system prompt before three questions.
    let system = [5, 9, 2, 7, 11, 3, 8, 1];
    let prompts: Vec<Vec<u32>> = [&[4, 6][..], &[13, 2, 2, 9], &[7]]
        .iter()
        .map(|question| system.iter().chain(question.iter()).copied().collect())
        .collect();
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| generate(loaded.model.as_mut(), None, p, &greedy(6)).unwrap().tokens)
        .collect();
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, BatchConfig::default()).unwrap();
    let ids: Vec<u64> =
        prompts.iter().map(|p| generator.insert(BatchRequest::new(p.clone(), greedy(6)))).collect();
    let mut done = HashMap::new();
    while !generator.is_idle() {
        for event in generator.step().unwrap() {
            if let BatchEvent::Done { sequence, output, cached_tokens, .. } = event {
                done.insert(sequence, (output.tokens, cached_tokens));
            }
        }
    }
    for (k, id) in ids.iter().enumerate() {
        let (tokens, cached) = &done[id];
        assert_eq!(tokens, &alone[k], "sequence {k}");
        // The first prompt is prefilled whole; the others reuse its system prompt.
        assert_eq!(*cached, if k == 0 { 0 } else { system.len() }, "sequence {k}");
    }
    // Prompt cache hits join the batch as fresh prompts do: never more than max_batch.
    let config = BatchConfig { max_batch: 2, ..BatchConfig::default() };
    let mut generator = BatchGenerator::new(loaded.model.as_mut(), None, config).unwrap();
    for _ in 0..2 {
        for p in &prompts {
            generator.insert(BatchRequest::new(p.clone(), greedy(6)));
        }
    }
    let (mut finished, mut most) = (0, 0);
    while !generator.is_idle() {
        let events = generator.step().unwrap();
        most = most.max(generator.active());
        finished += events.iter().filter(|e| matches!(e, BatchEvent::Done { .. })).count();
    }
    assert_eq!((finished, most), (6, 2));
}
