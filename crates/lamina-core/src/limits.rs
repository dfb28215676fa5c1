//! Sizes from files are hostile until checked: conversions that refuse to narrow, and an
//! estimate of a model's memory from its config alone, checked against a limit before
//! anything is built.

use crate::error::{Error, Result};

/// `value` as an MLX dimension (`i32`).
///
/// # Errors
/// [`Error::Overflow`] naming `config` and `field` when the value does not fit.
///
/// ```
/// assert_eq!(lamina_core::to_dim("X", "vocab_size", 256).unwrap(), 256);
/// let err = lamina_core::to_dim("X", "vocab_size", (1 << 32) + 256).unwrap_err();
/// assert!(err.to_string().contains("`vocab_size`"));
/// ```
pub fn to_dim(config: &'static str, field: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::Overflow {
        config,
        field: field.to_owned(),
        value: value as u128,
        target: "i32",
    })
}

/// Checks that every `(field, value)` fits an MLX dimension.
///
/// # Errors
/// [`Error::Overflow`] naming the first field that does not.
pub fn ensure_dims(config: &'static str, fields: &[(&str, usize)]) -> Result<()> {
    fields.iter().try_for_each(|&(field, value)| to_dim(config, field, value).map(drop))
}

/// Checks that the product of `factors` (the elements of one matrix, say) fits an MLX
/// dimension, so that a reshape or a flattened index cannot wrap.
///
/// # Errors
/// [`Error::Overflow`] naming `field`.
pub fn ensure_product_fits(config: &'static str, field: &str, factors: &[usize]) -> Result<()> {
    let product = factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f));
    match product {
        Some(p) => to_dim(config, field, p).map(drop),
        None => Err(Error::Overflow {
            config,
            field: field.to_owned(),
            value: factors.iter().map(|&f| f as u128).fold(1u128, u128::saturating_mul),
            target: "i32",
        }),
    }
}

/// The most blocks a config may declare. No published model has more than a few hundred;
/// a larger count is a corrupt or hostile file, refused before per-layer lists are built.
pub const MAX_LAYERS: usize = 1 << 16;

/// Checks a layer count against [`MAX_LAYERS`].
///
/// # Errors
/// [`Error::InvalidConfig`] naming `field`.
pub fn ensure_layers(config: &'static str, field: &str, layers: usize) -> Result<()> {
    if layers > MAX_LAYERS {
        return Err(Error::invalid(
            config,
            field,
            format!("({layers}) exceeds the {MAX_LAYERS} blocks lamina accepts"),
        ));
    }
    Ok(())
}

/// Host memory one block costs beyond its weights (its config, module structs, and the
/// MLX arrays and lazy graph nodes of its random initialisation; measured at about 85 KiB
/// per block of a width-8 Llama, `measure_the_host_memory_of_a_block` in
/// `lamina-families/tests/hostile.rs`), so that a config with absurdly many tiny layers is
/// refused as surely as one with huge layers.
pub const BLOCK_OVERHEAD_BYTES: u64 = 96 * 1024;

/// How much memory a model may take and how its weights will be held: what a config's
/// [`SizeEstimate`] is checked against before anything is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes allowed; the machine's memory when `None`.
    pub limit: Option<u64>,
    /// Bits per parameter of the weights that will be loaded (16 for bf16/f16
    /// checkpoints, 4 for a 4-bit quantized one, 32 for f32).
    pub bits: u64,
}

impl Default for Budget {
    /// The machine's memory, at 16 bits per parameter.
    fn default() -> Self {
        Budget { limit: None, bits: 16 }
    }
}

impl Budget {
    /// No limit: for describing a model's structure (presets) without evaluating it.
    pub fn unlimited() -> Self {
        Budget { limit: Some(u64::MAX), bits: 16 }
    }
}

/// What a config describes, counted from its sizes with saturating arithmetic (a
/// saturated count is simply too large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeEstimate {
    /// Scalar parameters.
    pub parameters: u64,
    /// Blocks (each costs [`BLOCK_OVERHEAD_BYTES`] besides its weights).
    pub blocks: u64,
}

impl SizeEstimate {
    /// Bytes at `bits` bits per parameter, plus the blocks' overhead.
    pub fn bytes(&self, bits: u64) -> u64 {
        let weights = self.parameters.saturating_mul(bits).div_ceil(8);
        weights.saturating_add(self.blocks.saturating_mul(BLOCK_OVERHEAD_BYTES))
    }

    /// Refuses a model larger than the budget.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming `config`.
    ///
    /// ```
    /// use lamina_core::{Budget, SizeEstimate};
    /// let small = SizeEstimate { parameters: 1000, blocks: 2 };
    /// assert!(small.ensure_within("X", Budget { limit: Some(1 << 20), bits: 16 }).is_ok());
    /// let bomb = SizeEstimate { parameters: u64::MAX, blocks: 1 };
    /// assert!(bomb.ensure_within("X", Budget::default()).is_err());
    /// ```
    pub fn ensure_within(&self, config: &'static str, budget: Budget) -> Result<()> {
        let limit = budget.limit.or_else(machine_memory).unwrap_or(u64::MAX);
        let needed = self.bytes(budget.bits);
        if needed > limit {
            return Err(Error::TooLarge { config, parameters: self.parameters, needed, limit });
        }
        Ok(())
    }
}

/// A sum of products of sizes, saturating: `count(&[&[a, b], &[c]])` is `a * b + c`.
/// Parameter counts of hostile configs saturate instead of wrapping (or panicking).
///
/// ```
/// assert_eq!(lamina_core::count(&[&[2, 3], &[4]]), 10);
/// assert_eq!(lamina_core::count(&[&[usize::MAX, 2], &[1]]), usize::MAX);
/// ```
pub fn count(terms: &[&[usize]]) -> usize {
    terms.iter().fold(0usize, |sum, factors| {
        sum.saturating_add(factors.iter().fold(1usize, |p, &f| p.saturating_mul(f)))
    })
}

/// `a * b` for sizes, saturating.
pub fn mul(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

/// The physical memory of this machine in bytes, where the platform tells.
pub fn machine_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) =
            unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && page > 0 {
            return Some((pages as u64).saturating_mul(page as u64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_is_refused_with_the_field_named() {
        assert_eq!(to_dim("C", "hidden_size", i32::MAX as usize).unwrap(), i32::MAX);
        match to_dim("C", "hidden_size", i32::MAX as usize + 1).unwrap_err() {
            Error::Overflow { config: "C", field, value, target: "i32" } => {
                assert_eq!((field.as_str(), value), ("hidden_size", 1u128 << 31));
            }
            other => panic!("{other}"),
        }
        assert!(ensure_dims("C", &[("a", 1), ("b", usize::MAX)]).unwrap_err().to_string().contains("`b`"));
        assert!(ensure_product_fits("C", "q_proj", &[1 << 16, 1 << 15]).is_err());
        assert!(ensure_product_fits("C", "q_proj", &[usize::MAX, 3]).is_err());
        assert!(ensure_product_fits("C", "q_proj", &[1 << 15, 1 << 15]).is_ok());
    }

    #[test]
    fn estimates_saturate_and_count_block_overhead() {
        let e = SizeEstimate { parameters: 10, blocks: 2 };
        assert_eq!(e.bytes(32), 40 + 2 * BLOCK_OVERHEAD_BYTES);
        assert_eq!(e.bytes(4), 5 + 2 * BLOCK_OVERHEAD_BYTES);
        assert_eq!(SizeEstimate { parameters: u64::MAX, blocks: u64::MAX }.bytes(32), u64::MAX);
        let err = SizeEstimate { parameters: 1 << 40, blocks: 1 }
            .ensure_within("C", Budget { limit: Some(1 << 30), bits: 16 });
        assert!(matches!(err, Err(Error::TooLarge { config: "C", .. })));
        assert!(machine_memory().is_some_and(|m| m > 1 << 20));
        assert_eq!(mul(usize::MAX, 2), u64::MAX);
    }
}
