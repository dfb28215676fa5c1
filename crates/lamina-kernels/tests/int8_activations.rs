//! Quantized products with 8-bit activations (`Activations::Int8`) against a reference
//! written here from the definition: x rounded per 32-value chunk (d = max |x| / 127,
//! round(x / d) to nearest, ties to even), integer sums of the packed values (2 to 8 bits;
//! 8-bit ones less 128) times the rounded x, scaled by the group's scale times the chunk's d,
//! plus each group's bias (for 8 bits, bias + 128 scale) times x's exact sum. Run at every
//! tier (scripts/test.sh): the tiers with integer kernels must agree with it, the others
//! (NEON) stay exact. Also: a batch's rows equal the same rows
//! one at a time (prompts of many rows too), and the fused products equal one product each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use lamina_kernels::{Activations, EXACT_TOP, quantized_products};
use mlx_rs::{Array, Dtype, ops};
use support::Quantized;

/// Deterministic values in [-1, 1), with a few large ones (outliers decide a chunk's d).
fn values(shape: &[i32], salt: f32) -> Vec<f32> {
    let wave = support::wave(shape.iter().product(), salt);
    wave.into_iter().enumerate().map(|(i, v)| if i % 37 == 0 { 4.0 * v } else { v }).collect()
}

/// A weight quantized by MLX, with its shape for the reference.
struct Weight {
    q: Quantized,
    n: usize,
    k: usize,
}

impl Weight {
    fn new(n: i32, k: i32, group: i32, bits: i32, half_scales: bool) -> Self {
        let q = Quantized::of(&Array::from_slice(&values(&[n, k], 0.3), &[n, k]), group, bits);
        let q = if half_scales { q.with_half_scales() } else { q };
        Weight { q, n: n as usize, k: k as usize }
    }

    /// Value j of row r (a little-endian bit stream per row, in u32 words).
    fn value(&self, words: &[u32], r: usize, j: usize) -> i64 {
        let bits = self.q.bits as usize;
        let bit = r * self.k * bits + j * bits;
        let word = |i: usize| u64::from(words.get(i).copied().unwrap_or(0));
        let two = word(bit / 32) | (word(bit / 32 + 1) << 32);
        ((two >> (bit % 32)) & ((1u64 << bits) - 1)) as i64
    }

    /// The reference product of one row of x with every weight row.
    fn reference(&self, x: &[f32]) -> Vec<f32> {
        let words: Vec<u32> = self.q.packed.as_slice::<u32>().to_vec();
        let f32s = |a: &Array| a.as_dtype(Dtype::Float32).unwrap().as_slice::<f32>().to_vec();
        let (scales, biases) = (f32s(&self.q.scales), f32s(&self.q.biases));
        let groups = self.k / self.q.group as usize;
        let (rounded, d): (Vec<i64>, Vec<f32>) = {
            let mut rounded = Vec::with_capacity(self.k);
            let mut ds = Vec::new();
            for chunk in x.chunks(32) {
                let d = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
                rounded.extend(chunk.iter().map(|v| (v * inverse).round_ties_even() as i64));
                ds.push(d);
            }
            (rounded, ds)
        };
        // 8-bit values less 128 fit a signed byte; the 128 returns through x's exact sums.
        let shift: i64 = if self.q.bits == 8 { 128 } else { 0 };
        (0..self.n)
            .map(|r| {
                let mut total = 0.0f64;
                for c in 0..self.k / 32 {
                    let sum: i64 =
                        (32 * c..32 * c + 32).map(|j| (self.value(&words, r, j) - shift) * rounded[j]).sum();
                    let scale = scales[r * groups + 32 * c / self.q.group as usize];
                    total += f64::from(scale * d[c]) * sum as f64;
                }
                for g in 0..groups {
                    let sum: f32 = x[g * self.q.group as usize..(g + 1) * self.q.group as usize].iter().sum();
                    let (scale, bias) = (scales[r * groups + g], biases[r * groups + g]);
                    total += (f64::from(bias) + shift as f64 * f64::from(scale)) * f64::from(sum);
                }
                total as f32
            })
            .collect()
    }
}

/// Whether this tier multiplies `bits`-wide weights with x rounded to 8 bits: every width on
/// x86 and the portable tier; 4 and 8 bits on the NEON tiers (the other widths take the exact
/// path there).
fn tier_rounds(bits: i32) -> bool {
    !lamina_kernels::isa().starts_with("neon") || bits == 4 || bits == 8
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// The largest absolute difference between two outputs.
fn largest_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn one_row_products_equal_the_definition() {
    for bits in [2, 3, 4, 5, 6, 8] {
        for group in [32, 64, 128] {
            for half_scales in [false, true] {
                let (n, k) = (37, 384);
                let w = Weight::new(n, k, group, bits, half_scales);
                let xv = values(&[1, k], 1.7);
                let x = Array::from_slice(&xv, &[1, k]);
                let ours = w.q.product(&x, Activations::Int8);
                let exact = w.q.product(&x, Activations::Exact);
                let expected =
                    if tier_rounds(bits) { w.reference(&xv) } else { exact.as_slice::<f32>().to_vec() };
                let scale = max_abs(&expected);
                let worst = largest_diff(ours.as_slice::<f32>(), &expected);
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "bits {bits} group {group} f16 {half_scales}: off by {worst} (largest {scale})"
                );
                // Rounding x changes the result (by far less than the result's size).
                let drift = largest_diff(ours.as_slice::<f32>(), exact.as_slice::<f32>());
                assert!(drift <= 0.02 * scale, "bits {bits} group {group}: drift {drift} vs {scale}");
                if tier_rounds(bits) {
                    assert!(drift > 0.0, "bits {bits} group {group}: the 8-bit path did not run");
                }
            }
        }
    }
}

/// Checks that every row of an `m`-row product equals the same row alone, bit for bit.
fn check_rows_alone(w: &Weight, m: i32, activations: Activations, what: &str) {
    let (n, k) = (w.n, w.k as i32);
    let xv = values(&[m, k], 0.9);
    let batch = w.q.product(&Array::from_slice(&xv, &[m, k]), activations);
    for row in 0..m as usize {
        let one = Array::from_slice(&xv[row * k as usize..(row + 1) * k as usize], &[1, k]);
        let alone = w.q.product(&one, activations);
        assert_eq!(
            &batch.as_slice::<f32>()[row * n..(row + 1) * n],
            alone.as_slice::<f32>(),
            "{what}, {m} rows: row {row}"
        );
    }
}

#[test]
fn batch_rows_equal_the_same_rows_alone() {
    for bits in [3, 4, 5, 8] {
        let w = Weight::new(300, 256, 64, bits, true);
        for m in [2, 5, 32] {
            check_rows_alone(&w, m, Activations::Int8, &format!("bits {bits}, group 64"));
        }
    }
}

#[test]
fn prompt_rows_round_as_they_would_alone() {
    // GGUF's layout (32-value groups; f16 scales, or f32 as the K-quants') runs in tiles of
    // several weight rows and rows of x: 301 weight rows and odd row counts leave partial
    // tiles at both edges; 70 rows pass a block of rows of x; k = 352 leaves 3 chunks past
    // the last 8.
    for bits in [2, 3, 4, 5, 6, 8] {
        let w = Weight::new(301, 352, 32, bits, true);
        for m in [3, 33, 70] {
            check_rows_alone(&w, m, Activations::Int8, &format!("bits {bits}, group 32"));
        }
        let f32_scales = Weight::new(301, 352, 32, bits, false);
        check_rows_alone(&f32_scales, 33, Activations::Int8, &format!("bits {bits}, group 32, f32 scales"));
        // Rounded (the 8-bit path runs for prompts too): a prompt's row equals the
        // definition, not the exact product.
        let x = values(&[40, 352], 2.1);
        let ours = w.q.product(&Array::from_slice(&x, &[40, 352]), Activations::Int8);
        let row = 39 * 301;
        let expected = if tier_rounds(bits) {
            w.reference(&x[39 * 352..])
        } else {
            w.q.product(&Array::from_slice(&x[39 * 352..], &[1, 352]), Activations::Exact)
                .as_slice::<f32>()
                .to_vec()
        };
        let scale = max_abs(&expected);
        let worst = largest_diff(&ours.as_slice::<f32>()[row..row + 301], &expected);
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "bits {bits}: a prompt's row is off by {worst} (largest {scale})"
        );
    }
    // With the exact top, each row's top outputs are recomputed as they would be alone.
    let w = Weight::new(301, 352, 32, 4, true);
    check_rows_alone(&w, 40, Activations::Int8ExactTop, "exact top");
}

#[test]
fn fused_products_round_as_their_weights_say() {
    let k = 192;
    let (a, b) = (Weight::new(48, k, 32, 4, false), Weight::new(24, k, 64, 8, true));
    let x = Array::from_slice(&values(&[1, 1, k], 0.4), &[1, 1, k]);
    let outs = quantized_products(&x, &[a.q.weight(Activations::Int8), b.q.weight(Activations::Exact)], &[])
        .unwrap();
    assert_eq!(outs[0].as_slice::<f32>(), a.q.product(&x, Activations::Int8).as_slice::<f32>());
    assert_eq!(outs[1].as_slice::<f32>(), b.q.product(&x, Activations::Exact).as_slice::<f32>());
}

#[test]
fn zero_rows_of_x_give_the_bias_terms_only() {
    // d = 0 for an all-zero chunk: no division by zero, the integer part vanishes.
    let k = 64;
    let w = Weight::new(8, k, 32, 4, false);
    let x = ops::zeros::<f32>(&[1, k]).unwrap();
    let out = w.q.product(&x, Activations::Int8);
    assert!(out.as_slice::<f32>().iter().all(|v| *v == 0.0), "{:?}", out.as_slice::<f32>());
}

/// Checks one row of `Int8ExactTop` outputs: the EXACT_TOP largest of the 8-bit outputs are
/// the exact ones, the rest the 8-bit ones (bit for bit).
fn check_exact_top(top: &[f32], int8: &[f32], exact: &[f32], bits: i32, what: &str) {
    if !tier_rounds(bits) {
        assert_eq!(top, int8, "{what}: a tier without integer kernels is exact either way");
        return;
    }
    let mut ranked = int8.to_vec();
    ranked.sort_by(|a, b| b.total_cmp(a));
    let (last_kept, first_left) = (ranked[EXACT_TOP - 1], ranked[EXACT_TOP]);
    let mut rescored = 0;
    for (r, ((t, i), e)) in top.iter().zip(int8).zip(exact).enumerate() {
        if *i > first_left {
            // (A batch's exact products dequantize rows; the recomputed ones are one-row
            // products: equal to float rounding.)
            assert!(
                (t - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{what}: row {r} ranks in the top: {t} vs exact {e}"
            );
        } else if *i < last_kept {
            assert_eq!(t, i, "{what}: row {r} is below the top and keeps its 8-bit value");
        }
        rescored += usize::from(t != i);
    }
    assert!(rescored > 0 && rescored <= EXACT_TOP, "{what}: {rescored} outputs recomputed");
}

#[test]
fn an_exact_top_recomputes_the_largest_outputs_exactly() {
    for bits in [4, 5, 8] {
        let k = 256;
        let w = Weight::new(300, k, 32, bits, true);
        for m in [1, 3] {
            let x = Array::from_slice(&values(&[m, k], 1.3), &[m, k]);
            let [top, int8, exact] = [Activations::Int8ExactTop, Activations::Int8, Activations::Exact]
                .map(|a| w.q.product(&x, a).as_slice::<f32>().to_vec());
            for row in 0..m as usize {
                let at = |v: &[f32]| v[row * 300..(row + 1) * 300].to_vec();
                check_exact_top(
                    &at(&top),
                    &at(&int8),
                    &at(&exact),
                    bits,
                    &format!("bits {bits}, {m} rows, row {row}"),
                );
            }
        }
    }
    // Fewer rows than EXACT_TOP: every output exact.
    let w = Weight::new(20, 64, 32, 4, false);
    let x = Array::from_slice(&values(&[1, 64], 0.2), &[1, 64]);
    assert_eq!(
        w.q.product(&x, Activations::Int8ExactTop).as_slice::<f32>(),
        w.q.product(&x, Activations::Exact).as_slice::<f32>()
    );
}
