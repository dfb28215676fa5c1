//! Helpers for this crate's tests: deterministic inputs and tolerant comparisons.

use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

/// Deterministic, irregular values in [-1, 1].
pub fn values(n: usize, salt: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + 1.0) * 0.7317 + salt).sin()).collect()
}

/// A deterministic f32 array of the given shape.
pub fn array(shape: &[i32], salt: f32) -> Array {
    let n = shape.iter().product::<i32>() as usize;
    Array::from_slice(&values(n, salt), shape)
}

/// The array's values as f32.
pub fn to_vec(a: &Array) -> Vec<f32> {
    a.as_type::<f32>().unwrap().contiguous().unwrap().as_slice::<f32>().to_vec()
}

/// Asserts `|a - e| <= tol * (1 + |e|)` elementwise.
pub fn assert_close(actual: &Array, expected: &[f32], tol: f32) {
    let actual = to_vec(actual);
    assert_eq!(actual.len(), expected.len(), "length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * (1.0 + e.abs()), "element {i}: {a} vs {e} (tol {tol})");
    }
}

/// The largest elementwise difference.
pub fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    to_vec(a).iter().zip(to_vec(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Overwrites every parameter with deterministic values scaled by `scale`, in key order.
pub fn fill_params(module: &mut impl ModuleParameters, scale: f32) {
    let mut params = module.parameters_mut().flatten();
    let mut keys: Vec<_> = params.keys().cloned().collect();
    keys.sort();
    for (i, key) in keys.iter().enumerate() {
        let target = params.get_mut(key).unwrap();
        let shape = target.shape().to_vec();
        let n = shape.iter().product::<i32>() as usize;
        let data: Vec<f32> = values(n, i as f32).into_iter().map(|v| v * scale).collect();
        **target = Array::from_slice(&data, &shape);
    }
}
