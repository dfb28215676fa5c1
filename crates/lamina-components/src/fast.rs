//! Where lamina's CPU kernels replace MLX's ops: the one place that asks which device,
//! dtype, shape and instruction-set tier a computation has. Layers compute with MLX's ops
//! and call these functions; each decides by itself whether a kernel applies — and
//! otherwise computes the op with MLX, or, for the fused forms of several layers' work,
//! answers `None` so that the layers compute it as they always do.
//!
//! `needs_grad` is "a gradient may be taken through this call" (a layer in training
//! mode): the kernels all have gradients (through MLX's ops), but while training MLX's
//! own graph is kept, which is what the memory and speed of training were measured with.

use lamina_core::{Activation, Result};
use lamina_kernels::{GateActivation, PromptAttention, QuantLayout, QuantizedWeight, Rotation};
use mlx_rs::{Array, Dtype, ops};

use crate::quant::{Activations, BlockFormat, QuantConfig};

/// RMSNorm and RoPE as one graph node each on the CPU (MLX's CPU backend expands its own
/// into ~11 and ~29 nodes); MLX's `fast::rms_norm` and `fast::rope` elsewhere. They decide
/// by themselves and have gradients.
pub use lamina_kernels::{rms_norm, rope};

/// Whether MLX's default device is the CPU (where lamina's kernels run).
pub fn on_cpu() -> bool {
    matches!(mlx_rs::Device::default().get_type(), Ok(mlx_rs::DeviceType::Cpu))
}

/// bf16 or f16.
pub(crate) fn is_half(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::Bfloat16 | Dtype::Float16)
}

/// A weight as a layer stores it, quantized or not.
#[derive(Debug, Clone, Copy)]
pub enum StoredWeight<'a> {
    /// Dense `[N, K]` (f32, bf16 or f16).
    Dense(&'a Array),
    /// MLX's packed affine layout.
    Quantized {
        /// Packed values, u32 `[N, K * bits / 32]`.
        weight: &'a Array,
        /// `[N, K / group_size]`.
        scales: &'a Array,
        /// `[N, K / group_size]`.
        biases: &'a Array,
        /// Group size and bits.
        config: QuantConfig,
    },
    /// GGUF super-blocks as the file stores them, u8 `[N, K / 256 * block bytes]` (CPU only).
    Blocks {
        /// The rows' blocks.
        weight: &'a Array,
        /// Their format.
        format: BlockFormat,
        /// How products read `x`.
        activations: Activations,
    },
}

impl<'a> StoredWeight<'a> {
    /// A layer's weight from its parameters: quantized as `quantization` says (a block
    /// format's blocks, or packed values with their `scales` and `biases`), dense without.
    pub(crate) fn of(
        weight: &'a Array,
        quantization: Option<QuantConfig>,
        scales: Option<&'a Array>,
        biases: Option<&'a Array>,
    ) -> Self {
        match (quantization, scales, biases) {
            (Some(QuantConfig { blocks: Some(format), activations, .. }), _, _) => {
                StoredWeight::Blocks { weight, format, activations }
            }
            (Some(config), Some(scales), Some(biases)) => {
                StoredWeight::Quantized { weight, scales, biases, config }
            }
            _ => StoredWeight::Dense(weight),
        }
    }

    /// The weight's values, f32 when quantized (dense ones as stored).
    ///
    /// # Errors
    /// When MLX or the kernel fails.
    pub fn values(&self) -> Result<Array> {
        match *self {
            StoredWeight::Dense(w) => Ok(w.clone()),
            StoredWeight::Quantized { weight, scales, biases, config } => {
                config.dequantize(weight, scales, biases)
            }
            StoredWeight::Blocks { weight, format, .. } => {
                Ok(lamina_kernels::dequantize_blocks(weight, format)?)
            }
        }
    }

    /// Rows `ids` of the weight (any shape of ids): `[..., K]`, f32 when quantized (an
    /// embedding's lookup, reading only those rows).
    ///
    /// # Errors
    /// When MLX or the kernel fails.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        let rows = |a: &Array| a.take_axis(ids, 0);
        match *self {
            StoredWeight::Dense(w) => Ok(rows(w)?),
            StoredWeight::Quantized { weight, scales, biases, config } => {
                config.dequantize(&rows(weight)?, &rows(scales)?, &rows(biases)?)
            }
            StoredWeight::Blocks { weight, format, .. } => {
                let flat = weight.take_axis(&ids.flatten(None, None)?, 0)?;
                let values = lamina_kernels::dequantize_blocks(&flat, format)?;
                let mut shape = ids.shape().to_vec();
                shape.push(values.dim(-1));
                Ok(values.reshape(&shape)?)
            }
        }
    }
}

/// `x @ w^T` for a stored weight: MLX's `quantized_matmul` (transposed) for a quantized
/// one, on lamina's kernel where the CPU's tier takes its width; a bf16/f16 weight read as
/// stored by lamina's kernel unless `needs_grad` (MLX's CPU matmul is not BLAS in half
/// precision; with MLX's backward products a training step held 1.8x the memory); `None`
/// for a dense weight MLX multiplies (the caller keeps its transpose and adds its bias).
///
/// # Errors
/// When the shapes do not fit; MLX errors.
pub fn product(x: &Array, weight: StoredWeight<'_>, needs_grad: bool) -> Result<Option<Array>> {
    match weight {
        StoredWeight::Quantized { weight, scales, biases, config } => {
            Ok(Some(lamina_kernels::quantized_matmul(
                x,
                weight,
                scales,
                biases,
                config.group_size,
                config.bits,
                config.activations,
            )?))
        }
        StoredWeight::Blocks { weight, format, activations } => {
            Ok(Some(lamina_kernels::blocks_matmul(x, weight, format, activations)?))
        }
        StoredWeight::Dense(w) if is_half(w.dtype()) && !needs_grad => {
            Ok(Some(lamina_kernels::half_matmul(x, w)?))
        }
        StoredWeight::Dense(_) => Ok(None),
    }
}

/// The quantized weight as the fused kernels take it, when the CPU's tier serves its width.
pub(crate) fn kernel_weight(weight: StoredWeight<'_>) -> Option<QuantizedWeight<'_>> {
    match weight {
        StoredWeight::Quantized { weight, scales, biases, config }
            if lamina_kernels::supports_quantized(config.bits, config.group_size) =>
        {
            Some(QuantizedWeight {
                weight,
                layout: QuantLayout::Affine {
                    scales,
                    biases,
                    group_size: config.group_size,
                    bits: config.bits,
                },
                activations: config.activations,
            })
        }
        StoredWeight::Blocks { weight, format, activations } => {
            Some(QuantizedWeight { weight, layout: QuantLayout::Blocks(format), activations })
        }
        _ => None,
    }
}

/// A gated unit's activation as the fused kernels compute it (SiLU, GELU with tanh or erf);
/// `None` for one they do not have.
pub(crate) fn gate_activation(activation: Activation) -> Option<GateActivation> {
    match activation {
        Activation::Silu => Some(GateActivation::Silu),
        Activation::GeluApprox => Some(GateActivation::GeluTanh),
        Activation::Gelu => Some(GateActivation::GeluErf),
        Activation::Relu => None,
    }
}

/// Whether the fused kernels take `x` at all: f32 on the CPU, no gradient.
fn fusable(x: &Array, needs_grad: bool) -> bool {
    !needs_grad && x.dtype() == Dtype::Float32 && on_cpu()
}

/// `residual + x @ w^T` in one graph node, when `w` is a plain quantized product (`None`
/// for a layer with a bias or adapter) the fused kernel takes; `None` otherwise.
///
/// # Errors
/// When the shapes do not fit; MLX errors.
pub fn residual_product(
    x: &Array,
    w: Option<StoredWeight<'_>>,
    residual: &Array,
    needs_grad: bool,
) -> Result<Option<Array>> {
    match w.and_then(kernel_weight) {
        Some(w) if fusable(x, needs_grad) && residual.dtype() == Dtype::Float32 => {
            Ok(Some(lamina_kernels::quantized_residual(x, w, residual)?))
        }
        _ => Ok(None),
    }
}

/// A gated unit's `act(x Wg^T) * (x Wu^T)` in one graph node, when both are plain
/// quantized products the fused kernel takes and the activation is one it has (SiLU, GELU
/// with tanh or erf); `None` otherwise.
///
/// # Errors
/// When the shapes do not fit; MLX errors.
pub fn gated(
    x: &Array,
    gate: Option<StoredWeight<'_>>,
    up: Option<StoredWeight<'_>>,
    activation: Activation,
    needs_grad: bool,
) -> Result<Option<Array>> {
    let Some(activation) = gate_activation(activation) else {
        return Ok(None);
    };
    match (gate.and_then(kernel_weight), up.and_then(kernel_weight)) {
        (Some(gate), Some(up)) if fusable(x, needs_grad) => {
            Ok(Some(lamina_kernels::quantized_gated(x, gate, up, activation)?))
        }
        _ => Ok(None),
    }
}

/// Several products of one `x` in one graph node, each reshaped to its `shapes[i]` and the
/// first two rotated by `rotation` when given, when all are plain quantized products the
/// fused kernel takes; `None` otherwise.
///
/// # Errors
/// When the shapes do not fit; MLX errors.
pub fn products<const N: usize>(
    x: &Array,
    weights: [Option<StoredWeight<'_>>; N],
    shapes: &[&[i32]; N],
    rotation: Option<Rotation<'_>>,
    needs_grad: bool,
) -> Result<Option<[Array; N]>> {
    if !fusable(x, needs_grad) {
        return Ok(None);
    }
    let Some(weights) = weights.iter().map(|w| w.and_then(kernel_weight)).collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    let outs = match rotation {
        Some(rotation) => lamina_kernels::rotated_products(x, &weights, shapes, rotation)?,
        None => lamina_kernels::quantized_products(x, &weights, shapes)?,
    };
    <[Array; N]>::try_from(outs)
        .map(Some)
        .map_err(|_| lamina_core::Error::Internal("the fused products returned the wrong number of arrays"))
}

/// Whether a decoded token (`l == 1`) of `x` takes the fused decoding path: f32 on the
/// CPU, no padding mask, no gradient.
pub fn fused_decode(x: &Array, l: i32, padding_mask: bool, needs_grad: bool) -> bool {
    l == 1 && !padding_mask && fusable(x, needs_grad)
}

/// A prompt's attention (`q [B, H, L, D]` against `keys`/`values [B, H_kv, S, D]`, by
/// positions as `how` says) on lamina's kernel: on the CPU for f32 and half-precision
/// q/k/v (widened to f32 for it, the output rounded back), more than one query, no padding
/// mask, no gradient; `None` otherwise (MLX's attention serves).
///
/// # Errors
/// When the shapes do not fit; MLX errors.
pub fn prompt_attention(
    q: &Array,
    keys: &Array,
    values: &Array,
    how: PromptAttention,
    padding_mask: bool,
    needs_grad: bool,
) -> Result<Option<Array>> {
    let dtype = q.dtype();
    let applies = q.dim(2) > 1
        && !needs_grad
        && !padding_mask
        && (dtype == Dtype::Float32 || is_half(dtype))
        && on_cpu();
    if !applies {
        return Ok(None);
    }
    let f32 = |a: &Array| a.as_dtype(Dtype::Float32);
    let out = lamina_kernels::prompt_attention(&f32(q)?, &f32(keys)?, &f32(values)?, how)?;
    Ok(Some(out.as_dtype(dtype)?))
}

/// Whether a prompt's attention in MLX's ops should run in f32 for half-precision q/k/v:
/// on the CPU, where MLX's bf16/f16 matmuls are not BLAS (the casts cost O(L * D), the
/// products O(L^2 * D)); not while a gradient may be taken (the f32 copies would be kept).
pub fn widen_attention(dtype: Dtype, query_len: i32, needs_grad: bool) -> bool {
    !needs_grad && query_len > 1 && is_half(dtype) && on_cpu()
}

/// `x @ w^T` for a dense weight through MLX: `x @ weight_t`, plus `bias` (one fused
/// `addmm` when there is one).
///
/// # Errors
/// MLX errors.
pub fn dense_product(x: &Array, weight_t: &Array, bias: Option<&Array>) -> Result<Array> {
    Ok(match bias {
        Some(bias) => ops::addmm(bias, x, weight_t, None, None)?,
        None => ops::matmul(x, weight_t)?,
    })
}
