//! Training data: token sequences, split and batched by padding or by packing.

use lamina_loader::Tokenizer;
use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// How sequences become fixed-length rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Batching {
    /// One sequence per row, truncated to `seq_len`, padded on the right (padding is masked
    /// out of attention and of the loss).
    #[default]
    Pad,
    /// Sequences concatenated and cut into rows of exactly `seq_len` (no padding).
    Pack,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, L]` int32.
    pub input_ids: Array,
    /// `[B, L]` int32, `-100` where nothing is predicted.
    pub labels: Array,
    /// `[B, L]` int32, 1 for real tokens.
    pub padding_mask: Array,
    /// Real tokens in the batch.
    pub tokens: usize,
}

impl Batch {
    /// How many labels the causal loss counts: positions after the first whose label is
    /// not `-100`.
    ///
    /// # Errors
    /// MLX errors reading the labels.
    pub fn counted_targets(&self) -> Result<usize> {
        let labels = self.labels.as_dtype(mlx_rs::Dtype::Int32)?;
        let width = labels.shape().get(1).copied().unwrap_or(0).max(0) as usize;
        let values = labels.as_slice::<i32>();
        Ok(values.chunks(width.max(1)).map(|row| row.iter().skip(1).filter(|&&l| l != -100).count()).sum())
    }

    /// Rank `rank`'s share of the rows, of `size` ranks (contiguous, as even as can be).
    ///
    /// # Errors
    /// [`TrainError::Data`] when there are fewer rows than ranks.
    pub fn shard(&self, rank: usize, size: usize) -> Result<Batch> {
        let shape = self.input_ids.shape().to_vec();
        let (rows, width) =
            (shape.first().copied().unwrap_or(0) as usize, shape.get(1).copied().unwrap_or(0));
        if rows < size {
            return Err(TrainError::Data(format!("a batch of {rows} rows cannot be shared by {size} ranks")));
        }
        let (lo, hi) = (rows * rank / size, rows * (rank + 1) / size);
        let take = |a: &Array| -> Result<Array> {
            let a = a.as_dtype(mlx_rs::Dtype::Int32)?;
            let values = &a.as_slice::<i32>()[lo * width as usize..hi * width as usize];
            Ok(Array::from_slice(values, &[(hi - lo) as i32, width]))
        };
        let padding_mask = take(&self.padding_mask)?;
        let tokens = padding_mask.as_slice::<i32>().iter().filter(|&&m| m != 0).count();
        Ok(Batch { input_ids: take(&self.input_ids)?, labels: take(&self.labels)?, padding_mask, tokens })
    }
}

/// A set of token sequences, each with the length of its prompt: the tokens before it
/// are context only, not predicted (all are predicted when it is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDataset {
    sequences: Vec<Vec<u32>>,
    prompt_lens: Vec<usize>,
}

/// A row of a batch: its ids and, for each, whether it is predicted (counted in the loss).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    ids: Vec<u32>,
    targets: Vec<bool>,
}

impl TokenDataset {
    /// Sequences of at least two tokens (one is nothing to predict from), every token
    /// predicted; shorter ones are dropped.
    ///
    /// # Errors
    /// [`TrainError::Data`] when nothing is left.
    pub fn new(sequences: Vec<Vec<u32>>) -> Result<Self> {
        Self::with_prompts(sequences.into_iter().map(|s| (s, 0)).collect())
    }

    /// Sequences with their prompt lengths (the tokens before are not predicted).
    /// Sequences of fewer than two tokens, or with nothing after the prompt, are dropped.
    ///
    /// # Errors
    /// [`TrainError::Data`] when nothing is left.
    pub fn with_prompts(sequences: Vec<(Vec<u32>, usize)>) -> Result<Self> {
        let (sequences, prompt_lens): (Vec<_>, Vec<_>) =
            sequences.into_iter().filter(|(s, prompt)| s.len() >= 2 && *prompt < s.len()).unzip();
        if sequences.is_empty() {
            return Err(TrainError::Data("no sequence of two or more tokens with tokens to predict".into()));
        }
        Ok(TokenDataset { sequences, prompt_lens })
    }

    /// The prompt length of each sequence.
    pub fn prompt_lens(&self) -> &[usize] {
        &self.prompt_lens
    }

    /// How many sequences are longer than `seq_len` (cut when batched by padding).
    pub fn longer_than(&self, seq_len: usize) -> usize {
        self.sequences.iter().filter(|s| s.len() > seq_len).count()
    }

    /// Tokenizes each text (with the tokenizer's special tokens), appending `eos` when
    /// given.
    ///
    /// # Errors
    /// Tokenizer errors; [`TrainError::Data`] when every text is empty.
    pub fn from_texts<S: AsRef<str>>(tokenizer: &Tokenizer, texts: &[S], eos: Option<u32>) -> Result<Self> {
        let mut sequences = Vec::with_capacity(texts.len());
        for text in texts {
            let mut ids = tokenizer.encode(text.as_ref(), true)?;
            ids.extend(eos);
            sequences.push(ids);
        }
        Self::new(sequences)
    }

    /// The sequences.
    pub fn sequences(&self) -> &[Vec<u32>] {
        &self.sequences
    }

    /// Tokens in all sequences.
    pub fn tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// Checks every id against the vocabulary.
    ///
    /// # Errors
    /// [`TrainError::Data`] naming the first id outside it.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        match self.sequences.iter().flatten().find(|&&id| id as usize >= vocab_size) {
            Some(id) => {
                Err(TrainError::Data(format!("token id {id} is outside the vocabulary [0, {vocab_size})")))
            }
            None => Ok(()),
        }
    }

    /// Splits off every `n`-th sequence (deterministically) as a held-out set.
    ///
    /// # Errors
    /// [`TrainError::Data`] when either side would be empty.
    pub fn split_every(self, n: usize) -> Result<(TokenDataset, TokenDataset)> {
        let n = n.max(2);
        let (held, kept): (Vec<_>, Vec<_>) =
            self.sequences.into_iter().zip(self.prompt_lens).enumerate().partition(|(i, _)| i % n == n - 1);
        let strip = |v: Vec<(usize, (Vec<u32>, usize))>| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>();
        Ok((Self::with_prompts(strip(kept))?, Self::with_prompts(strip(held))?))
    }

    /// The rows this dataset makes (before batching).
    fn rows(&self, seq_len: usize, batching: Batching) -> Vec<Row> {
        let targets = |s: &[u32], prompt: usize| (0..s.len()).map(|i| i >= prompt).collect::<Vec<_>>();
        let whole = self.sequences.iter().zip(&self.prompt_lens).map(|(s, &p)| (s, targets(s, p)));
        match batching {
            Batching::Pad => whole
                .map(|(s, t)| {
                    let len = s.len().min(seq_len);
                    Row { ids: s[..len].to_vec(), targets: t[..len].to_vec() }
                })
                .filter(|row| row.targets.iter().skip(1).any(|&t| t))
                .collect(),
            Batching::Pack => {
                let (ids, flags): (Vec<u32>, Vec<bool>) =
                    whole.flat_map(|(s, t)| s.iter().copied().zip(t).collect::<Vec<_>>()).unzip();
                ids.chunks_exact(seq_len)
                    .zip(flags.chunks_exact(seq_len))
                    .map(|(ids, targets)| Row { ids: ids.to_vec(), targets: targets.to_vec() })
                    .collect()
            }
        }
    }

    /// Batches of `batch_size` rows in the order `order` gives (a permutation of the
    /// rows; see [`shuffled`]). The last, smaller batch is kept.
    ///
    /// # Errors
    /// [`TrainError::Data`] when packing leaves no full row.
    pub fn batches(
        &self,
        batch_size: usize,
        seq_len: usize,
        batching: Batching,
        pad_id: u32,
        seed: Option<u64>,
    ) -> Result<Vec<Batch>> {
        let rows = self.batch_rows(batch_size, seq_len, batching, pad_id)?;
        Ok(rows.order(seed).chunks(rows.batch_size).map(|chunk| rows.make(chunk)).collect())
    }

    /// The rows of [`TokenDataset::batches`], made once, to batch on demand.
    ///
    /// # Errors
    /// [`TrainError::Data`] when packing leaves no full row.
    pub(crate) fn batch_rows(
        &self,
        batch_size: usize,
        seq_len: usize,
        batching: Batching,
        pad_id: u32,
    ) -> Result<BatchRows> {
        let rows = self.rows(seq_len.max(2), batching);
        if rows.is_empty() {
            return Err(TrainError::Data(format!(
                "packing {} tokens leaves no row of {seq_len}",
                self.tokens()
            )));
        }
        Ok(BatchRows { rows, batch_size: batch_size.max(1), pad_id })
    }
}

/// A dataset's rows, from which any batch of any epoch's order is made without making
/// the others.
#[derive(Debug, Clone)]
pub(crate) struct BatchRows {
    rows: Vec<Row>,
    batch_size: usize,
    pad_id: u32,
}

impl BatchRows {
    /// Batches per epoch (the last may be smaller).
    pub(crate) fn per_epoch(&self) -> usize {
        self.rows.len().div_ceil(self.batch_size)
    }

    /// Batch `index` of the order `seed` gives.
    pub(crate) fn batch(&self, seed: Option<u64>, index: usize) -> Option<Batch> {
        self.order(seed).chunks(self.batch_size).nth(index).map(|chunk| self.make(chunk))
    }

    /// The rows' order: shuffled by `seed`, or their own for `None`.
    fn order(&self, seed: Option<u64>) -> Vec<usize> {
        match seed {
            Some(seed) => shuffled(self.rows.len(), seed),
            None => (0..self.rows.len()).collect(),
        }
    }

    /// The batch of the rows numbered in `chunk`.
    fn make(&self, chunk: &[usize]) -> Batch {
        batch(chunk.iter().map(|&i| &self.rows[i]), self.pad_id)
    }
}

fn batch<'a>(rows: impl Iterator<Item = &'a Row> + Clone, pad_id: u32) -> Batch {
    let width = rows.clone().map(|r| r.ids.len()).max().unwrap_or(0);
    let (mut ids, mut labels, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let mut tokens = 0;
    let mut count = 0;
    for row in rows {
        count += 1;
        tokens += row.ids.len();
        for i in 0..width {
            let real = i < row.ids.len();
            let id = if real { row.ids[i] } else { pad_id };
            ids.push(id as i32);
            labels.push(if real && row.targets[i] { id as i32 } else { -100 });
            mask.push(i32::from(real));
        }
    }
    let shape = [count, width as i32];
    Batch {
        input_ids: Array::from_slice(&ids, &shape),
        labels: Array::from_slice(&labels, &shape),
        padding_mask: Array::from_slice(&mask, &shape),
        tokens,
    }
}

/// A deterministic permutation of `0..n` (Fisher-Yates over a SplitMix64 stream).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_masks_and_ignores_pads() {
        let data = TokenDataset::new(vec![vec![5, 6, 7], vec![8, 9], vec![1]]).unwrap();
        assert_eq!(data.sequences().len(), 2, "one-token sequences are dropped");
        let batches = data.batches(2, 8, Batching::Pad, 0, None).unwrap();
        let b = &batches[0];
        assert_eq!(b.input_ids.shape(), &[2, 3]);
        assert_eq!(b.labels.as_slice::<i32>(), &[5, 6, 7, 8, 9, -100]);
        assert_eq!(b.padding_mask.as_slice::<i32>(), &[1, 1, 1, 1, 1, 0]);
        assert_eq!(b.tokens, 5);
    }

    #[test]
    fn prompts_are_context_not_targets() {
        // Prompt lengths 2 and 1: labels -100 on the prompt's tokens, padding too.
        let data =
            TokenDataset::with_prompts(vec![(vec![5, 6, 7, 8], 2), (vec![9, 10, 11], 1), (vec![1, 2], 2)])
                .unwrap();
        assert_eq!(data.sequences().len(), 2, "a sequence that is all prompt is dropped");
        let b = &data.batches(2, 8, Batching::Pad, 0, None).unwrap()[0];
        assert_eq!(b.labels.as_slice::<i32>(), &[-100, -100, 7, 8, -100, 10, 11, -100]);
        assert_eq!(b.padding_mask.as_slice::<i32>(), &[1, 1, 1, 1, 1, 1, 1, 0]);
        // Cut to 2 tokens, the first sequence has nothing left to predict: its row goes.
        let cut = &data.batches(2, 2, Batching::Pad, 0, None).unwrap()[0];
        assert_eq!(cut.labels.as_slice::<i32>(), &[-100, 10]);
        assert_eq!(data.longer_than(3), 1);
        // Packing carries each token's flag across the row boundaries.
        let packed = &data.batches(1, 7, Batching::Pack, 0, None).unwrap()[0];
        assert_eq!(packed.labels.as_slice::<i32>(), &[-100, -100, 7, 8, -100, 10, 11]);
        let (train, held) = data.split_every(2).unwrap();
        assert_eq!((train.prompt_lens(), held.prompt_lens()), (&[2][..], &[1][..]));
    }

    #[test]
    fn packing_cuts_full_rows() {
        let data = TokenDataset::new(vec![vec![1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]).unwrap();
        let batches = data.batches(8, 4, Batching::Pack, 0, None).unwrap();
        assert_eq!(batches[0].input_ids.as_slice::<i32>(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(data.batches(8, 100, Batching::Pack, 0, None).is_err());
    }

    #[test]
    fn shuffles_are_deterministic_permutations() {
        let a = shuffled(50, 7);
        assert_eq!(a, shuffled(50, 7));
        assert_ne!(a, shuffled(50, 8));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn splits_and_vocabulary_checks() {
        let data = TokenDataset::new((0..10).map(|i| vec![i, i + 1]).collect()).unwrap();
        let (train, eval) = data.clone().split_every(5).unwrap();
        assert_eq!((train.sequences().len(), eval.sequences().len()), (8, 2));
        assert!(data.check_vocab(11).is_ok());
        assert!(data.check_vocab(10).unwrap_err().to_string().contains("token id 10"));
        assert!(TokenDataset::new(vec![vec![1]]).is_err());
    }
}
