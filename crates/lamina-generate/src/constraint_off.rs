//! Constrained decoding in a build without the `constrained` feature: the same types, and
//! [`GrammarCompiler::new`] says that this build cannot constrain output.

use std::collections::HashSet;

use lamina_loader::Tokenizer;
use mlx_rs::Array;

use crate::error::{GenerateError, Result};
pub use crate::grammar::Grammar;

/// Compiles grammars (not in this build).
#[derive(Debug, Clone)]
pub struct GrammarCompiler {
    never: Never,
}

impl GrammarCompiler {
    /// Always [`GenerateError::Grammar`]: this build has no constrained decoding.
    ///
    /// # Errors
    /// Always.
    pub fn new(_tokenizer: &Tokenizer, _vocab_size: usize) -> Result<Self> {
        Err(GenerateError::Grammar(
            "this build of lamina has no constrained decoding (built without the `constrained` feature)"
                .into(),
        ))
    }

    /// The vocabulary size masks are made for.
    pub fn vocab_size(&self) -> usize {
        match self.never {}
    }

    /// Never called (no compiler exists).
    ///
    /// # Errors
    /// Never.
    pub fn compile(&self, _grammar: Grammar) -> Result<Constraint> {
        match self.never {}
    }
}

/// A compiled grammar (none exists in this build).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    never: Never,
}

#[derive(Debug, Clone, PartialEq)]
enum Never {}

impl Constraint {
    /// What the output must match.
    pub fn grammar(&self) -> &Grammar {
        match self.never {}
    }

    pub(crate) fn start(&self) -> ConstraintState {
        match self.never {}
    }
}

/// One sequence's matcher (none exists in this build).
pub(crate) struct ConstraintState {
    never: Never,
}

impl ConstraintState {
    pub fn apply(&mut self, _logits: &Array, _eos: &HashSet<u32>) -> Result<Array> {
        match self.never {}
    }

    pub fn consume(&mut self, _id: u32) -> Result<()> {
        match self.never {}
    }

    pub fn is_complete(&self) -> bool {
        match self.never {}
    }
}
