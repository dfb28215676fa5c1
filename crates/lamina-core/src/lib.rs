//! # lamina-core
//!
//! What every lamina layer shares: the [`Error`] type, the closed sets as enums
//! ([`DType`], [`Activation`], [`NormKind`], ...), and the [`Config`] trait
//! that every serde config implements so that a bad value is a typed error naming the
//! field, never a panic.
//!
//! ```
//! use lamina_core::{Config, DType};
//! use serde::{Deserialize, Serialize};
//! use validator::Validate;
//!
//! #[derive(Debug, Serialize, Deserialize, Validate)]
//! struct Width {
//!     #[validate(range(min = 1))]
//!     hidden_size: usize,
//!     #[validate(range(min = 1))]
//!     num_heads: usize,
//! }
//!
//! impl Config for Width {
//!     const NAME: &'static str = "Width";
//!     fn check(&self) -> lamina_core::Result<()> {
//!         lamina_core::ensure_divides(Self::NAME, "num_heads", self.num_heads, "hidden_size", self.hidden_size)
//!     }
//! }
//!
//! assert!(Width::from_json_str(r#"{"hidden_size": 64, "num_heads": 4}"#).is_ok());
//! let err = Width::from_json_str(r#"{"hidden_size": 64, "num_heads": 5}"#).unwrap_err();
//! assert!(err.to_string().contains("num_heads"));
//! assert_eq!("bf16".parse::<DType>().unwrap(), DType::BF16);
//! ```
#![deny(missing_docs)]

mod config;
pub mod distributed;
mod dtype;
mod enums;
mod error;
mod hosts;
mod limits;
mod outputs;
mod params;
pub mod runtime;

pub use config::{Config, ensure_divides, ensure_positive};
pub use dtype::DType;
pub use enums::{Activation, FfnKind, MixerKind, NormKind, Pooling};
pub use error::{Error, Result};
pub use limits::{
    BLOCK_OVERHEAD_BYTES, Budget, MAX_LAYERS, SizeEstimate, count, ensure_dims, ensure_layers,
    ensure_product_fits, machine_memory, mul, to_dim,
};
pub use outputs::{BackboneOutput, BlockOutput, HeadOutput, ModelOutput};
pub use params::{count_parameters, count_trainable_parameters};
