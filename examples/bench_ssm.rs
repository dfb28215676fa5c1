//! Times a Mamba mixer of the 130m shape (hidden 768, state 16, expand 2) on a prompt:
//! the parallel form (chunked associative scan) against the recurrent step looped over
//! the prompt, in one run, and prints both and the ratio.
//!
//! ```text
//! cargo run --release --example bench_ssm -- --tokens 512
//! ```

use std::time::Instant;

use clap::Parser;
use lamina::components::{LayerInput, MambaConfig, MambaMixer, ssm_cache};
use mlx_rs::module::Module;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, random};

/// Parallel scan versus recurrent steps for a Mamba mixer.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Prompt length.
    #[arg(long, default_value_t = 512)]
    tokens: i32,
    /// Model width (768 is mamba-130m).
    #[arg(long, default_value_t = 768)]
    hidden: usize,
    /// Positions per chunk of the parallel scan.
    #[arg(long, default_value_t = 8)]
    chunk: usize,
    /// Timed repetitions of each (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

fn best_of(
    reps: usize,
    mut run: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    run()?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let start = Instant::now();
        run()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn recurrent_loop(
    mixer: &mut MambaMixer,
    x: &Array,
    tokens: i32,
    eval_each: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cache = ssm_cache();
    let mut outputs = Vec::with_capacity(tokens as usize);
    for t in 0..tokens {
        let token = x.try_index((.., t..t + 1, ..))?;
        let y = mixer.forward(LayerInput { x: &token, cache: Some(&mut cache), padding_mask: None })?;
        if eval_each {
            y.eval()?;
        }
        outputs.push(y);
    }
    mlx_rs::transforms::eval(outputs.iter())?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.tokens < 1 || args.reps < 1 {
        return Err("--tokens and --reps must be positive".into());
    }
    random::seed(0)?;
    let config = MambaConfig { scan_chunk: args.chunk, ..MambaConfig::new(args.hidden, 2) };
    let mut mixer = MambaMixer::new(config)?;
    let x = random::normal::<f32>(&[1, args.tokens, args.hidden as i32], None, None, None)?;

    let parallel = best_of(args.reps, || {
        mixer.forward(LayerInput::new(&x))?.eval()?;
        Ok(())
    })?;
    // The recurrent step as decoding runs it: each token evaluated before the next.
    let recurrent = best_of(args.reps, || recurrent_loop(&mut mixer, &x, args.tokens, true))?;
    // The same steps built into one lazy graph and evaluated once (mlx-lm's prompt loop).
    let recurrent_lazy = best_of(args.reps, || recurrent_loop(&mut mixer, &x, args.tokens, false))?;

    println!(
        "mamba mixer hidden={} state=16 expand=2, {} tokens, chunk {}",
        args.hidden, args.tokens, args.chunk
    );
    println!("parallel_ms={:.1}", parallel * 1e3);
    println!("recurrent_ms={:.1}", recurrent * 1e3);
    println!("recurrent_lazy_ms={:.1}", recurrent_lazy * 1e3);
    println!("speedup_vs_recurrent={:.2}", recurrent / parallel);
    println!("speedup_vs_recurrent_lazy={:.2}", recurrent_lazy / parallel);
    Ok(())
}
