//! MLX arrays made from a decoded tensor's buffer (affine repacks, dense values): MLX frees
//! the buffer when it lets go of it. On the CPU, MLX 0.32's allocator cannot adopt a buffer
//! and copies it at once, freeing ours; tensors kept as the file stores them skip the buffer
//! (file_reads.rs).

use std::ffi::{c_int, c_void};

use mlx_rs::Array;

/// Element types an owned array can hold.
pub(crate) trait Element: Copy + 'static {
    /// MLX's dtype for it.
    const DTYPE: mlx_sys::mlx_dtype;
}

impl Element for u32 {
    const DTYPE: mlx_sys::mlx_dtype = mlx_sys::mlx_dtype__MLX_UINT32;
}

impl Element for u8 {
    const DTYPE: mlx_sys::mlx_dtype = mlx_sys::mlx_dtype__MLX_UINT8;
}

impl Element for f32 {
    const DTYPE: mlx_sys::mlx_dtype = mlx_sys::mlx_dtype__MLX_FLOAT32;
}

impl Element for half::f16 {
    const DTYPE: mlx_sys::mlx_dtype = mlx_sys::mlx_dtype__MLX_FLOAT16;
}

/// Frees the `Vec<T>` an owned array was made from, when MLX lets go of the buffer.
unsafe extern "C" fn drop_values<T>(payload: *mut c_void) {
    // SAFETY: `payload` is the `Box<Vec<T>>` leaked by `owned_array::<T>`, handed back
    // exactly once by MLX.
    drop(unsafe { Box::from_raw(payload.cast::<Vec<T>>()) });
}

/// An array of `shape` whose buffer is `values` itself.
///
/// # Errors
/// When `shape` does not hold exactly `values.len()` elements.
pub(crate) fn owned_array<T: Element>(values: Vec<T>, shape: &[i32]) -> Result<Array, String> {
    let elements =
        shape.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)));
    if elements != Some(values.len()) {
        return Err(format!("{} values do not fill the shape {shape:?}", values.len()));
    }
    let mut boxed = Box::new(values);
    let data = boxed.as_mut_ptr().cast::<c_void>();
    let payload = Box::into_raw(boxed).cast::<c_void>();
    // SAFETY: `data` points at `elements` values of type T that stay put (a Vec's buffer
    // does not move with the Vec) until MLX calls `drop_values::<T>(payload)`, which frees
    // them; `shape` holds `shape.len()` dimensions whose product is that count.
    unsafe {
        let handle = mlx_sys::mlx_array_new_data_managed_payload(
            data,
            shape.as_ptr(),
            shape.len() as c_int,
            T::DTYPE,
            payload,
            Some(drop_values::<T>),
        );
        Ok(Array::from_ptr(handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_arrays_hold_their_values_and_free_them_once() {
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        let a = owned_array(values.clone(), &[4, 6]).unwrap();
        assert_eq!(a.shape(), &[4, 6]);
        assert_eq!(a.as_slice::<f32>(), &values[..]);
        // Used in a graph, then dropped before its result is read.
        let doubled = a.multiply(Array::from_f32(2.0)).unwrap();
        drop(a);
        assert_eq!(doubled.as_slice::<f32>()[3], 3.0);
        let halves = owned_array(vec![half::f16::from_f32(1.5); 6], &[2, 3]).unwrap();
        assert_eq!(halves.dtype(), mlx_rs::Dtype::Float16);
        let packed = owned_array(vec![7u32; 8], &[2, 4]).unwrap();
        assert_eq!(packed.as_slice::<u32>(), &[7; 8]);
        // A shape that does not fit is an error, not a read past the buffer.
        assert!(owned_array(vec![1.0f32; 6], &[7]).is_err());
        assert!(owned_array(vec![1.0f32; 6], &[-6]).is_err());
        assert_eq!(owned_array(Vec::<f32>::new(), &[0, 4]).unwrap().shape(), &[0, 4]);
    }
}
