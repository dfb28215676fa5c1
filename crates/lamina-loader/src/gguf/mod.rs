//! GGUF checkpoints (llama.cpp's format, Llama architecture): the header is parsed and
//! validated by lamina and every tensor's blocks are read by lamina (`blocks`): quantized
//! types are repacked into MLX's affine layout (group 32) and stay quantized, computed by
//! lamina's CPU kernel; asking for a dtype dequantizes them (in f32) to it. The config and
//! tokenizer are built from the metadata, and llama.cpp's q/k row permutation is undone.

mod blocks;
mod config;
mod file_reads;
mod header;
mod owned;
mod tokenizer;

pub use config::{Arch, Mapped, config, is_config_tensor, llama_config, map_name};
pub use header::{Header, TensorDesc, TensorType, Value as GgufValue, parse};
pub use tokenizer::tokenizer;

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use lamina_components::{Activations, BlockFormat, QuantConfig};
use lamina_core::{Budget, DType};
use lamina_families::Weights;
use lamina_families::{AnyConfig, CheckpointQuantization};
use mlx_rs::Array;

use crate::error::{LoaderError, Result};
use crate::generation::GenerationConfig;
use crate::load::{LoadOptions, LoadedModel, apply_strictly};
use crate::pipeline::split;
use crate::progress::Progress;
use crate::resolve::Checkpoint;
use crate::safetensors::forget_pages;
use file_reads::FileReads;
use owned::owned_array;

fn gguf_error(path: &Path, reason: impl Into<String>) -> LoaderError {
    LoaderError::Gguf { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads and validates a GGUF file's header.
///
/// # Errors
/// [`LoaderError::Io`] or [`LoaderError::Gguf`] naming the file.
pub fn read_header(path: &Path) -> Result<Header> {
    map_and_parse(path).map(|(header, ..)| header)
}

/// Reads a GGUF file's header and the architecture and typed config it describes.
///
/// # Errors
/// [`LoaderError::Io`] or [`LoaderError::Gguf`] naming the file.
pub fn read_config(path: &Path) -> Result<(Header, Arch, lamina_families::DecoderConfig)> {
    let (header, mmap, _) = map_and_parse(path)?;
    let (arch, config) = config::config(&header, &mmap).map_err(|reason| gguf_error(path, reason))?;
    Ok((header, arch, config))
}

pub(crate) async fn load_gguf(
    path: PathBuf,
    checkpoint: Checkpoint,
    options: LoadOptions,
) -> Result<LoadedModel> {
    let header_path = path.clone();
    let (header, mmap, file) = tokio::task::spawn_blocking(move || map_and_parse(&header_path))
        .await
        .map_err(|e| LoaderError::Task(e.to_string()))??;
    let (arch, family_config) = config::config(&header, &mmap).map_err(|reason| gguf_error(&path, reason))?;
    let reads = FileReads::new(file);
    // The weights: every tensor but those the config was read from.
    let tensors: Vec<&TensorDesc> = header.tensors.iter().filter(|t| !is_config_tensor(&t.name)).collect();
    if let Some(t) = tensors.iter().find(|t| !t.kind.readable()) {
        return Err(gguf_error(
            &path,
            format!(
                "tensor `{}` is {}, which lamina does not read yet (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, \
                 Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)",
                t.name, t.kind
            ),
        ));
    }
    // The tokenizer before the weights: a SentencePiece vocabulary's merges are built as
    // strings and freed again (Gemma 3's 262k pieces: ~100 MB for a moment), which then is
    // not on top of the weights (Gemma 3 270M's `generate`: peak RSS 423 -> 364 MB).
    let tokenizer = if options.tokenizer {
        Some(
            tokenizer::tokenizer(&header)
                .map_err(|reason| LoaderError::Tokenizer { path: path.clone(), reason })?,
        )
    } else {
        None
    };
    // Quantized tensors stay quantized unless a dtype is asked for.
    let keep = Keep::for_dtype(options.dtype);
    let target = options.dtype.unwrap_or(DType::F32);
    let held = |t: &TensorDesc| match (keep.blocks_of(t.kind), keep.quantized, blocks::held_bits(t.kind)) {
        (Some(_), ..) => t.bytes,
        (None, true, Some(bits)) => held_quantized(t, bits),
        _ => t.numel() * target.size_of() as u64,
    };
    let whole: u64 = tensors.iter().copied().map(held).sum();
    let parameters: u64 = tensors.iter().map(|t| t.numel()).sum();
    let bits = (whole.saturating_mul(8) / parameters.max(1)).max(1);
    let budget = Budget { limit: options.memory_limit, bits };
    let mut model = family_config.build(budget).map_err(|e| LoaderError::model(&path, e))?;
    let (heads, kv_heads) = (family_config.num_attention_heads, family_config.kv_heads());
    let names: Vec<Mapped> =
        tensors.iter().map(|t| config::map_name(arch, &t.name, heads, kv_heads)).collect();
    let bytes = || Ok(names.iter().zip(&tensors).map(|(m, t)| (m.name.clone(), t.bytes)));
    let share = split(model.as_mut(), options.pipeline.as_ref(), bytes, &path)?;
    let kept: Vec<(Mapped, &TensorDesc)> =
        names.into_iter().zip(tensors).filter(|(m, _)| share.keeps(&m.name)).collect();
    let needed: u64 = kept.iter().map(|(_, t)| held(t)).sum();
    if let Some(limit) = options.memory_limit {
        if needed > limit {
            return Err(LoaderError::MemoryLimit { needed, limit });
        }
    }
    let disk: u64 = kept.iter().map(|(_, t)| t.bytes).sum();
    options.progress.send(Progress::Started { files: 1, tensors: kept.len(), bytes: disk });
    options.progress.send(Progress::FileStarted { path: path.clone() });

    let mut weights = Weights::with_capacity(kept.len());
    let mut quantized = BTreeMap::new();
    for (Mapped { name, permuted, unit_offset }, desc) in kept {
        let rows = |a: Array| -> Result<Array> {
            match permuted {
                Some(h) => unpermute(&a, h),
                None => Ok(a),
            }
        };
        // Drops the tensor's file pages as it reads them (the embedded model's whole chat
        // answer: peak RSS 230 -> 169 MiB).
        let tensor =
            read_tensor(&mmap, &reads, desc, keep, target).map_err(|reason| gguf_error(&path, reason))?;
        match tensor {
            Tensor::Dense(array) => {
                let array = if unit_offset {
                    array.subtract(Array::from_f32(1.0).as_dtype(array.dtype())?)?
                } else {
                    array
                };
                weights.insert(name, rows(array)?);
            }
            Tensor::Blocks { format, blocks } => {
                weights.insert(name.clone(), rows(blocks)?);
                let layer = name.strip_suffix(".weight").unwrap_or(&name).to_owned();
                quantized.insert(layer, Some(QuantConfig::gguf(format, Activations::Exact)));
            }
            Tensor::Quantized { config, packed, scales, biases } => {
                let layer = name.strip_suffix(".weight").unwrap_or(&name).to_owned();
                weights.insert(format!("{layer}.scales"), rows(scales)?);
                weights.insert(format!("{layer}.biases"), rows(biases)?);
                weights.insert(name, rows(packed)?);
                quantized.insert(layer, Some(config));
            }
        }
        options.progress.send(Progress::Tensor { name: desc.name.clone(), bytes: desc.bytes });
    }
    drop(mmap);
    evaluate(&reads, weights.values(), &path)?;
    options.progress.send(Progress::FileDone { path: path.clone() });

    let weights = share.renumbered(model.sanitize(weights).map_err(|e| LoaderError::model(&path, e))?);
    let quantized: BTreeMap<String, Option<QuantConfig>> =
        quantized.into_iter().map(|(layer, q)| (share.renumber(layer), q)).collect();
    let mut config = serde_json::to_value(&family_config)
        .map_err(|source| LoaderError::Json { path: path.clone(), source })?;
    if let Some(default) = quantized.values().flatten().next().copied() {
        let plan =
            CheckpointQuantization { default, overrides: quantized }.with_activations(activations(&options));
        plan.prepare(model.as_mut(), &weights).map_err(|e| LoaderError::model(&path, e))?;
        config["quantization"] = CheckpointQuantization::config_entry(default);
    }
    let report = apply_strictly(model.as_mut(), weights, options.allow_mismatch, &options.progress)?;
    Ok(LoadedModel {
        model,
        config,
        checkpoint,
        generation: GenerationConfig::default(),
        tokenizer,
        report,
        memory_bytes: needed,
        pipeline_layers: share.layers(),
    })
}

/// Maps a GGUF file and parses its header.
fn map_and_parse(path: &Path) -> Result<(Header, memmap2::Mmap, std::fs::File)> {
    let file = std::fs::File::open(path).map_err(|e| LoaderError::io(path, e))?;
    // SAFETY: read-only map; see `TensorFile::open`.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoaderError::io(path, e))?;
    let header = parse(&mmap).map_err(|reason| gguf_error(path, reason))?;
    Ok((header, mmap, file))
}

/// How each quantized layer's products read `x`: `LoadOptions::activations` when given;
/// by default as llama.cpp runs a GGUF file, rounded to 8 bits, except that the output head
/// (or the embedding tied to it) recomputes its top logits exactly (`Int8ExactTop`): the
/// logits greedy decoding ranks. Rounding the head's input throughout changed SmolLM2-135M's
/// greedy answer to "What is the capital of France?" from "Paris" (exact) to "L'Étoile ..."
/// (as it changes llama.cpp's); an exact head cost Gemma 3 270M (a 262144-row head, 60% of
/// its weights) a third of its decoding speed.
fn activations(options: &LoadOptions) -> impl Fn(&str) -> Activations + '_ {
    move |layer| match options.activations {
        Some(chosen) => chosen,
        None if HEAD_LAYERS.contains(&layer) => Activations::Int8ExactTop,
        None => Activations::Int8,
    }
}

/// The layers that compute the logits, under the names GGUF tensors map to.
const HEAD_LAYERS: [&str; 2] = ["model.embed_tokens", "lm_head"];

/// The group size of every quantized form lamina keeps.
const GGUF_GROUP: i32 = 32;

/// Bytes a quantized tensor takes once held in MLX's layout (packed values, scales and
/// biases per group of 32; counted as f32, an upper bound where they are held in f16).
fn held_quantized(t: &TensorDesc, bits: i32) -> u64 {
    let cols = t.shape.last().copied().unwrap_or(0);
    let rows = t.numel() / cols.max(1);
    QuantConfig { group_size: GGUF_GROUP, bits, activations: Activations::Exact, blocks: None }
        .bytes(rows, cols)
}

/// A GGUF tensor as lamina holds it.
#[derive(Debug)]
pub enum Tensor {
    /// Dense values.
    Dense(Array),
    /// MLX's affine layout.
    Quantized {
        /// Bits and group size.
        config: QuantConfig,
        /// The packed values (u32).
        packed: Array,
        /// Per-group scales (f16 when GGUF's own f16 values hold them exactly, else f32).
        scales: Array,
        /// Per-group offsets (f32).
        biases: Array,
    },
    /// GGUF blocks as the file stores them (on the CPU, where lamina's kernels read them).
    Blocks {
        /// Their format.
        format: BlockFormat,
        /// u8 `[rows, cols / values * block bytes]`: each row its blocks.
        blocks: Array,
    },
}

/// What a GGUF file's quantized tensors are held as.
#[derive(Debug, Clone, Copy)]
struct Keep {
    /// Quantized (else dense in the asked dtype).
    quantized: bool,
    /// Block types as stored (else repacked into MLX's affine layout, or re-quantized).
    blocks: bool,
}

impl Keep {
    /// Quantized unless a dtype is asked for; super-blocks as stored on the CPU (other
    /// devices multiply MLX's affine layout only).
    fn for_dtype(dtype: Option<DType>) -> Self {
        let quantized = dtype.is_none();
        Keep { quantized, blocks: quantized && lamina_components::fast::on_cpu() }
    }

    /// The format a tensor of `kind` is held in as stored, if it is.
    fn blocks_of(self, kind: TensorType) -> Option<BlockFormat> {
        if !self.blocks {
            return None;
        }
        let super_block = match kind {
            TensorType::Q2_K => BlockFormat::Q2K,
            TensorType::Q3_K => BlockFormat::Q3K,
            TensorType::Q4_K => BlockFormat::Q4K,
            TensorType::Q5_K => BlockFormat::Q5K,
            TensorType::Q6_K => BlockFormat::Q6K,
            TensorType::IQ4_XS => BlockFormat::IQ4XS,
            // The 32-value types are exact in MLX's affine layout too: as stored only where
            // this CPU's tier multiplies them natively (AVX2 and up, NEON; the portable
            // tier's affine kernels serve them better than its block loops).
            _ => {
                let small = match kind {
                    TensorType::Q5_0 => BlockFormat::Q5_0,
                    TensorType::Q5_1 => BlockFormat::Q5_1,
                    TensorType::Q8_0 => BlockFormat::Q8_0,
                    TensorType::IQ4_NL => BlockFormat::IQ4NL,
                    _ => return None,
                };
                return small.native().then_some(small);
            }
        };
        Some(super_block)
    }
}

/// Every tensor of a GGUF file under its llama.cpp name, read by lamina: kept quantized
/// in MLX's affine layout where the type is quantized and `dtype` is `None`, dense in
/// `dtype` (f32 by default) otherwise. No q/k un-permutation (that is the model loader's).
///
/// # Errors
/// [`LoaderError::Gguf`] naming the file and tensor.
pub fn read_tensors(path: &Path, dtype: Option<DType>) -> Result<Vec<(String, Tensor)>> {
    let (header, mmap, file) = map_and_parse(path)?;
    let reads = FileReads::new(file);
    let keep = Keep::for_dtype(dtype);
    let target = dtype.unwrap_or(DType::F32);
    let tensors: Vec<(String, Tensor)> = header
        .tensors
        .iter()
        .map(|desc| {
            let tensor =
                read_tensor(&mmap, &reads, desc, keep, target).map_err(|reason| gguf_error(path, reason))?;
            Ok((desc.name.clone(), tensor))
        })
        .collect::<Result<_>>()?;
    let stored = tensors.iter().filter_map(|(_, t)| match t {
        Tensor::Blocks { blocks, .. } => Some(blocks),
        _ => None,
    });
    evaluate(&reads, stored, path)?;
    Ok(tensors)
}

/// Reads one tensor from the mapped file: a super-block type's bytes as stored when `keep`
/// holds it so; repacked into MLX's affine layout when kept quantized (Q6_K, Q3_K, Q2_K
/// through MLX's own 8-bit quantization off the CPU); dense in `target` otherwise.
fn read_tensor(
    mmap: &memmap2::Mmap,
    reads: &FileReads,
    desc: &TensorDesc,
    keep: Keep,
    target: DType,
) -> std::result::Result<Tensor, String> {
    let start = usize::try_from(desc.offset)
        .map_err(|_| format!("tensor `{}` lies past the address space", desc.name))?;
    let end = start.checked_add(desc.bytes as usize).filter(|&e| e <= mmap.len());
    let data = end
        .map(|e| &mmap[start..e])
        .ok_or_else(|| format!("tensor `{}` lies outside the file", desc.name))?;
    let cols = desc.shape.last().copied().unwrap_or(1);
    let rows = desc.numel() / cols.max(1);
    let dim = |v: u64| i32::try_from(v).map_err(|_| format!("tensor `{}` is too large", desc.name));
    let (r, c) = (dim(rows)?, dim(cols)?);
    let shape: Vec<i32> = desc.shape.iter().map(|&d| dim(d)).collect::<std::result::Result<_, _>>()?;
    let mlx = |e: mlx_rs::error::Exception| e.to_string();
    let forget = |offset: usize, len: usize| forget_pages(mmap, start + offset, len);
    let shape2 = (desc.kind, rows as usize, cols as usize);
    if let Some(format) = keep.blocks_of(desc.kind) {
        // The file's bytes, read by MLX into the array's own buffer (no mapped pages, no
        // copy held beside it): whole rows of blocks.
        let row_bytes = format.row_bytes(cols as usize);
        if cols % format.values() as u64 != 0 || data.len() != rows as usize * row_bytes {
            return Err(format!(
                "tensor `{}`: {rows}x{cols} values are not whole {format} blocks",
                desc.name
            ));
        }
        let blocks = reads.array(desc.offset, data.len() as u64, [r, dim(row_bytes as u64)?], &desc.name)?;
        return Ok(Tensor::Blocks { format, blocks });
    }
    match decode_in_chunks(data, shape2, keep.quantized, CHUNK_BYTES, forget)? {
        blocks::Decoded::Affine { bits, packed, scales, biases } => {
            let config =
                QuantConfig { group_size: GGUF_GROUP, bits, activations: Activations::Exact, blocks: None };
            let (packed_shape, group_shape) = config.shapes(r, c);
            let halves =
                (desc.name != EMBEDDING).then(|| f16_exactly(&scales).zip(f16_exactly(&biases))).flatten();
            let (scales, biases) = match halves {
                Some((scales, biases)) => {
                    (owned_array(scales, &group_shape)?, owned_array(biases, &group_shape)?)
                }
                None => (owned_array(scales, &group_shape)?, owned_array(biases, &group_shape)?),
            };
            // The arrays take the decoded buffers over (no second copy of a large tensor).
            Ok(Tensor::Quantized { config, packed: owned_array(packed, &packed_shape)?, scales, biases })
        }
        blocks::Decoded::Dense(values) => {
            let dense = owned_array(values, &shape)?;
            match (keep.quantized, blocks::held_bits(desc.kind)) {
                (true, Some(bits)) => {
                    let config = QuantConfig {
                        group_size: GGUF_GROUP,
                        bits,
                        activations: Activations::Exact,
                        blocks: None,
                    };
                    let (packed, scales, biases) =
                        config.quantize(&dense.reshape(&[r, c]).map_err(mlx)?).map_err(|e| e.to_string())?;
                    Ok(Tensor::Quantized { config, packed, scales, biases })
                }
                _ => Ok(Tensor::Dense(dense.as_dtype(target.into()).map_err(mlx)?)),
            }
        }
    }
}

/// Evaluates `arrays` (among them the tensors `reads` serves MLX), then fails when one of
/// those reads came up short (MLX 0.32 does not pass such a failure on).
fn evaluate<'a>(reads: &FileReads, arrays: impl IntoIterator<Item = &'a Array>, path: &Path) -> Result<()> {
    mlx_rs::transforms::eval(arrays)?;
    if reads.failed() {
        return Err(gguf_error(
            path,
            "a tensor's bytes could not be read (did the file change while it loaded?)",
        ));
    }
    Ok(())
}

/// Bytes of the file decoded at a time: each chunk's pages are dropped from memory once
/// decoded, so a large tensor is never held both as file pages and as values (Gemma 3
/// 270M's peak RSS: 599 -> 425 MiB).
const CHUNK_BYTES: usize = 16 << 20;

/// Decodes a tensor's `rows` rows from `data` in chunks of whole rows of about
/// `chunk_bytes`, calling `done(offset, len)` with each chunk's byte range once decoded
/// (the whole range at once for a tensor of one chunk).
fn decode_in_chunks(
    data: &[u8],
    (kind, rows, cols): (TensorType, usize, usize),
    keep_quantized: bool,
    chunk_bytes: usize,
    mut done: impl FnMut(usize, usize),
) -> std::result::Result<blocks::Decoded, String> {
    let row_bytes = if rows > 0 && data.len() % rows == 0 { data.len() / rows } else { 0 };
    let chunk_rows = (chunk_bytes / row_bytes.max(1)).max(1);
    if row_bytes == 0 || rows <= chunk_rows {
        let whole = blocks::decode(kind, data, rows, cols, keep_quantized)?;
        done(0, data.len());
        return Ok(whole);
    }
    let mut decoded: Option<blocks::Decoded> = None;
    for first in (0..rows).step_by(chunk_rows) {
        let n = chunk_rows.min(rows - first);
        let bytes = &data[first * row_bytes..(first + n) * row_bytes];
        let part = blocks::decode(kind, bytes, n, cols, keep_quantized)?;
        done(first * row_bytes, bytes.len());
        match decoded.as_mut() {
            Some(all) => all.append(part),
            None => {
                let mut first = part;
                first.reserve_rows(n, rows);
                decoded = Some(first);
            }
        }
    }
    decoded.ok_or_else(|| "a tensor without rows".to_owned())
}

/// The token embedding's GGUF name: its scales stay f32, since looking rows up dequantizes
/// them to the scales' dtype (the projections' f16 scales are read by lamina's kernel).
const EMBEDDING: &str = "token_embd.weight";

/// `values` as f16 when every one of them is exactly an f16 (GGUF's own block scales are
/// f16, and Q4_0/Q4_1/Q5_0/Q5_1/Q8_0's offsets are f16 times a power of two): held that way,
/// a 4-bit weight reads a quarter fewer bytes. `None` when one would round (K-quants).
fn f16_exactly(values: &[f32]) -> Option<Vec<half::f16>> {
    values
        .iter()
        .map(|&v| {
            let h = half::f16::from_f32(v);
            (h.to_f32() == v).then_some(h)
        })
        .collect()
}

/// Undoes llama.cpp's q/k row permutation (which interleaves each head's two RoPE halves
/// for ggml's rotation): `[H * D, in]` rows back to Hugging Face's split-halves order.
fn unpermute(weight: &Array, heads: usize) -> Result<Array> {
    let (rows, cols) = (weight.dim(0), weight.dim(1));
    let heads = heads as i32;
    let half = rows / heads / 2;
    Ok(weight.reshape(&[heads, half, 2, cols])?.swap_axes(1, 2)?.reshape(&[rows, cols])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes whose f16 scales are finite (every even byte small).
    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| if i % 2 == 1 { (i % 7) as u8 } else { (i * 37 % 251) as u8 }).collect()
    }

    #[test]
    fn chunked_decoding_equals_decoding_at_once() {
        let same = |a: &blocks::Decoded, b: &blocks::Decoded| match (a, b) {
            (blocks::Decoded::Dense(a), blocks::Decoded::Dense(b)) => {
                a.iter().map(|v| v.to_bits()).eq(b.iter().map(|v| v.to_bits()))
            }
            (
                blocks::Decoded::Affine { packed: p, scales: s, biases: b, .. },
                blocks::Decoded::Affine { packed: q, scales: t, biases: c, .. },
            ) => {
                p == q
                    && s.iter().map(|v| v.to_bits()).eq(t.iter().map(|v| v.to_bits()))
                    && b.len() == c.len()
            }
            _ => false,
        };
        for (kind, cols) in
            [(TensorType::Q8_0, 64), (TensorType::Q4_0, 96), (TensorType::Q6_K, 256), (TensorType::F32, 5)]
        {
            let (values, block) = kind.block();
            let rows = 37;
            let data = bytes(rows * cols / values as usize * block as usize);
            for keep in [true, false] {
                let whole = blocks::decode(kind, &data, rows, cols, keep).unwrap();
                let mut seen = Vec::new();
                let row = data.len() / rows;
                let chunked = decode_in_chunks(&data, (kind, rows, cols), keep, 5 * row, |at, len| {
                    seen.push((at, len))
                })
                .unwrap();
                assert!(same(&whole, &chunked), "{kind} keep {keep}");
                assert_eq!(seen.len(), 8, "37 rows in chunks of 5");
                assert_eq!(seen.iter().map(|(_, len)| len).sum::<usize>(), data.len());
                assert!(seen.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0), "contiguous, in order");
            }
        }
        // A tensor of one chunk is decoded, and released, at once.
        let data = bytes(4 * 34);
        let mut seen = Vec::new();
        decode_in_chunks(&data, (TensorType::Q8_0, 2, 64), true, 1 << 20, |at, len| seen.push((at, len)))
            .unwrap();
        assert_eq!(seen, [(0, data.len())]);
        // Bytes that are not whole rows are decoded (and refused) at once.
        assert!(decode_in_chunks(&bytes(100), (TensorType::Q8_0, 3, 32), true, 10, |_, _| {}).is_err());
    }
}
