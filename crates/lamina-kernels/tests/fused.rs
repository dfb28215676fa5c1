//! The fused decoding primitives against what they replace: several quantized products of
//! one x against one `quantized_matmul` each, the gated unit against activation times
//! product, and the decode attention against a plain-loop softmax attention over the
//! cache (GQA, windows, soft-capping, rotating slots, copies and in-place writes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lamina_kernels::Activations::Exact;
use lamina_kernels::{
    DecodeAttention, GateActivation, PromptAttention, RopeFrequencies, Rotation, decode_attention,
    decode_attention_in_place, prompt_attention, quantized_gated, quantized_products, quantized_residual,
    rope, rotated_products,
};
use mlx_rs::{Array, Dtype};
use support::{Quantized, values};

fn host(a: &Array) -> Vec<f32> {
    a.as_slice::<f32>().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A weight of n rows of k values, quantized by MLX.
fn quantized(n: i32, k: i32, group: i32, bits: i32, salt: f32) -> Quantized {
    Quantized::of(&values(&[n, k], salt), group, bits)
}

#[test]
fn several_products_equal_one_quantized_matmul_each() {
    let k = 128;
    let q = quantized(48, k, 32, 4, 1.0);
    let kp = quantized(16, k, 64, 8, 2.0);
    // 5 bits where the tier has kernels for them (not NEON: it leaves them to MLX, and the
    // fused products refuse them).
    let v = quantized(16, k, 128, 5, 3.0);
    let v = if lamina_kernels::supports_quantized(5, 128) {
        v
    } else {
        let x = values(&[1, 1, k], 0.25);
        assert!(quantized_products(&x, &[q.weight(Exact), v.weight(Exact)], &[]).is_err());
        quantized(16, k, 128, 8, 3.0)
    };
    for rows in [1, 3, 40] {
        let x = values(&[rows, 1, k], 0.25);
        let outs =
            quantized_products(&x, &[q.weight(Exact), kp.weight(Exact), v.weight(Exact)], &[]).unwrap();
        assert_eq!(outs.len(), 3);
        for (out, w) in outs.iter().zip([&q, &kp, &v]) {
            let expected = w.product(&x, Exact);
            assert_eq!(out.shape(), expected.shape());
            assert_eq!(max_diff(&host(out), &host(&expected)), 0.0, "{rows} rows");
        }
    }
    // Output shapes: a decoded token's heads.
    let x = values(&[2, 1, k], 0.5);
    let shapes: [&[i32]; 2] = [&[2, 6, 1, 8], &[2, 2, 1, 8]];
    let outs = quantized_products(&x, &[q.weight(Exact), kp.weight(Exact)], &shapes).unwrap();
    assert_eq!(outs[0].shape(), &[2, 6, 1, 8]);
    assert_eq!(outs[1].shape(), &[2, 2, 1, 8]);
    let flat = q.product(&x, Exact);
    assert_eq!(max_diff(&host(&outs[0]), &host(&flat)), 0.0);
}

#[test]
fn rotated_products_equal_products_then_rope() {
    let k = 64;
    let (q, kp, v) =
        (quantized(48, k, 32, 4, 1.0), quantized(16, k, 32, 8, 2.0), quantized(16, k, 64, 4, 3.0));
    let periods = Array::from_slice(&[1.0f32, 3.0, 9.5, 40.0], &[4]);
    for (dims, traditional, frequencies, scale, offset) in [
        (8, false, RopeFrequencies::Base(10_000.0), 1.0, 0),
        (8, true, RopeFrequencies::Base(500_000.0), 1.0, 77),
        (8, false, RopeFrequencies::Periods(&periods), 0.5, 1234),
        (4, false, RopeFrequencies::Base(10_000.0), 1.0, 9),
    ] {
        let x = values(&[2, 1, k], 0.3);
        let shapes: [&[i32]; 3] = [&[2, 6, 1, 8], &[2, 2, 1, 8], &[2, 2, 1, 8]];
        let rotation = Rotation { dims, traditional, frequencies, scale, offset };
        let ours =
            rotated_products(&x, &[q.weight(Exact), kp.weight(Exact), v.weight(Exact)], &shapes, rotation)
                .unwrap();
        let plain =
            quantized_products(&x, &[q.weight(Exact), kp.weight(Exact), v.weight(Exact)], &shapes).unwrap();
        for i in 0..2 {
            let expected = rope(&plain[i], dims, traditional, frequencies, scale, offset).unwrap();
            assert_eq!(ours[i].shape(), expected.shape());
            assert_eq!(max_diff(&host(&ours[i]), &host(&expected)), 0.0, "output {i}, dims {dims}");
        }
        assert_eq!(max_diff(&host(&ours[2]), &host(&plain[2])), 0.0, "values are not rotated");
        if offset > 0 {
            assert!(max_diff(&host(&ours[0]), &host(&plain[0])) > 1e-3, "the rotation shows");
        }
    }
    let x = values(&[2, 1, k], 0.3);
    let rotation = Rotation {
        dims: 8,
        traditional: false,
        frequencies: RopeFrequencies::Base(1e4),
        scale: 1.0,
        offset: 0,
    };
    let flat = rotated_products(&x, &[q.weight(Exact), kp.weight(Exact)], &[], rotation);
    assert!(flat.is_err(), "outputs must be [B, H, 1, D]");
    let shapes: [&[i32]; 2] = [&[2, 6, 1, 8], &[2, 2, 1, 8]];
    let odd = Rotation { dims: 5, ..rotation };
    assert!(rotated_products(&x, &[q.weight(Exact), kp.weight(Exact)], &shapes, odd).is_err());
    let wide = Rotation { dims: 10, ..rotation };
    assert!(rotated_products(&x, &[q.weight(Exact), kp.weight(Exact)], &shapes, wide).is_err());
    assert!(rotated_products(&x, &[q.weight(Exact)], &shapes[..1], rotation).is_err(), "two outputs");
    let short = Array::from_slice(&[1.0f32, 2.0], &[2]);
    let bad = Rotation { frequencies: RopeFrequencies::Periods(&short), ..rotation };
    assert!(rotated_products(&x, &[q.weight(Exact), kp.weight(Exact)], &shapes, bad).is_err());
}

#[test]
fn the_residual_product_adds_the_residual() {
    let w = quantized(24, 64, 32, 4, 6.0);
    for rows in [1, 5] {
        let x = values(&[rows, 1, 64], 0.1);
        let residual = values(&[rows, 1, 24], 0.9);
        let ours = quantized_residual(&x, w.weight(Exact), &residual).unwrap();
        let expected = residual.add(w.product(&x, Exact)).unwrap();
        assert_eq!(max_diff(&host(&ours), &host(&expected)), 0.0, "{rows} rows");
        // A strided residual reads as its values.
        let strided = values(&[1, 24, rows], 0.4).transpose_axes(&[2, 0, 1]).unwrap();
        let ours = quantized_residual(&x, w.weight(Exact), &strided).unwrap();
        assert_eq!(max_diff(&host(&ours), &host(&strided.add(w.product(&x, Exact)).unwrap())), 0.0);
    }
    let x = values(&[2, 1, 64], 0.1);
    assert!(quantized_residual(&x, w.weight(Exact), &values(&[2, 1, 23], 0.0)).is_err(), "shape");
    let half = values(&[2, 1, 24], 0.0).as_dtype(Dtype::Bfloat16).unwrap();
    assert!(quantized_residual(&x, w.weight(Exact), &half).is_err(), "dtype");
}

#[test]
fn the_gated_unit_is_the_activated_gate_times_up() {
    let k = 64;
    let gate = quantized(40, k, 32, 4, 4.0);
    let up = quantized(40, k, 32, 4, 5.0);
    for rows in [1, 7, 33] {
        let x = values(&[rows, k], 0.75);
        let (g, u) = (gate.product(&x, Exact), up.product(&x, Exact));
        for (activation, act) in [
            (GateActivation::Silu, mlx_rs::nn::silu(&g).unwrap()),
            (GateActivation::GeluTanh, mlx_rs::nn::gelu_approximate(&g).unwrap()),
            (GateActivation::GeluErf, mlx_rs::nn::gelu(&g).unwrap()),
        ] {
            let ours = quantized_gated(&x, gate.weight(Exact), up.weight(Exact), activation).unwrap();
            let expected = act.multiply(&u).unwrap();
            let diff = max_diff(&host(&ours), &host(&expected));
            assert!(diff < 1e-4, "{activation:?}, {rows} rows: {diff}");
        }
    }
}

#[test]
fn products_that_do_not_fit_are_errors() {
    let q = quantized(16, 64, 32, 4, 1.0);
    let narrow = quantized(8, 64, 32, 4, 2.0);
    let x = values(&[1, 64], 0.0);
    let short = values(&[1, 32], 0.0);
    assert!(quantized_products(&short, &[q.weight(Exact)], &[]).is_err(), "width");
    assert!(quantized_products(&x, &[q.weight(Exact)], &[&[1, 15]]).is_err(), "shape");
    assert!(quantized_products(&x, &[], &[]).is_err(), "no operand");
    let half = x.as_dtype(Dtype::Bfloat16).unwrap();
    assert!(quantized_products(&half, &[q.weight(Exact)], &[]).is_err(), "dtype");
    assert!(
        quantized_gated(&x, q.weight(Exact), narrow.weight(Exact), GateActivation::Silu).is_err(),
        "widths"
    );
}

/// The cache and query of one attention case.
struct Case {
    batch: i32,
    heads: i32,
    kv_heads: i32,
    d: i32,
    dv: i32,
    capacity: i32,
}

impl Case {
    fn arrays(&self, salt: f32) -> [Array; 5] {
        let (b, h, g) = (self.batch, self.heads, self.kv_heads);
        [
            values(&[b, h, 1, self.d], salt),
            values(&[b, g, 1, self.d], salt + 1.0),
            values(&[b, g, 1, self.dv], salt + 2.0),
            values(&[b, g, self.capacity, self.d], salt + 3.0),
            values(&[b, g, self.capacity, self.dv], salt + 4.0),
        ]
    }

    /// Softmax attention over slots [start, length) with `k`/`v` written at `slot`, in
    /// plain loops: `[B, 1, H * D_v]`, and the caches after the write.
    fn reference(&self, arrays: &[Array; 5], how: DecodeAttention) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let [q, k, v, keys, values] = arrays.each_ref().map(host);
        let (mut keys, mut values) = (keys, values);
        let (d, dv, cap) = (self.d as usize, self.dv as usize, self.capacity as usize);
        let rep = (self.heads / self.kv_heads) as usize;
        for c in 0..(self.batch * self.kv_heads) as usize {
            let slot = c * cap + how.slot as usize;
            keys[slot * d..(slot + 1) * d].copy_from_slice(&k[c * d..(c + 1) * d]);
            values[slot * dv..(slot + 1) * dv].copy_from_slice(&v[c * dv..(c + 1) * dv]);
        }
        let length = how.length as usize;
        let start = how.window.map_or(0, |w| length.saturating_sub(w as usize));
        let mut out = vec![0.0f32; (self.batch * self.heads) as usize * dv];
        for t in 0..(self.batch * self.heads) as usize {
            let (b, h) = (t / self.heads as usize, t % self.heads as usize);
            let cache = b * self.kv_heads as usize + h / rep;
            let scores: Vec<f32> = (start..length)
                .map(|j| {
                    let key = &keys[(cache * cap + j) * d..][..d];
                    let s: f32 = q[t * d..][..d].iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * how.scale;
                    how.softcap.map_or(s, |cap| cap * (s / cap).tanh())
                })
                .collect();
            let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f32 = weights.iter().sum();
            for (j, w) in (start..length).zip(&weights) {
                let value = &values[(cache * cap + j) * dv..][..dv];
                for i in 0..dv {
                    out[t * dv + i] += w / total * value[i];
                }
            }
        }
        (out, keys, values)
    }
}

fn check(case: &Case, how: DecodeAttention, in_place: bool) {
    let arrays = case.arrays(how.slot as f32 * 0.37 + how.length as f32);
    let [q, k, v, keys, values] = &arrays;
    let before = (host(keys), host(values));
    let (out, new_keys, new_values) = if in_place {
        // SAFETY: the test's own arrays, read afterwards only to see the write.
        unsafe { decode_attention_in_place(q, k, v, [keys, values], how, None).unwrap() }
    } else {
        decode_attention(q, k, v, [keys, values], how, None).unwrap()
    };
    assert_eq!(out.shape(), &[case.batch, 1, case.heads * case.dv]);
    let (expected, expected_keys, expected_values) = case.reference(&arrays, how);
    let diff = max_diff(&host(&out), &expected);
    assert!(diff < 1e-5, "{how:?}: {diff}");
    assert_eq!(host(&new_keys), expected_keys, "{how:?}");
    assert_eq!(host(&new_values), expected_values, "{how:?}");
    if in_place {
        // The inputs' own buffers took the write.
        assert_eq!(host(keys), expected_keys);
    } else {
        assert_eq!((host(keys), host(values)), before, "a copy must leave the inputs alone");
    }
}

#[test]
fn decode_attention_matches_softmax_attention_over_the_cache() {
    let cases = [
        Case { batch: 1, heads: 4, kv_heads: 4, d: 8, dv: 8, capacity: 16 },
        Case { batch: 2, heads: 6, kv_heads: 2, d: 16, dv: 8, capacity: 12 },
        Case { batch: 1, heads: 9, kv_heads: 3, d: 64, dv: 64, capacity: 300 },
        Case { batch: 1, heads: 2, kv_heads: 1, d: 5, dv: 3, capacity: 7 },
        Case { batch: 3, heads: 8, kv_heads: 2, d: 32, dv: 32, capacity: 700 },
        // 8 query heads per KV head x 64 / 16: more accumulators than registers.
        Case { batch: 1, heads: 8, kv_heads: 1, d: 64, dv: 64, capacity: 40 },
    ];
    for case in &cases {
        let cap = case.capacity;
        for (slot, length) in [(0, 1), (3, 4), (cap - 1, cap), (2, cap)] {
            for in_place in [false, true] {
                let scale = 1.0 / (case.d as f32).sqrt();
                let plain = DecodeAttention { slot, length, scale, window: None, softcap: None };
                check(case, plain, in_place);
                check(case, DecodeAttention { window: Some(3), ..plain }, in_place);
                check(case, DecodeAttention { softcap: Some(0.5), ..plain }, in_place);
            }
        }
    }
}

#[test]
fn decode_attention_rejects_what_does_not_fit() {
    let case = Case { batch: 1, heads: 4, kv_heads: 2, d: 8, dv: 8, capacity: 8 };
    let arrays = case.arrays(0.0);
    let [q, k, v, keys, values] = &arrays;
    let how = DecodeAttention { slot: 0, length: 1, scale: 1.0, window: None, softcap: None };
    let call = |how: DecodeAttention| decode_attention(q, k, v, [keys, values], how, None);
    assert!(call(DecodeAttention { slot: 8, length: 9, ..how }).is_err(), "past the capacity");
    assert!(call(DecodeAttention { slot: 3, length: 3, ..how }).is_err(), "slot outside the length");
    assert!(call(DecodeAttention { slot: -1, ..how }).is_err(), "negative slot");
    assert!(decode_attention(q, k, v, [values, keys], how, None).is_ok(), "same shapes either way");
    let three_heads = values_of(&[1, 3, 1, 8]);
    assert!(
        decode_attention(&three_heads, k, v, [keys, values], how, None).is_err(),
        "query heads not a multiple"
    );
    let wide = values_of(&[1, 2, 2, 8]);
    assert!(decode_attention(q, &wide, v, [keys, values], how, None).is_err(), "two new positions");
    let half = q.as_dtype(Dtype::Float16).unwrap();
    assert!(decode_attention(&half, k, v, [keys, values], how, None).is_err(), "dtype");
}

fn values_of(shape: &[i32]) -> Array {
    values(shape, 9.0)
}

/// A prompt's causal attention in plain loops: query `t` at `query_start + t` against keys
/// at `key_start + j` up to its position (within the window), `[B, L, H * D_v]`.
fn prompt_reference(q: &Array, keys: &Array, values: &Array, how: PromptAttention) -> Vec<f32> {
    let (b, h, l, d) = (q.dim(0) as usize, q.dim(1) as usize, q.dim(2) as usize, q.dim(3) as usize);
    let (g, s, dv) = (keys.dim(1) as usize, keys.dim(2) as usize, values.dim(3) as usize);
    let (q, keys, values) = (
        host(&q.flatten(None, None).unwrap()),
        host(&keys.flatten(None, None).unwrap()),
        host(&values.flatten(None, None).unwrap()),
    );
    let rep = h / g;
    let mut out = vec![0.0f32; b * l * h * dv];
    for (bi, hi, t) in (0..b).flat_map(|bi| (0..h).flat_map(move |hi| (0..l).map(move |t| (bi, hi, t)))) {
        let position = how.query_start as i64 + t as i64;
        let cache = bi * g + hi / rep;
        let visible: Vec<usize> = (0..s)
            .filter(|&j| {
                let key = how.key_start as i64 + j as i64;
                key <= position && how.window.is_none_or(|w| position - key < w as i64)
            })
            .collect();
        let query = &q[((bi * h + hi) * l + t) * d..][..d];
        let scores: Vec<f32> = visible
            .iter()
            .map(|&j| {
                let key = &keys[(cache * s + j) * d..][..d];
                let score = query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * how.scale;
                how.softcap.map_or(score, |cap| cap * (score / cap).tanh())
            })
            .collect();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
        let total: f32 = weights.iter().sum();
        for (&j, w) in visible.iter().zip(&weights) {
            for i in 0..dv {
                out[((bi * l + t) * h + hi) * dv + i] += w / total * values[(cache * s + j) * dv + i];
            }
        }
    }
    out
}

#[test]
fn prompt_attention_matches_causal_softmax_attention() {
    // (batch, heads, kv_heads, d, dv, l, s, query_start, key_start)
    let cases = [
        (1, 4, 4, 8, 8, 5, 5, 0, 0),
        (2, 6, 2, 16, 8, 7, 12, 5, 0),   // after 5 cached positions
        (1, 9, 3, 64, 64, 40, 40, 0, 0), // SmolLM2's heads
        (1, 2, 1, 5, 3, 6, 9, 10, 7),    // a rotating window's ordered keys
        (3, 8, 2, 32, 32, 33, 33, 0, 0),
    ];
    for (b, h, g, d, dv, l, s, query_start, key_start) in cases {
        // Queries as a projection gives them: [B, L, H, D] seen as [B, H, L, D].
        let q = values(&[b, l, h, d], 0.1).transpose_axes(&[0, 2, 1, 3]).unwrap();
        let keys = values(&[b, g, s, d], 0.2);
        let vals = values(&[b, g, s, dv], 0.3);
        let scale = 1.0 / (d as f32).sqrt();
        for (window, softcap) in [(None, None), (Some(3), None), (None, Some(0.7)), (Some(4), Some(2.0))] {
            let how = PromptAttention { query_start, key_start, scale, window, softcap };
            let ours = prompt_attention(&q, &keys, &vals, how).unwrap();
            assert_eq!(ours.shape(), &[b, l, h * dv]);
            let diff = max_diff(&host(&ours), &prompt_reference(&q, &keys, &vals, how));
            assert!(diff < 1e-5, "{how:?}: {diff}");
        }
    }
    // Against MLX's own attention with a causal mask.
    let q = values(&[1, 9, 20, 64], 0.4);
    let (keys, vals) = (values(&[1, 3, 20, 64], 0.5), values(&[1, 3, 20, 64], 0.6));
    let how = PromptAttention { query_start: 0, key_start: 0, scale: 0.125, window: None, softcap: None };
    let ours = prompt_attention(&q, &keys, &vals, how).unwrap();
    let mask = mlx_rs::fast::ScaledDotProductAttentionMask::Causal;
    let mlx = mlx_rs::fast::scaled_dot_product_attention(&q, &keys, &vals, 0.125, mask, None).unwrap();
    let mlx = mlx.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[1, 20, 9 * 64]).unwrap();
    assert!(max_diff(&host(&ours), &host(&mlx)) < 1e-5);
    // Its gradient is that of MLX's attention.
    let cotangent = values(&[1, 20, 9 * 64], 0.7);
    let grads = |f: &dyn Fn(&[Array]) -> Array| {
        let primals = [q.clone(), keys.clone(), vals.clone()];
        mlx_rs::transforms::vjp(|p: &[Array]| vec![f(p)], &primals, std::slice::from_ref(&cotangent))
            .unwrap()
            .1
    };
    let ours = grads(&|p| prompt_attention(&p[0], &p[1], &p[2], how).unwrap());
    let mlx = grads(&|p| {
        let causal = mlx_rs::fast::ScaledDotProductAttentionMask::Causal;
        let out =
            mlx_rs::fast::scaled_dot_product_attention(&p[0], &p[1], &p[2], 0.125, causal, None).unwrap();
        out.transpose_axes(&[0, 2, 1, 3]).unwrap().reshape(&[1, 20, 9 * 64]).unwrap()
    });
    let dense = |a: &Array| host(&a.flatten(None, None).unwrap());
    for (a, b) in ours.iter().zip(&mlx) {
        assert!(max_diff(&dense(a), &dense(b)) < 1e-4);
    }
    // What does not fit.
    let half = q.as_dtype(Dtype::Bfloat16).unwrap();
    assert!(prompt_attention(&half, &keys, &vals, how).is_err(), "dtype");
    assert!(prompt_attention(&values(&[1, 8, 20, 64], 0.0), &keys, &vals, how).is_err(), "groups");
    assert!(prompt_attention(&q, &values(&[1, 3, 20, 32], 0.0), &vals, how).is_err(), "head size");
    assert!(prompt_attention(&q, &keys, &values(&[1, 3, 19, 64], 0.0), how).is_err(), "lengths");
    let negative = PromptAttention { window: Some(-1), ..how };
    assert!(prompt_attention(&q, &keys, &vals, negative).is_err(), "window");
}
