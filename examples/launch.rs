//! Starts a program as N ranks of MLX's ring backend, as `mlx.launch` does: writes a
//! hostfile of free loopback ports and runs the program once per rank with `MLX_RANK` and
//! `MLX_HOSTFILE` set, forwarding each rank's output prefixed with its rank. When a rank
//! fails, the others are given `--grace` seconds and then ended, so that a lost peer never
//! leaves the rest waiting; Ctrl-C ends every rank.
//!
//! ```text
//! cargo build --release --example train_lora
//! cargo run --release --example launch -- -n 2 target/release/examples/train_lora --steps 30
//! ```

mod common;

use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use lamina::core::distributed::{LocalLaunch, end_ranks_on_interrupt, interrupted};

/// Run a program as N local ranks.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Ranks to start on this machine.
    #[arg(short = 'n', long, default_value_t = 2)]
    ranks: usize,
    /// End every rank after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// After one rank fails, end the others after this many seconds.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn run(args: Args) -> common::RunResult {
    if args.ranks == 0 {
        return Err("-n must be at least 1".into());
    }
    let (program, rest) = args.command.split_first().ok_or("no program to run")?;
    end_ranks_on_interrupt();
    let launch = LocalLaunch::start(args.ranks, args.ranks, |_| {
        let mut command = Command::new(program);
        command.args(rest);
        command
    })?;
    let statuses = launch.stream(Duration::from_secs(args.timeout), Duration::from_secs(args.grace))?;
    let failed: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_some_and(|s| s.success()))
        .map(|(rank, s)| match s {
            Some(status) => format!("rank {rank} exited with {status}"),
            None => format!("rank {rank} was ended (a peer failed or the time ran out)"),
        })
        .collect();
    if interrupted() {
        return Err("interrupted: every rank was ended".into());
    }
    if failed.is_empty() { Ok(()) } else { Err(failed.join("; ").into()) }
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
