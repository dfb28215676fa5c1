//! Smoke tests of the MLX engine as lamina builds it on this platform: each checks an MLX
//! operation lamina relies on against an independent computation in plain Rust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use half::{bf16, f16};
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::transforms::value_and_grad;
use mlx_rs::{Array, Dtype, random};

/// Deterministic, irregular test values in [-1, 1].
fn values(n: usize, salt: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + 1.0) * 0.7317 + salt).sin()).collect()
}

fn to_vec(a: &Array) -> Vec<f32> {
    a.as_type::<f32>().unwrap().as_slice::<f32>().to_vec()
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len(), "length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * (1.0 + e.abs()), "element {i}: {a} vs {e} (tol {tol})");
    }
}

#[test]
fn arrays_are_created_and_combined_elementwise() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = Array::from_slice(&[10.0f32, 20.0, 30.0], &[3]);
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.dtype(), Dtype::Float32);
    let c = (&a + &b) * 2.0f32 - 1.0f32;
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(to_vec(&c), vec![21.0, 43.0, 65.0, 27.0, 49.0, 71.0]);
    assert_eq!(a.sum(None).unwrap().item_exact::<f32>(), 21.0);
    assert_eq!(to_vec(&a.sum_axis(0, None).unwrap()), vec![5.0, 7.0, 9.0]);
    let zeros = Array::zeros::<f32>(&[4, 2]).unwrap();
    assert_eq!(zeros.size(), 8);
    assert_eq!(zeros.sum(None).unwrap().item_exact::<f32>(), 0.0);
    let ids = Array::from_slice(&[0i32, 2], &[2]);
    assert_eq!(to_vec(&b.take_axis(&ids, 0).unwrap()), vec![10.0, 30.0]);
}

#[test]
fn matmul_matches_a_naive_product() {
    let (m, k, n) = (67usize, 45usize, 33usize);
    let a = values(m * k, 0.1);
    let b = values(k * n, 0.9);
    let mut expected = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            expected[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    let product = Array::from_slice(&a, &[m as i32, k as i32])
        .matmul(Array::from_slice(&b, &[k as i32, n as i32]))
        .unwrap();
    assert_eq!(product.shape(), &[m as i32, n as i32]);
    assert_close(&to_vec(&product), &expected, 1e-5);
}

/// Products with one row or one column (what decoding does) in every transpose
/// combination: on Linux they take lamina's gemv route (crates/mlx-sys/compat/blas_shim.c).
#[test]
fn vector_products_match_a_naive_product_in_every_layout() {
    let naive = |a: &[f32], b: &[f32], m: usize, k: usize, n: usize| -> Vec<f32> {
        (0..m * n).map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum()).collect()
    };
    for (m, k, n) in [(1usize, 37usize, 53usize), (41, 29, 1), (1, 64, 1), (3, 5, 7)] {
        let a = values(m * k, 0.3);
        let b = values(k * n, 1.7);
        let expected = naive(&a, &b, m, k, n);
        let (mi, ki, ni) = (m as i32, k as i32, n as i32);
        let a_plain = Array::from_slice(&a, &[mi, ki]);
        let b_plain = Array::from_slice(&b, &[ki, ni]);
        // The same operands stored transposed, then viewed back.
        let a_t = a_plain.transpose().unwrap().contiguous().unwrap().transpose().unwrap();
        let b_t = b_plain.transpose().unwrap().contiguous().unwrap().transpose().unwrap();
        for (lhs, rhs) in [(&a_plain, &b_plain), (&a_t, &b_plain), (&a_plain, &b_t), (&a_t, &b_t)] {
            assert_close(&to_vec(&lhs.matmul(rhs).unwrap()), &expected, 1e-5);
        }
        let bias = Array::from_slice(&values(n, 2.2), &[ni]);
        let with_bias: Vec<f32> =
            expected.iter().enumerate().map(|(i, v)| v + values(n, 2.2)[i % n]).collect();
        let addmm = mlx_rs::ops::addmm(&bias, &a_plain, &b_t, None, None).unwrap();
        assert_close(&to_vec(&addmm), &with_bias, 1e-5);
    }
}

#[test]
fn fast_rms_norm_matches_its_definition() {
    let (rows, dim, eps) = (5usize, 24usize, 1e-5f32);
    let x = values(rows * dim, 0.3);
    let w = values(dim, 2.0);
    let mut expected = Vec::with_capacity(rows * dim);
    for row in x.chunks(dim) {
        let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + eps).sqrt();
        expected.extend(row.iter().zip(&w).map(|(v, w)| v * inv * w));
    }
    let out = fast::rms_norm(
        Array::from_slice(&x, &[rows as i32, dim as i32]),
        Some(&Array::from_slice(&w, &[dim as i32])),
        eps,
    )
    .unwrap();
    assert_close(&to_vec(&out), &expected, 1e-5);
}

/// Closed-form RoPE over a `[1, 1, L, D]` input starting at position `offset`.
fn rope_reference(
    x: &[f32],
    len: usize,
    dim: usize,
    base: f32,
    offset: usize,
    traditional: bool,
) -> Vec<f32> {
    let half = dim / 2;
    let mut out = x.to_vec();
    for pos in 0..len {
        let row = &x[pos * dim..(pos + 1) * dim];
        for i in 0..half {
            let theta = (offset + pos) as f32 * base.powf(-2.0 * i as f32 / dim as f32);
            let (sin, cos) = theta.sin_cos();
            let (a, b) = if traditional { (2 * i, 2 * i + 1) } else { (i, i + half) };
            out[pos * dim + a] = row[a] * cos - row[b] * sin;
            out[pos * dim + b] = row[a] * sin + row[b] * cos;
        }
    }
    out
}

#[test]
fn fast_rope_matches_the_closed_form_in_both_layouts() {
    let (len, dim, base, offset) = (7usize, 16usize, 10_000.0f32, 3usize);
    let x = values(len * dim, 1.3);
    let input = Array::from_slice(&x, &[1, 1, len as i32, dim as i32]);
    for traditional in [false, true] {
        let out = fast::rope(&input, dim as i32, traditional, base, 1.0, offset as i32, None).unwrap();
        let expected = rope_reference(&x, len, dim, base, offset, traditional);
        assert_close(&to_vec(&out), &expected, 1e-5);
    }
}

/// Unfused causal attention in plain Rust, with grouped KV heads.
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    len: usize,
    dim: usize,
) -> Vec<f32> {
    let scale = 1.0 / (dim as f32).sqrt();
    let mut out = vec![0.0f32; heads * len * dim];
    for h in 0..heads {
        let kv = h / (heads / kv_heads);
        for i in 0..len {
            let qi = &q[(h * len + i) * dim..][..dim];
            let scores: Vec<f32> = (0..=i)
                .map(|j| {
                    qi.iter().zip(&k[(kv * len + j) * dim..][..dim]).map(|(a, b)| a * b).sum::<f32>() * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f32::MIN, f32::max);
            let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = exp.iter().sum();
            for (j, p) in exp.iter().enumerate() {
                for d in 0..dim {
                    out[(h * len + i) * dim + d] += p / total * v[(kv * len + j) * dim + d];
                }
            }
        }
    }
    out
}

#[test]
fn fused_attention_matches_unfused_causal_gqa() {
    let (heads, kv_heads, len, dim) = (4usize, 2usize, 9usize, 8usize);
    let q = values(heads * len * dim, 0.2);
    let k = values(kv_heads * len * dim, 0.5);
    let v = values(kv_heads * len * dim, 0.8);
    let shape = |h: usize| [1, h as i32, len as i32, dim as i32];
    let out = fast::scaled_dot_product_attention(
        Array::from_slice(&q, &shape(heads)),
        Array::from_slice(&k, &shape(kv_heads)),
        Array::from_slice(&v, &shape(kv_heads)),
        1.0 / (dim as f32).sqrt(),
        ScaledDotProductAttentionMask::Causal,
        None,
    )
    .unwrap();
    assert_eq!(out.shape(), &shape(heads));
    assert_close(&to_vec(&out), &attention_reference(&q, &k, &v, heads, kv_heads, len, dim), 1e-5);
}

#[test]
fn value_and_grad_gives_the_analytic_gradient() {
    // f(x, w) = sum(sin(x) * w): df/dx = cos(x) * w.
    let x = values(6, 0.4);
    let w = values(6, 1.1);
    let f = |args: &[Array]| -> Vec<Array> { vec![(args[0].sin().unwrap() * &args[1]).sum(None).unwrap()] };
    let args = [Array::from_slice(&x, &[6]), Array::from_slice(&w, &[6])];
    let (value, grads) = value_and_grad(f)(&args).unwrap();
    let expected_value: f32 = x.iter().zip(&w).map(|(x, w)| x.sin() * w).sum();
    assert_close(&[value[0].item_exact::<f32>()], &[expected_value], 1e-6);
    let expected_grad: Vec<f32> = x.iter().zip(&w).map(|(x, w)| x.cos() * w).collect();
    assert_close(&to_vec(&grads[0]), &expected_grad, 1e-6);
}

#[test]
fn safetensors_round_trip_keeps_names_dtypes_and_values() {
    let dir = std::env::temp_dir().join(format!("lamina-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("round_trip.safetensors");
    let weight = Array::from_slice(&values(12, 0.0), &[3, 4]);
    let ids = Array::from_slice(&[7i32, -1, 3], &[3]);
    let half = weight.as_type::<bf16>().unwrap();
    let arrays = HashMap::from([("model.weight", &weight), ("ids", &ids), ("half", &half)]);
    let metadata = HashMap::from([("format".to_owned(), "mlx".to_owned())]);
    Array::save_safetensors(arrays, &metadata, &path).unwrap();
    let loaded = Array::load_safetensors(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded["model.weight"].shape(), &[3, 4]);
    assert_eq!(to_vec(&loaded["model.weight"]), to_vec(&weight));
    assert_eq!(loaded["ids"].dtype(), Dtype::Int32);
    assert_eq!(loaded["ids"].as_slice::<i32>(), &[7, -1, 3]);
    assert_eq!(loaded["half"].dtype(), Dtype::Bfloat16);
    assert_eq!(to_vec(&loaded["half"]), to_vec(&half));
}

#[test]
fn default_seeded_random_arrays_differ_and_look_normal() {
    let a = random::normal::<f32>(&[20_000], None, None, None).unwrap();
    let b = random::normal::<f32>(&[20_000], None, None, None).unwrap();
    let (a, b) = (to_vec(&a), to_vec(&b));
    assert_ne!(a, b, "two draws from the default state must differ");
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((var - 1.0).abs() < 0.05, "variance {var}");
}

#[test]
fn explicit_keys_make_random_arrays_reproducible() {
    let draw = |seed| {
        let key = random::key(seed).unwrap();
        to_vec(&random::uniform::<_, f32>(0.0f32, 1.0f32, &[64], &key).unwrap())
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
    assert!(draw(7).iter().all(|v| (0.0..1.0).contains(v)));
}

#[test]
fn half_precision_round_trips_match_the_half_crate() {
    let x = vec![0.5f32, -2.0, 1024.0, 0.1, 2.71, -65504.0, 1e-3, 7.0e4];
    let input = Array::from_slice(&x, &[x.len() as i32]);
    let as_f16 = input.as_type::<f16>().unwrap();
    assert_eq!(as_f16.dtype(), Dtype::Float16);
    let expected: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
    assert_eq!(as_f16.as_slice::<f16>(), expected.as_slice());
    let back: Vec<f32> = expected.iter().map(|v| v.to_f32()).collect();
    assert_eq!(to_vec(&as_f16), back);

    let as_bf16 = input.as_type::<bf16>().unwrap();
    let expected: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
    assert_eq!(as_bf16.as_slice::<bf16>(), expected.as_slice());
    let exact = [0.5f32, -2.0, 1024.0];
    let round = Array::from_slice(&exact, &[3]).as_type::<bf16>().unwrap().as_type::<f32>().unwrap();
    assert_eq!(round.as_slice::<f32>(), &exact);
}
