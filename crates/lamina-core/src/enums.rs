//! Closed sets that configs choose from. Enums, never strings: a typo is a parse error
//! naming the known values, not a silently different model.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, VariantNames};

/// A pointwise activation.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x * sigmoid(x), as in SwiGLU (`hidden_act: "silu"`).
    #[default]
    #[serde(alias = "swish")]
    Silu,
    /// The exact (erf) GELU.
    Gelu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluApprox,
    /// max(x, 0).
    Relu,
}

/// A normalisation layer.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// Root-mean-square norm with a learned scale.
    #[default]
    RmsNorm,
    /// Layer norm with a learned scale and bias.
    LayerNorm,
}

/// The shape of a feed-forward network.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    /// `down(act(gate(x)) * up(x))`: SwiGLU with `silu`, GeGLU with `gelu`.
    #[default]
    Gated,
    /// `down(act(up(x)))`: the classic two-layer MLP.
    Plain,
}

/// The token mixer of a block: attention or a selective state space.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MixerKind {
    /// Self-attention (MHA, GQA or MQA).
    #[default]
    Attention,
    /// The Mamba selective-state-space mixer.
    Mamba,
}

/// How a sequence head reduces the tokens of a sequence to one vector.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The hidden state of the last token that is not padding.
    #[default]
    LastToken,
    /// The mean over the tokens that are not padding.
    Mean,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_strum_agree_on_names() {
        for (value, name) in [(Activation::Silu, "silu"), (Activation::GeluApprox, "gelu_approx")] {
            assert_eq!(value.to_string(), name);
            assert_eq!(serde_json::to_string(&value).unwrap(), format!("\"{name}\""));
        }
        assert_eq!("rms_norm".parse::<NormKind>().unwrap(), NormKind::RmsNorm);
        assert_eq!(Pooling::VARIANTS, ["last_token", "mean"]);
    }

    #[test]
    fn hugging_face_aliases_parse() {
        let act: Activation = serde_json::from_str("\"gelu_pytorch_tanh\"").unwrap();
        assert_eq!(act, Activation::GeluApprox);
        assert!(serde_json::from_str::<Activation>("\"tanh\"").is_err());
    }
}
