//! Typed outputs of every layer: named fields, never a dictionary of arrays.

use mlx_rs::Array;

/// What a block returns.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// The block's output, `[B, L, hidden_size]`.
    pub hidden_states: Array,
}

/// What a backbone returns.
#[derive(Debug, Clone)]
pub struct BackboneOutput {
    /// The output of the final norm, `[B, L, hidden_size]`.
    pub last_hidden_state: Array,
    /// When requested: the embeddings' output followed by every block's output (before the
    /// final norm), `num_blocks + 1` arrays of `[B, L, hidden_size]`, as transformers does.
    pub hidden_states: Option<Vec<Array>>,
}

/// What a head returns.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// Logits (`[B, L, vocab]` for a language model, `[B, num_labels]` for a sequence head,
    /// `[B, L, num_labels]` for a token head) or predicted values for regression.
    pub logits: Array,
    /// The mean loss over the counted targets when labels were given, a scalar.
    pub loss: Option<Array>,
}

/// What a whole model returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// The head's logits.
    pub logits: Array,
    /// The loss, when labels were given.
    pub loss: Option<Array>,
    /// Every layer's hidden states, when requested.
    pub hidden_states: Option<Vec<Array>>,
}

impl ModelOutput {
    /// Joins a backbone's and a head's outputs.
    pub fn new(backbone: BackboneOutput, head: HeadOutput) -> Self {
        ModelOutput { logits: head.logits, loss: head.loss, hidden_states: backbone.hidden_states }
    }
}
