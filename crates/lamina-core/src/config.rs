//! The [`Config`] trait: serde + validator + cross-field checks, one error type.

use serde::Serialize;
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::{Error, Result};

/// A serde config that validates itself: field rules through `validator`, then the
/// cross-field rules in [`Config::check`]. Every layer's config implements it.
pub trait Config: Validate + Serialize + DeserializeOwned + Sized {
    /// The config's name in error messages.
    const NAME: &'static str;

    /// Cross-field rules (heads divide the width, ...). Field rules live in the
    /// `#[validate]` attributes; the default has no cross-field rules.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Runs the field rules and the cross-field rules.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first offending field.
    fn validated(&self) -> Result<()> {
        self.validate().map_err(|errors| from_validation(Self::NAME, &errors))?;
        self.check()
    }

    /// Parses and validates a JSON document.
    ///
    /// # Errors
    /// [`Error::Json`] for malformed JSON or a missing/mistyped field,
    /// [`Error::InvalidConfig`] for a value that breaks a rule.
    fn from_json_str(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|source| Error::Json { what: Self::NAME.to_owned(), source })?;
        config.validated()?;
        Ok(config)
    }

    /// The config as pretty JSON.
    ///
    /// # Errors
    /// [`Error::Json`] if a value cannot be represented (a non-finite float).
    fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|source| Error::Json { what: Self::NAME.to_owned(), source })
    }
}

/// An [`Error::InvalidConfig`] unless `value > 0`.
///
/// # Errors
/// When `value` is zero.
pub fn ensure_positive(config: &'static str, field: &str, value: usize) -> Result<()> {
    if value == 0 { Err(Error::invalid(config, field, "must be positive, got 0")) } else { Ok(()) }
}

/// An [`Error::InvalidConfig`] unless `divisor` divides `value` (both positive).
///
/// # Errors
/// When `divisor` is zero or leaves a remainder.
pub fn ensure_divides(
    config: &'static str,
    divisor_field: &str,
    divisor: usize,
    field: &str,
    value: usize,
) -> Result<()> {
    if divisor == 0 || value % divisor != 0 {
        Err(Error::invalid(config, divisor_field, format!("({divisor}) must divide `{field}` ({value})")))
    } else {
        Ok(())
    }
}

/// Flattens validator's nested report into one error naming every failing field.
fn from_validation(config: &'static str, errors: &ValidationErrors) -> Error {
    let mut fields = Vec::new();
    let mut reasons = Vec::new();
    collect(errors, "", &mut fields, &mut reasons);
    Error::invalid(config, fields.join(", "), reasons.join("; "))
}

fn collect(errors: &ValidationErrors, prefix: &str, fields: &mut Vec<String>, reasons: &mut Vec<String>) {
    let mut entries: Vec<_> = errors.errors().iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in entries {
        let path = if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let reason = error.message.as_ref().map_or_else(|| describe(error), |m| m.to_string());
                    reasons.push(format!("`{path}` {reason}"));
                }
                fields.push(path);
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, fields, reasons),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, &format!("{path}[{index}]"), fields, reasons);
                }
            }
        }
    }
}

fn describe(error: &validator::ValidationError) -> String {
    let mut params: Vec<String> = error
        .params
        .iter()
        .filter(|(name, _)| name.as_ref() != "value")
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    params.sort();
    let got = error.params.get("value").map(|v| format!(", got {v}")).unwrap_or_default();
    if params.is_empty() {
        format!("fails `{}`{got}", error.code)
    } else {
        format!("fails `{}` ({}){got}", error.code, params.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, Validate)]
    struct Heads {
        #[validate(range(min = 1))]
        hidden_size: usize,
        #[validate(range(min = 1))]
        num_heads: usize,
        #[validate(range(min = 0.0, max = 1.0))]
        dropout: f32,
    }

    impl Config for Heads {
        const NAME: &'static str = "Heads";
        fn check(&self) -> Result<()> {
            ensure_divides(Self::NAME, "num_heads", self.num_heads, "hidden_size", self.hidden_size)
        }
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidConfig { field, .. } => field,
            other => format!("not InvalidConfig: {other}"),
        }
    }

    #[test]
    fn a_valid_config_round_trips_through_json() {
        let config = Heads::from_json_str(r#"{"hidden_size": 64, "num_heads": 8, "dropout": 0.1}"#).unwrap();
        let again = Heads::from_json_str(&config.to_json_string().unwrap()).unwrap();
        assert_eq!(again.hidden_size, 64);
        assert_eq!(again.num_heads, 8);
    }

    #[test]
    fn a_field_rule_names_the_field_and_the_value() {
        let err = Heads::from_json_str(r#"{"hidden_size": 0, "num_heads": 8, "dropout": 0.1}"#).unwrap_err();
        let text = err.to_string();
        assert_eq!(field_of(err), "hidden_size");
        assert!(text.contains("got 0"), "{text}");
    }

    #[test]
    fn every_failing_field_is_named() {
        let err = Heads::from_json_str(r#"{"hidden_size": 0, "num_heads": 8, "dropout": 2.0}"#).unwrap_err();
        assert_eq!(field_of(err), "dropout, hidden_size");
    }

    #[test]
    fn a_cross_field_rule_names_both_fields() {
        let err = Heads::from_json_str(r#"{"hidden_size": 64, "num_heads": 6, "dropout": 0.0}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`num_heads` (6) must divide `hidden_size` (64)"), "{text}");
    }

    #[test]
    fn malformed_json_and_missing_fields_are_json_errors() {
        assert!(matches!(Heads::from_json_str("{"), Err(Error::Json { .. })));
        assert!(matches!(Heads::from_json_str(r#"{"hidden_size": 64}"#), Err(Error::Json { .. })));
        assert!(matches!(
            Heads::from_json_str(r#"{"hidden_size": -1, "num_heads": 8, "dropout": 0.0}"#),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn ensure_positive_rejects_zero() {
        assert!(ensure_positive("X", "n", 1).is_ok());
        assert_eq!(field_of(ensure_positive("X", "n", 0).unwrap_err()), "n");
    }
}
