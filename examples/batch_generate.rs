//! Answers many prompts at once with continuous batching, offline, with a progress bar;
//! prints each answer and the total throughput. Without `--model` it uses the embedded
//! default (SmolLM2-135M-Instruct, Q4_1 GGUF).
//!
//! ```text
//! cargo run --release --example batch_generate
//! cargo run --release --example batch_generate -- --prompts prompts.txt --max-batch 16
//! ```

mod common;
#[path = "common/default_model.rs"]
mod default_model;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use lamina::generate::{BatchConfig, GenerateParams, Message, ModelContext, batch_generate};
use lamina::loader::{LoadOptions, load_blocking};

/// Generate answers to many prompts in one batch.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// A text file with one prompt per line (default: sixteen built-in questions).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// The most tokens per answer.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// The most sequences decoding at once.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Print only the summary line.
    #[arg(long)]
    quiet: bool,
}

const QUESTIONS: [&str; 16] = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 times 12?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Give me a synonym for happy.",
    "What planet is known as the Red Planet?",
    "How many days are in a leap year?",
    "What is the largest ocean on Earth?",
    "Translate 'thank you' into French.",
    "What gas do plants absorb from the air?",
    "What is the square root of 81?",
    "Name a famous painting by Leonardo da Vinci.",
    "What is the chemical symbol for gold?",
    "How many continents are there?",
    "What language is spoken in Brazil?",
];

fn run(args: Args) -> common::RunResult {
    let path = default_model::model_or_default(args.model)?;
    let mut context = ModelContext::new(load_blocking(&path, LoadOptions::default())?)?;
    let questions: Vec<String> = match &args.prompts {
        Some(file) => std::fs::read_to_string(file)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        None => QUESTIONS.iter().map(|q| (*q).to_owned()).collect(),
    };
    let prompts = questions
        .iter()
        .map(|q| match context.chat_template {
            Some(_) => context.apply_chat_template(&[Message::user(q.clone())], true),
            None => context.encode(q),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: context.stop_ids(&[]),
        ..GenerateParams::default()
    };
    let bar = ProgressBar::new(prompts.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} answers {elapsed} (eta {eta})")?);
    let config = BatchConfig { max_batch: args.max_batch, ..BatchConfig::default() };
    let started = Instant::now();
    let ModelContext { model, tokenizer, .. } = &mut context;
    let outputs =
        batch_generate(model.as_mut(), tokenizer.as_ref(), &prompts, &params, config, |done, _| {
            bar.set_position(done as u64)
        })?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut generated = 0;
    for (question, output) in questions.iter().zip(outputs) {
        let output = output?;
        generated += output.tokens.len();
        if !args.quiet {
            println!("Q: {question}\nA: {}\n", output.text.trim());
        }
    }
    println!(
        "{} answers, {generated} tokens in {seconds:.2} s: {:.1} tok/s (batches of up to {})",
        prompts.len(),
        generated as f64 / seconds,
        args.max_batch
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
