//! An interactive chat, as `mlx_lm.chat`: turns are read from standard input (a terminal or
//! a pipe), rendered with the model's chat template and answered as they stream. The
//! conversation stays in the model's cache between turns: each turn computes only its own
//! tokens (the stats line after each answer says how many came from the cache).
//!
//! ```text
//! cargo run --release --example chat -- [--model M] [--max-tokens N] [--temperature T] ...
//! ```
//!
//! Commands: `/reset` (forget the conversation), `/system TEXT` (set the system message),
//! `/save FILE` (the cache, and the conversation beside it as `FILE.chat.json`), `/load FILE`
//! (a saved chat, or a prompt cache from the `cache_prompt` example, which then prefixes
//! every turn), `/help`, `/quit`. `--draft-model` or `--prompt-lookup` decode speculatively. Ctrl-C stops the answer being written, not the program;
//! the end of input (Ctrl-D) ends it.

mod common;
#[path = "common/default_model.rs"]
mod default_model;
#[path = "common/draft.rs"]
mod draft;
#[path = "common/exact.rs"]
mod exact;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/sampling.rs"]
mod sampling;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use lamina::generate::{
    CachedTokens, GenerateParams, Message, ModelContext, Role, load_prompt_cache, save_prompt_cache,
};
use lamina::loader::{LoadOptions, load_blocking};

/// Set by Ctrl-C; the answer being written stops at its next token.
static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Parser)]
#[command(
    about = "Chat with a model: turns from stdin, answers streamed, the conversation kept in the cache"
)]
struct Args {
    /// Checkpoint (as `generate --model` takes it); the embedded SmolLM2 by default.
    #[arg(long)]
    model: Option<String>,
    /// The most tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: sampling::SamplingArgs,
    /// Keep at most this many positions in the cache (the oldest are forgotten).
    #[arg(long)]
    max_kv_size: Option<usize>,
    /// A system message to start with.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    kv: kv::KvArgs,
    #[command(flatten)]
    exact: exact::ExactArgs,
    #[command(flatten)]
    draft: draft::DraftArgs,
}

/// The conversation and the cache that holds it.
struct Chat {
    context: ModelContext,
    params: GenerateParams,
    system: Option<String>,
    messages: Vec<Message>,
    /// Tokens of a loaded prompt cache that every turn's prompt starts with.
    prefix: Vec<u32>,
    cache: Option<CachedTokens>,
}

impl Chat {
    /// The conversation so far as the template renders it, ready for the answer.
    fn prompt(&self) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        let mut messages: Vec<Message> = self.system.iter().map(|s| Message::system(s.clone())).collect();
        messages.extend(self.messages.iter().cloned());
        let rendered = match self.context.chat_template {
            Some(_) => self.context.apply_chat_template(&messages, true)?,
            None => self
                .context
                .encode(&messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"))?,
        };
        Ok(self.prefix.iter().copied().chain(rendered).collect())
    }

    /// Answers the last user message, streaming it to `out`.
    fn answer(&mut self, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error>> {
        let prompt = self.prompt()?;
        STOP.store(false, Ordering::SeqCst);
        let mut generation = self.context.start_generation_from(self.cache.take(), &prompt, &self.params)?;
        let mut stopped = false;
        for event in generation.by_ref() {
            write!(out, "{}", event?.text)?;
            out.flush()?;
            if STOP.swap(false, Ordering::SeqCst) {
                stopped = true;
                break;
            }
        }
        let (output, cache) = generation.into_cache()?;
        writeln!(out, "{}", if stopped { " [stopped]" } else { "" })?;
        self.messages.push(Message::new(Role::Assistant, output.text));
        self.cache = Some(cache);
        let s = output.stats;
        eprintln!(
            "[{} prompt tokens ({} from the cache, {} computed at {:.1} tok/s); {} generated at {:.1} tok/s; peak memory {:.1} MB]",
            s.prompt_tokens,
            s.cached_prompt_tokens,
            s.prompt_tokens - s.cached_prompt_tokens,
            s.prompt_tokens_per_s,
            s.generated_tokens,
            s.generation_tokens_per_s,
            s.peak_memory_bytes as f64 / 1e6
        );
        if s.draft_tokens > 0 {
            eprintln!("[drafts: {} of {} accepted]", s.accepted_draft_tokens, s.draft_tokens);
        }
        Ok(())
    }

    /// Runs a `/command`; `false` to end the chat.
    fn command(&mut self, line: &str) -> Result<bool, Box<dyn std::error::Error>> {
        let (name, rest) = line.split_once(' ').map_or((line, ""), |(n, r)| (n, r.trim()));
        match name {
            "/quit" | "/exit" => return Ok(false),
            "/reset" => {
                self.messages.clear();
                self.prefix.clear();
                self.cache = None;
                eprintln!("[the conversation is reset]");
            }
            "/system" if !rest.is_empty() => {
                self.system = Some(rest.to_owned());
                eprintln!("[system message set]");
            }
            "/save" if !rest.is_empty() => self.save(Path::new(rest))?,
            "/load" if !rest.is_empty() => self.load(Path::new(rest))?,
            _ => eprintln!("[commands: /reset, /system TEXT, /save FILE, /load FILE, /quit]"),
        }
        Ok(true)
    }

    fn save(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let cache = self.cache.as_ref().ok_or("nothing to save yet: the conversation has no answer")?;
        save_prompt_cache(path, &cache.cache, &cache.tokens)?;
        let chat =
            serde_json::json!({"system": self.system, "messages": self.messages, "prefix": self.prefix});
        std::fs::write(sidecar(path), serde_json::to_string_pretty(&chat)?)?;
        eprintln!("[saved {} cached tokens to {}]", cache.tokens.len(), path.display());
        Ok(())
    }

    fn load(&mut self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let (cache, tokens) = load_prompt_cache(path, &self.context.model.make_cache()?)?;
        match std::fs::read_to_string(sidecar(path)) {
            Ok(text) => {
                let chat: serde_json::Value = serde_json::from_str(&text)?;
                self.system = serde_json::from_value(chat["system"].clone())?;
                self.messages = serde_json::from_value(chat["messages"].clone())?;
                self.prefix = serde_json::from_value(chat["prefix"].clone())?;
            }
            // A prompt cache of its own (`cache_prompt`): its tokens prefix every turn.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.messages.clear();
                self.prefix = tokens.clone();
            }
            Err(e) => return Err(format!("{}: {e}", sidecar(path).display()).into()),
        }
        eprintln!("[loaded {} cached tokens from {}]", tokens.len(), path.display());
        self.cache = Some(CachedTokens { cache, tokens });
        Ok(())
    }
}

/// Where `/save FILE` keeps the conversation.
fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".chat.json");
    PathBuf::from(name)
}

/// The drafting the flags ask for (the draft model loaded on a runtime of its own).
fn draft_params(
    args: &draft::DraftArgs,
) -> Result<Option<lamina::generate::DraftParams>, Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(args.params())
}

/// Ctrl-C sets [`STOP`] instead of ending the process.
fn catch_ctrl_c() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Installed before the thread runs, so that no Ctrl-C falls between.
    let signals = runtime
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) })?;
    std::thread::spawn(move || {
        let mut signals = signals;
        runtime.block_on(async {
            while signals.recv().await.is_some() {
                STOP.store(true, Ordering::SeqCst);
            }
        });
    });
    Ok(())
}

fn run(args: Args) -> common::RunResult {
    catch_ctrl_c()?;
    let path = default_model::model_or_default(args.model.clone())?;
    let context = ModelContext::new(load_blocking(
        &path,
        LoadOptions { activations: args.exact.activations(), ..LoadOptions::default() },
    )?)?;
    let sampler = args.sampling.config();
    let params = GenerateParams {
        max_new_tokens: args.max_tokens,
        sampler,
        max_kv_size: args.max_kv_size,
        kv_quantization: args.kv.quantization(),
        draft: draft_params(&args.draft)?,
        ..GenerateParams::default()
    };
    let mut chat =
        Chat { context, params, system: args.system, messages: Vec::new(), prefix: Vec::new(), cache: None };
    eprintln!("[chatting with {path}; /help for commands, Ctrl-D to quit]");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!(">> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') {
            match chat.command(line) {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e) => {
                    eprintln!("error: {e}");
                    continue;
                }
            }
        }
        chat.messages.push(Message::user(line));
        if let Err(e) = chat.answer(&mut stdout) {
            // The turn is dropped; the conversation goes on without it.
            chat.messages.pop();
            eprintln!("error: {e}");
        }
    }
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
