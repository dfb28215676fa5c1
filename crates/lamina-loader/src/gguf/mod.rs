//! GGUF checkpoints (llama.cpp's format, Llama architecture): the header is parsed and
//! validated by lamina, the tensors are read by MLX's GGUF reader (Q4_0, Q4_1 and Q8_0
//! arrive as MLX's affine quantization, group 32), the config and tokenizer are built from
//! the metadata, and llama.cpp's q/k row permutation is undone. Quantized tensors stay
//! quantized (computed by lamina's CPU kernel); asking for a dtype dequantizes them (in
//! f32) to it.

mod config;
mod header;
mod tokenizer;

pub use config::llama_config;
pub use header::{Header, TensorDesc, TensorType, Value as GgufValue, parse};
pub use tokenizer::tokenizer;

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use lamina_components::QuantConfig;
use lamina_core::{Budget, DType};
use lamina_families::Weights;
use lamina_families::{AnyConfig, CheckpointQuantization};
use mlx_rs::{Array, Dtype, ops};

use crate::error::{LoaderError, Result};
use crate::generation::GenerationConfig;
use crate::load::{LoadOptions, LoadedModel, apply_strictly};
use crate::progress::Progress;
use crate::resolve::Checkpoint;

fn gguf_error(path: &Path, reason: impl Into<String>) -> LoaderError {
    LoaderError::Gguf { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads and validates a GGUF file's header.
///
/// # Errors
/// [`LoaderError::Io`] or [`LoaderError::Gguf`] naming the file.
pub fn read_header(path: &Path) -> Result<Header> {
    let file = std::fs::File::open(path).map_err(|e| LoaderError::io(path, e))?;
    // SAFETY: read-only map; see `TensorFile::open`.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoaderError::io(path, e))?;
    parse(&mmap).map_err(|reason| gguf_error(path, reason))
}

pub(crate) async fn load_gguf(
    path: PathBuf,
    checkpoint: Checkpoint,
    options: LoadOptions,
) -> Result<LoadedModel> {
    let header_path = path.clone();
    let header = tokio::task::spawn_blocking(move || read_header(&header_path))
        .await
        .map_err(|e| LoaderError::Task(e.to_string()))??;
    let family_config = config::llama_config(&header).map_err(|reason| gguf_error(&path, reason))?;
    if let Some(t) = header.tensors.iter().find(|t| !t.kind.readable()) {
        return Err(gguf_error(
            &path,
            format!(
                "tensor `{}` is {}, which lamina does not read yet (F32, F16, Q4_0, Q4_1, Q8_0)",
                t.name, t.kind
            ),
        ));
    }
    // Quantized tensors stay quantized unless a dtype is asked for.
    let keep_quantized = options.dtype.is_none();
    let target = options.dtype.unwrap_or(DType::F32);
    let held = |t: &TensorDesc| match (keep_quantized, t.kind.quantized_bits()) {
        (true, Some(bits)) => held_quantized(t, bits),
        _ => t.numel() * target.size_of() as u64,
    };
    let needed: u64 = header.tensors.iter().map(held).sum();
    let parameters: u64 = header.tensors.iter().map(TensorDesc::numel).sum();
    let bits = (needed.saturating_mul(8) / parameters.max(1)).max(1);
    let budget = Budget { limit: options.memory_limit, bits };
    let mut model = family_config.build(budget).map_err(|e| LoaderError::model(&path, e))?;
    let (heads, kv_heads) = (family_config.num_attention_heads, family_config.kv_heads());
    if let Some(limit) = options.memory_limit {
        if needed > limit {
            return Err(LoaderError::MemoryLimit { needed, limit });
        }
    }
    let disk: u64 = header.tensors.iter().map(|t| t.bytes).sum();
    options.progress.send(Progress::Started { files: 1, tensors: header.tensors.len(), bytes: disk });
    options.progress.send(Progress::FileStarted { path: path.clone() });

    let read_path = path.clone();
    let mut arrays = tokio::task::spawn_blocking(move || {
        mlx_rs::io::GgufFile::load(&read_path)
            .and_then(|file| file.arrays())
            .map_err(|e| gguf_error(&read_path, e.to_string()))
    })
    .await
    .map_err(|e| LoaderError::Task(e.to_string()))??;

    let mut weights = Weights::with_capacity(header.tensors.len());
    let mut quantized = BTreeMap::new();
    for desc in &header.tensors {
        let (name, permuted) = config::hf_name(&desc.name, heads, kv_heads);
        let rows = |a: Array| -> Result<Array> {
            match permuted {
                Some(h) => unpermute(&a, h),
                None => Ok(a),
            }
        };
        match (keep_quantized, desc.kind.quantized_bits()) {
            (true, Some(bits)) => {
                let (w, scales, biases) =
                    take_quantized(&mut arrays, desc, bits).map_err(|reason| gguf_error(&path, reason))?;
                let layer = name.strip_suffix(".weight").unwrap_or(&name).to_owned();
                weights.insert(format!("{layer}.scales"), rows(scales)?);
                weights.insert(format!("{layer}.biases"), rows(biases)?);
                weights.insert(name, rows(w)?);
                quantized.insert(layer, Some(QuantConfig::new(bits, GGUF_GROUP)));
            }
            _ => {
                let array =
                    take_tensor(&mut arrays, desc, target).map_err(|reason| gguf_error(&path, reason))?;
                weights.insert(name, rows(array)?);
            }
        }
        options.progress.send(Progress::Tensor { name: desc.name.clone(), bytes: desc.bytes });
    }
    mlx_rs::transforms::eval(weights.values())?;
    options.progress.send(Progress::FileDone { path: path.clone() });

    let weights = model.sanitize(weights).map_err(|e| LoaderError::model(&path, e))?;
    let mut config = serde_json::to_value(&family_config)
        .map_err(|source| LoaderError::Json { path: path.clone(), source })?;
    if let Some(default) = quantized.values().flatten().next().copied() {
        let plan = CheckpointQuantization { default, overrides: quantized };
        plan.prepare(model.as_mut(), &weights).map_err(|e| LoaderError::model(&path, e))?;
        config["quantization"] = CheckpointQuantization::config_entry(default);
    }
    let report = apply_strictly(model.as_mut(), weights, options.allow_mismatch, &options.progress)?;
    let tokenizer = if options.tokenizer {
        Some(
            tokenizer::tokenizer(&header)
                .map_err(|reason| LoaderError::Tokenizer { path: path.clone(), reason })?,
        )
    } else {
        None
    };
    Ok(LoadedModel {
        model,
        config,
        checkpoint,
        generation: GenerationConfig::default(),
        tokenizer,
        report,
        memory_bytes: needed,
    })
}

/// The group size of the GGUF types MLX's reader hands over in its affine layout.
const GGUF_GROUP: i32 = 32;

/// Bytes a quantized tensor takes once held in MLX's layout (packed values, f32 scales
/// and biases per group of 32).
fn held_quantized(t: &TensorDesc, bits: i32) -> u64 {
    let cols = t.shape.last().copied().unwrap_or(0);
    let rows = t.numel() / cols.max(1);
    QuantConfig::new(bits, GGUF_GROUP).bytes(rows, cols)
}

/// The packed weight, scales and biases (f32) of a quantized tensor, as MLX's reader
/// hands them over in its affine layout.
fn take_quantized(
    arrays: &mut std::collections::HashMap<String, Array>,
    desc: &TensorDesc,
    bits: i32,
) -> std::result::Result<(Array, Array, Array), String> {
    let missing = |key: &str| format!("MLX's reader returned no `{key}`");
    let weight = arrays.remove(&desc.name).ok_or_else(|| missing(&desc.name))?;
    let prefix = desc.name.strip_suffix(".weight").unwrap_or(&desc.name);
    let scales = arrays.remove(&format!("{prefix}.scales")).ok_or_else(|| missing("scales"))?;
    let biases = arrays.remove(&format!("{prefix}.biases")).ok_or_else(|| missing("biases"))?;
    let f32 = |a: Array| a.as_dtype(Dtype::Float32).map_err(|e| e.to_string());
    let (scales, biases) = (f32(scales)?, f32(biases)?);
    let rows = desc.numel() / desc.shape.last().copied().unwrap_or(1).max(1);
    let cols = desc.shape.last().copied().unwrap_or(0);
    let (packed_shape, group_shape) = QuantConfig::new(bits, GGUF_GROUP).shapes(rows as i32, cols as i32);
    if weight.shape() != packed_shape.as_slice() || scales.shape() != group_shape.as_slice() {
        return Err(format!(
            "tensor `{}` arrives as {:?} with scales {:?}, expected {packed_shape:?} and {group_shape:?}",
            desc.name,
            weight.shape(),
            scales.shape()
        ));
    }
    Ok((weight, scales, biases))
}

/// The tensor `desc` describes, dequantized (in f32) if it was quantized, cast to `target`.
fn take_tensor(
    arrays: &mut std::collections::HashMap<String, Array>,
    desc: &TensorDesc,
    target: DType,
) -> std::result::Result<Array, String> {
    let missing = |key: &str| format!("MLX's reader returned no `{key}`");
    let weight = arrays.remove(&desc.name).ok_or_else(|| missing(&desc.name))?;
    let dequantized = match desc.kind.quantized_bits() {
        Some(bits) => {
            let prefix = desc.name.strip_suffix(".weight").unwrap_or(&desc.name);
            let scales = arrays.remove(&format!("{prefix}.scales")).ok_or_else(|| missing("scales"))?;
            let biases = arrays.remove(&format!("{prefix}.biases")).ok_or_else(|| missing("biases"))?;
            let f32 = |a: Array| a.as_dtype(Dtype::Float32).map_err(|e| e.to_string());
            ops::dequantize(&weight, f32(scales)?, &f32(biases)?, GGUF_GROUP, bits)
                .map_err(|e| e.to_string())?
        }
        None => weight,
    };
    let expected: Vec<i32> = desc.shape.iter().map(|&d| d as i32).collect();
    if dequantized.shape() != expected.as_slice() {
        return Err(format!(
            "tensor `{}` has shape {:?}, the header says {expected:?}",
            desc.name,
            dequantized.shape()
        ));
    }
    dequantized.as_dtype(target.into()).map_err(|e| e.to_string())
}

/// Undoes llama.cpp's q/k row permutation (which interleaves each head's two RoPE halves
/// for ggml's rotation): `[H * D, in]` rows back to Hugging Face's split-halves order.
fn unpermute(weight: &Array, heads: usize) -> Result<Array> {
    let (rows, cols) = (weight.dim(0), weight.dim(1));
    let heads = heads as i32;
    let half = rows / heads / 2;
    Ok(weight.reshape(&[heads, half, 2, cols])?.swap_axes(1, 2)?.reshape(&[rows, cols])?)
}
