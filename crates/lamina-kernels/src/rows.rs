//! A KV cache's rows moved in one graph node: a decoding batch's rows joining it, leaving
//! it, and its slots growing, as plain memory copies on the CPU (MLX's slices and
//! concatenations elsewhere).

use std::ffi::c_int;

use lamina_core::{Error, Result};
use mlx_rs::Array;

use crate::{lamina_move_rows, produced};

/// Where one output row's positions come from: `count` positions of row `row` of source
/// `source`, from its position `from`, placed at position `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSpan {
    /// Index into the sources.
    pub source: usize,
    /// Row of that source.
    pub row: i32,
    /// Its first position copied.
    pub from: i32,
    /// Where that position goes in the output row.
    pub to: i32,
    /// Positions copied.
    pub count: i32,
}

/// Rows `[spans.len(), H, positions, W]` from `sources` (`[B_s, H, C_s, W]` each, one
/// dtype): output row `i` holds `spans[i]`'s positions, zeros before them (a batch's
/// left padding) and, after them, whatever the new buffer holds (a KV cache's room, which
/// it writes before it reads). One graph node of memory copies on the CPU.
///
/// ```
/// use lamina_kernels::{RowSpan, move_rows};
/// use mlx_rs::Array;
///
/// let a = Array::from_iter(0..12, &[2, 1, 3, 2]).as_dtype(mlx_rs::Dtype::Float32).unwrap();
/// // Row 1's last two positions, one position to the right, as the only row.
/// let span = RowSpan { source: 0, row: 1, from: 1, to: 1, count: 2 };
/// let moved = move_rows(&[&a], &[span], 4).unwrap();
/// assert_eq!(&moved.as_slice::<f32>()[..6], &[0.0, 0.0, 8.0, 9.0, 10.0, 11.0]);
/// ```
///
/// # Errors
/// [`Error::Kernel`] for sources of other ranks, dtypes or head counts, or spans outside
/// them.
pub fn move_rows(sources: &[&Array], spans: &[RowSpan], positions: i32) -> Result<Array> {
    moved(sources, spans, positions, false)
}

/// [`move_rows`] of one source within its own buffer, which the output then shares, where
/// every row moves towards the buffer's start (closing up a batch after a row left, or
/// dropping padding on the left): no copy of the rows that stay. Positions past a row's
/// copy hold what the buffer held there. Otherwise (or for a source that is not one dense
/// buffer) as [`move_rows`].
///
/// # Safety
/// Nothing else may read `source` (any array sharing its buffer, evaluated or not) once
/// this node runs: the caller owns it alone.
///
/// # Errors
/// As [`move_rows`].
pub unsafe fn move_rows_in_place(source: &Array, spans: &[RowSpan], positions: i32) -> Result<Array> {
    moved(&[source], spans, positions, true)
}

fn moved(sources: &[&Array], spans: &[RowSpan], positions: i32, in_place: bool) -> Result<Array> {
    let too_many = || Error::Kernel("row moves: too many rows or sources".into());
    let mut flat = Vec::with_capacity(spans.len() * 5);
    for s in spans {
        flat.extend([c_int::try_from(s.source).map_err(|_| too_many())?, s.row, s.from, s.to, s.count]);
    }
    let handles: Vec<mlx_sys::mlx_array> = sources.iter().map(|a| a.as_ptr()).collect();
    let (count, rows) = (
        c_int::try_from(handles.len()).map_err(|_| too_many())?,
        c_int::try_from(spans.len()).map_err(|_| too_many())?,
    );
    // SAFETY: valid handles and spans for the call; the kernel fills `out`, which
    // `produced` takes.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_move_rows(
            &mut out,
            handles.as_ptr(),
            count,
            flat.as_ptr(),
            rows,
            positions,
            c_int::from(in_place),
        );
        produced(rc, out)
    }
}
