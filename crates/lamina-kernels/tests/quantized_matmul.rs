//! lamina's CPU quantized matmul against MLX's own `quantized_matmul`: every width and
//! group size, one-row (decode) and many-row (prefill) shapes, odd sizes, strided inputs,
//! batch dimensions, gradients, and shape errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lamina_kernels::{Activations, quantized_matmul};
use mlx_rs::ops;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};
use support::{max_rel_diff, values};

const EXACT: Activations = Activations::Exact;

fn check(m: i32, n: i32, k: i32, group: i32, bits: i32) {
    let w = values(&[n, k], bits as f32 + group as f32);
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let x = values(&[m, k], 0.5);
    let ours = quantized_matmul(&x, &packed, &scales, &biases, group, bits, EXACT).unwrap();
    let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits).unwrap();
    let diff = max_rel_diff(&ours, &mlx);
    assert!(diff < 2e-5, "m {m} n {n} k {k} group {group} bits {bits}: {diff}");
}

#[test]
fn every_width_and_group_matches_mlx_for_one_row_and_many() {
    for bits in [2, 3, 4, 5, 6, 8] {
        for group in [32, 64, 128] {
            for (m, n) in [(1, 1), (1, 37), (2, 5), (3, 19), (4, 64), (5, 7), (17, 300), (33, 40)] {
                check(m, n, 2 * group, group, bits);
            }
        }
    }
}

#[test]
fn model_shapes_match_mlx() {
    // SmolLM2-135M's projections and its tied 49152-row head, at decode and prefill.
    for (n, k) in [(576, 576), (1536, 576), (576, 1536), (49_152, 576)] {
        for m in [1, 9, 16, 40] {
            check(m, n, k, 32, 4);
            check(m, n, k, 64, 8);
        }
    }
}

#[test]
fn batch_dimensions_and_strided_inputs_are_read_correctly() {
    let (group, bits) = (32, 4);
    let w = values(&[24, 64], 1.0);
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let x = values(&[2, 3, 64], 2.0);
    let ours = quantized_matmul(&x, &packed, &scales, &biases, group, bits, EXACT).unwrap();
    assert_eq!(ours.shape(), &[2, 3, 24]);
    let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits).unwrap();
    assert!(max_rel_diff(&ours, &mlx) < 2e-5);
    // A transposed (non-contiguous) view of x.
    let xt = values(&[64, 5], 3.0).t();
    let ours = quantized_matmul(&xt, &packed, &scales, &biases, group, bits, EXACT).unwrap();
    let mlx = ops::quantized_matmul(&xt, &packed, &scales, &biases, true, group, bits).unwrap();
    assert!(max_rel_diff(&ours, &mlx) < 2e-5);
    // A slice of a decode step (one row of a bigger batch).
    let row = x.index((1, 2..3, ..));
    let ours = quantized_matmul(&row, &packed, &scales, &biases, group, bits, EXACT).unwrap();
    let mlx = ops::quantized_matmul(&row, &packed, &scales, &biases, true, group, bits).unwrap();
    assert!(max_rel_diff(&ours, &mlx) < 2e-5);
}

#[test]
fn gradients_with_respect_to_x_flow_through_the_kernel() {
    let (group, bits) = (32, 4);
    let w = values(&[16, 64], 4.0);
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let x = values(&[3, 64], 5.0);
    let loss = |kernel: bool| {
        let (packed, scales, biases) = (packed.clone(), scales.clone(), biases.clone());
        move |x: &Array| -> Result<Array, mlx_rs::error::Exception> {
            let y = if kernel {
                quantized_matmul(x, &packed, &scales, &biases, group, bits, EXACT)
                    .map_err(|e| mlx_rs::error::Exception::custom(e.to_string()))?
            } else {
                ops::quantized_matmul(x, &packed, &scales, &biases, true, group, bits)?
            };
            y.square()?.sum(None)
        }
    };
    let ours = mlx_rs::transforms::grad(loss(true))(&x).unwrap();
    let mlx = mlx_rs::transforms::grad(loss(false))(&x).unwrap();
    assert_eq!(ours.shape(), &[3, 64]);
    assert!(max_rel_diff(&ours, &mlx) < 1e-4);
}

#[test]
fn other_dtypes_go_through_mlx_and_bad_shapes_are_errors() {
    let (group, bits) = (32, 4);
    let w = values(&[8, 64], 6.0);
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let x16 = values(&[1, 64], 7.0).as_dtype(Dtype::Bfloat16).unwrap();
    let (s16, b16) = (scales.as_dtype(Dtype::Bfloat16).unwrap(), biases.as_dtype(Dtype::Bfloat16).unwrap());
    let out = quantized_matmul(&x16, &packed, &s16, &b16, group, bits, EXACT).unwrap();
    assert_eq!(out.dtype(), Dtype::Bfloat16);
    let wrong = values(&[1, 96], 8.0);
    let err = quantized_matmul(&wrong, &packed, &scales, &biases, group, bits, EXACT).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn many_parallel_products_in_a_row_finish_and_agree() {
    // Hundreds of thousands of parallel regions in a decode: the pool's hand-over between
    // regions must never lose or repeat an index (a hang, or a wrong row). A watchdog turns
    // a hang into a failure.
    let (group, bits) = (32, 4);
    let w = values(&[512, 256], 7.0);
    let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
    let x = values(&[1, 256], 0.5);
    let expected = ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits).unwrap();
    let expected: Vec<f32> = expected.as_slice::<f32>().to_vec();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..3000 {
            let y = quantized_matmul(&x, &packed, &scales, &biases, group, bits, EXACT).unwrap();
            let diff =
                y.as_slice::<f32>().iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            if diff > 1e-4 {
                let _ = done.send(Err(format!("product {i} differs by {diff}")));
                return;
            }
        }
        let _ = done.send(Ok(()));
    });
    match finished.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("3000 products did not finish in 5 minutes: the pool hung"),
    }
}

#[test]
fn half_precision_scales_and_biases_are_read_as_stored() {
    // GGUF stores per-block scales in f16; held as f16 they are a quarter fewer bytes per
    // 4-bit weight. MLX's own op promotes them to f32: the same numbers.
    for bits in [2, 3, 4, 5, 6, 8] {
        for (m, n, k) in [(1, 37, 64), (1, 300, 256), (5, 40, 128), (40, 33, 64)] {
            let w = values(&[n, k], bits as f32);
            for group in [32, 64, 128].into_iter().filter(|g| k % g == 0) {
                let (packed, scales, biases) = ops::quantize(&w, group, bits).unwrap();
                let (scales, biases) =
                    (scales.as_dtype(Dtype::Float16).unwrap(), biases.as_dtype(Dtype::Float16).unwrap());
                let x = values(&[m, k], 0.5);
                let ours = quantized_matmul(&x, &packed, &scales, &biases, group, bits, EXACT).unwrap();
                assert_eq!(ours.dtype(), Dtype::Float32);
                let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, group, bits).unwrap();
                let diff = max_rel_diff(&ours, &mlx);
                assert!(diff < 2e-5, "bits {bits}, group {group}, {m}x{n}x{k}: {diff}");
            }
        }
    }
}

#[test]
fn widths_and_groups_outside_the_layout_are_refused_clearly() {
    let w = values(&[8, 64], 1.0);
    let (packed, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
    let x = values(&[1, 64], 0.5);
    let err = quantized_matmul(&x, &packed, &scales, &biases, 32, 7, EXACT).unwrap_err().to_string();
    assert!(err.contains("7 bits") && err.contains("2, 3, 4, 5, 6 or 8"), "{err}");
    let err = quantized_matmul(&x, &packed, &scales, &biases, 16, 4, EXACT).unwrap_err().to_string();
    assert!(err.contains("group 16") && err.contains("multiples of 32"), "{err}");
    assert!(!lamina_kernels::supports_quantized(7, 32));
    assert!(!lamina_kernels::supports_quantized(4, 48));
}

#[test]
fn two_threads_calling_the_kernels_at_once_get_their_own_answers() {
    let mut handles = Vec::new();
    for t in 0..2 {
        handles.push(std::thread::spawn(move || {
            let bits = [4, 5][t];
            let w = values(&[300, 256], bits as f32);
            let (packed, scales, biases) = ops::quantize(&w, 64, bits).unwrap();
            for m in [1, 7, 40, 1, 3] {
                let x = values(&[m, 256], t as f32 + 0.25);
                let ours = quantized_matmul(&x, &packed, &scales, &biases, 64, bits, EXACT).unwrap();
                let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, 64, bits).unwrap();
                let diff = max_rel_diff(&ours, &mlx);
                assert!(diff < 2e-5, "thread {t}, m {m}: {diff}");
            }
        }));
    }
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn the_tier_is_the_machines_best_capped_by_lamina_isa() {
    // This architecture's tiers, lowest first (a cap from another architecture gives the
    // machine's best).
    let tiers: &[&str] = if cfg!(target_arch = "x86_64") {
        &["portable", "avx2", "avx512", "avx512_vbmi"]
    } else if cfg!(target_arch = "aarch64") {
        &["portable", "neon", "neon_dotprod"]
    } else {
        &["portable"]
    };
    let isa = lamina_kernels::isa();
    assert!(tiers.contains(&isa), "{isa}");
    if let Some(wanted) = std::env::var("LAMINA_ISA").ok().filter(|w| tiers.contains(&w.as_str())) {
        let rank = |name: &str| tiers.iter().position(|t| *t == name);
        // A cap at or below the machine's tier is taken as given.
        if rank(&wanted) <= rank(isa) {
            assert_eq!(isa, wanted);
        }
    }
}
