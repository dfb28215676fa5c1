//! A family defined outside lamina's crates and registered at run time: StableLM 2
//! (`model_type: "stablelm"`) in about 120 lines — its `config.json` as a serde struct,
//! one `FamilyConfig` impl mapping it onto the stack's layers (LayerNorm with biases,
//! q/k/v biases, a quarter of each head rotated, the parallel residual where the config
//! asks for it), a registry entry. Loading, strict weight
//! matching, caching and generation come from lamina; the family writes no layer code.
//!
//! `cargo run --example custom_family -- --model DIR` loads a StableLM checkpoint folder
//! (default: the tiny fixture `tests/fixtures/checkpoints/stablelm_custom`; the fixture
//! `stablelm_parallel` has the parallel residual) and, when the
//! folder holds a `reference.safetensors` from mlx-lm, checks logits and a greedy
//! continuation against it (exit code 1 on a mismatch). See `docs/adding-a-family.md`.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use lamina::backbones::{TransformerBackbone, TransformerBackboneConfig};
use lamina::blocks::{NormPlacement, TransformerBlockConfig};
use lamina::components::{AttentionConfig, FeedForwardConfig, NormConfig, RopeConfig};
use lamina::core::{Config, Error, Result, SizeEstimate, count, ensure_dims};
use lamina::families::hf::{TokenIds, ids};
use lamina::families::{Family, FamilyConfig, LanguageModel, ModelInfo, Registry};
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking};
use mlx_rs::Array;
use mlx_rs::ops::indexing::{IndexOp, argmax_axis};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// StableLM 2's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Validate)]
struct StableLmConfig {
    #[validate(range(min = 1))]
    vocab_size: usize,
    #[validate(range(min = 1))]
    hidden_size: usize,
    #[validate(range(min = 1))]
    intermediate_size: usize,
    #[validate(range(min = 1))]
    num_hidden_layers: usize,
    #[validate(range(min = 1))]
    num_attention_heads: usize,
    #[validate(range(min = 1))]
    num_key_value_heads: usize,
    rope_theta: f32,
    #[validate(range(exclusive_min = 0.0, max = 1.0))]
    partial_rotary_factor: f32,
    layer_norm_eps: f32,
    use_qkv_bias: bool,
    #[serde(default)]
    use_parallel_residual: bool,
    #[serde(default)]
    qk_layernorm: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    bos_token_id: Option<TokenIds>,
    #[serde(default)]
    eos_token_id: Option<TokenIds>,
}

impl Config for StableLmConfig {
    const NAME: &'static str = "StableLmConfig";

    fn check(&self) -> Result<()> {
        if self.qk_layernorm {
            return Err(Error::Unsupported("StableLM's per-head QK LayerNorm"));
        }
        ensure_dims(Self::NAME, &[("vocab_size", self.vocab_size), ("hidden_size", self.hidden_size)])?;
        self.block().validated()
    }
}

impl StableLmConfig {
    /// Every block is the same.
    fn block(&self) -> TransformerBlockConfig {
        let head_dim = self.hidden_size / self.num_attention_heads.max(1);
        let rotated = (head_dim as f32 * self.partial_rotary_factor) as i32;
        TransformerBlockConfig {
            attention: AttentionConfig {
                qkv_bias: self.use_qkv_bias,
                rope: Some(RopeConfig::new(rotated, self.rope_theta)),
                ..AttentionConfig::new(self.hidden_size, self.num_attention_heads, self.num_key_value_heads)
            },
            ffn: FeedForwardConfig::swiglu(self.hidden_size, self.intermediate_size),
            norm: NormConfig::layer(self.layer_norm_eps),
            // StableLM 3B/Zephyr's parallel residual: attention and MLP from the same norm.
            norm_placement: if self.use_parallel_residual {
                NormPlacement::Parallel
            } else {
                NormPlacement::Pre
            },
            dropout: 0.0,
        }
    }
}

impl FamilyConfig for StableLmConfig {
    type Backbone = TransformerBackbone;

    fn family(&self) -> Family {
        Family::Custom
    }

    fn estimate(&self) -> SizeEstimate {
        let embedding = count(&[&[self.vocab_size, self.hidden_size]]);
        let head = if self.tie_word_embeddings { 0 } else { embedding };
        let blocks = count(&[&[self.num_hidden_layers, self.block().num_parameters()]]);
        let parameters = count(&[&[embedding], &[head], &[blocks], &[2, self.hidden_size]]);
        SizeEstimate { parameters: parameters as u64, blocks: self.num_hidden_layers as u64 }
    }

    fn build_backbone(&self) -> Result<TransformerBackbone> {
        let final_norm = NormConfig::layer(self.layer_norm_eps);
        let backbone = TransformerBackboneConfig::uniform(
            self.vocab_size,
            self.block(),
            self.num_hidden_layers,
            final_norm,
        );
        TransformerBackbone::new(&backbone)
    }

    fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: Family::Custom,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            max_position_embeddings: self.max_position_embeddings,
            bos_token_id: ids(&self.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.eos_token_id),
        }
    }
}

/// Loads a StableLM checkpoint through a registry that knows the family.
#[derive(Parser, Debug)]
struct Args {
    /// A StableLM checkpoint folder.
    #[arg(long, default_value = "tests/fixtures/checkpoints/stablelm_custom")]
    model: PathBuf,
}

fn greedy(model: &mut dyn LanguageModel, prompt: &Array, steps: usize) -> Result<Vec<i32>> {
    let mut cache = model.make_cache()?;
    let mut input = prompt.reshape(&[1, -1])?;
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let logits = model.forward(ModelInput::new(&input).with_cache(&mut cache))?.logits;
        let token = argmax_axis(logits.index((.., -1, ..)), -1, None)?.as_dtype(mlx_rs::Dtype::Int32)?;
        out.push(token.index(0).item_exact::<i32>());
        input = token.reshape(&[1, 1])?;
    }
    Ok(out)
}

fn run(args: Args) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::with_builtins();
    registry.register_family::<StableLmConfig>("stablelm");
    let options = LoadOptions { registry: Arc::new(registry), ..LoadOptions::default() };
    let loaded = load_blocking(&args.model, options)?;
    println!("loaded {} ({} tensors, strict)", loaded.model_type(), loaded.report.applied);
    let mut model = loaded.model;
    let reference = args.model.join("reference.safetensors");
    if !reference.is_file() {
        return Ok(());
    }
    let reference = Array::load_safetensors(&reference)?;
    let get = |key: &str| reference.get(key).ok_or(format!("reference.safetensors lacks `{key}`"));
    let logits = model.forward(ModelInput::new(get("input_ids")?))?.logits;
    let diff = logits.subtract(get("logits")?)?.abs()?.max(None)?.item_exact::<f32>();
    let expected = get("greedy")?.as_slice::<i32>().to_vec();
    let tokens = greedy(model.as_mut(), get("prompt")?, expected.len())?;
    println!("max logit difference to mlx-lm: {diff:e}");
    println!("greedy continuation identical: {}", tokens == expected);
    if diff > 1e-4 || tokens != expected {
        return Err("the custom family does not match mlx-lm".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
