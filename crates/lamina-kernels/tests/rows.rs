//! A KV cache's rows moved in one node: what each output row holds, in a new buffer and
//! within the source's own, for dtypes of every width; malformed moves refused.
#![allow(clippy::unwrap_used)]

use lamina_kernels::{RowSpan, move_rows, move_rows_in_place};
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

/// `[b, h, c, w]` with element (b, h, c, w) = 1000 b + 100 h + c + w / 100 (distinct).
fn numbered(b: i32, h: i32, c: i32, w: i32) -> Array {
    let values: Vec<f32> = (0..b * h * c * w)
        .map(|i| {
            let (bw, hw, cw) = (h * c * w, c * w, w);
            (1000 * (i / bw) + 100 * (i % bw / hw) + i % hw / cw) as f32 + (i % cw) as f32 / 100.0
        })
        .collect();
    Array::from_slice(&values, &[b, h, c, w])
}

fn host(a: &Array) -> Vec<f32> {
    a.as_dtype(Dtype::Float32).unwrap().contiguous().unwrap().as_slice::<f32>().to_vec()
}

/// Positions `[from, from + count)` of row `row` of `a` ([B, H, C, W]), head `h`.
fn positions(a: &[f32], shape: [i32; 4], row: i32, h: i32, from: i32, count: i32) -> Vec<f32> {
    let [_, heads, c, w] = shape;
    let start = (((row * heads + h) * c + from) * w) as usize;
    a[start..start + (count * w) as usize].to_vec()
}

/// Checks `out` ([rows, H, P, W]) against `spans` over `sources`: each row's copy where it
/// says, zeros before it.
fn check(out: &Array, sources: &[(&Array, [i32; 4])], spans: &[RowSpan], p: i32) {
    let [_, heads, _, w] = sources[0].1;
    assert_eq!(out.shape(), &[spans.len() as i32, heads, p, w]);
    let got = host(out);
    for (i, s) in spans.iter().enumerate() {
        let (source, shape) = sources[s.source];
        let all = host(source);
        for h in 0..heads {
            let row = positions(&got, [spans.len() as i32, heads, p, w], i as i32, h, 0, s.to + s.count);
            let split = (s.to * w) as usize;
            assert!(row[..split].iter().all(|&v| v == 0.0), "row {i} head {h}: zeros before the copy");
            assert_eq!(row[split..], positions(&all, shape, s.row, h, s.from, s.count), "row {i} head {h}");
        }
    }
}

#[test]
fn rows_join_from_several_sources_padded_on_the_left() {
    let batch = numbered(2, 3, 8, 4);
    let (first, second) = (numbered(1, 3, 5, 4), numbered(1, 3, 2, 4));
    // The batch shifted right by one, then two newcomers padded to its slots, with room.
    let spans = [
        RowSpan { source: 0, row: 0, from: 0, to: 1, count: 6 },
        RowSpan { source: 0, row: 1, from: 0, to: 1, count: 6 },
        RowSpan { source: 1, row: 0, from: 0, to: 2, count: 5 },
        RowSpan { source: 2, row: 0, from: 0, to: 5, count: 2 },
    ];
    let out = move_rows(&[&batch, &first, &second], &spans, 16).unwrap();
    check(&out, &[(&batch, [2, 3, 8, 4]), (&first, [1, 3, 5, 4]), (&second, [1, 3, 2, 4])], &spans, 16);
}

#[test]
fn a_batch_closes_up_in_its_own_buffer_as_in_a_new_one() {
    let shape = [4, 2, 6, 8];
    // Row 1 leaves; the others lose the two positions of padding they all have.
    let spans: Vec<RowSpan> =
        [0, 2, 3].iter().map(|&row| RowSpan { source: 0, row, from: 2, to: 0, count: 3 }).collect();
    let copied = move_rows(&[&numbered(4, 2, 6, 8)], &spans, 4).unwrap();
    let source = numbered(4, 2, 6, 8);
    source.eval().unwrap();
    // SAFETY: `source` is read by nothing else after this node.
    let moved = unsafe { move_rows_in_place(&source, &spans, 4).unwrap() };
    drop(source);
    check(&copied, &[(&numbered(4, 2, 6, 8), shape)], &spans, 4);
    let (copied, moved) = (host(&copied), host(&moved));
    // Positions past each copy are the cache's room (unspecified); the copies agree.
    for i in 0..3 {
        for h in 0..2 {
            let at = [3, 2, 4, 8];
            assert_eq!(
                positions(&moved, at, i, h, 0, 3),
                positions(&copied, at, i, h, 0, 3),
                "row {i} head {h}"
            );
        }
    }
}

#[test]
fn rows_of_half_and_integer_dtypes_move_whole() {
    for dtype in [Dtype::Bfloat16, Dtype::Uint32, Dtype::Uint8] {
        let a = numbered(3, 2, 4, 6).as_dtype(dtype).unwrap();
        let spans = [
            RowSpan { source: 0, row: 2, from: 1, to: 0, count: 3 },
            RowSpan { source: 0, row: 0, from: 0, to: 1, count: 2 },
        ];
        let out = move_rows(&[&a], &spans, 3).unwrap();
        assert_eq!(out.dtype(), dtype);
        let reference = numbered(3, 2, 4, 6).as_dtype(dtype).unwrap();
        check(&out, &[(&reference, [3, 2, 4, 6])], &spans, 3);
    }
}

#[test]
fn a_strided_source_moves_as_its_dense_copy() {
    // Positions 1.. of every row: a view whose rows are not contiguous.
    let full = numbered(2, 2, 5, 4);
    let view = full.index((.., .., 1.., ..));
    let spans = [RowSpan { source: 0, row: 1, from: 0, to: 0, count: 4 }];
    let out = move_rows(&[&view], &spans, 4).unwrap();
    check(&out, &[(&full, [2, 2, 5, 4])], &[RowSpan { from: 1, ..spans[0] }], 4);
}

#[test]
fn malformed_moves_are_refused() {
    let a = numbered(2, 2, 4, 3);
    let other_heads = numbered(1, 3, 4, 3);
    let half = a.as_dtype(Dtype::Float16).unwrap();
    let span = |row, from, to, count| RowSpan { source: 0, row, from, to, count };
    let cases: Vec<(Vec<&Array>, Vec<RowSpan>, i32)> = vec![
        (vec![&a], vec![span(2, 0, 0, 1)], 4),  // no row 2
        (vec![&a], vec![span(0, 2, 0, 3)], 4),  // past the positions
        (vec![&a], vec![span(0, 0, 2, 3)], 4),  // past the output's
        (vec![&a], vec![span(0, -1, 0, 1)], 4), // negative
        (vec![&a], vec![RowSpan { source: 1, ..span(0, 0, 0, 1) }], 4), // no source 1
        (vec![&a, &other_heads], vec![span(0, 0, 0, 1)], 4), // heads differ
        (vec![&a], vec![], 4),                  // no rows
        (vec![&half, &a], vec![span(0, 0, 0, 1)], 4), // dtypes differ
    ];
    for (i, (sources, spans, p)) in cases.into_iter().enumerate() {
        assert!(move_rows(&sources, &spans, p).is_err(), "case {i}");
    }
}
