//! Constrained decoding: the output must match a JSON schema, a regular expression or a
//! Lark grammar. [`GrammarCompiler`] turns the tokenizer's vocabulary into a token trie once
//! (llguidance through `toktrie_hf_tokenizers`); [`GrammarCompiler::compile`] checks a
//! [`Grammar`] and gives a [`Constraint`]; each sequence generated with it keeps its own
//! matcher, whose mask of allowed tokens is added to the logits before sampling (while the
//! forward pass computes them), and which reads every accepted token.
//!
//! End-of-sequence ids are the generation's own (`GenerateParams::eos_token_ids`): they are
//! allowed exactly when the grammar may end here; a grammar that cannot go on ends the
//! sequence ([`FinishReason::Eos`](crate::FinishReason::Eos)) without spending a token.

use std::collections::HashSet;
use std::sync::Arc;

use lamina_loader::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, ParserFactory};
use mlx_rs::Array;

use crate::error::{GenerateError, Result};
pub use crate::grammar::Grammar;

/// llguidance's form of a grammar.
fn top_level(grammar: &Grammar) -> TopLevelGrammar {
    match grammar {
        Grammar::JsonObject => TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"})),
        Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
        Grammar::Regex(pattern) => TopLevelGrammar::from_regex(pattern),
        Grammar::Lark(source) => TopLevelGrammar::from_lark(source.clone()),
    }
}

/// Compiles grammars against one tokenizer and a model's vocabulary size; cheap to clone.
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").field("vocab_size", &self.vocab_size).finish()
    }
}

impl GrammarCompiler {
    /// The token trie of `tokenizer`'s vocabulary, padded to the model's `vocab_size` (ids the
    /// tokenizer lacks are never allowed). Takes ~0.1-0.5 s for a 50-150k vocabulary: build
    /// one per model and keep it.
    ///
    /// # Errors
    /// [`GenerateError::Grammar`] when the tokenizer is neither byte-level nor byte-fallback
    /// (its tokens' bytes are unknown) or has more tokens than the model's vocabulary.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self> {
        let unusable = |e| grammar_error("this tokenizer cannot drive constrained decoding", e);
        let bytes = toktrie_hf_tokenizers::ByteTokenizer::from_tokenizer(tokenizer.inner().clone())
            .map_err(unusable)?;
        let env = bytes.into_tok_env(Some(vocab_size)).map_err(unusable)?;
        let mut factory = ParserFactory::new_simple(&env).map_err(unusable)?;
        factory.quiet();
        Ok(GrammarCompiler { factory: Arc::new(factory), vocab_size })
    }

    /// The vocabulary size masks are made for.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Checks `grammar` (it parses, its schema features are supported, some text matches
    /// it) and returns the constraint to generate with.
    ///
    /// # Errors
    /// [`GenerateError::Grammar`] naming the problem: a syntax error, an unsupported or
    /// unsatisfiable schema, a grammar no token sequence of this vocabulary can start.
    pub fn compile(&self, grammar: Grammar) -> Result<Constraint> {
        let invalid = |e| grammar_error("invalid grammar", e);
        let parser = self.factory.create_parser(top_level(&grammar)).map_err(invalid)?;
        let mut matcher = Matcher::new(Ok(parser));
        let mask = matcher.compute_mask().map_err(invalid)?;
        if mask.is_zero() && !matcher.is_accepting().map_err(invalid)? {
            return Err(GenerateError::Grammar("no text of this vocabulary matches the grammar".into()));
        }
        Ok(Constraint { grammar: Arc::new(grammar), matcher, vocab_size: self.vocab_size })
    }
}

/// A compiled grammar; every sequence generated with it starts its own matcher from here.
#[derive(Clone)]
pub struct Constraint {
    grammar: Arc<Grammar>,
    matcher: Matcher,
    vocab_size: usize,
}

impl Constraint {
    /// What the output must match.
    pub fn grammar(&self) -> &Grammar {
        &self.grammar
    }

    /// A fresh matcher for one sequence.
    pub(crate) fn start(&self) -> ConstraintState {
        ConstraintState {
            matcher: self.matcher.deep_clone(),
            vocab_size: self.vocab_size,
            additive: vec![0.0; self.vocab_size],
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("grammar", &self.grammar).finish()
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.grammar == other.grammar && self.vocab_size == other.vocab_size
    }
}

/// One sequence's matcher.
pub(crate) struct ConstraintState {
    matcher: Matcher,
    vocab_size: usize,
    /// The mask as added to the logits: 0 where allowed, -inf elsewhere (reused).
    additive: Vec<f32>,
}

impl ConstraintState {
    /// `logits [1, V]` with every token the grammar forbids at -inf; `eos` ids are allowed
    /// when the grammar may end here.
    ///
    /// # Errors
    /// [`GenerateError::Grammar`] when the matcher failed, no token is allowed, or the
    /// logits' vocabulary is not the compiled one.
    pub fn apply(&mut self, logits: &Array, eos: &HashSet<u32>) -> Result<Array> {
        let vocab = usize::try_from(logits.dim(-1)).unwrap_or(0);
        if vocab != self.vocab_size {
            return Err(GenerateError::Grammar(format!(
                "the constraint was compiled for a vocabulary of {}, the model's logits have {vocab}",
                self.vocab_size
            )));
        }
        let failed = |e| grammar_error("the grammar failed", e);
        let mut mask: SimpleVob = self.matcher.compute_mask().map_err(failed)?;
        let eos_trie = self.matcher.tok_env().map_err(failed)?.tok_trie().eos_token_set();
        mask.sub(&eos_trie);
        if self.matcher.is_accepting().map_err(failed)? {
            for &id in eos.iter().filter(|&&id| (id as usize) < self.vocab_size) {
                mask.allow_token(id);
            }
        }
        if mask.is_zero() {
            return Err(GenerateError::Grammar(
                "the grammar allows no token here (and no end-of-sequence id was given)".into(),
            ));
        }
        self.additive.fill(f32::NEG_INFINITY);
        mask.iter_set_entries(|id| {
            if let Some(slot) = self.additive.get_mut(id) {
                *slot = 0.0;
            }
        });
        let additive = Array::from_slice(&self.additive, &[1, self.vocab_size as i32]);
        Ok(logits.as_dtype(mlx_rs::Dtype::Float32)?.add(additive)?)
    }

    /// Reads an accepted token (not an end-of-sequence id).
    ///
    /// # Errors
    /// [`GenerateError::Grammar`] for a token the grammar does not allow.
    pub fn consume(&mut self, id: u32) -> Result<()> {
        self.matcher.consume_token(id).map_err(|e| grammar_error(&format!("token {id}"), e))
    }

    /// Whether the grammar is complete and nothing may follow.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// llguidance's errors (anyhow's) as [`GenerateError::Grammar`].
fn grammar_error(context: &str, error: impl std::fmt::Display) -> GenerateError {
    GenerateError::Grammar(format!("{context}: {error}"))
}
