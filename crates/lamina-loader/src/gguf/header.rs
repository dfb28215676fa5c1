//! A bounds-checked reader of GGUF headers (versions 2 and 3): metadata and tensor
//! descriptions, with every tensor's byte range checked against the file's length.
//! MLX's own reader trusts the offsets it reads; lamina validates them first, so that a
//! truncated or corrupt file is an error naming it, never a crash.

use std::collections::BTreeMap;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned integer (u8, u16, u32, u64).
    Uint(u64),
    /// A signed integer (i8, i16, i32, i64).
    Int(i64),
    /// A float (f32, f64).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Uint(v) => Some(*v as f64),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// The ggml tensor types a header may declare (their block layouts are ggml's
/// `ggml-common.h`). Which of them lamina loads is [`TensorType::readable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[allow(non_camel_case_types)] // spelled as ggml spells them (`Q4_K`), so messages match llama.cpp's
pub enum TensorType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// Blocks of 32: an f16 scale and 32 4-bit values (offset 8).
    Q4_0,
    /// Blocks of 32: f16 scale and minimum, 32 4-bit values.
    Q4_1,
    /// Blocks of 32: an f16 scale, 32 5-bit values (offset 16).
    Q5_0,
    /// Blocks of 32: f16 scale and minimum, 32 5-bit values.
    Q5_1,
    /// Blocks of 32: an f16 scale and 32 int8 values.
    Q8_0,
    /// Blocks of 32: f32 scale and sum, 32 int8 values.
    Q8_1,
    /// Super-blocks of 256: 16 groups of 16 2-bit values with 4-bit scales and minimums.
    Q2_K,
    /// Super-blocks of 256: 16 groups of 16 3-bit values with 6-bit scales.
    Q3_K,
    /// Super-blocks of 256: 8 groups of 32 4-bit values with 6-bit scales and minimums.
    Q4_K,
    /// Super-blocks of 256: 8 groups of 32 5-bit values with 6-bit scales and minimums.
    Q5_K,
    /// Super-blocks of 256: 16 groups of 16 6-bit values with 8-bit scales.
    Q6_K,
    /// Super-blocks of 256: f32 scale, 256 int8 values and group sums.
    Q8_K,
    /// Blocks of 32: an f16 scale and 32 4-bit codes into a fixed table of 16 int8 values
    /// (non-linear).
    IQ4_NL,
    /// Super-blocks of 256: an f16 scale, 8 groups of 32 4-bit codes (IQ4_NL's table) with
    /// 6-bit scales.
    IQ4_XS,
}

impl TensorType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            6 => TensorType::Q5_0,
            7 => TensorType::Q5_1,
            8 => TensorType::Q8_0,
            9 => TensorType::Q8_1,
            10 => TensorType::Q2_K,
            11 => TensorType::Q3_K,
            12 => TensorType::Q4_K,
            13 => TensorType::Q5_K,
            14 => TensorType::Q6_K,
            15 => TensorType::Q8_K,
            20 => TensorType::IQ4_NL,
            23 => TensorType::IQ4_XS,
            30 => TensorType::BF16,
            _ => return None,
        })
    }

    /// `(values, bytes)` of one block.
    pub(crate) fn block(self) -> (u64, u64) {
        match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::BF16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q5_0 => (32, 22),
            TensorType::Q5_1 => (32, 24),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q8_1 => (32, 36),
            TensorType::Q2_K => (256, 84),
            TensorType::Q3_K => (256, 110),
            TensorType::Q4_K => (256, 144),
            TensorType::Q5_K => (256, 176),
            TensorType::Q6_K => (256, 210),
            TensorType::Q8_K => (256, 292),
            TensorType::IQ4_NL => (32, 18),
            TensorType::IQ4_XS => (256, 136),
        }
    }

    /// Bytes of `elements` values, or `None` when `elements` is not a whole number of
    /// blocks (or the size overflows).
    pub fn bytes(self, elements: u64) -> Option<u64> {
        let (values, bytes) = self.block();
        (elements % values == 0).then(|| (elements / values).checked_mul(bytes)).flatten()
    }

    /// Whether lamina loads tensors of this type (all but Q8_1 and Q8_K, llama.cpp's
    /// activation formats); the others parse, and loading names them.
    pub fn readable(self) -> bool {
        !matches!(self, TensorType::Q8_1 | TensorType::Q8_K)
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// The shape in MLX order (ggml's dimensions reversed).
    pub shape: Vec<u64>,
    /// The element type.
    pub kind: TensorType,
    /// Bytes in the file.
    pub bytes: u64,
    /// Where its bytes start in the file (checked to lie inside it with `bytes`).
    pub offset: u64,
}

impl TensorDesc {
    /// Elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A parsed, validated GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorDesc>,
}

impl Header {
    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(format!("truncated while reading {what} at byte {}", self.pos)),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of entries that each take at least `min_bytes` in the file: it cannot
    /// exceed what the remaining bytes can hold, which keeps corrupt counts from turning
    /// into huge allocations or long loops.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, String> {
        let n = self.u64(what)?;
        let room = self.data.len().saturating_sub(self.pos) / min_bytes.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= room)
            .ok_or_else(|| format!("{what} claims {n} entries, more than the file holds"))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<Value, String> {
        Ok(match kind {
            0 => Value::Uint(u64::from(self.array::<1>(key)?[0])),
            1 => Value::Int(i64::from(i8::from_le_bytes(self.array(key)?))),
            2 => Value::Uint(u64::from(u16::from_le_bytes(self.array(key)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array(key)?))),
            4 => Value::Uint(u64::from(self.u32(key)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array(key)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(key)?))),
            7 => Value::Bool(self.array::<1>(key)?[0] != 0),
            8 => Value::String(self.string(key)?),
            9 if depth == 0 => {
                let inner = self.u32(key)?;
                let n = self.count(key, min_value_bytes(inner))?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Uint(self.u64(key)?),
            11 => Value::Int(i64::from_le_bytes(self.array(key)?)),
            12 => Value::Float(f64::from_le_bytes(self.array(key)?)),
            other => return Err(format!("metadata `{key}` has unknown or nested value type {other}")),
        })
    }
}

/// The fewest bytes a metadata value of type `kind` takes in the file.
fn min_value_bytes(kind: u32) -> usize {
    match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        _ => 1,
    }
}

/// Parses and validates a GGUF file held in memory (or mapped).
///
/// # Errors
/// A message saying what is wrong: bad magic, unsupported version, truncation, a tensor
/// type lamina does not read, a tensor whose bytes lie outside the file.
pub fn parse(data: &[u8]) -> Result<Header, String> {
    let mut r = Reader { data, pos: 0 };
    if r.take(4, "the magic")? != b"GGUF" {
        return Err("not a GGUF file (bad magic)".into());
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
    // A metadata entry takes at least a key length (8), a type (4) and a 1-byte value; a
    // tensor description at least a name length (8), ndim (4), one dimension (8), a type
    // (4) and an offset (8).
    let tensor_count = r.count("the tensor count", 32)?;
    let kv_count = r.count("the metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string("a metadata key")?;
        let kind = r.u32(&key)?;
        let value = r.value(kind, &key, 0)?;
        metadata.insert(key, value);
    }
    let mut raw = Vec::with_capacity(tensor_count.min(1 << 16));
    for _ in 0..tensor_count {
        let name = r.string("a tensor name")?;
        let ndim = r.u32(&name)? as usize;
        if ndim == 0 || ndim > 4 {
            return Err(format!("tensor `{name}` has {ndim} dimensions"));
        }
        let mut dims = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            dims.push(r.u64(&name)?);
        }
        let type_id = r.u32(&name)?;
        let offset = r.u64(&name)?;
        raw.push((name, dims, type_id, offset));
    }
    let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32).max(1);
    let start = (r.pos as u64).div_ceil(alignment) * alignment;
    let available = (data.len() as u64).saturating_sub(start);
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, type_id, offset) in raw {
        let kind = TensorType::from_id(type_id)
            .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {type_id}"))?;
        let numel = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}` is too large"))?;
        let bytes = kind
            .bytes(numel)
            .ok_or_else(|| format!("tensor `{name}` is not a whole number of {kind} blocks"))?;
        let end = offset.checked_add(bytes).ok_or_else(|| format!("tensor `{name}` has a corrupt offset"))?;
        if end > available {
            return Err(format!(
                "tensor `{name}` ends at byte {end} of the data, which holds {available} (truncated?)"
            ));
        }
        let shape = dims.into_iter().rev().collect();
        let offset = start + offset;
        tensors.push(TensorDesc { name, shape, kind, bytes, offset });
    }
    Ok(Header { version, metadata, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A minimal file: one u32 key, one string array key, one F32 tensor of 4 values.
    fn sample() -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        string(&mut out, "llama.block_count");
        out.extend(4u32.to_le_bytes());
        out.extend(7u32.to_le_bytes());
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        string(&mut out, "a");
        string(&mut out, "b");
        string(&mut out, "w");
        out.extend(2u32.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        out.extend(2u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for v in [1.0f32, 2.0, 3.0, 4.0] {
            out.extend(v.to_le_bytes());
        }
        out
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let header = parse(&sample()).unwrap();
        assert_eq!(header.version, 3);
        assert_eq!(header.get("llama.block_count").and_then(Value::as_u64), Some(7));
        assert_eq!(
            header.get("tokenizer.ggml.tokens"),
            Some(&Value::Array(vec![Value::String("a".into()), Value::String("b".into())]))
        );
        assert_eq!(header.tensors[0].shape, [2, 2]);
        assert_eq!(header.tensors[0].bytes, 16);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_fields_are_errors() {
        let mut bad_magic = sample();
        bad_magic[0] = b'X';
        assert!(parse(&bad_magic).unwrap_err().contains("magic"));
        let mut bad_version = sample();
        bad_version[4] = 9;
        assert!(parse(&bad_version).unwrap_err().contains("version 9"));
        let mut huge_count = sample();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&huge_count).is_err());
        let mut bad_type = sample();
        let pos = find_tensor_type(&bad_type);
        bad_type[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
        assert!(parse(&bad_type).unwrap_err().contains("ggml type 99"));
    }

    fn find_tensor_type(file: &[u8]) -> usize {
        // name "w" (8-byte length + 1), ndim (4), two dims (16): the type follows.
        let name = file.windows(9).position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w']).unwrap();
        name + 9 + 4 + 16
    }
}
