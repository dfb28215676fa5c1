//! ggml's tensor blocks, read by lamina (layouts from ggml's `ggml-common.h`): decoded to
//! f32, or — for the types whose groups of 32 values share one scale and one offset —
//! repacked exactly into MLX's affine layout (`scale * q + bias`, `q` in a little-endian
//! bit stream per row).
//!
//! | type | MLX form kept | exact |
//! | --- | --- | --- |
//! | Q4_0, Q4_1, Q4_K | 4-bit, group 32 | yes (`bias = -8d`, `m`, `-dmin*m`) |
//! | Q5_0, Q5_1, Q5_K | 5-bit, group 32 | yes |
//! | Q8_0 | 8-bit, group 32 | yes (`q + 128`, `bias = -128d`) |
//! | IQ4_NL, IQ4_XS | 8-bit, group 32 | yes (each code's table value `+ 128`, `bias = -128d`; twice the file's bytes) |
//! | Q6_K, Q3_K, Q2_K | 8-bit, group 32, re-quantized | no: their 16-value groups have scales of their own |
//!
//! On the CPU the super-block types (Q2_K-Q6_K, IQ4_XS) are not decoded here at all: the
//! loader keeps their bytes as stored (`Tensor::Blocks`) for lamina's block kernels, and so
//! Q5_0, Q5_1, Q8_0 and IQ4_NL where the CPU's kernel tier multiplies them natively (AVX2
//! and up); this table is for the rest (Q4_0, Q4_1: their affine form is as small and as
//! fast), other devices and a dtype asked for.
//! | F32, F16, BF16 | dense | — |

use half::{bf16, f16};

use super::header::TensorType;

/// One tensor's values, as lamina holds them.
#[derive(Debug)]
pub enum Decoded {
    /// Dense f32 values, row-major.
    Dense(Vec<f32>),
    /// MLX's affine layout: `packed` u32 words (`rows * cols * bits / 32`), `scales` and
    /// `biases` (`rows * cols / 32`).
    Affine {
        /// Bits per value.
        bits: i32,
        /// The packed values.
        packed: Vec<u32>,
        /// Per-group scales.
        scales: Vec<f32>,
        /// Per-group offsets.
        biases: Vec<f32>,
    },
}

/// A group of 32 values: `scale * q + bias`.
struct Group {
    scale: f32,
    bias: f32,
    q: [u8; 32],
}

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q4_K's and Q5_K's 6-bit scale and minimum of sub-block `j` (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// IQ4_NL's table: the values its 4-bit codes stand for (ggml's `kvalues_iq4nl`).
const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// A group of 32 IQ4 codes (code j in the low nibble of byte j, code j + 16 in its high
/// nibble) with scale `d`: `d * table[code]`, held as 8-bit `table[code] + 128` with bias
/// `-128 d`, exactly.
fn group_iq4(d: f32, qs: &[u8], group: &mut impl FnMut(f32, f32, [u8; 32])) {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (i16::from(IQ4_VALUES[usize::from(qs[j] & 0xF)]) + 128) as u8;
        q[j + 16] = (i16::from(IQ4_VALUES[usize::from(qs[j] >> 4)]) + 128) as u8;
    }
    group(d, -128.0 * d, q);
}

/// The groups of 32 of one block of an affine-exact type, in order.
fn block_groups(kind: TensorType, b: &[u8], out: &mut Vec<Group>) {
    let mut group = |scale: f32, bias: f32, q: [u8; 32]| out.push(Group { scale, bias, q });
    match kind {
        TensorType::Q4_0 | TensorType::Q4_1 => {
            let (d, qs) = (half(b, 0), if kind == TensorType::Q4_0 { &b[2..18] } else { &b[4..20] });
            let bias = if kind == TensorType::Q4_0 { -8.0 * d } else { half(b, 2) };
            let mut q = [0u8; 32];
            for j in 0..16 {
                q[j] = qs[j] & 0xF;
                q[j + 16] = qs[j] >> 4;
            }
            group(d, bias, q);
        }
        TensorType::Q5_0 | TensorType::Q5_1 => {
            let d = half(b, 0);
            let (bias, at) = if kind == TensorType::Q5_0 { (-16.0 * d, 2) } else { (half(b, 2), 4) };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            let mut q = [0u8; 32];
            for j in 0..16 {
                let high0 = (((qh >> j) << 4) & 0x10) as u8;
                let high1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = (qs[j] & 0xF) | high0;
                q[j + 16] = (qs[j] >> 4) | high1;
            }
            group(d, bias, q);
        }
        TensorType::Q8_0 => {
            let d = half(b, 0);
            let mut q = [0u8; 32];
            for (j, v) in q.iter_mut().enumerate() {
                *v = (b[2 + j] as i8 as i16 + 128) as u8;
            }
            group(d, -128.0 * d, q);
        }
        TensorType::IQ4_NL => group_iq4(half(b, 0), &b[2..18], &mut group),
        TensorType::IQ4_XS => {
            let (d, high, low) = (half(b, 0), u16::from_le_bytes([b[2], b[3]]), &b[4..8]);
            for (i, qs) in b[8..136].chunks_exact(16).enumerate() {
                let ls = ((low[i / 2] >> (4 * (i % 2))) & 0xF) | (((high >> (2 * i)) & 3) as u8) << 4;
                group_iq4(d * (i32::from(ls) - 32) as f32, qs, &mut group);
            }
        }
        TensorType::Q4_K | TensorType::Q5_K => {
            let (d, dmin, scales) = (half(b, 0), half(b, 2), &b[4..16]);
            let (qh, qs) =
                if kind == TensorType::Q5_K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            for chunk in 0..4 {
                let ql = &qs[32 * chunk..32 * chunk + 32];
                for half_index in 0..2 {
                    let (sc, m) = scale_min_k4(2 * chunk + half_index, scales);
                    let high_bit = 1u8 << (2 * chunk + half_index);
                    let mut q = [0u8; 32];
                    for l in 0..32 {
                        let low = if half_index == 0 { ql[l] & 0xF } else { ql[l] >> 4 };
                        let high = qh.map_or(0, |h| if h[l] & high_bit != 0 { 16 } else { 0 });
                        q[l] = low + high;
                    }
                    group(d * f32::from(sc), -(dmin * f32::from(m)), q);
                }
            }
        }
        _ => {}
    }
}

/// The bits of the MLX form of an affine-exact type.
fn affine_bits(kind: TensorType) -> Option<i32> {
    match kind {
        TensorType::Q4_0 | TensorType::Q4_1 | TensorType::Q4_K => Some(4),
        TensorType::Q5_0 | TensorType::Q5_1 | TensorType::Q5_K => Some(5),
        TensorType::Q8_0 | TensorType::IQ4_NL | TensorType::IQ4_XS => Some(8),
        _ => None,
    }
}

/// The bits a type is held at when kept quantized: its exact affine form, or 8 for the
/// k-quants whose 16-value groups MLX cannot hold (re-quantized).
pub(super) fn held_bits(kind: TensorType) -> Option<i32> {
    affine_bits(kind).or(matches!(kind, TensorType::Q6_K | TensorType::Q3_K | TensorType::Q2_K).then_some(8))
}

/// Q2_K's 256 values of one block (ggml's `dequantize_row_q2_K`): 16 groups of 16 with a
/// 4-bit scale and a 4-bit minimum each.
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs, d, dmin) = (&b[0..16], &b[16..80], half(b, 80), half(b, 82));
    let mut is = 0;
    for n in 0..2 {
        let q = &qs[32 * n..];
        for shift in [0, 2, 4, 6] {
            for half_group in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * f32::from(sc & 0xF), dmin * f32::from(sc >> 4));
                let q = &q[16 * half_group..];
                out.extend((0..16).map(|l| dl * f32::from((q[l] >> shift) & 3) - ml));
            }
        }
    }
}

/// Q3_K's 256 values of one block (ggml's `dequantize_row_q3_K`): 16 groups of 16 with a
/// 6-bit signed scale each; the third bit of each value in `hmask`.
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, packed, d) = (&b[0..32], &b[32..96], &b[96..108], half(b, 108));
    // The 16 scales: low 4 bits from bytes 0..8, high 2 bits from bytes 8..12.
    let scale = |i: usize| -> i32 {
        let low = if i < 8 { packed[i] & 0xF } else { packed[i - 8] >> 4 };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    };
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[32 * n..];
        for shift in [0, 2, 4, 6] {
            for half_group in 0..2 {
                let dl = d * scale(is) as f32;
                is += 1;
                let (q, hm) = (&q[16 * half_group..], &hmask[16 * half_group..]);
                out.extend((0..16).map(|l| {
                    let low = i32::from((q[l] >> shift) & 3);
                    dl * (low - if hm[l] & m != 0 { 0 } else { 4 }) as f32
                }));
            }
            m <<= 1;
        }
    }
}

/// Q6_K's 256 values of one block (ggml's `dequantize_row_q6_K`).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql_all, qh_all, sc_all, d) = (&b[0..128], &b[128..192], &b[192..208], half(b, 208));
    for n in 0..2 {
        let (ql, qh, sc) = (&ql_all[64 * n..], &qh_all[32 * n..], &sc_all[8 * n..]);
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}

/// Writes `values` (each below `2^bits`) as a little-endian bit stream into u32 words.
fn pack(values: &[u8], bits: i32, words: &mut Vec<u32>) {
    let bits = bits as usize;
    let mut bytes = vec![0u8; values.len() * bits / 8];
    for (i, &v) in values.iter().enumerate() {
        let bit = i * bits;
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = u16::from(v) << shift;
        bytes[byte] |= wide as u8;
        if shift + bits > 8 {
            bytes[byte + 1] |= (wide >> 8) as u8;
        }
    }
    words.extend(bytes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
}

/// Decodes a tensor of `rows x cols` values from its bytes: into MLX's affine layout when
/// `keep_quantized` and the type allows it exactly, into f32 otherwise.
///
/// # Errors
/// When the type is not one lamina reads, or a row is not a whole number of blocks.
impl Decoded {
    /// Makes room for `total` rows, these being the first `decoded` (so that appending the
    /// rest never reallocates: a doubling would hold the tensor twice for a moment).
    pub fn reserve_rows(&mut self, decoded: usize, total: usize) {
        let more = |len: usize| len / decoded.max(1) * total.saturating_sub(decoded);
        match self {
            Decoded::Dense(values) => values.reserve_exact(more(values.len())),
            Decoded::Affine { packed, scales, biases, .. } => {
                packed.reserve_exact(more(packed.len()));
                scales.reserve_exact(more(scales.len()));
                biases.reserve_exact(more(biases.len()));
            }
        }
    }

    /// Appends the rows `next` decoded after these (both from the same tensor).
    pub fn append(&mut self, next: Decoded) {
        match (self, next) {
            (Decoded::Dense(values), Decoded::Dense(more)) => values.extend(more),
            (
                Decoded::Affine { packed, scales, biases, .. },
                Decoded::Affine { packed: p, scales: s, biases: b, .. },
            ) => {
                packed.extend(p);
                scales.extend(s);
                biases.extend(b);
            }
            // One tensor's chunks always decode to the same form.
            _ => {}
        }
    }
}

pub fn decode(
    kind: TensorType,
    data: &[u8],
    rows: usize,
    cols: usize,
    keep_quantized: bool,
) -> Result<Decoded, String> {
    let (block_values, block_bytes) = kind.block();
    let (block_values, block_bytes) = (block_values as usize, block_bytes as usize);
    if cols % block_values != 0 || data.len() != rows * cols / block_values * block_bytes {
        return Err(format!(
            "{rows}x{cols} values are not whole {kind} blocks of the {} bytes given",
            data.len()
        ));
    }
    let blocks = data.chunks_exact(block_bytes);
    match kind {
        TensorType::F32 => {
            Ok(Decoded::Dense(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
        }
        TensorType::F16 => Ok(Decoded::Dense(blocks.map(|b| half(b, 0)).collect())),
        TensorType::BF16 => {
            Ok(Decoded::Dense(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()))
        }
        TensorType::Q6_K | TensorType::Q3_K | TensorType::Q2_K => {
            let read = match kind {
                TensorType::Q6_K => q6_k,
                TensorType::Q3_K => q3_k,
                _ => q2_k,
            };
            let mut out = Vec::with_capacity(rows * cols);
            blocks.for_each(|b| read(b, &mut out));
            Ok(Decoded::Dense(out))
        }
        _ => {
            let bits = affine_bits(kind).ok_or_else(|| format!("lamina does not read {kind} tensors yet"))?;
            // One block's groups at a time (a whole tensor's would take 40 bytes per 32
            // values beside the result: 210 MB more at the peak of Gemma 3's embedding).
            let mut groups = Vec::with_capacity(8);
            if !keep_quantized {
                let mut out = Vec::with_capacity(rows * cols);
                for b in blocks {
                    groups.clear();
                    block_groups(kind, b, &mut groups);
                    for g in &groups {
                        out.extend(g.q.iter().map(|&q| g.scale * f32::from(q) + g.bias));
                    }
                }
                return Ok(Decoded::Dense(out));
            }
            let count = rows * cols / 32;
            let mut packed = Vec::with_capacity(rows * cols * bits as usize / 32);
            let (mut scales, mut biases) = (Vec::with_capacity(count), Vec::with_capacity(count));
            for b in blocks {
                groups.clear();
                block_groups(kind, b, &mut groups);
                for g in &groups {
                    pack(&g.q, bits, &mut packed);
                    scales.push(g.scale);
                    biases.push(g.bias);
                }
            }
            Ok(Decoded::Affine { bits, packed, scales, biases })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_a_little_endian_bit_stream() {
        let mut words = Vec::new();
        pack(&[1, 2, 3, 4, 5, 6, 7, 8], 4, &mut words);
        assert_eq!(words, [0x8765_4321]);
        let mut words = Vec::new();
        let values: Vec<u8> = (0..32).map(|i| (i * 7 % 32) as u8).collect();
        pack(&values, 5, &mut words);
        assert_eq!(words.len(), 5);
        let stream: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        for (i, &v) in values.iter().enumerate() {
            let bit = i * 5;
            let two = u16::from(stream[bit / 8]) | stream.get(bit / 8 + 1).map_or(0, |&b| u16::from(b) << 8);
            assert_eq!(((two >> (bit % 8)) & 31) as u8, v, "value {i}");
        }
    }

    #[test]
    fn q4_0_blocks_decode_as_ggml_does() {
        // d = 0.5 (f16 0x3800), nibbles j and j + 16 in byte j.
        let mut block = vec![0x00, 0x38];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let Decoded::Dense(values) = decode(TensorType::Q4_0, &block, 1, 32, false).unwrap() else {
            panic!("dense expected");
        };
        assert_eq!(values[0], 0.5 * (0.0 - 8.0));
        assert_eq!(values[16], 0.5 * (15.0 - 8.0));
        assert_eq!(values[31], 0.5 * (0.0 - 8.0));
        assert!(decode(TensorType::Q4_0, &block[..17], 1, 32, false).is_err());
        assert!(decode(TensorType::Q8_K, &[0u8; 292], 1, 256, true).is_err(), "an activation format");
    }
}
