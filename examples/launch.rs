//! Starts a program as N ranks of MLX's ring backend, as `mlx.launch` does: writes a
//! hostfile and runs the program once per rank with `MLX_RANK` and `MLX_HOSTFILE` set,
//! forwarding each rank's output prefixed with its rank. `-n N` starts N ranks on this
//! machine over free loopback ports; `--hosts a,b` starts one rank per host over `ssh`
//! (ports from `--starting-port` on, the same working directory and program path there;
//! each remote rank writes its own copy of the hostfile). When a rank fails, the others
//! are given `--grace` seconds and then ended, so that a lost peer never leaves the rest
//! waiting; Ctrl-C ends every rank.
//!
//! ```text
//! cargo build --release --example train_lora --example generate
//! cargo run --release --example launch -- -n 2 target/release/examples/train_lora --steps 30
//! cargo run --release --example launch -- --hosts mac1,user@mac2 target/release/examples/generate
//! ```

mod common;

use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use lamina::core::distributed::{LocalLaunch, SshTarget, end_ranks_on_interrupt, interrupted};

/// Run a program as N local ranks.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Ranks to start on this machine.
    #[arg(short = 'n', long, default_value_t = 2, conflicts_with = "hosts")]
    ranks: usize,
    /// One rank per host, started over ssh: `host` or `user@host`, comma-separated (a
    /// host may repeat).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// The first rank's port with --hosts; rank i listens on this + i.
    #[arg(long, default_value_t = 32323)]
    starting_port: u16,
    /// The program that reaches a host (called as `SSH HOST COMMAND`).
    #[arg(long, default_value = "ssh")]
    ssh: String,
    /// The working directory on the hosts (default: this one's path).
    #[arg(long)]
    cwd: Option<String>,
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
    let launch = if args.hosts.is_empty() {
        LocalLaunch::start(args.ranks, args.ranks, |_| {
            let mut command = Command::new(program);
            command.args(rest);
            command
        })?
    } else {
        let targets = args.hosts.iter().map(|h| h.parse::<SshTarget>()).collect::<Result<Vec<_>, _>>()?;
        let addresses = addresses(&targets, args.starting_port)?;
        let hostfile = LocalLaunch::hostfile_json(&addresses)?;
        let cwd = match &args.cwd {
            Some(cwd) => cwd.clone(),
            None => std::env::current_dir()?.to_string_lossy().into_owned(),
        };
        LocalLaunch::start_at(&addresses, addresses.len(), |rank| {
            // `--` ends ssh's options: the target (checked) and the script are never read as one.
            let mut command = Command::new(&args.ssh);
            command.arg("--").arg(targets[rank].to_string()).arg(remote_script(
                rank,
                &hostfile,
                &cwd,
                &args.command,
            ));
            command
        })?
    };
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

/// `host:port` per rank, ports from `first` on.
fn addresses(targets: &[SshTarget], first: u16) -> Result<Vec<String>, String> {
    targets
        .iter()
        .enumerate()
        .map(|(rank, target)| {
            let port = u16::try_from(rank).ok().and_then(|r| first.checked_add(r));
            let port =
                port.ok_or_else(|| format!("--starting-port {first} leaves no port for rank {rank}"))?;
            Ok(format!("{}:{port}", target.host))
        })
        .collect()
}

/// A POSIX shell word holding `text` literally.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// What a remote rank runs: write the hostfile there into a file `mktemp` creates
/// (exclusively, owner-only, an unguessable name), set the variables, run the program.
fn remote_script(rank: usize, hostfile: &str, cwd: &str, command: &[String]) -> String {
    let program: Vec<String> = command.iter().map(|word| quote(word)).collect();
    format!(
        "cd {} && f=$(mktemp \"${{TMPDIR:-/tmp}}/lamina-hosts-XXXXXXXXXX\") && printf '%s' {} > \"$f\" && MLX_RANK={rank} MLX_HOSTFILE=\"$f\" exec {}",
        quote(cwd),
        quote(hostfile),
        program.join(" ")
    )
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
