//! What a launcher hands to other programs: hosts and users for `ssh`, checked so that
//! neither can reach it as an option, and hostfiles created exclusively, readable by their
//! owner only, under names nobody can guess or pre-empt with a link.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A host to start a rank on over `ssh`: `host` or `user@host`.
///
/// A user is letters, digits, `_`, `.` and `-`, not starting with `-` or `.`; a host is
/// a DNS name or an IPv4 address (labels of letters, digits and `-`, neither starting nor
/// ending with `-`). Nothing else gets through, so neither part can be read by `ssh` as an
/// option (`-oProxyCommand=...`) or by a shell as more than a word.
///
/// ```
/// use lamina_core::distributed::SshTarget;
/// let target: SshTarget = "me@node-1.local".parse().unwrap();
/// assert_eq!((target.user.as_deref(), target.host.as_str()), (Some("me"), "node-1.local"));
/// assert!("-oProxyCommand=sh".parse::<SshTarget>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The user to log in as, when given.
    pub user: Option<String>,
    /// The host.
    pub host: String,
}

impl FromStr for SshTarget {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidConfig {
            config: "hosts",
            field: "host".into(),
            reason: format!("`{}` is not a host name: {reason}", text.escape_debug()),
        };
        let (user, host) = match text.split_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, text),
        };
        if let Some(user) = user {
            let ok = !user.is_empty()
                && user.len() <= 64
                && !user.starts_with(['-', '.'])
                && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(invalid(
                    "the user must be letters, digits, `_`, `.`, `-`, not starting with `-`",
                ));
            }
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(invalid("a host is a DNS name or an IPv4 address"));
        }
        Ok(SshTarget { user: user.map(str::to_owned), host: host.to_owned() })
    }
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user {
            Some(user) => write!(f, "{user}@{}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Creates a new file `prefix-<random>.json` in `dir` holding `contents`: created
/// exclusively (never through an existing file or link), mode 0600 on Unix.
///
/// # Errors
/// [`Error::Io`] when no such file can be created.
pub fn create_private_file(dir: &Path, prefix: &str, contents: &[u8]) -> Result<PathBuf> {
    let mut last = None;
    for attempt in 0u32..16 {
        let path = dir.join(format!("{prefix}-{}.json", unguessable(attempt)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(contents).map_err(|source| Error::Io { path: path.clone(), source })?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(source) => return Err(Error::Io { path, source }),
        }
    }
    let (path, source) = last.unwrap_or_else(|| (dir.to_path_buf(), std::io::Error::other("no attempt")));
    Err(Error::Io { path, source })
}

/// 16 hex digits from the clock, the process and a hash of both (not predictable from the
/// process id alone).
fn unguessable(attempt: u32) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u32(attempt);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_users_that_could_be_options_are_refused() {
        for good in ["a", "node-1", "me@127.0.0.1", "x_y.z@host.example.com", "m1"] {
            assert_eq!(good.parse::<SshTarget>().unwrap().to_string(), good);
        }
        for bad in [
            "",
            "-oProxyCommand=sh",
            "-p22",
            "me@-oProxyCommand=x",
            "-l@host",
            "a b",
            "a;b",
            "host:22",
            "a/b",
            "@host",
            "me@",
            "me@@host",
            ".me@host",
            "host-",
            "$(id)",
            "host\n-oX",
        ] {
            assert!(bad.parse::<SshTarget>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn private_files_are_new_unguessable_and_owner_only() {
        let dir = std::env::temp_dir().join(format!("lamina-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = create_private_file(&dir, "lamina-hosts", b"[]").unwrap();
        let b = create_private_file(&dir, "lamina-hosts", b"[1]").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"[]");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
