//! The transformer block of Llama and its descendants: pre-norm (Llama), sandwich norms
//! (Gemma 2/3), post-sublayer norms (OLMo 2), or the parallel residual (GPT-NeoX,
//! StableLM, Phi-2: attention and feed-forward from the same normed input).

use lamina_components::plan::{self, BlockLayers, DecodePlan};
use lamina_components::{
    Attention, AttentionConfig, FeedForward, FeedForwardConfig, KvCache, LayerCache, LayerInput, Norm,
    NormConfig, RotatingKvCache, dropout,
};
use lamina_core::{BlockOutput, Config, Error, Result};
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::Block;

/// Where a block's norms sit around its two sublayers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// `h = x + attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))`
    /// (Llama: the "post attention" norm is the MLP's input norm).
    #[default]
    Pre,
    /// Gemma 2/3: each sublayer's input and output normalised,
    /// `h = x + post_attention_layernorm(attn(input_layernorm(x)))`,
    /// `out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))`.
    Sandwich,
    /// OLMo 2: only the outputs, `h = x + post_attention_layernorm(attn(x))`,
    /// `out = h + post_feedforward_layernorm(mlp(h))`.
    Post,
    /// The parallel residual (GPT-NeoX, StableLM, Phi-2): both sublayers read the same
    /// normed input, `h = input_layernorm(x)`, `out = x + attn(h) + mlp(h)`; one norm.
    Parallel,
}

impl NormPlacement {
    /// Norms per block.
    pub fn count(self) -> usize {
        match self {
            NormPlacement::Parallel => 1,
            NormPlacement::Pre | NormPlacement::Post => 2,
            NormPlacement::Sandwich => 4,
        }
    }
}

/// How a [`TransformerBlock`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct TransformerBlockConfig {
    /// The attention layer.
    pub attention: AttentionConfig,
    /// The feed-forward network.
    pub ffn: FeedForwardConfig,
    /// Every norm of the block.
    pub norm: NormConfig,
    /// Where the norms sit.
    #[serde(default)]
    pub norm_placement: NormPlacement,
    /// Dropout on the attention and feed-forward outputs while training.
    #[serde(default)]
    #[validate(range(min = 0.0, exclusive_max = 1.0))]
    pub dropout: f32,
}

impl TransformerBlockConfig {
    /// Scalar parameters of the block this config builds.
    pub fn num_parameters(&self) -> usize {
        lamina_core::count(&[
            &[self.attention.num_parameters()],
            &[self.ffn.num_parameters()],
            &[self.norm_placement.count(), self.norm.num_parameters(self.attention.hidden_size)],
        ])
    }

    /// A block without dropout.
    pub fn new(attention: AttentionConfig, ffn: FeedForwardConfig, norm: NormConfig) -> Self {
        TransformerBlockConfig { attention, ffn, norm, norm_placement: NormPlacement::Pre, dropout: 0.0 }
    }
}

impl Config for TransformerBlockConfig {
    const NAME: &'static str = "TransformerBlockConfig";

    fn check(&self) -> Result<()> {
        self.attention.validated()?;
        self.ffn.validated()?;
        if self.attention.hidden_size != self.ffn.hidden_size {
            return Err(Error::invalid(
                Self::NAME,
                "ffn.hidden_size",
                format!(
                    "({}) must equal attention.hidden_size ({})",
                    self.ffn.hidden_size, self.attention.hidden_size
                ),
            ));
        }
        Ok(())
    }
}

/// Attention and a feed-forward network, each added to the residual stream, with norms
/// placed as [`NormPlacement`] says.
#[derive(Debug, Clone, ModuleParameters)]
pub struct TransformerBlock {
    /// The norm before attention (absent with [`NormPlacement::Post`]).
    #[param]
    pub input_layernorm: Option<Norm>,
    /// Self-attention.
    #[param]
    pub self_attn: Attention,
    /// The norm before the feed-forward network ([`NormPlacement::Pre`]) or after attention
    /// (`Sandwich`, `Post`); absent with [`NormPlacement::Parallel`].
    #[param]
    pub post_attention_layernorm: Option<Norm>,
    /// The norm before the feed-forward network ([`NormPlacement::Sandwich`]).
    #[param]
    pub pre_feedforward_layernorm: Option<Norm>,
    /// The norm after the feed-forward network ([`NormPlacement::Sandwich`], `Post`).
    #[param]
    pub post_feedforward_layernorm: Option<Norm>,
    /// The feed-forward network.
    #[param]
    pub mlp: FeedForward,
    placement: NormPlacement,
    dropout: f32,
    training: bool,
}

impl TransformerBlock {
    /// A randomly initialised block.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &TransformerBlockConfig) -> Result<Self> {
        config.validated()?;
        let width =
            lamina_core::to_dim(TransformerBlockConfig::NAME, "hidden_size", config.attention.hidden_size)?;
        let placement = config.norm_placement;
        let norm_if = |present: bool| present.then(|| Norm::new(width, config.norm)).transpose();
        Ok(TransformerBlock {
            input_layernorm: norm_if(placement != NormPlacement::Post)?,
            self_attn: Attention::new(config.attention.clone())?,
            post_attention_layernorm: norm_if(placement != NormPlacement::Parallel)?,
            pre_feedforward_layernorm: norm_if(placement == NormPlacement::Sandwich)?,
            post_feedforward_layernorm: norm_if(matches!(
                placement,
                NormPlacement::Sandwich | NormPlacement::Post
            ))?,
            mlp: FeedForward::new(config.ffn)?,
            placement,
            dropout: config.dropout,
            training: false,
        })
    }
}

impl<'a> Module<LayerInput<'a>> for TransformerBlock {
    type Output = BlockOutput;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden] -> [B, L, hidden]`
    fn forward(&mut self, mut input: LayerInput<'a>) -> Result<BlockOutput> {
        let x = input.x;
        if let Some(out) = self.planned_decode(&mut input)? {
            return Ok(BlockOutput { hidden_states: out });
        }
        let normed = apply(&mut self.input_layernorm, x)?;
        if self.placement == NormPlacement::Pre && (self.dropout == 0.0 || !self.training) {
            // Each sublayer's last product and its residual add in one node where lamina's
            // kernels take them.
            let h = plan::attention_then_add(&mut self.self_attn, LayerInput { x: &normed, ..input }, x)?;
            let mlp_in = apply(&mut self.post_attention_layernorm, &h)?;
            return Ok(BlockOutput { hidden_states: plan::mlp_then_add(&mut self.mlp, &mlp_in, &h)? });
        }
        let mut attended = self.self_attn.forward(LayerInput { x: &normed, ..input })?;
        if self.placement == NormPlacement::Parallel {
            let mlp = self.mlp.forward(&normed)?;
            let h = x.add(dropout(&attended, self.dropout, self.training)?)?;
            return Ok(BlockOutput { hidden_states: h.add(dropout(&mlp, self.dropout, self.training)?)? });
        }
        if self.placement != NormPlacement::Pre {
            attended = apply(&mut self.post_attention_layernorm, &attended)?;
        }
        let h = x.add(dropout(&attended, self.dropout, self.training)?)?;
        let mlp_in = match self.placement {
            NormPlacement::Pre => apply(&mut self.post_attention_layernorm, &h)?,
            _ => apply(&mut self.pre_feedforward_layernorm, &h)?,
        };
        let mlp = apply(&mut self.post_feedforward_layernorm, &self.mlp.forward(&mlp_in)?)?;
        let out = h.add(dropout(&mlp, self.dropout, self.training)?)?;
        Ok(BlockOutput { hidden_states: out })
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
        self.self_attn.training_mode(mode);
        self.mlp.training_mode(mode);
    }
}

impl TransformerBlock {
    /// The layers the CPU decode plan reads, for a pre-norm or sandwich block.
    fn plan_layers(&self) -> Option<BlockLayers<'_>> {
        let norms = match self.placement {
            NormPlacement::Pre => {
                [self.input_layernorm.as_ref(), None, self.post_attention_layernorm.as_ref(), None]
            }
            NormPlacement::Sandwich => [
                self.input_layernorm.as_ref(),
                self.post_attention_layernorm.as_ref(),
                self.pre_feedforward_layernorm.as_ref(),
                self.post_feedforward_layernorm.as_ref(),
            ],
            NormPlacement::Post | NormPlacement::Parallel => return None,
        };
        Some(BlockLayers { norms, attention: &self.self_attn, mlp: &self.mlp })
    }

    /// A decoded token through the CPU decode plan's one kernel node, when the plan takes
    /// this block's layers, the token and its cache.
    fn planned_decode(&self, input: &mut LayerInput<'_>) -> Result<Option<Array>> {
        let (Some(cache), None, Some(layers)) =
            (input.cache.as_deref_mut(), input.padding_mask, self.plan_layers())
        else {
            return Ok(None);
        };
        match DecodePlan::for_block(layers, self.training) {
            Some(plan) => plan.run(input.x, cache),
            None => Ok(None),
        }
    }
}

impl Block for TransformerBlock {
    fn make_cache(&self) -> Result<LayerCache> {
        attention_cache(&self.self_attn)
    }
}

/// `norm(x)` when the norm is present, `x` otherwise.
fn apply(norm: &mut Option<Norm>, x: &Array) -> Result<Array> {
    match norm {
        Some(norm) => norm.forward(x),
        None => Ok(x.clone()),
    }
}

/// A KV cache, rotating when the attention has a sliding window.
///
/// # Errors
/// For a window that does not fit an `i32`.
pub fn attention_cache(attention: &Attention) -> Result<LayerCache> {
    Ok(match attention.config().sliding_window {
        Some(window) => {
            let window = i32::try_from(window)
                .map_err(|_| Error::invalid("AttentionConfig", "sliding_window", "too large"))?;
            LayerCache::Rotating(RotatingKvCache::new(window)?)
        }
        None => LayerCache::Kv(KvCache::new()),
    })
}

/// Residual helper shared by the blocks: `x + f(x)`.
pub(crate) fn residual(x: &Array, fx: Array) -> Result<Array> {
    Ok(x.add(fx)?)
}

lamina_components::visit_fields!(TransformerBlock { self_attn, mlp });

#[cfg(test)]
mod tests {
    use lamina_components::FeedForwardConfig;
    use mlx_rs::module::ModuleParameters;

    use super::*;

    pub(crate) fn config() -> TransformerBlockConfig {
        TransformerBlockConfig::new(
            AttentionConfig::new(16, 4, 2),
            FeedForwardConfig::swiglu(16, 32),
            NormConfig::rms(1e-5),
        )
    }

    /// A deterministic input: `sin` of a ramp, `[B, L, 16]`.
    fn input(b: i32, l: i32) -> Array {
        let n = (b * l * 16) as usize;
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        Array::from_slice(&values, &[b, l, 16])
    }

    /// Norm weights away from one, so that a norm applied in the wrong place shows.
    fn perturb(norm: &mut Norm, salt: f32) {
        let values: Vec<f32> = (0..16).map(|i| 1.0 + 0.3 * ((i as f32 + salt) * 1.3).cos()).collect();
        norm.weight = mlx_rs::module::Param::new(Some(Array::from_slice(&values, &[16])));
    }

    fn block(placement: NormPlacement) -> TransformerBlock {
        let mut block =
            TransformerBlock::new(&TransformerBlockConfig { norm_placement: placement, ..config() }).unwrap();
        let mut salt = 0.0;
        for norm in [
            block.input_layernorm.as_mut(),
            block.post_attention_layernorm.as_mut(),
            block.pre_feedforward_layernorm.as_mut(),
            block.post_feedforward_layernorm.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            salt += 1.0;
            perturb(norm, salt);
        }
        block
    }

    fn max_diff(a: &Array, b: &Array) -> f32 {
        a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
    }

    #[test]
    fn each_placement_composes_its_sublayers_as_documented() {
        let x = input(2, 5);
        let run = |b: &mut TransformerBlock| b.forward(LayerInput::new(&x)).unwrap().hidden_states;
        let norm = |n: &mut Option<Norm>, v: &Array| n.as_mut().unwrap().forward(v).unwrap();

        let mut pre = block(NormPlacement::Pre);
        let h = x
            .add(pre.self_attn.forward(LayerInput::new(&norm(&mut pre.input_layernorm, &x))).unwrap())
            .unwrap();
        let expected = h.add(pre.mlp.forward(&norm(&mut pre.post_attention_layernorm, &h)).unwrap()).unwrap();
        assert!(max_diff(&run(&mut pre), &expected) < 1e-5);

        let mut sandwich = block(NormPlacement::Sandwich);
        let attended =
            sandwich.self_attn.forward(LayerInput::new(&norm(&mut sandwich.input_layernorm, &x))).unwrap();
        let h = x.add(norm(&mut sandwich.post_attention_layernorm, &attended)).unwrap();
        let mlp = sandwich.mlp.forward(&norm(&mut sandwich.pre_feedforward_layernorm, &h)).unwrap();
        let expected = h.add(norm(&mut sandwich.post_feedforward_layernorm, &mlp)).unwrap();
        assert!(max_diff(&run(&mut sandwich), &expected) < 1e-5);

        let mut post = block(NormPlacement::Post);
        let attended = post.self_attn.forward(LayerInput::new(&x)).unwrap();
        let h = x.add(norm(&mut post.post_attention_layernorm, &attended)).unwrap();
        let expected =
            h.add(norm(&mut post.post_feedforward_layernorm, &post.mlp.forward(&h).unwrap())).unwrap();
        assert!(max_diff(&run(&mut post), &expected) < 1e-5);

        let mut parallel = block(NormPlacement::Parallel);
        let normed = norm(&mut parallel.input_layernorm, &x);
        let attended = parallel.self_attn.forward(LayerInput::new(&normed)).unwrap();
        let expected = x.add(attended).unwrap().add(parallel.mlp.forward(&normed).unwrap()).unwrap();
        assert!(max_diff(&run(&mut parallel), &expected) < 1e-5);

        // They really differ on the same weights' shapes.
        assert!(max_diff(&run(&mut pre), &run(&mut sandwich)) > 1e-3);
        assert!(max_diff(&run(&mut pre), &run(&mut parallel)) > 1e-3);
    }

    #[test]
    fn names_follow_the_checkpoints_for_each_placement() {
        let keys = |placement| {
            let mut keys: Vec<String> = block(placement)
                .parameters()
                .flatten()
                .keys()
                .filter(|k| k.ends_with("layernorm.weight"))
                .map(|k| k.to_string())
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(NormPlacement::Pre), ["input_layernorm.weight", "post_attention_layernorm.weight"]);
        assert_eq!(
            keys(NormPlacement::Sandwich),
            [
                "input_layernorm.weight",
                "post_attention_layernorm.weight",
                "post_feedforward_layernorm.weight",
                "pre_feedforward_layernorm.weight"
            ]
        );
        assert_eq!(
            keys(NormPlacement::Post),
            ["post_attention_layernorm.weight", "post_feedforward_layernorm.weight"]
        );
        assert_eq!(keys(NormPlacement::Parallel), ["input_layernorm.weight"]);
        let config = TransformerBlockConfig { norm_placement: NormPlacement::Sandwich, ..config() };
        assert_eq!(
            config.num_parameters(),
            lamina_core::count_parameters(&TransformerBlock::new(&config).unwrap())
        );
        let mut pre = block(NormPlacement::Pre);
        assert_eq!(pre.forward(LayerInput::new(&input(2, 5))).unwrap().hidden_states.shape(), &[2, 5, 16]);
        assert!(matches!(pre.make_cache().unwrap(), LayerCache::Kv(_)));
    }

    #[test]
    fn dropout_applies_only_while_training() {
        let mut block = TransformerBlock::new(&TransformerBlockConfig { dropout: 0.5, ..config() }).unwrap();
        let x = input(1, 6);
        let run = |b: &mut TransformerBlock| b.forward(LayerInput::new(&x)).unwrap().hidden_states;
        let (a, b) = (run(&mut block), run(&mut block));
        assert!(a.eq_values(&b).unwrap());
        block.training_mode(true);
        assert!(!run(&mut block).eq_values(&a).unwrap());
        assert!(TransformerBlock::new(&TransformerBlockConfig { dropout: 1.0, ..config() }).is_err());
    }

    #[test]
    fn mismatched_widths_are_rejected() {
        let bad = TransformerBlockConfig { ffn: FeedForwardConfig::swiglu(8, 32), ..config() };
        let err = TransformerBlock::new(&bad).unwrap_err().to_string();
        assert!(err.contains("ffn.hidden_size"), "{err}");
    }

    /// A quantized pre-norm block of width 64 (4 heads of 16, 2 KV heads), as `config`
    /// says otherwise.
    fn quantized_block(config: TransformerBlockConfig, bits: [i32; 7]) -> TransformerBlock {
        use lamina_components::{Activations, QuantConfig};
        let mut block = TransformerBlock::new(&config).unwrap();
        // Norm weights and biases away from their initial values, so that a misplaced one shows.
        let wave = |n: i32, salt: f32| {
            let values: Vec<f32> = (0..n).map(|i| 0.3 * ((i as f32 + salt) * 1.3).cos()).collect();
            Array::from_slice(&values, &[n])
        };
        let norms = [
            block.input_layernorm.as_mut(),
            block.post_attention_layernorm.as_mut(),
            block.pre_feedforward_layernorm.as_mut(),
            block.post_feedforward_layernorm.as_mut(),
            block.self_attn.q_norm.as_mut(),
            block.self_attn.k_norm.as_mut(),
        ];
        for (salt, norm) in norms.into_iter().enumerate() {
            if let Some(norm) = norm {
                let n = norm.weight.value.as_ref().map_or(0, |w| w.dim(0));
                let w = wave(n, salt as f32);
                let w = if norm.unit_offset { w } else { w.add(Array::from_f32(1.0)).unwrap() };
                norm.weight = mlx_rs::module::Param::new(Some(w));
            }
        }
        let attn = &mut block.self_attn;
        for (salt, layer) in [&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj].into_iter().enumerate() {
            if layer.bias.is_some() {
                let n = layer.weight.dim(0);
                layer.bias = mlx_rs::module::Param::new(Some(wave(n, 5.0 + salt as f32)));
            }
        }
        let attn = &mut block.self_attn;
        let mlp = &mut block.mlp;
        let layers = [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.o_proj,
            mlp.gate_proj.as_mut().unwrap(),
            &mut mlp.up_proj,
            &mut mlp.down_proj,
        ];
        for (layer, bits) in layers.into_iter().zip(bits) {
            layer
                .quantize(QuantConfig { group_size: 32, bits, activations: Activations::Exact, blocks: None })
                .unwrap();
        }
        block
    }

    /// `x [B, L, 64]` through `block`: a 3-token prompt, then one token at a time;
    /// `lend` hands the cache's arrays out before each decoded token (so that it cannot be
    /// written in place).
    fn decode(block: &mut TransformerBlock, x: &Array, cache: LayerCache, lend: bool) -> Array {
        use mlx_rs::ops::indexing::TryIndexOp;
        let mut cache = cache;
        let mut outs = Vec::new();
        let l = x.dim(1);
        for (start, end) in std::iter::once((0, 3)).chain((3..l).map(|t| (t, t + 1))) {
            if lend {
                let _ = cache.arrays();
            }
            let chunk = x.try_index((.., start..end, ..)).unwrap();
            let input = LayerInput { x: &chunk, cache: Some(&mut cache), padding_mask: None };
            outs.push(block.forward(input).unwrap().hidden_states);
        }
        mlx_rs::ops::concatenate(&outs, 1).unwrap()
    }

    #[test]
    fn the_decode_plan_equals_the_layers_and_the_plain_graph() {
        use lamina_components::{KvCache, QkNormConfig, QkNormPosition, RopeConfig, RotatingKvCache};
        use lamina_core::Activation;
        use mlx_rs::ops::indexing::IndexOp;
        let attention = AttentionConfig {
            head_dim: Some(16),
            rope: Some(RopeConfig::new(16, 10_000.0)),
            ..AttentionConfig::new(64, 4, 2)
        };
        let base =
            TransformerBlockConfig::new(attention, FeedForwardConfig::swiglu(64, 128), NormConfig::rms(1e-5));
        let gelu =
            FeedForwardConfig { activation: Activation::GeluApprox, ..FeedForwardConfig::swiglu(64, 128) };
        let cases = [
            (base.clone(), [4; 7]),
            (base.clone(), [4, 8, 8, 4, 4, 4, 8]),
            (TransformerBlockConfig { ffn: gelu, ..base.clone() }, [8; 7]),
            (
                TransformerBlockConfig {
                    attention: AttentionConfig {
                        sliding_window: Some(4),
                        softcap: Some(5.0),
                        rope: Some(RopeConfig { traditional: true, ..RopeConfig::new(8, 500.0) }),
                        ..base.attention.clone()
                    },
                    ..base.clone()
                },
                [4; 7],
            ),
        ];
        let qk_norm = |norm| Some(QkNormConfig { norm, position: QkNormPosition::BeforeRope });
        let cases = cases.into_iter().chain([
            // Qwen2: q/k/v biases.
            (
                TransformerBlockConfig {
                    attention: AttentionConfig { qkv_bias: true, ..base.attention.clone() },
                    ..base.clone()
                },
                [4; 7],
            ),
            // Qwen3: QK-norm before RoPE.
            (
                TransformerBlockConfig {
                    attention: AttentionConfig {
                        qk_norm: qk_norm(NormConfig::rms(1e-6)),
                        ..base.attention.clone()
                    },
                    ..base.clone()
                },
                [4, 4, 4, 8, 4, 4, 4],
            ),
            // Gemma 3: sandwich norms scaling by 1 + w, QK-norm, GeGLU, a window.
            (
                TransformerBlockConfig {
                    attention: AttentionConfig {
                        qk_norm: qk_norm(NormConfig::rms_unit_offset(1e-6)),
                        sliding_window: Some(4),
                        scale: Some(0.2),
                        ..base.attention.clone()
                    },
                    ffn: gelu,
                    norm: NormConfig::rms_unit_offset(1e-6),
                    norm_placement: NormPlacement::Sandwich,
                    dropout: 0.0,
                },
                [4, 4, 8, 4, 4, 4, 8],
            ),
        ]);
        let x = Array::from_slice(
            &(0..2 * 9 * 64).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            &[2, 9, 64],
        );
        for (i, (config, bits)) in cases.into_iter().enumerate() {
            let mut block = quantized_block(config.clone(), bits);
            let window = config.attention.sliding_window.map(|w| w as i32);
            let cache = || match window {
                Some(w) => LayerCache::Rotating(RotatingKvCache::new(w).unwrap()),
                None => LayerCache::Kv(KvCache::new()),
            };
            assert!(
                block
                    .planned_decode(&mut LayerInput { x: &x, cache: None, padding_mask: None })
                    .unwrap()
                    .is_none()
            );
            let planned = decode(&mut block, &x, cache(), false);
            let layers = decode(&mut block, &x, cache(), true);
            block.training_mode(true);
            let plain = decode(&mut block, &x, cache(), false);
            block.training_mode(false);
            assert!(max_diff(&planned, &layers) < 1e-5, "case {i}: {}", max_diff(&planned, &layers));
            assert!(max_diff(&planned, &plain) < 1e-4, "case {i}: {}", max_diff(&planned, &plain));
            // The plan is what decoded: it holds for these layers, not while training.
            assert!(DecodePlan::for_block(block.plan_layers().unwrap(), false).is_some(), "case {i}");
            assert!(DecodePlan::for_block(block.plan_layers().unwrap(), true).is_none(), "case {i}");
            let mut cache = cache();
            let mut prompted = block.clone();
            prompted.forward(LayerInput { x: &x, cache: Some(&mut cache), padding_mask: None }).unwrap();
            let plan = DecodePlan::for_block(block.plan_layers().unwrap(), false).unwrap();
            let token = x.index((.., ..1, ..));
            assert!(plan.run(&token, &mut cache).unwrap().is_some(), "case {i}: the plan ran");
            let _ = cache.arrays();
            assert!(plan.run(&token, &mut cache).unwrap().is_none(), "case {i}: not into lent buffers");
        }
        // Dense layers: no plan.
        let dense = TransformerBlock::new(&base).unwrap();
        assert!(DecodePlan::for_block(dense.plan_layers().unwrap(), false).is_none());
    }
}
