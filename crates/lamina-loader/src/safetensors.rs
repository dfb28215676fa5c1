//! Reading safetensors files: memory-mapped, header validated before anything is copied,
//! tensors copied into MLX arrays (optionally cast).

use std::ffi::c_void;
use std::fs::File;
use std::path::{Path, PathBuf};

use lamina_core::DType;
use memmap2::Mmap;
use mlx_rs::{Array, Dtype};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype as StDtype;

use crate::error::{LoaderError, Result};
use crate::progress::{Progress, ProgressSink};

/// One tensor as a file's header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's key.
    pub name: String,
    /// Its dtype's name in the file (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Bytes in the file.
    pub bytes: u64,
}

impl TensorInfo {
    /// Elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes once loaded, after casting floating tensors to `dtype` when given.
    pub fn loaded_bytes(&self, dtype: Option<DType>) -> u64 {
        match dtype {
            Some(target) if is_float_name(&self.dtype) => self.numel() * target.size_of() as u64,
            _ => self.bytes,
        }
    }
}

fn is_float_name(name: &str) -> bool {
    matches!(name, "F32" | "F16" | "BF16" | "F64")
}

/// A memory-mapped safetensors file whose header has been validated (offsets in range,
/// no overlap, the data exactly as long as the header says).
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    mmap: Mmap,
}

impl TensorFile {
    /// Maps and validates `path`.
    ///
    /// # Errors
    /// [`LoaderError::Io`] if it cannot be read, [`LoaderError::Safetensors`] if it is
    /// truncated or corrupt.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| LoaderError::io(path, e))?;
        // SAFETY: the map is read-only; a file changed underneath while loading is the
        // same hazard every mmap-based loader (safetensors, mlx, llama.cpp) accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LoaderError::io(path, e))?;
        let tensor_file = TensorFile { path: path.to_path_buf(), mmap };
        tensor_file.parsed()?;
        Ok(tensor_file)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.mmap)
            .map_err(|e| LoaderError::Safetensors { path: self.path.clone(), reason: e.to_string() })
    }

    /// The header's `__metadata__` strings (empty when it has none).
    ///
    /// # Errors
    /// Never after a successful [`TensorFile::open`]; kept fallible for the type's sake.
    pub fn metadata(&self) -> Result<std::collections::HashMap<String, String>> {
        let (_, metadata) = SafeTensors::read_metadata(&self.mmap)
            .map_err(|e| LoaderError::Safetensors { path: self.path.clone(), reason: e.to_string() })?;
        Ok(metadata.metadata().clone().unwrap_or_default())
    }

    /// Every tensor's name, dtype and shape, from the header alone.
    ///
    /// # Errors
    /// Never after a successful [`TensorFile::open`]; kept fallible for the type's sake.
    pub fn tensors(&self) -> Result<Vec<TensorInfo>> {
        let parsed = self.parsed()?;
        let mut infos: Vec<TensorInfo> = parsed
            .tensors()
            .into_iter()
            .map(|(name, view)| TensorInfo {
                name,
                dtype: format!("{:?}", view.dtype()),
                shape: view.shape().to_vec(),
                bytes: view.data().len() as u64,
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    /// Copies every tensor into MLX as stored (casting happens on the caller's thread).
    ///
    /// # Errors
    /// [`LoaderError::UnsupportedDtype`] for a dtype MLX lacks, or a shape too large.
    pub fn read(&self, progress: &ProgressSink) -> Result<Vec<(String, Array)>> {
        self.read_where(progress, |_| true)
    }

    /// Copies the tensors whose names pass `keep` (the others are never touched).
    ///
    /// # Errors
    /// As [`TensorFile::read`].
    pub fn read_where(
        &self,
        progress: &ProgressSink,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Array)>> {
        let parsed = self.parsed()?;
        let mut out = Vec::with_capacity(parsed.len());
        for (name, view) in parsed.tensors().into_iter().filter(|(name, _)| keep(name)) {
            let unsupported = || LoaderError::UnsupportedDtype {
                path: self.path.clone(),
                key: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            };
            let mlx_dtype = mlx_dtype(view.dtype()).ok_or_else(unsupported)?;
            let shape = view
                .shape()
                .iter()
                .map(|&d| i32::try_from(d))
                .collect::<std::result::Result<Vec<i32>, _>>()
                .map_err(|_| LoaderError::Safetensors {
                    path: self.path.clone(),
                    reason: format!("tensor `{name}` is too large"),
                })?;
            let data = view.data();
            // SAFETY: safetensors validated that `data` holds exactly numel * size_of(dtype)
            // bytes; MLX copies them (alignment does not matter to a byte copy).
            let array = unsafe { Array::from_raw_data(data.as_ptr().cast::<c_void>(), &shape, mlx_dtype) };
            forget_pages(
                &self.mmap,
                (data.as_ptr() as usize).wrapping_sub(self.mmap.as_ptr() as usize),
                data.len(),
            );
            progress.send(Progress::Tensor { name: name.clone(), bytes: data.len() as u64 });
            out.push((name, array));
        }
        Ok(out)
    }
}

/// Lets the kernel drop the mapped pages of `len` bytes at `start` of `mmap`, a tensor that
/// has been copied into MLX, so that a load does not hold the file's pages and the model's
/// arrays at once (a range outside the map is left alone).
pub(crate) fn forget_pages(mmap: &Mmap, start: usize, len: usize) {
    if len > 0 && start.checked_add(len).is_some_and(|end| end <= mmap.len()) {
        // SAFETY: a read-only, file-backed map whose range was copied out and is no longer
        // borrowed; a later read of these pages would fetch them from the file again.
        let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    }
}

fn mlx_dtype(dtype: StDtype) -> Option<Dtype> {
    Some(match dtype {
        StDtype::BOOL => Dtype::Bool,
        StDtype::U8 => Dtype::Uint8,
        StDtype::I8 => Dtype::Int8,
        StDtype::I16 => Dtype::Int16,
        StDtype::U16 => Dtype::Uint16,
        StDtype::F16 => Dtype::Float16,
        StDtype::BF16 => Dtype::Bfloat16,
        StDtype::I32 => Dtype::Int32,
        StDtype::U32 => Dtype::Uint32,
        StDtype::F32 => Dtype::Float32,
        StDtype::F64 => Dtype::Float64,
        StDtype::I64 => Dtype::Int64,
        StDtype::U64 => Dtype::Uint64,
        _ => return None,
    })
}
