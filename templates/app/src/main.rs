//! The smallest real lamina program: load a model (a folder, a Hugging Face cache entry or
//! a `.gguf` file; by default the SmolLM2-135M-Instruct GGUF lamina's build provisions)
//! and stream a chat answer through `ModelContainer`.
//!
//! ```text
//! app [MODEL] ["question"]
//! ```

use std::io::Write;
use std::process::ExitCode;

use lamina::generate::{GenerateParams, Message, ModelContainer, StreamEvent, StreamExt};
use lamina::loader::LoadOptions;

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = match args.next() {
        Some(path) => path,
        None => option_env!("LAMINA_DEFAULT_MODEL").ok_or("no default model was built in; pass a model path")?.to_owned(),
    };
    let question = args.next().unwrap_or_else(|| "What is the capital of France?".to_owned());

    let container = ModelContainer::load(&model, LoadOptions::default()).await?;
    let prompt = container.apply_chat_template(vec![Message::user(question)], true).await?;
    let params = GenerateParams { max_new_tokens: 64, ..GenerateParams::default() };
    let mut stream = container.generate(prompt, params).await;
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Token(token) => {
                write!(stdout, "{}", token.text)?;
                stdout.flush()?;
            }
            StreamEvent::Done(output) => {
                println!();
                eprintln!("[{} tokens at {:.1} tok/s]", output.stats.generated_tokens, output.stats.generation_tokens_per_s);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
