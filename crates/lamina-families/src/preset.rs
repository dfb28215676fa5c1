//! Presets by name, `family:name` (`llama:tinyllama`, `qwen3:0.6b`, `mamba:mamba_130m`,
//! `mobilellm:950m`), looked up in the family table.

use lamina_core::{Error, Result};
use strum::VariantNames;

use crate::family::{AnyConfig, Family};
use crate::registry::family_entry;

/// The config of preset `family:name`.
///
/// # Errors
/// [`Error::UnknownVariant`] listing the known families, or the family's known names.
///
/// ```
/// let preset = lamina_families::preset("qwen3:0.6b").unwrap();
/// assert_eq!(preset.num_parameters().unwrap(), 596_049_920);
/// assert!(lamina_families::preset("qwen3:huge").unwrap_err().to_string().contains("0.6b"));
/// ```
pub fn preset(spec: &str) -> Result<Box<dyn AnyConfig>> {
    let (family, name) = spec.split_once(':').ok_or_else(|| Error::UnknownVariant {
        kind: "preset (`family:name`)",
        value: spec.to_owned(),
        known: "e.g. llama:tinyllama, qwen3:0.6b, mamba:mamba_130m, mobilellm:950m".into(),
    })?;
    let unknown_family = || Error::UnknownVariant {
        kind: "preset family",
        value: family.to_owned(),
        known: Family::VARIANTS.iter().filter(|f| **f != "custom").copied().collect::<Vec<_>>().join(", "),
    };
    let family: Family = family.parse().map_err(|_| unknown_family())?;
    let entry = family_entry(family).ok_or_else(unknown_family)?;
    let mut presets = (entry.presets)();
    let known = presets.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let at = presets.iter().position(|(n, _)| *n == name);
    at.map(|i| presets.swap_remove(i).1).ok_or(Error::UnknownVariant {
        kind: "preset",
        value: spec.to_owned(),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_and_unknown_ones_list_the_known() {
        assert_eq!(preset("mobilellm:950m").unwrap().family(), Family::MobileLlm);
        assert_eq!(preset("llama:tinyllama").unwrap().family(), Family::Llama);
        assert_eq!(preset("mamba:mamba_130m").unwrap().family(), Family::Mamba);
        assert_eq!(preset("gemma3:270m").unwrap().family(), Family::Gemma3);
        let err = preset("llama:gpt4").unwrap_err().to_string();
        assert!(err.contains("smollm2_135m"), "{err}");
        let err = preset("bert:base").unwrap_err().to_string();
        assert!(err.contains("qwen2") && err.contains("smollm3"), "{err}");
        assert!(preset("tinyllama").is_err());
    }
}
