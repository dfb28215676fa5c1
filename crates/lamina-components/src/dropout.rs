//! Inverted dropout: zero each element with probability `p` while training, scale the
//! rest by `1 / (1 - p)`; the identity otherwise.

use lamina_core::Result;
use mlx_rs::Array;

/// Applies dropout when `training` and `p > 0`.
///
/// # Errors
/// When MLX fails.
pub fn dropout(x: &Array, p: f32, training: bool) -> Result<Array> {
    if !training || p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = mlx_rs::random::bernoulli(&Array::from_f32(1.0 - p), x.shape(), None)?;
    Ok(x.multiply(keep)?.divide(Array::from_f32(1.0 - p))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_mean_and_zeroes_about_p_of_the_elements() {
        let x = Array::ones::<f32>(&[20_000]).unwrap();
        assert_eq!(dropout(&x, 0.3, false).unwrap().sum(None).unwrap().item_exact::<f32>(), 20_000.0);
        let y = dropout(&x, 0.3, true).unwrap();
        let zeros =
            y.eq(Array::from_f32(0.0)).unwrap().sum(None).unwrap().item_exact::<i32>() as f32 / 20_000.0;
        assert!((zeros - 0.3).abs() < 0.02, "{zeros}");
        let mean = y.mean(None).unwrap().item_exact::<f32>();
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
    }
}
