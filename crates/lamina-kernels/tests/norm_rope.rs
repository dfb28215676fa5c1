//! RMSNorm and RoPE against MLX's own `fast` ops (whose CPU fallbacks they replace): the
//! same values for every variant (weights, Gemma's unit offset, split-halves and
//! interleaved rotation, partial rotation, explicit periods, offsets, scales, strided
//! inputs), the same gradients, MLX's op for other dtypes, and bad arguments refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lamina_kernels::{RopeFrequencies, rms_norm, rope};
use mlx_rs::{Array, Dtype, fast};

/// Deterministic values in [-2, 2).
fn values(shape: &[i32], salt: f32) -> Array {
    let n: i32 = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| 2.0 * ((i as f32 * 0.7548 + salt) * 12.9898).sin()).collect();
    Array::from_slice(&v, shape)
}

/// The largest difference relative to the larger magnitude (at least 1).
fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_dtype(Dtype::Float32).unwrap(), b.as_dtype(Dtype::Float32).unwrap());
    a.as_slice::<f32>()
        .iter()
        .zip(b.as_slice::<f32>())
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1.0))
        .fold(0.0, f32::max)
}

/// The largest distance in units of the last place of a half-precision `dtype` between
/// same-shaped arrays (their bits read as ordered integers).
fn ulps(a: &Array, b: &Array, dtype: Dtype) -> i32 {
    assert_eq!((a.shape(), a.dtype()), (b.shape(), dtype));
    let bits = |x: &Array| -> Vec<i32> {
        let x = x.flatten(None, None).unwrap().view::<i16>().unwrap();
        x.as_slice::<i16>()
            .iter()
            .map(|&v| if v < 0 { i32::from(i16::MIN) - i32::from(v) } else { i32::from(v) })
            .collect()
    };
    bits(a).iter().zip(bits(b)).map(|(x, y)| (x - y).abs()).max().unwrap_or(0)
}

#[test]
fn rms_norm_equals_mlx_for_every_variant() {
    let strided = values(&[4, 3, 48], 0.3).transpose_axes(&[1, 0, 2]).unwrap();
    for x in [values(&[1, 1, 576], 0.1), values(&[3, 5, 40], 0.2), strided, values(&[7], 0.4)] {
        let k = x.dim(-1);
        let w = values(&[k], 1.5);
        for eps in [1e-5, 1e-6, 0.5] {
            let ours = rms_norm(&x, Some(&w), eps, false).unwrap();
            assert!(max_diff(&ours, &fast::rms_norm(&x, Some(&w), eps).unwrap()) < 2e-6);
            let ours = rms_norm(&x, None, eps, false).unwrap();
            assert!(max_diff(&ours, &fast::rms_norm(&x, None, eps).unwrap()) < 2e-6);
            let plus_one = w.add(Array::from_f32(1.0)).unwrap();
            let ours = rms_norm(&x, Some(&w), eps, true).unwrap();
            assert!(max_diff(&ours, &fast::rms_norm(&x, Some(&plus_one), eps).unwrap()) < 2e-6);
        }
    }
    // Half precision: MLX's roundings, op by op (within one step of the last bit where the
    // f32 sums differ in order).
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        let strided = values(&[4, 3, 64], 0.3).transpose_axes(&[1, 0, 2]).unwrap().as_dtype(dtype).unwrap();
        for x in [values(&[2, 576], 0.9).as_dtype(dtype).unwrap(), strided] {
            let w = values(&[x.dim(-1)], 0.8).as_dtype(dtype).unwrap();
            let nudged = x.multiply(Array::from_f32(1.01).as_dtype(dtype).unwrap()).unwrap();
            assert!(ulps(&x, &nudged, dtype) > 1, "the distance sees a 1% change");
            let ours = rms_norm(&x, Some(&w), 1e-5, false).unwrap();
            assert_eq!(ours.dtype(), dtype);
            assert!(ulps(&ours, &fast::rms_norm(&x, Some(&w), 1e-5).unwrap(), dtype) <= 1);
            let plus_one = w.add(Array::from_f32(1.0).as_dtype(dtype).unwrap()).unwrap();
            let ours = rms_norm(&x, Some(&w), 1e-5, true).unwrap();
            assert!(ulps(&ours, &fast::rms_norm(&x, Some(&plus_one), 1e-5).unwrap(), dtype) <= 1);
        }
    }
    // Mixed dtypes go to MLX's op.
    let (x, w) = (values(&[2, 8], 0.1), values(&[8], 0.2).as_dtype(Dtype::Bfloat16).unwrap());
    assert!(
        rms_norm(&x, Some(&w), 1e-5, false)
            .unwrap()
            .eq_values(fast::rms_norm(&x, Some(&w), 1e-5).unwrap())
            .unwrap()
    );
}

#[test]
fn rope_equals_mlx_for_every_variant() {
    let periods: Vec<f32> = (0..16).map(|i| 1.7f32.powi(i) * (1.0 + 0.1 * i as f32)).collect();
    let periods = Array::from_slice(&periods, &[16]);
    let strided = values(&[2, 5, 3, 32], 0.5).transpose_axes(&[0, 2, 1, 3]).unwrap();
    for x in [values(&[1, 9, 1, 64], 0.1), values(&[2, 3, 7, 32], 0.2), strided, values(&[4, 6, 40], 0.3)] {
        let d = x.dim(-1);
        for (dims, traditional, scale, offset) in [
            (d, false, 1.0, 0),
            (d, false, 1.0, 137),
            (d, true, 1.0, 5),
            (32, false, 0.25, 4000),
            (16, true, 2.0, 9),
        ] {
            for base in [10_000.0f32, 1_000_000.0] {
                let ours = rope(&x, dims, traditional, RopeFrequencies::Base(base), scale, offset).unwrap();
                let mlx = fast::rope(&x, dims, traditional, base, scale, offset, None).unwrap();
                // Angles up to ~4000 radians: MLX's vectorised sin/cos and libm's differ by
                // a few ulp of the angle there.
                let diff = max_diff(&ours, &mlx);
                assert!(diff < 1e-4, "dims {dims} traditional {traditional} offset {offset}: {diff}");
            }
            if dims == 32 {
                let ours =
                    rope(&x, dims, traditional, RopeFrequencies::Periods(&periods), scale, offset).unwrap();
                let mlx = fast::rope(&x, dims, traditional, None, scale, offset, &periods).unwrap();
                assert!(max_diff(&ours, &mlx) < 1e-4);
            }
        }
    }
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        let x = values(&[1, 2, 3, 64], 0.6).as_dtype(dtype).unwrap();
        for (dims, traditional, offset) in [(64, false, 3), (32, true, 90), (64, false, 0)] {
            let ours = rope(&x, dims, traditional, RopeFrequencies::Base(10_000.0), 1.0, offset).unwrap();
            assert_eq!(ours.dtype(), dtype);
            let mlx = fast::rope(&x, dims, traditional, 10_000.0, 1.0, offset, None).unwrap();
            assert!(ulps(&ours, &mlx, dtype) <= 1);
        }
    }
}

#[test]
fn gradients_are_mlx_ops_gradients() {
    let (x, w) = (values(&[2, 3, 24], 0.1), values(&[24], 0.7));
    let cotangent = values(&[2, 3, 24], 0.9);
    let grads = |f: &dyn Fn(&Array, &Array) -> Array| {
        let (_, g) = mlx_rs::transforms::vjp(
            |p: &[Array]| vec![f(&p[0], &p[1])],
            &[x.clone(), w.clone()],
            std::slice::from_ref(&cotangent),
        )
        .unwrap();
        g
    };
    let ours = grads(&|x, w| rms_norm(x, Some(w), 1e-5, true).unwrap());
    let mlx = grads(&|x, w| fast::rms_norm(x, Some(&w.add(Array::from_f32(1.0)).unwrap()), 1e-5).unwrap());
    for (a, b) in ours.iter().zip(&mlx) {
        assert!(max_diff(a, b) < 1e-5);
    }
    let x = values(&[1, 2, 5, 24], 0.2);
    let cotangent = values(&[1, 2, 5, 24], 0.4);
    let (_, ours) = mlx_rs::transforms::vjp(
        |p: &[Array]| vec![rope(&p[0], 16, false, RopeFrequencies::Base(500.0), 1.0, 3).unwrap()],
        std::slice::from_ref(&x),
        std::slice::from_ref(&cotangent),
    )
    .unwrap();
    let (_, mlx) = mlx_rs::transforms::vjp(
        |p: &[Array]| vec![fast::rope(&p[0], 16, false, 500.0, 1.0, 3, None).unwrap()],
        std::slice::from_ref(&x),
        std::slice::from_ref(&cotangent),
    )
    .unwrap();
    assert!(max_diff(&ours[0], &mlx[0]) < 1e-5);
}

#[test]
fn bad_arguments_are_errors() {
    let x = values(&[2, 3, 8], 0.1);
    assert!(rms_norm(&x, Some(&values(&[7], 0.2)), 1e-5, false).is_err());
    assert!(rms_norm(&x, Some(&values(&[2, 4], 0.2)), 1e-5, false).is_err());
    for dims in [0, 3, 10, -2] {
        assert!(rope(&x, dims, false, RopeFrequencies::Base(1e4), 1.0, 0).is_err(), "{dims}");
    }
    let periods = values(&[3], 0.3);
    assert!(rope(&x, 8, false, RopeFrequencies::Periods(&periods), 1.0, 0).is_err());
    assert!(rope(&values(&[5], 0.1), 4, false, RopeFrequencies::Base(1e4), 1.0, 0).is_err());
}
