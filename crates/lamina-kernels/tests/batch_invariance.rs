//! A query's attention depends on its keys alone: a row of a decoding batch (left-padded
//! into buffers it shares with longer and shorter rows) attends bit for bit as it would in
//! a cache of its own, and a prompt's query as the same position decoded — across several
//! parts of keys, windows and soft-capping. This is what lets a server answer a request the
//! same whatever else it serves and whatever its prompt cache held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lamina_kernels::{DecodeAttention, PromptAttention, decode_attention, prompt_attention};
use mlx_rs::Array;
use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
use support::values;

const HEADS: i32 = 6;
const KV_HEADS: i32 = 2;
const D: i32 = 32;

fn host(a: &Array) -> Vec<f32> {
    a.as_slice::<f32>().to_vec()
}

/// Keys or values of `len` positions for one sequence, `[1, H_kv, len, D]`.
fn sequence(len: i32, salt: f32) -> Array {
    values(&[1, KV_HEADS, len, D], salt)
}

/// Decode attention of `q [1, H, 1, D]` at the last of `keys`' positions, in a cache of its
/// own (its capacity padded past the length, as a KV cache grows).
fn alone(q: &Array, keys: &Array, values: &Array, how: DecodeAttention) -> Vec<f32> {
    let len = keys.dim(2);
    let pad = |a: &Array| {
        let room = mlx_rs::ops::zeros::<f32>(&[1, KV_HEADS, 5, D]).unwrap();
        mlx_rs::ops::concatenate(&[a, &room], 2).unwrap()
    };
    let last = |a: &Array| a.try_index((Ellipsis, len - 1..len, ..)).unwrap();
    let how = DecodeAttention { slot: len - 1, length: len, ..how };
    let (out, _, _) =
        decode_attention(q, &last(keys), &last(values), [&pad(keys), &pad(values)], how, None).unwrap();
    host(&out)
}

#[test]
fn a_batch_row_attends_as_it_would_alone() {
    // Rows of several parts of keys, one part, and a few keys, left-padded to one slot.
    let lengths = [700, 300, 5];
    let longest = *lengths.iter().max().unwrap();
    let slot = longest - 1;
    let seqs: Vec<(Array, Array)> = lengths
        .iter()
        .enumerate()
        .map(|(i, &l)| (sequence(l, i as f32), sequence(l, i as f32 + 0.5)))
        .collect();
    let padded = |a: &Array| {
        let len = a.dim(2);
        let left = mlx_rs::ops::zeros::<f32>(&[1, KV_HEADS, longest - len, D]).unwrap();
        let right = mlx_rs::ops::zeros::<f32>(&[1, KV_HEADS, 3, D]).unwrap();
        mlx_rs::ops::concatenate(&[&left, a, &right], 2).unwrap()
    };
    let batch = |pick: fn(&(Array, Array)) -> &Array| {
        let rows: Vec<Array> = seqs.iter().map(|s| padded(pick(s))).collect();
        mlx_rs::ops::concatenate(&rows, 0).unwrap()
    };
    let (keys, vals) = (batch(|s| &s.0), batch(|s| &s.1));
    let rows = lengths.len() as i32;
    let q = values(&[rows, HEADS, 1, D], 7.0);
    let new = |a: &Array| a.try_index((Ellipsis, slot..slot + 1, ..)).unwrap();
    let places: Vec<i32> = lengths.iter().flat_map(|&l| [longest - l, l - 1]).collect();
    let places = Array::from_slice(&places, &[rows, 2]);
    let scale = 1.0 / (D as f32).sqrt();
    for (window, softcap) in [(None, None), (Some(3), None), (Some(400), Some(1.5)), (None, Some(0.7))] {
        let how = DecodeAttention { slot, length: slot + 1, scale, window, softcap };
        let (out, _, _) =
            decode_attention(&q, &new(&keys), &new(&vals), [&keys, &vals], how, Some(&places)).unwrap();
        let out = host(&out);
        let width = (HEADS * D) as usize;
        for (row, (k, v)) in seqs.iter().enumerate() {
            let r = row as i32;
            let q_row = q.try_index(r..r + 1).unwrap();
            let expected = alone(&q_row, k, v, how);
            assert_eq!(&out[row * width..(row + 1) * width], &expected[..], "row {row}, {how:?}");
        }
    }
    // Places that do not fit.
    let how = DecodeAttention { slot, length: slot + 1, scale, window: None, softcap: None };
    let wrong = Array::from_slice(&[0i32, 0], &[1, 2]);
    assert!(decode_attention(&q, &new(&keys), &new(&vals), [&keys, &vals], how, Some(&wrong)).is_err());
    let floats = Array::from_slice(&[0.0f32; 6], &[3, 2]);
    assert!(decode_attention(&q, &new(&keys), &new(&vals), [&keys, &vals], how, Some(&floats)).is_err());
}

#[test]
fn a_prompt_query_attends_as_the_same_position_decoded() {
    let len = 600; // three parts of keys for the last queries
    let (keys, vals) = (sequence(len, 1.0), sequence(len, 2.0));
    let q = values(&[1, HEADS, len, D], 3.0);
    let scale = 1.0 / (D as f32).sqrt();
    for (window, softcap) in [(None, None), (Some(300), None), (None, Some(0.7))] {
        let how = PromptAttention { query_start: 0, key_start: 0, scale, window, softcap };
        let prompt = host(&prompt_attention(&q, &keys, &vals, how).unwrap());
        let width = (HEADS * D) as usize;
        for t in [0, 1, 255, 256, 257, 511, 512, len - 1] {
            let upto = |a: &Array| a.try_index((Ellipsis, ..t + 1, ..)).unwrap();
            let q_t = q.try_index((Ellipsis, t..t + 1, ..)).unwrap();
            let decoded = DecodeAttention { slot: 0, length: 0, scale, window, softcap };
            let expected = alone(&q_t, &upto(&keys), &upto(&vals), decoded);
            let t = t as usize;
            assert_eq!(&prompt[t * width..(t + 1) * width], &expected[..], "query {t}, {how:?}");
        }
    }
}
