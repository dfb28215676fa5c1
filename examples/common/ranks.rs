//! A process started as a rank (by the `launch` example or `mlx.launch`, which set
//! `MLX_RANK` and `MLX_HOSTFILE`) joins its group of ranks.

use std::sync::Arc;
use std::time::Duration;

use lamina::core::distributed::{Backend, Group};

/// The ring group this process is a rank of; `None` when no launcher started it.
///
/// # Errors
/// When the group cannot be joined within a minute.
pub fn join() -> Result<Option<Arc<Group>>, lamina::core::Error> {
    if std::env::var_os("MLX_HOSTFILE").is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Group::init(Backend::Ring, Duration::from_secs(60))?)))
}
