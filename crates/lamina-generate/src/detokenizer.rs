//! Incremental decoding that never emits broken UTF-8: text is released only once the
//! tokens so far decode to it without a replacement character at the end (a multi-byte
//! character split across tokens waits for its last byte).

use lamina_loader::Tokenizer;

use crate::error::{GenerateError, Result};

/// Turns a stream of token ids into a stream of text pieces.
#[derive(Debug)]
pub struct StreamingDetokenizer<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'t> StreamingDetokenizer<'t> {
    /// A detokenizer with no tokens yet.
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        StreamingDetokenizer { tokenizer, ids: Vec::new(), prefix_offset: 0, read_offset: 0 }
    }

    fn decode(&self, from: usize, to: usize) -> Result<String> {
        self.tokenizer.decode(&self.ids[from..to], false).map_err(GenerateError::from)
    }

    /// Adds a token; returns the text it completes (possibly empty).
    ///
    /// # Errors
    /// For an id outside the tokenizer's vocabulary.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.decode(self.prefix_offset, self.read_offset)?;
        let now = self.decode(self.prefix_offset, self.ids.len())?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let delta = match now.strip_prefix(before.as_str()) {
                Some(rest) => rest.to_owned(),
                None => now.chars().skip(before.chars().count()).collect(),
            };
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is still held back (an incomplete character at the very end).
    ///
    /// # Errors
    /// For an id outside the tokenizer's vocabulary.
    pub fn finish(&mut self) -> Result<String> {
        let before = self.decode(self.prefix_offset, self.read_offset)?;
        let now = self.decode(self.prefix_offset, self.ids.len())?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(now.strip_prefix(before.as_str()).map_or(now.clone(), str::to_owned))
    }
}
