//! GGUF block weights held as stored: products equal the dequantized weight's, exact and
//! with x rounded per block (256 or 32 values); a row of x computes alike alone or among
//! others; the gradient flows to x; malformed weights are refused.
#![allow(clippy::unwrap_used)]

mod support;

use lamina_kernels::{
    Activations, BlockFormat, QuantLayout, QuantizedWeight, blocks_matmul, dequantize_blocks,
    quantized_products,
};
use mlx_rs::Array;
use mlx_rs::ops::indexing::IndexOp;
use support::{Quantized, max_rel_diff, values};

/// Rows of random blocks of `format` for `cols` values, their f16 factors (d, and dmin where
/// the format has one) small and finite: u8 `[rows, cols / values * block bytes]`.
fn random_blocks(format: BlockFormat, rows: i32, cols: i32, seed: u32) -> Array {
    let bytes = format.block_bytes();
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let total = rows as usize * format.row_bytes(cols as usize);
    let mut raw: Vec<u8> = (0..total).map(|_| next() as u8).collect();
    let (at, factors) = match format {
        BlockFormat::Q2K => (80, 2),
        BlockFormat::Q3K => (108, 1),
        BlockFormat::Q4K | BlockFormat::Q5K => (0, 2),
        BlockFormat::Q6K => (208, 1),
        BlockFormat::IQ4XS | BlockFormat::Q5_0 | BlockFormat::Q8_0 | BlockFormat::IQ4NL => (0, 1),
        BlockFormat::Q5_1 => (0, 2),
    };
    for block in raw.chunks_exact_mut(bytes) {
        for i in 0..factors {
            // Exponent field 5..=10: magnitudes between 2^-10 and 2^-4.
            let half = (((next() % 6 + 5) << 10) | (next() % 1024)) as u16;
            block[at + 2 * i..at + 2 * i + 2].copy_from_slice(&half.to_le_bytes());
        }
    }
    Array::from_slice(&raw, &[rows, format.row_bytes(cols as usize) as i32])
}

/// Columns for a format's tests: `super_block` for the super-blocks, `small` (not a multiple
/// of 8 blocks: Gemma 3's 640 leaves 4) for the 32-value formats.
fn cols_for(format: BlockFormat, super_block: i32, small: i32) -> i32 {
    if format.values() == 32 { small } else { super_block }
}

fn dense_product(x: &Array, w: &Array, format: BlockFormat) -> Array {
    mlx_rs::ops::matmul(x, dequantize_blocks(w, format).unwrap().t()).unwrap()
}

#[test]
fn products_equal_the_dequantized_weights_products_in_every_format_and_shape() {
    for format in BlockFormat::ALL {
        let cols = cols_for(format, 512, 640);
        let w = random_blocks(format, 24, cols, 7);
        assert_eq!(dequantize_blocks(&w, format).unwrap().shape(), &[24, cols]);
        // One row (decoding), a batch, a prompt: each product path.
        for m in [1, 5, 40] {
            let x = values(&[m, cols], m as f32);
            let want = dense_product(&x, &w, format);
            let exact = blocks_matmul(&x, &w, format, Activations::Exact).unwrap();
            assert!(max_rel_diff(&exact, &want) < 1e-5, "{format} m={m}: {}", max_rel_diff(&exact, &want));
            // x rounded to 8 bits per block: within a few tenths of a percent.
            let rounded = blocks_matmul(&x, &w, format, Activations::Int8).unwrap();
            let off = max_rel_diff(&rounded, &want);
            assert!(off > 0.0 && off < 2e-2, "{format} m={m}: int8 off by {off}");
        }
    }
}

#[test]
fn a_row_of_x_computes_alike_alone_and_among_others() {
    for format in BlockFormat::ALL {
        let cols = cols_for(format, 768, 800);
        let w = random_blocks(format, 16, cols, 3);
        let x = values(&[9, cols], 0.5);
        let together = blocks_matmul(&x, &w, format, Activations::Int8).unwrap();
        for row in [0, 4, 8] {
            let alone = blocks_matmul(&x.index(row..row + 1), &w, format, Activations::Int8).unwrap();
            let same = together.index(row..row + 1);
            assert_eq!(alone.as_slice::<f32>(), same.as_slice::<f32>(), "{format} row {row}");
        }
    }
}

#[test]
fn products_of_one_x_computed_together_equal_each_alone() {
    // A block's q, k, v (or gate and up) in one node round x once per kind of rounding:
    // super-blocks, 32-value blocks (Q8_0 in groups on the VNNI tier), 4-bit affine rows in
    // their split order, 8-bit ones; the small products' tasks run beside the large ones'.
    let cols = 512;
    let formats =
        [BlockFormat::Q4K, BlockFormat::Q6K, BlockFormat::Q8_0, BlockFormat::Q5_0, BlockFormat::Q4K];
    let rows = [40, 8, 24, 16, 3];
    let blocks: Vec<Array> = formats
        .iter()
        .zip(rows)
        .enumerate()
        .map(|(i, (f, n))| random_blocks(*f, n, cols, i as u32))
        .collect();
    let four = Quantized::of(&values(&[32, cols], 0.7), 32, 4).with_half_scales();
    let eight = Quantized::of(&values(&[8, cols], 0.9), 64, 8);
    for m in [1, 5, 40] {
        let x = values(&[m, cols], 0.1 * m as f32);
        for activations in [Activations::Int8, Activations::Exact] {
            let mut weights: Vec<QuantizedWeight<'_>> = formats
                .iter()
                .zip(&blocks)
                .map(|(f, w)| QuantizedWeight { weight: w, layout: QuantLayout::Blocks(*f), activations })
                .collect();
            weights.push(four.weight(activations));
            weights.push(eight.weight(Activations::Int8ExactTop));
            let together = quantized_products(&x, &weights, &[]).unwrap();
            assert_eq!(together.len(), weights.len());
            for (i, (f, w)) in formats.iter().zip(&blocks).enumerate() {
                let alone = blocks_matmul(&x, w, *f, activations).unwrap();
                assert_eq!(
                    together[i].as_slice::<f32>(),
                    alone.as_slice::<f32>(),
                    "{f} #{i} m={m} {activations:?}"
                );
            }
            let n = formats.len();
            assert_eq!(
                together[n].as_slice::<f32>(),
                four.product(&x, activations).as_slice::<f32>(),
                "4-bit m={m}"
            );
            let top = eight.product(&x, Activations::Int8ExactTop);
            assert_eq!(together[n + 1].as_slice::<f32>(), top.as_slice::<f32>(), "8-bit m={m}");
        }
    }
}

#[test]
fn the_gradient_with_respect_to_x_is_the_dequantized_weights() {
    let format = BlockFormat::Q4K;
    let w = random_blocks(format, 8, 256, 11);
    let x = values(&[2, 256], 0.25);
    let loss = |inputs: &[Array]| -> Result<Vec<Array>, mlx_rs::error::Exception> {
        let y = blocks_matmul(&inputs[0], &w, format, Activations::Exact)
            .map_err(|e| mlx_rs::error::Exception::custom(e.to_string()))?;
        Ok(vec![y.sum(None)?])
    };
    let grads = mlx_rs::transforms::grad(loss)(std::slice::from_ref(&x)).unwrap();
    let ones = mlx_rs::ops::ones::<f32>(&[2, 8]).unwrap();
    let want = mlx_rs::ops::matmul(&ones, dequantize_blocks(&w, format).unwrap()).unwrap();
    assert!(max_rel_diff(&grads[0], &want) < 1e-5);
}

#[test]
fn malformed_block_weights_are_refused() {
    let format = BlockFormat::Q6K;
    let w = random_blocks(format, 4, 512, 5);
    // x of another width, a row that is not whole blocks, another dtype.
    assert!(blocks_matmul(&values(&[1, 256], 0.0), &w, format, Activations::Exact).is_err());
    let ragged = Array::from_slice(&vec![0u8; 4 * 300], &[4, 300]);
    assert!(blocks_matmul(&values(&[1, 512], 0.0), &ragged, format, Activations::Exact).is_err());
    assert!(dequantize_blocks(&ragged, format).is_err());
    let words = Array::from_slice(&vec![0u32; 4 * 105], &[4, 105]);
    assert!(blocks_matmul(&values(&[1, 512], 0.0), &words, format, Activations::Exact).is_err());
    assert!(dequantize_blocks(&words, format).is_err());
}
