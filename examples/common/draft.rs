//! Speculative decoding's flags, shared by `generate` and `serve`.

use lamina::generate::{DraftParams, SharedModel};
use lamina::loader::{LoadOptions, load};

/// `--draft-model`, `--prompt-lookup`, `--num-draft-tokens`.
#[derive(clap::Args, Debug)]
pub struct DraftArgs {
    /// Speculative decoding with this draft model (same vocabulary; any checkpoint
    /// --model takes): it proposes tokens the model checks several at a time.
    #[arg(long, conflicts_with = "prompt_lookup")]
    pub draft_model: Option<String>,
    /// Speculative decoding with drafts copied from the prompt and output so far: the
    /// tokens that followed the longest recent n-gram of up to N tokens.
    #[arg(long, value_name = "N")]
    pub prompt_lookup: Option<usize>,
    /// Draft tokens proposed per round.
    #[arg(long, default_value_t = 3)]
    pub num_draft_tokens: usize,
}

impl DraftArgs {
    /// The drafting asked for (the draft model loaded as stored), if any.
    pub async fn params(&self) -> Result<Option<DraftParams>, Box<dyn std::error::Error>> {
        Ok(match (&self.draft_model, self.prompt_lookup) {
            (Some(draft), _) => {
                let loaded = load(draft, LoadOptions::default()).await?;
                let model: SharedModel = std::sync::Arc::new(std::sync::Mutex::new(loaded.model));
                Some(DraftParams::model(model, self.num_draft_tokens))
            }
            (None, Some(n)) => Some(DraftParams::prompt_lookup(n, self.num_draft_tokens)),
            (None, None) => None,
        })
    }
}
