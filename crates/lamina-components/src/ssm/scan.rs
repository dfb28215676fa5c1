//! The selective scan `h_t = a_t * h_{t-1} + b_t`, `y_t = <h_t, C_t>` over a sequence,
//! evaluated in parallel: the sequence is cut into chunks, each chunk is scanned with a
//! Hillis-Steele associative scan (log2(T) vectorised steps over `[B, T, D, N]`), and the
//! state is carried from chunk to chunk. A single token is the same code with `T = 1`.

use lamina_core::Result;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, ops};

/// The inputs of a selective scan.
pub struct ScanInput<'a> {
    /// The convolved, activated input `[B, L, D]`.
    pub x: &'a Array,
    /// Time steps after softplus, `[B, L, D]`.
    pub dt: &'a Array,
    /// `A = -exp(A_log)`, `[D, N]`.
    pub a: &'a Array,
    /// Input projections `B`, `[B, L, N]`.
    pub b: &'a Array,
    /// Output projections `C`, `[B, L, N]`.
    pub c: &'a Array,
    /// The state before the first position, `[B, D, N]` (zeros when absent).
    pub h0: Option<&'a Array>,
}

/// Runs the scan; returns `y [B, L, D]` (without the skip term `D * x`) and the final
/// state `[B, D, N]`.
///
/// # Errors
/// When MLX fails (shapes that do not broadcast).
pub fn selective_scan(input: ScanInput<'_>, chunk: i32) -> Result<(Array, Array)> {
    let len = input.x.dim(1);
    let chunk = chunk.max(1);
    let mut h = input.h0.cloned();
    let mut ys = Vec::with_capacity(((len + chunk - 1) / chunk) as usize);
    let mut start = 0;
    while start < len {
        let end = (start + chunk).min(len);
        let part = |t: &Array| t.try_index((.., start..end, ..));
        let (x, dt, b, c) = (part(input.x)?, part(input.dt)?, part(input.b)?, part(input.c)?);
        let decay = dt.expand_dims(-1)?.multiply(input.a)?.exp()?; // [B, T, D, N]
        let drive = dt.multiply(&x)?.expand_dims(-1)?.multiply(b.expand_dims(2)?)?; // [B, T, D, N]
        let (decay, drive) = associative_scan(decay, drive)?;
        let states = match &h {
            Some(h0) => drive.add(decay.multiply(h0.expand_dims(1)?)?)?,
            None => drive,
        };
        ys.push(ops::matmul(&states, &c.expand_dims(-1)?)?.squeeze_axes(&[-1])?); // [B, T, D]
        h = Some(states.try_index((.., -1, .., ..))?);
        start = end;
    }
    let y = ops::concatenate(&ys, 1)?;
    let h = match h {
        Some(h) => h,
        None => ops::zeros_dtype(&[input.x.dim(0), input.a.dim(0), input.a.dim(1)], input.x.dtype())?,
    };
    Ok((y, h))
}

/// Inclusive scan of the affine maps `h -> a_t h + b_t` along axis 1 (Hillis-Steele):
/// after it, `(a_t, b_t)` maps the state before the chunk to the state after position t.
fn associative_scan(mut a: Array, mut b: Array) -> Result<(Array, Array)> {
    let len = a.dim(1);
    let mut stride = 1;
    while stride < len {
        let shifted = |t: &Array, fill: f32| -> Result<Array> {
            let mut shape = t.shape().to_vec();
            shape[1] = stride;
            let pad = ops::full::<f32>(&shape, Array::from_f32(fill))?.as_dtype(t.dtype())?;
            Ok(ops::concatenate(&[pad, t.try_index((.., ..len - stride))?], 1)?)
        };
        b = a.multiply(shifted(&b, 0.0)?)?.add(&b)?;
        a = a.multiply(shifted(&a, 1.0)?)?;
        stride *= 2;
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{array, max_diff};

    /// The scan one position at a time, in plain MLX ops: the definition.
    fn sequential(input: &ScanInput<'_>) -> (Array, Array) {
        let (bsz, len) = (input.x.dim(0), input.x.dim(1));
        let mut h = ops::zeros::<f32>(&[bsz, input.a.dim(0), input.a.dim(1)]).unwrap();
        let mut ys = Vec::new();
        for t in 0..len {
            let at = |v: &Array| v.try_index((.., t, ..)).unwrap();
            let dt = at(input.dt);
            h = (dt.expand_dims(-1).unwrap() * input.a).exp().unwrap() * &h
                + (dt * at(input.x)).expand_dims(-1).unwrap() * at(input.b).expand_dims(1).unwrap();
            ys.push((&h * at(input.c).expand_dims(1).unwrap()).sum_axis(-1, None).unwrap());
        }
        (ops::stack(&ys, 1).unwrap(), h)
    }

    #[test]
    fn chunked_parallel_scan_equals_the_sequential_definition() {
        let (bsz, len, d, n) = (2, 13, 5, 3);
        let x = array(&[bsz, len, d], 0.1);
        let dt = (array(&[bsz, len, d], 0.5) * 0.5f32 + 0.6f32).abs().unwrap();
        let a = array(&[d, n], 0.9).abs().unwrap() * -2.0f32 - 0.1f32;
        let b = array(&[bsz, len, n], 1.3);
        let c = array(&[bsz, len, n], 2.1);
        let input = ScanInput { x: &x, dt: &dt, a: &a, b: &b, c: &c, h0: None };
        let (y_ref, h_ref) = sequential(&input);
        for chunk in [1, 4, 8, 13, 64] {
            let (y, h) = selective_scan(ScanInput { h0: None, ..input }, chunk).unwrap();
            assert!(max_diff(&y, &y_ref) < 1e-5, "chunk {chunk}: {}", max_diff(&y, &y_ref));
            assert!(max_diff(&h, &h_ref) < 1e-5);
        }
    }
}
