//! Parameter counting: mlx-rs's `num_parameters` counts arrays; this counts elements.

use mlx_rs::module::ModuleParameters;

/// The number of scalar parameters (elements over all parameter arrays) of a module.
pub fn count_parameters(module: &impl ModuleParameters) -> usize {
    module.parameters().flatten().values().map(|array| array.size()).sum()
}

/// The number of scalar parameters that are not frozen.
pub fn count_trainable_parameters(module: &impl ModuleParameters) -> usize {
    module.trainable_parameters().flatten().values().map(|array| array.size()).sum()
}
