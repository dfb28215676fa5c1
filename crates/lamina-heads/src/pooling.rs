//! Reducing a sequence of hidden states to one vector per sequence.

use lamina_core::{Pooling, Result};
use mlx_rs::{Array, Dtype, ops};

/// Pools `hidden [B, L, H]` to `[B, H]`, counting only tokens where `padding_mask [B, L]`
/// is 1 (every token when absent). `LastToken` takes the last real token, wherever the
/// padding sits (left or right).
///
/// # Errors
/// When the mask does not match `[B, L]`.
pub fn pool(hidden: &Array, padding_mask: Option<&Array>, pooling: Pooling) -> Result<Array> {
    let (b, l) = (hidden.dim(0), hidden.dim(1));
    let mask = match padding_mask {
        Some(mask) => mask.as_dtype(Dtype::Float32)?,
        None => ops::ones::<f32>(&[b, l])?,
    };
    match pooling {
        Pooling::LastToken => {
            let positions = ops::arange::<_, f32>(0.0, l as f32, None)?;
            let last = positions.multiply(&mask)?.max_axis(-1, None)?.as_dtype(Dtype::Int32)?; // [B]
            let index = last.reshape(&[b, 1, 1])?;
            Ok(hidden.take_along_axis(&index, 1)?.squeeze_axes(&[1])?)
        }
        Pooling::Mean => {
            let weights = mask.expand_dims(-1)?; // [B, L, 1]
            let total = hidden.multiply(&weights)?.sum_axis(1, None)?;
            let count = ops::maximum(weights.sum_axis(1, None)?, Array::from_f32(1.0))?;
            Ok(total.divide(&count)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_real_token_and_mean_skip_padding() {
        let hidden = Array::from_iter((0..12).map(|v| v as f32), &[2, 3, 2]);
        let mask = Array::from_slice(&[1i32, 1, 0, 0, 1, 1], &[2, 3]);
        let last = pool(&hidden, Some(&mask), Pooling::LastToken).unwrap();
        assert_eq!(last.as_slice::<f32>(), &[2.0, 3.0, 10.0, 11.0]);
        let mean = pool(&hidden, Some(&mask), Pooling::Mean).unwrap();
        assert_eq!(mean.as_slice::<f32>(), &[1.0, 2.0, 9.0, 10.0]);
        let unmasked = pool(&hidden, None, Pooling::LastToken).unwrap();
        assert_eq!(unmasked.as_slice::<f32>(), &[4.0, 5.0, 10.0, 11.0]);
    }
}
