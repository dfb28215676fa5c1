//! [`ModelContainer`]: a thread-safe handle on a model, its tokenizer and configuration.
//! Every call takes exclusive access in turn, so many tasks can share one container and
//! each gets the answer it would get alone. Work on the model runs on tokio's blocking
//! pool; generation streams its tokens as an async [`GenerationStream`].

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lamina_families::LanguageModel;
use lamina_loader::{GenerationConfig, LoadOptions, LoadedModel, Tokenizer, load};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::chat::{ChatTemplate, Message};
use crate::constraint::GrammarCompiler;
use crate::error::{GenerateError, Result};
use crate::generate::{CachedTokens, GenerateParams, Generation, GenerationOutput, TokenEvent};

/// What the container knows about its model besides the weights.
#[derive(Debug, Clone, Default)]
pub struct ModelConfiguration {
    /// The config's `model_type`.
    pub model_type: String,
    /// End-of-sequence ids from `generation_config.json` or `config.json`.
    pub eos_token_ids: Vec<u32>,
    /// Extra stop tokens, as strings (resolved through the tokenizer).
    pub extra_eos_tokens: Vec<String>,
    /// The checkpoint's suggested generation settings.
    pub generation: GenerationConfig,
}

/// A model with its tokenizer, chat template and configuration.
#[derive(Debug)]
pub struct ModelContext {
    /// The model.
    pub model: Box<dyn LanguageModel>,
    /// The tokenizer, when the checkpoint has one.
    pub tokenizer: Option<Tokenizer>,
    /// The compiled chat template, when the tokenizer has one.
    pub chat_template: Option<ChatTemplate>,
    /// Ids, stop tokens, defaults.
    pub configuration: ModelConfiguration,
    /// The blocks this process holds when it is one stage of a pipeline (see
    /// `LoadOptions::pipeline`), numbered as in the whole model.
    pub pipeline_layers: Option<std::ops::Range<usize>>,
}

impl ModelContext {
    /// Wraps a loaded checkpoint.
    ///
    /// # Errors
    /// [`GenerateError::Template`] if the checkpoint's chat template does not compile.
    pub fn new(loaded: LoadedModel) -> Result<Self> {
        let chat_template = loaded
            .tokenizer
            .as_ref()
            .and_then(Tokenizer::chat_template)
            .map(ChatTemplate::new)
            .transpose()?;
        let configuration = ModelConfiguration {
            model_type: loaded.model_type().to_owned(),
            eos_token_ids: loaded.eos_token_ids(),
            extra_eos_tokens: Vec::new(),
            generation: loaded.generation.clone(),
        };
        Ok(ModelContext {
            model: loaded.model,
            tokenizer: loaded.tokenizer,
            chat_template,
            configuration,
            pipeline_layers: loaded.pipeline_layers,
        })
    }

    fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| GenerateError::Unavailable("this model has no tokenizer".into()))
    }

    /// Token ids of `text` (with the tokenizer's special tokens).
    ///
    /// # Errors
    /// Without a tokenizer, or if it fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer()?.encode(text, true)?)
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// Without a tokenizer, or for ids outside its vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer()?.decode(ids, false)?)
    }

    /// The conversation rendered by the chat template.
    ///
    /// # Errors
    /// Without a tokenizer or template, or if rendering fails.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or_else(|| GenerateError::Unavailable("this model has no chat template".into()))?;
        let tokenizer = self.tokenizer()?;
        template.render(messages, add_generation_prompt, tokenizer.bos_token(), tokenizer.eos_token())
    }

    /// Token ids of the rendered conversation (the template writes any special tokens).
    ///
    /// # Errors
    /// As [`ModelContext::render_chat`].
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let text = self.render_chat(messages, add_generation_prompt)?;
        Ok(self.tokenizer()?.encode(&text, false)?)
    }

    /// A compiler of grammars for this tokenizer and vocabulary (build it once; see
    /// [`GrammarCompiler::new`]).
    ///
    /// # Errors
    /// Without a tokenizer, or one constrained decoding cannot use.
    pub fn grammar_compiler(&self) -> Result<GrammarCompiler> {
        GrammarCompiler::new(self.tokenizer()?, self.model.info().vocab_size)
    }

    /// Every id generation stops at: the config's, the tokenizer's EOS, the extra stop
    /// tokens, and the caller's.
    pub fn stop_ids(&self, extra: &[u32]) -> Vec<u32> {
        let mut ids = self.configuration.eos_token_ids.clone();
        if let Some(tokenizer) = &self.tokenizer {
            ids.extend(tokenizer.eos_token_id());
            ids.extend(self.configuration.extra_eos_tokens.iter().filter_map(|t| tokenizer.token_to_id(t)));
        }
        ids.extend_from_slice(extra);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Starts a generation, stopping at [`ModelContext::stop_ids`] plus `params`'.
    ///
    /// # Errors
    /// As [`Generation::start`].
    pub fn start_generation(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<Generation<'_>> {
        self.start_generation_from(None, prompt, params)
    }

    /// As [`ModelContext::start_generation`], reusing `cached` for the longest prefix of
    /// `prompt` it holds (see [`Generation::start_from`]).
    ///
    /// # Errors
    /// As [`Generation::start`].
    pub fn start_generation_from(
        &mut self,
        cached: Option<CachedTokens>,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<Generation<'_>> {
        let params = GenerateParams { eos_token_ids: self.stop_ids(&params.eos_token_ids), ..params.clone() };
        Generation::start_from(self.model.as_mut(), self.tokenizer.as_ref(), cached, prompt, &params)
    }

    /// Generates to completion.
    ///
    /// # Errors
    /// As [`Generation::start`].
    pub fn generate(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<GenerationOutput> {
        self.start_generation(prompt, params)?.output()
    }
}

/// One item of a [`GenerationStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A token (and the text it completes).
    Token(TokenEvent),
    /// The end: the whole result.
    Done(GenerationOutput),
}

/// The async stream of a generation: tokens, then [`StreamEvent::Done`]. Dropping it stops
/// the generation.
#[derive(Debug)]
pub struct GenerationStream {
    inner: ReceiverStream<Result<StreamEvent>>,
}

impl Stream for GenerationStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl GenerationStream {
    /// Waits for the end and returns the result.
    ///
    /// # Errors
    /// The generation's error, or [`GenerateError::Task`] if it ended without a result.
    pub async fn collect_output(mut self) -> Result<GenerationOutput> {
        use tokio_stream::StreamExt;
        while let Some(event) = self.next().await {
            if let StreamEvent::Done(output) = event? {
                return Ok(output);
            }
        }
        Err(GenerateError::Task("the generation ended without a result".into()))
    }
}

/// A thread-safe, cloneable handle on a [`ModelContext`].
#[derive(Debug, Clone)]
pub struct ModelContainer {
    inner: Arc<Mutex<ModelContext>>,
}

impl ModelContainer {
    /// Wraps a context.
    pub fn new(context: ModelContext) -> Self {
        ModelContainer { inner: Arc::new(Mutex::new(context)) }
    }

    /// Loads a checkpoint into a container.
    ///
    /// # Errors
    /// As [`lamina_loader::load`] and [`ModelContext::new`].
    pub async fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        let loaded = load(path, options).await?;
        Ok(Self::new(ModelContext::new(loaded)?))
    }

    /// Runs `f` with exclusive access to the context, on the blocking pool.
    ///
    /// # Errors
    /// [`GenerateError::Task`] if `f` panicked.
    pub async fn perform<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut ModelContext) -> R + Send + 'static,
    {
        let mut guard = self.inner.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut guard))
            .await
            .map_err(|e| GenerateError::Task(e.to_string()))
    }

    /// Token ids of `text`.
    ///
    /// # Errors
    /// As [`ModelContext::encode`].
    pub async fn encode(&self, text: impl Into<String>) -> Result<Vec<u32>> {
        let text = text.into();
        self.perform(move |ctx| ctx.encode(&text)).await?
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// As [`ModelContext::decode`].
    pub async fn decode(&self, ids: Vec<u32>) -> Result<String> {
        self.perform(move |ctx| ctx.decode(&ids)).await?
    }

    /// Token ids of a conversation rendered by the chat template.
    ///
    /// # Errors
    /// As [`ModelContext::apply_chat_template`].
    pub async fn apply_chat_template(
        &self,
        messages: Vec<Message>,
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.perform(move |ctx| ctx.apply_chat_template(&messages, add_generation_prompt)).await?
    }

    /// Starts generating; tokens arrive on the returned stream as they are decoded.
    pub async fn generate(&self, prompt: Vec<u32>, params: GenerateParams) -> GenerationStream {
        let (tx, rx) = mpsc::channel(64);
        let mut guard = self.inner.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let mut run = |tx: &mpsc::Sender<Result<StreamEvent>>| -> Result<Option<GenerationOutput>> {
                let mut generation = guard.start_generation(&prompt, &params)?;
                for event in generation.by_ref() {
                    if tx.blocking_send(Ok(StreamEvent::Token(event?))).is_err() {
                        return Ok(None); // the caller dropped the stream
                    }
                }
                generation.output().map(Some)
            };
            match run(&tx) {
                Ok(Some(output)) => {
                    let _ = tx.blocking_send(Ok(StreamEvent::Done(output)));
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        GenerationStream { inner: ReceiverStream::new(rx) }
    }
}
