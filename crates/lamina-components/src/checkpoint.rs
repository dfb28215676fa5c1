//! Gradient checkpointing through MLX's `checkpoint` transform (mlx-c's
//! `mlx_checkpoint`, which mlx-rs does not wrap): a function's intermediate values are not
//! kept for the backward pass but recomputed from its inputs, trading compute for memory.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use lamina_core::{Error, Result};
use mlx_rs::Array;
use mlx_sys::{mlx_array, mlx_closure, mlx_vector_array};

/// Calls `f(inputs)` under MLX's checkpoint transform. Gradients flow to `inputs` only:
/// pass every array the gradient must reach (a layer's parameters) as an input.
///
/// # Errors
/// [`Error::Internal`] when MLX reports a failure (including one `f` returned).
pub fn checkpointed<F>(f: F, inputs: &[Array]) -> Result<Vec<Array>>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let fail = |what: &'static str| Error::Internal(what);
    // SAFETY: every handle made here is freed here; the payload (the boxed closure) is owned
    // by MLX from `mlx_closure_new_func_payload` on and dropped by `drop_payload` when MLX
    // releases its last copy (it may keep one in the graph for the backward pass, hence
    // `'static`).
    unsafe {
        let payload = Box::into_raw(Box::new(f)).cast::<c_void>();
        let closure =
            mlx_sys::mlx_closure_new_func_payload(Some(trampoline::<F>), payload, Some(drop_payload::<F>));
        let mut wrapped: mlx_closure = mlx_sys::mlx_closure_new();
        let made = mlx_sys::mlx_checkpoint(&mut wrapped, closure);
        mlx_sys::mlx_closure_free(closure);
        if made != 0 {
            mlx_sys::mlx_closure_free(wrapped);
            return Err(fail("gradient checkpointing: mlx_checkpoint failed"));
        }
        let input = to_vector(inputs);
        let mut output = mlx_sys::mlx_vector_array_new();
        let applied = mlx_sys::mlx_closure_apply(&mut output, wrapped, input);
        mlx_sys::mlx_vector_array_free(input);
        mlx_sys::mlx_closure_free(wrapped);
        let arrays = if applied == 0 { Some(from_vector(output)) } else { None };
        mlx_sys::mlx_vector_array_free(output);
        arrays.ok_or_else(|| fail("gradient checkpointing: the checkpointed function failed"))
    }
}

/// A new vector holding (references to) `arrays`.
unsafe fn to_vector(arrays: &[Array]) -> mlx_vector_array {
    let handles: Vec<mlx_array> = arrays.iter().map(Array::as_ptr).collect();
    // SAFETY: the vector copies the handles (taking references), the slice outlives the call.
    unsafe {
        let vector = mlx_sys::mlx_vector_array_new();
        mlx_sys::mlx_vector_array_append_data(vector, handles.as_ptr(), handles.len());
        vector
    }
}

/// The arrays of a vector, each a new reference owned by the returned `Array`.
unsafe fn from_vector(vector: mlx_vector_array) -> Vec<Array> {
    // SAFETY: `mlx_vector_array_get` writes a new reference into `handle`, which
    // `Array::from_ptr` takes over.
    unsafe {
        (0..mlx_sys::mlx_vector_array_size(vector))
            .map(|i| {
                let mut handle = mlx_sys::mlx_array_new();
                mlx_sys::mlx_vector_array_get(&mut handle, vector, i);
                Array::from_ptr(handle)
            })
            .collect()
    }
}

unsafe extern "C" fn trampoline<F>(
    result: *mut mlx_vector_array,
    input: mlx_vector_array,
    payload: *mut c_void,
) -> i32
where
    F: FnMut(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let run = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `payload` is the `Box<F>` made in `checkpointed`, alive while MLX holds the
        // closure; `result` points to a vector MLX owns and lets us overwrite.
        unsafe {
            let f = &mut *payload.cast::<F>();
            let outputs = f(&from_vector(input)).ok()?;
            let vector = to_vector(&outputs);
            let set = mlx_sys::mlx_vector_array_set(result, vector);
            mlx_sys::mlx_vector_array_free(vector);
            (set == 0).then_some(())
        }
    }));
    match run {
        Ok(Some(())) => 0,
        _ => 1,
    }
}

unsafe extern "C" fn drop_payload<F>(payload: *mut c_void) {
    // SAFETY: called once by MLX with the pointer `Box::into_raw` gave.
    drop(unsafe { Box::from_raw(payload.cast::<F>()) });
}

#[cfg(test)]
mod tests {
    use mlx_rs::transforms::value_and_grad;

    use super::*;

    #[test]
    fn values_and_gradients_equal_the_plain_function() {
        let f = |args: &[Array]| -> Result<Vec<Array>> {
            Ok(vec![args[0].multiply(&args[1])?.sin()?.multiply(&args[1])?])
        };
        let x = Array::from_slice(&[0.3f32, -1.2, 2.0], &[3]);
        let w = Array::from_slice(&[1.5f32, 0.4, -0.7], &[3]);
        let plain = |args: &[Array]| -> Vec<Array> { vec![f(args).unwrap()[0].sum(None).unwrap()] };
        let checked =
            |args: &[Array]| -> Vec<Array> { vec![checkpointed(f, args).unwrap()[0].sum(None).unwrap()] };
        let (v1, g1) = value_and_grad(plain)(&[x.clone(), w.clone()]).unwrap();
        let (v2, g2) = value_and_grad(checked)(&[x, w]).unwrap();
        assert!(v1[0].all_close(&v2[0], 1e-6, 1e-6, None).unwrap());
        assert!(g1[0].all_close(&g2[0], 1e-6, 1e-6, None).unwrap());
    }

    #[test]
    fn a_failing_function_is_an_error() {
        let x = Array::from_slice(&[1.0f32], &[1]);
        let failing = |_: &[Array]| -> Result<Vec<Array>> { Err(Error::Internal("no")) };
        assert!(checkpointed(failing, &[x]).is_err());
    }
}
