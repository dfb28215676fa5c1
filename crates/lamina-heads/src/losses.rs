//! Losses: cross-entropy with ignored targets, the shifted causal-LM loss, and MSE.

use lamina_core::{Error, Result};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, Dtype, ops};

/// The label value that is not counted, as in PyTorch and transformers.
pub const IGNORE_INDEX: i32 = -100;

/// Mean cross-entropy of `logits [N, C]` against integer `targets [N]`, over the targets
/// that are not [`IGNORE_INDEX`] (zero when none are counted).
///
/// # Errors
/// [`Error::Shape`] when the leading sizes differ, [`Error::LabelOutOfRange`] for a target
/// outside `[0, C)` other than the ignore index.
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    let (n, classes) = match logits.shape() {
        [n, c] => (*n, *c),
        other => {
            return Err(Error::Shape {
                name: "logits".into(),
                expected: vec![-1, -1],
                actual: other.to_vec(),
            });
        }
    };
    if targets.shape() != [n] {
        return Err(Error::Shape {
            name: "labels".into(),
            expected: vec![n],
            actual: targets.shape().to_vec(),
        });
    }
    let targets = targets.as_dtype(Dtype::Int32)?;
    let counted = targets.ne(Array::from_int(IGNORE_INDEX))?;
    let out_of_range = counted
        .logical_and(&targets.lt(Array::from_int(0))?.logical_or(&targets.ge(Array::from_int(classes))?)?)?;
    if out_of_range.any(None)?.item_exact::<bool>() {
        return Err(Error::LabelOutOfRange { classes, ignore_index: IGNORE_INDEX });
    }
    let safe = ops::select(&counted, &targets, Array::from_int(0))?;
    let logits = logits.as_dtype(Dtype::Float32)?;
    let picked = logits.take_along_axis(&safe.expand_dims(-1)?, -1)?.squeeze_axes(&[-1])?;
    let per_item = ops::logsumexp_axis(&logits, -1, None)?.subtract(&picked)?;
    let weights = counted.as_dtype(Dtype::Float32)?;
    let total = per_item.multiply(&weights)?.sum(None)?;
    Ok(total.divide(ops::maximum(weights.sum(None)?, Array::from_f32(1.0))?)?)
}

/// The causal language-modelling loss: position `t` predicts label `t + 1`.
///
/// # Shapes
/// `logits [B, L, V]`, `labels [B, L]` -> scalar
///
/// # Errors
/// [`Error::Shape`] when the shapes do not line up.
pub fn causal_lm_loss(logits: &Array, labels: &Array) -> Result<Array> {
    let (b, l, v) = match logits.shape() {
        [b, l, v] => (*b, *l, *v),
        other => {
            return Err(Error::Shape {
                name: "logits".into(),
                expected: vec![-1, -1, -1],
                actual: other.to_vec(),
            });
        }
    };
    if labels.shape() != [b, l] {
        return Err(Error::Shape {
            name: "labels".into(),
            expected: vec![b, l],
            actual: labels.shape().to_vec(),
        });
    }
    let shifted_logits = logits.try_index((.., ..l - 1, ..))?.reshape(&[-1, v])?; // [B * (L - 1), V]
    let shifted_labels = labels.try_index((.., 1..))?.reshape(&[-1])?; // [B * (L - 1)]
    cross_entropy(&shifted_logits, &shifted_labels)
}

/// Mean squared error.
///
/// # Errors
/// [`Error::Shape`] when the shapes differ.
pub fn mse(predictions: &Array, targets: &Array) -> Result<Array> {
    if predictions.shape() != targets.shape() {
        return Err(Error::Shape {
            name: "labels".into(),
            expected: predictions.shape().to_vec(),
            actual: targets.shape().to_vec(),
        });
    }
    Ok(predictions.subtract(targets.as_dtype(predictions.dtype())?)?.square()?.mean(None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ce_by_hand(logits: &[f32], target: usize) -> f32 {
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        lse - logits[target]
    }

    #[test]
    fn cross_entropy_averages_over_counted_targets() {
        let rows = [[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]];
        let logits = Array::from_slice(&rows.concat(), &[3, 3]);
        let targets = Array::from_slice(&[1i32, IGNORE_INDEX, 0], &[3]);
        let loss = cross_entropy(&logits, &targets).unwrap().item_exact::<f32>();
        let expected = (ce_by_hand(&rows[0], 1) + ce_by_hand(&rows[2], 0)) / 2.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        let none = Array::from_slice(&[IGNORE_INDEX; 3], &[3]);
        assert_eq!(cross_entropy(&logits, &none).unwrap().item_exact::<f32>(), 0.0);
    }

    #[test]
    fn causal_loss_shifts_labels_by_one() {
        let logits = Array::from_slice(&[0.0f32, 3.0, 1.0, 1.0, 0.0, 2.0], &[1, 3, 2]);
        let labels = Array::from_slice(&[7i32, 1, 0], &[1, 3]);
        let loss = causal_lm_loss(&logits, &labels).unwrap().item_exact::<f32>();
        let expected = (ce_by_hand(&[0.0, 3.0], 1) + ce_by_hand(&[1.0, 1.0], 0)) / 2.0;
        assert!((loss - expected).abs() < 1e-6);
    }

    #[test]
    fn bad_labels_are_errors() {
        let logits = Array::zeros::<f32>(&[2, 3]).unwrap();
        assert!(matches!(
            cross_entropy(&logits, &Array::from_slice(&[0i32, 3], &[2])),
            Err(Error::LabelOutOfRange { .. })
        ));
        assert!(matches!(
            cross_entropy(&logits, &Array::from_slice(&[0i32], &[1])),
            Err(Error::Shape { .. })
        ));
        let lm = Array::zeros::<f32>(&[1, 4, 3]).unwrap();
        assert!(matches!(
            causal_lm_loss(&lm, &Array::from_slice(&[0i32; 3], &[1, 3])),
            Err(Error::Shape { .. })
        ));
    }

    #[test]
    fn mse_is_the_mean_of_squares() {
        let p = Array::from_slice(&[1.0f32, 2.0], &[2, 1]);
        let t = Array::from_slice(&[0.0f32, 4.0], &[2, 1]);
        assert_eq!(mse(&p, &t).unwrap().item_exact::<f32>(), 2.5);
        assert!(mse(&p, &Array::from_slice(&[0.0f32, 4.0], &[2])).is_err());
    }
}
