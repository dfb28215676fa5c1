//! The one causal language model every family uses: a backbone under the family's
//! checkpoint key, an own or tied LM head, and the family's config. It implements
//! [`LanguageModel`], [`VisitLayers`], training switches and gradient checkpointing once.

use std::rc::Rc;

use lamina_backbones::{Backbone, BackboneInput, ModelCache};
use lamina_components::{Quantizable, VisitLayers, join};
use lamina_core::{Budget, ModelOutput, Result, to_dim};
use lamina_heads::{LmHead, ModelInput, lm_head, lm_logits};
use mlx_rs::module::{Module, ModuleParamMut, ModuleParamRef, ModuleParameters, Parameter};
use mlx_rs::nested::NestedHashMap;

use crate::family::FamilyConfig;
use crate::model::{LanguageModel, ModelInfo, Weights};

/// A causal LM of family config `C`: `<C::BACKBONE_KEY>.*` and `lm_head.*`.
///
/// ```
/// use lamina_families::{LanguageModel, LlamaConfig, LlamaForCausalLM};
/// use lamina_heads::ModelInput;
/// use mlx_rs::Array;
/// use mlx_rs::module::ModuleParameters;
///
/// let mut model = LlamaForCausalLM::new(LlamaConfig::tiny()).unwrap();
/// let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]);
/// let out = model.forward(ModelInput::new(&ids)).unwrap();
/// assert_eq!(out.logits.shape(), &[1, 3, 256]);
/// assert!(model.parameters().flatten().contains_key("model.embed_tokens.weight"));
/// ```
#[derive(Debug, Clone)]
pub struct FamilyModel<C: FamilyConfig> {
    /// The backbone, whose parameters sit under `C::BACKBONE_KEY`.
    pub backbone: C::Backbone,
    /// The LM head (`None` when tied to the embedding).
    pub lm_head: LmHead,
    /// The config it was built from.
    pub config: C,
}

impl<C: FamilyConfig> FamilyModel<C> {
    /// A randomly initialised model, refused when the config's estimate exceeds the
    /// machine's memory at 16 bits per parameter (see [`FamilyModel::new_within`]).
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a bad config,
    /// [`lamina_core::Error::TooLarge`] for one that would not fit.
    pub fn new(config: C) -> Result<Self> {
        Self::new_within(config, Budget::default())
    }

    /// A randomly initialised model, after checking the config's size estimate against
    /// `budget` — before any layer is built.
    ///
    /// # Errors
    /// As [`FamilyModel::new`].
    pub fn new_within(config: C, budget: Budget) -> Result<Self> {
        config.validated()?;
        config.estimate().ensure_within(C::NAME, budget)?;
        let backbone = config.build_backbone()?;
        let info = config.info();
        let (hidden, vocab) = (
            to_dim(C::NAME, "hidden_size", info.hidden_size)?,
            to_dim(C::NAME, "vocab_size", info.vocab_size)?,
        );
        let lm_head = lm_head(hidden, vocab, config.tie_word_embeddings())?;
        Ok(FamilyModel { backbone, lm_head, config })
    }
}

impl<C: FamilyConfig> LanguageModel for FamilyModel<C> {
    fn forward(&mut self, input: ModelInput<'_>) -> Result<ModelOutput> {
        let last_only = input.last_position_only && input.labels.is_none();
        let (input, _, labels): (BackboneInput<'_>, _, _) = input.into_parts();
        let out = self.backbone.forward(input)?;
        let softcap = self.config.final_logit_softcapping();
        let hidden = if last_only {
            use mlx_rs::ops::indexing::TryIndexOp;
            out.last_hidden_state.try_index((.., -1.., ..))?
        } else {
            out.last_hidden_state.clone()
        };
        let head = lm_logits(&mut self.lm_head, &hidden, self.backbone.embedding(), softcap, labels)?;
        Ok(ModelOutput::new(out, head))
    }

    fn make_cache(&self) -> Result<ModelCache> {
        self.backbone.make_cache()
    }

    fn info(&self) -> ModelInfo {
        self.config.info()
    }

    fn training_mode(&mut self, training: bool) {
        self.backbone.training_mode(training);
        if let Some(head) = &mut self.lm_head {
            head.training_mode(training);
        }
    }

    fn set_gradient_checkpointing(&mut self, on: bool) {
        self.backbone.set_gradient_checkpointing(on);
    }

    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        self.config.sanitize(weights)
    }

    fn split_for_pipeline(&mut self, stage: lamina_backbones::PipelineStage) -> Result<()> {
        self.backbone.split_for_pipeline(stage)
    }

    fn block_bytes(&self) -> Vec<u64> {
        self.backbone.block_bytes()
    }
}

impl<C: FamilyConfig> VisitLayers for FamilyModel<C> {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        self.backbone.visit_layers(&join(prefix, C::BACKBONE_KEY), f)?;
        self.lm_head.visit_layers(&join(prefix, "lm_head"), f)
    }
}

/// What `#[derive(ModuleParameters)]` writes, with the backbone's key taken from the
/// family (`model` or `backbone`) instead of the field's name.
impl<C: FamilyConfig> ModuleParameters for FamilyModel<C> {
    fn num_parameters(&self) -> usize {
        self.backbone.count() + self.lm_head.count()
    }

    fn parameters(&self) -> ModuleParamRef<'_> {
        let mut map = NestedHashMap::new();
        map.insert(Rc::from(C::BACKBONE_KEY), self.backbone.as_nested_value());
        map.insert(Rc::from("lm_head"), self.lm_head.as_nested_value());
        map
    }

    fn parameters_mut(&mut self) -> ModuleParamMut<'_> {
        let mut map = NestedHashMap::new();
        map.insert(Rc::from(C::BACKBONE_KEY), self.backbone.as_nested_value_mut());
        map.insert(Rc::from("lm_head"), self.lm_head.as_nested_value_mut());
        map
    }

    fn trainable_parameters(&self) -> ModuleParamRef<'_> {
        let mut map = NestedHashMap::new();
        if let Some(value) = self.backbone.as_trainable_nested_value() {
            map.insert(Rc::from(C::BACKBONE_KEY), value);
        }
        if let Some(value) = self.lm_head.as_trainable_nested_value() {
            map.insert(Rc::from("lm_head"), value);
        }
        map
    }

    fn freeze_parameters(&mut self, recursive: bool) {
        self.backbone.freeze(recursive);
        self.lm_head.freeze(recursive);
    }

    fn unfreeze_parameters(&mut self, recursive: bool) {
        self.backbone.unfreeze(recursive);
        self.lm_head.unfreeze(recursive);
    }

    fn all_frozen(&self) -> Option<bool> {
        match (self.backbone.is_frozen(), self.lm_head.is_frozen()) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (None, None) => None,
            _ => Some(true),
        }
    }

    fn any_frozen(&self) -> Option<bool> {
        match (self.backbone.is_frozen(), self.lm_head.is_frozen()) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (None, None) => None,
            _ => Some(false),
        }
    }
}
