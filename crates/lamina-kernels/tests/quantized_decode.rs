//! The quantized decode attention against what it replaces: the new key and value
//! quantized exactly as `mx.quantize` quantizes them, and the attention equal to a plain
//! softmax attention over the cache dequantized by `mx.dequantize` (GQA, batches, windows,
//! soft-capping, caches longer than one part, copies and in-place writes, every width).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lamina_kernels::{
    DecodeAttention, PackedBuffers, PackedKv, QuantizedCache, quantized_decode_attention,
    quantized_decode_attention_in_place,
};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
use mlx_rs::{Array, Dtype, ops};

/// Deterministic values in [-1, 1) (a few rows all negative, one constant).
fn values(shape: &[i32], salt: f32) -> Array {
    let n: i32 = shape.iter().product();
    let last = *shape.last().unwrap();
    let v: Vec<f32> = (0..n)
        .map(|i| match (i / last) % 7 {
            3 => -0.5 - 0.4 * ((i as f32 * 0.31 + salt).sin()).abs(),
            5 => 0.25,
            _ => ((i as f32 * 0.7548 + salt) * 12.9898).sin(),
        })
        .collect();
    Array::from_slice(&v, shape)
}

fn host<T: mlx_rs::ArrayElement + Clone>(a: &Array) -> Vec<T> {
    a.as_slice::<T>().to_vec()
}

/// Every stored word of a cache's parts (u32 data, f32 scales and biases) as bits.
fn words(parts: &[&Array]) -> Vec<Vec<u32>> {
    parts
        .iter()
        .map(|a| match a.dtype() {
            Dtype::Uint32 => host::<u32>(a),
            _ => host::<f32>(a).into_iter().map(f32::to_bits).collect(),
        })
        .collect()
}

struct Case {
    batch: i32,
    heads: i32,
    kv_heads: i32,
    d: i32,
    capacity: i32,
    group: i32,
    bits: i32,
}

/// A cache: keys and values quantized by MLX, `[B, H_kv, C, D]`.
struct Packed([Array; 3]);

impl Packed {
    fn new(case: &Case, salt: f32) -> Self {
        let full = values(&[case.batch, case.kv_heads, case.capacity, case.d], salt);
        let (d, s, b) = ops::quantize(&full, case.group, case.bits).unwrap();
        Packed([d, s, b])
    }

    fn view(&self) -> PackedKv<'_> {
        PackedKv { data: &self.0[0], scales: &self.0[1], biases: &self.0[2] }
    }
}

fn dequantized(parts: &[Array; 3], case: &Case) -> Vec<f32> {
    let [d, s, b] = parts;
    host(&ops::dequantize(d, s, b, case.group, case.bits).unwrap())
}

/// Softmax attention of `q` over rows `[start, length)` of the dequantized caches.
fn reference(case: &Case, q: &[f32], keys: &[f32], values: &[f32], how: DecodeAttention) -> Vec<f32> {
    let (d, cap, rep) = (case.d as usize, case.capacity as usize, (case.heads / case.kv_heads) as usize);
    let length = how.length as usize;
    let start = how.window.map_or(0, |w| length.saturating_sub(w as usize));
    let mut out = vec![0.0f32; (case.batch * case.heads) as usize * d];
    for t in 0..(case.batch * case.heads) as usize {
        let group = t / rep;
        let scores: Vec<f32> = (start..length)
            .map(|j| {
                let key = &keys[(group * cap + j) * d..][..d];
                let s: f32 = q[t * d..][..d].iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * how.scale;
                how.softcap.map_or(s, |c| c * (s / c).tanh())
            })
            .collect();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
        let total: f32 = weights.iter().sum();
        for (j, w) in (start..length).zip(&weights) {
            for i in 0..d {
                out[t * d + i] += w / total * values[(group * cap + j) * d + i];
            }
        }
    }
    out
}

fn check(case: &Case, how: DecodeAttention, in_place: bool) {
    let salt = how.slot as f32 * 0.37 + how.length as f32 + case.bits as f32;
    let q = values(&[case.batch, case.heads, 1, case.d], salt);
    let k = values(&[case.batch, case.kv_heads, 1, case.d], salt + 1.0);
    let v = values(&[case.batch, case.kv_heads, 1, case.d], salt + 2.0);
    let (keys, vals) = (Packed::new(case, salt + 3.0), Packed::new(case, salt + 4.0));
    let stored = |p: &Packed, q: &Packed| words(&p.0.iter().chain(&q.0).collect::<Vec<_>>());
    let before = stored(&keys, &vals);
    let cache =
        QuantizedCache { keys: keys.view(), values: vals.view(), group_size: case.group, bits: case.bits };
    let (out, PackedBuffers { keys: new_keys, values: new_values }) = if in_place {
        // SAFETY: the test's own arrays, read afterwards only to see the write.
        unsafe { quantized_decode_attention_in_place(&q, &k, &v, cache, how).unwrap() }
    } else {
        quantized_decode_attention(&q, &k, &v, cache, how).unwrap()
    };
    assert_eq!(out.shape(), &[case.batch, 1, case.heads * case.d]);
    // The new position: exactly MLX's quantization of k and v, at the slot.
    let slot = |a: &Array| a.try_index((Ellipsis, how.slot..how.slot + 1, ..)).unwrap().contiguous().unwrap();
    for (new, row) in [(&new_keys, &k), (&new_values, &v)] {
        let (d, s, b) = ops::quantize(row, case.group, case.bits).unwrap();
        assert_eq!(host::<u32>(&slot(&new[0])), host::<u32>(&d), "{}-bit packed row", case.bits);
        assert_eq!(host::<f32>(&slot(&new[1])), host::<f32>(&s), "{}-bit scales", case.bits);
        assert_eq!(host::<f32>(&slot(&new[2])), host::<f32>(&b), "{}-bit biases", case.bits);
    }
    let expected = reference(
        case,
        &host::<f32>(&q),
        &dequantized(&new_keys, case),
        &dequantized(&new_values, case),
        how,
    );
    let got = host::<f32>(&out);
    let diff = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff < 1e-5, "{} bits, group {}, {how:?}: {diff}", case.bits, case.group);
    let after = stored(&keys, &vals);
    if in_place {
        assert_ne!(after, before, "the inputs' own buffers took the write");
    } else {
        assert_eq!(after, before, "a copy must leave the inputs alone");
    }
}

#[test]
fn quantized_decode_attention_matches_attention_over_the_dequantized_cache() {
    let cases = [
        Case { batch: 1, heads: 4, kv_heads: 2, d: 64, capacity: 16, group: 64, bits: 4 },
        Case { batch: 2, heads: 6, kv_heads: 2, d: 64, capacity: 40, group: 32, bits: 8 },
        Case { batch: 1, heads: 9, kv_heads: 3, d: 64, capacity: 600, group: 64, bits: 8 },
        Case { batch: 1, heads: 8, kv_heads: 1, d: 128, capacity: 300, group: 128, bits: 4 },
        Case { batch: 1, heads: 2, kv_heads: 2, d: 64, capacity: 12, group: 32, bits: 2 },
        Case { batch: 1, heads: 2, kv_heads: 1, d: 96, capacity: 12, group: 32, bits: 3 },
        Case { batch: 1, heads: 2, kv_heads: 1, d: 64, capacity: 12, group: 64, bits: 5 },
        Case { batch: 2, heads: 4, kv_heads: 2, d: 64, capacity: 12, group: 32, bits: 6 },
    ];
    // (Widths the tier has no kernels for are refused, and the cache leaves them to MLX:
    // NEON's 2/3/5/6 bits.)
    for case in cases.iter().filter(|c| lamina_kernels::supports_quantized(c.bits, c.group)) {
        let cap = case.capacity;
        for (slot, length) in [(0, 1), (3, 4), (cap - 1, cap), (2, cap)] {
            for in_place in [false, true] {
                let scale = 1.0 / (case.d as f32).sqrt();
                let plain = DecodeAttention { slot, length, scale, window: None, softcap: None };
                check(case, plain, in_place);
                check(case, DecodeAttention { window: Some(5), ..plain }, in_place);
                check(case, DecodeAttention { softcap: Some(0.5), ..plain }, in_place);
            }
        }
    }
}

#[test]
fn quantized_decode_attention_rejects_what_does_not_fit() {
    let case = Case { batch: 1, heads: 4, kv_heads: 2, d: 64, capacity: 8, group: 32, bits: 4 };
    let q = values(&[1, 4, 1, 64], 0.0);
    let k = values(&[1, 2, 1, 64], 1.0);
    let (keys, vals) = (Packed::new(&case, 2.0), Packed::new(&case, 3.0));
    let cache = QuantizedCache { keys: keys.view(), values: vals.view(), group_size: 32, bits: 4 };
    let how = DecodeAttention { slot: 0, length: 1, scale: 1.0, window: None, softcap: None };
    assert!(quantized_decode_attention(&q, &k, &k, cache, how).is_ok());
    let call =
        |cache: QuantizedCache<'_>, how: DecodeAttention| quantized_decode_attention(&q, &k, &k, cache, how);
    assert!(call(cache, DecodeAttention { slot: 8, length: 9, ..how }).is_err(), "past the capacity");
    assert!(call(cache, DecodeAttention { slot: 3, length: 3, ..how }).is_err(), "slot outside the length");
    assert!(call(QuantizedCache { bits: 8, ..cache }, how).is_err(), "bits the buffers do not hold");
    assert!(call(QuantizedCache { group_size: 64, ..cache }, how).is_err(), "groups the buffers do not hold");
    assert!(call(QuantizedCache { bits: 7, ..cache }, how).is_err(), "7 bits");
    let swapped = QuantizedCache { keys: PackedKv { scales: &keys.0[0], ..keys.view() }, ..cache };
    assert!(call(swapped, how).is_err(), "data where the scales go");
    let half = q.as_dtype(Dtype::Float16).unwrap();
    assert!(quantized_decode_attention(&half, &k, &k, cache, how).is_err(), "dtype");
    let three = values(&[1, 3, 1, 64], 4.0);
    assert!(quantized_decode_attention(&three, &k, &k, cache, how).is_err(), "query heads not a multiple");
}
