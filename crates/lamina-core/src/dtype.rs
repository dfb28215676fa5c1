//! Floating-point dtypes a model may hold its weights in, and the device it runs on.

use mlx_rs::Dtype;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, IntoEnumIterator};

use crate::error::{Error, Result};

/// The dtype of a model's floating-point weights and activations.
///
/// On Linux CPU only f32 matmuls go through BLAS; f16/bf16 are for memory, not speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Display, EnumString, EnumIter)]
#[strum(ascii_case_insensitive)]
pub enum DType {
    /// 32-bit IEEE float.
    #[strum(to_string = "f32", serialize = "float32")]
    #[serde(rename = "f32", alias = "float32")]
    F32,
    /// 16-bit IEEE float.
    #[strum(to_string = "f16", serialize = "float16")]
    #[serde(rename = "f16", alias = "float16")]
    F16,
    /// bfloat16.
    #[strum(to_string = "bf16", serialize = "bfloat16")]
    #[serde(rename = "bf16", alias = "bfloat16")]
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The dtype's name in a Hugging Face config (`torch_dtype`).
    pub fn hf_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    /// Parses a name (`f32`, `float16`, `bf16`, ...), naming the known ones on failure.
    ///
    /// # Errors
    /// [`Error::UnknownVariant`] for any other string.
    pub fn parse(name: &str) -> Result<Self> {
        name.parse().map_err(|_| Error::UnknownVariant {
            kind: "dtype",
            value: name.to_owned(),
            known: Self::known(),
        })
    }

    fn known() -> String {
        Self::iter().map(|dtype| dtype.to_string()).collect::<Vec<_>>().join(", ")
    }
}

impl From<DType> for Dtype {
    fn from(dtype: DType) -> Self {
        match dtype {
            DType::F32 => Dtype::Float32,
            DType::F16 => Dtype::Float16,
            DType::BF16 => Dtype::Bfloat16,
        }
    }
}

impl TryFrom<Dtype> for DType {
    type Error = Error;

    fn try_from(dtype: Dtype) -> Result<Self> {
        match dtype {
            Dtype::Float32 => Ok(DType::F32),
            Dtype::Float16 => Ok(DType::F16),
            Dtype::Bfloat16 => Ok(DType::BF16),
            other => Err(Error::UnknownVariant {
                kind: "floating dtype",
                value: format!("{other:?}"),
                known: Self::known(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_either_spelling() {
        assert_eq!(DType::parse("f32").unwrap(), DType::F32);
        assert_eq!(DType::parse("FLOAT16").unwrap(), DType::F16);
        assert_eq!(DType::parse("bfloat16").unwrap(), DType::BF16);
        let err = DType::parse("int8").unwrap_err().to_string();
        assert!(err.contains("unknown dtype `int8`") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn mlx_dtypes_round_trip() {
        for dtype in DType::iter() {
            assert_eq!(DType::try_from(Dtype::from(dtype)).unwrap(), dtype);
        }
        assert!(DType::try_from(Dtype::Int32).is_err());
    }

    #[test]
    fn serde_uses_short_names_and_accepts_hf_names() {
        assert_eq!(serde_json::to_string(&DType::BF16).unwrap(), "\"bf16\"");
        let parsed: DType = serde_json::from_str("\"float32\"").unwrap();
        assert_eq!(parsed, DType::F32);
        assert_eq!(DType::F16.size_of(), 2);
        assert_eq!(DType::BF16.hf_name(), "bfloat16");
    }
}
