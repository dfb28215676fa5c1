//! lamina's CPU matmul for bf16/f16 weights against MLX's own matmul: both half dtypes,
//! f32 and half inputs, one-row (decode) and many-row (prefill) shapes, sizes that leave
//! vector tails and span several weight tiles, strided inputs, batch dimensions,
//! gradients, and shape errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lamina_kernels::half_matmul;
use mlx_rs::{Array, Dtype, ops};
use support::{max_rel_diff, values};

fn f32(a: &Array) -> Array {
    a.as_dtype(Dtype::Float32).unwrap()
}

/// The result dtype's rounding: one ulp of the larger results, relative.
fn tolerance(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::Bfloat16 => 8e-3,
        Dtype::Float16 => 1e-3,
        _ => 2e-5,
    }
}

fn check(m: i32, n: i32, k: i32, w_dtype: Dtype, x_dtype: Dtype) {
    let w = values(&[n, k], k as f32 + 0.25).as_dtype(w_dtype).unwrap();
    let x = values(&[m, k], 0.5).as_dtype(x_dtype).unwrap();
    let ours = half_matmul(&x, &w).unwrap();
    let mlx = ops::matmul(&x, w.t()).unwrap();
    assert_eq!(ours.dtype(), mlx.dtype(), "{w_dtype:?} x {x_dtype:?}");
    // Against MLX's own op, and against the exact f32 product of the same stored values.
    let exact = ops::matmul(f32(&x), f32(&w).t()).unwrap();
    let tol = tolerance(ours.dtype());
    let (to_mlx, to_exact) = (max_rel_diff(&ours, &mlx), max_rel_diff(&ours, &exact));
    assert!(to_mlx < 2.0 * tol, "m {m} n {n} k {k} {w_dtype:?} x {x_dtype:?}: vs MLX {to_mlx}");
    assert!(to_exact < tol, "m {m} n {n} k {k} {w_dtype:?} x {x_dtype:?}: vs exact {to_exact}");
}

#[test]
fn both_half_dtypes_match_mlx_for_one_row_and_many() {
    for w_dtype in [Dtype::Bfloat16, Dtype::Float16] {
        for x_dtype in [Dtype::Float32, w_dtype] {
            for (m, n, k) in
                [(1, 1, 1), (1, 37, 40), (1, 600, 576), (2, 5, 37), (3, 19, 64), (7, 300, 24), (40, 513, 96)]
            {
                check(m, n, k, w_dtype, x_dtype);
            }
        }
    }
}

#[test]
fn a_large_one_row_product_splits_its_rows_and_matches() {
    // 1536 x 576 bf16 = 1.7 MiB: above the size at which rows go to the pool.
    check(1, 1536, 576, Dtype::Bfloat16, Dtype::Float32);
    check(1, 1536, 576, Dtype::Float16, Dtype::Float16);
}

#[test]
fn strided_inputs_and_batch_dimensions() {
    let w = values(&[24, 40], 1.0).as_dtype(Dtype::Bfloat16).unwrap();
    // A transposed view of x: [40, 6] -> [6, 40], strided.
    let x = values(&[40, 6], 2.0).t();
    let exact = ops::matmul(&x, f32(&w).t()).unwrap();
    assert!(max_rel_diff(&half_matmul(&x, &w).unwrap(), &exact) < 2e-5);
    // A strided weight (a transposed view) is read through its strides.
    let wt = values(&[40, 24], 3.0).as_dtype(Dtype::Float16).unwrap().t();
    let exact = ops::matmul(&x, f32(&wt).t()).unwrap();
    assert!(max_rel_diff(&half_matmul(&x, &wt).unwrap(), &exact) < 2e-5);
    let x = values(&[2, 3, 40], 4.0);
    let ours = half_matmul(&x, &w).unwrap();
    assert_eq!(ours.shape(), [2, 3, 24]);
    assert!(max_rel_diff(&ours, &ops::matmul(&x, f32(&w).t()).unwrap()) < 2e-5);
}

#[test]
fn gradients_flow_to_x_and_w() {
    let w = values(&[9, 16], 5.0).as_dtype(Dtype::Bfloat16).unwrap();
    let x = values(&[3, 16], 6.0);
    let weights = values(&[3, 9], 7.0);
    let weighted = |y: Array| vec![f32(&y).multiply(&weights).unwrap().sum(None).unwrap()];
    let ours = |inputs: &[Array]| weighted(half_matmul(&inputs[0], &inputs[1]).unwrap());
    let reference = |inputs: &[Array]| weighted(ops::matmul(&inputs[0], f32(&inputs[1]).t()).unwrap());
    let primals = [x, w];
    let one = [Array::from_f32(1.0)];
    let (_, got) = mlx_rs::transforms::vjp(ours, &primals, &one).unwrap();
    let (_, want) = mlx_rs::transforms::vjp(reference, &primals, &one).unwrap();
    assert!(max_rel_diff(&got[0], &want[0]) < 2e-5);
    assert_eq!(got[1].dtype(), Dtype::Bfloat16);
    assert!(max_rel_diff(&got[1], &want[1]) < 8e-3);
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let w = values(&[4, 8], 0.0).as_dtype(Dtype::Bfloat16).unwrap();
    let err = half_matmul(&values(&[2, 7], 0.0), &w).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
}
