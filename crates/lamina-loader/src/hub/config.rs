//! Where the Hub is and where its files go, from the variables the ecosystem uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `huggingface_hub`'s default for both timeouts: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the Hub and where its cache lives.
///
/// [`HubConfig::from_env`] reads what `huggingface_hub` reads, in its order:
///
/// | setting | from |
/// | --- | --- |
/// | endpoint | `HF_ENDPOINT`, else `https://huggingface.co` |
/// | cache | `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` |
/// | token | `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH` or `$HF_HOME/token` (what `huggingface-cli login` writes); none with `HF_HUB_DISABLE_IMPLICIT_TOKEN` |
/// | offline | `HF_HUB_OFFLINE` set to `1`, `ON`, `YES` or `TRUE` |
/// | timeouts | `HF_HUB_ETAG_TIMEOUT` (connecting, metadata), `HF_HUB_DOWNLOAD_TIMEOUT` (each read), seconds, default 10 |
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The Hub's base URL, without a trailing slash.
    pub endpoint: String,
    /// The cache folder holding `models--org--name/{blobs,snapshots,refs}`.
    pub cache_dir: PathBuf,
    /// The access token sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Use the cache only, never the network.
    pub offline: bool,
    /// The longest wait for a connection and for a file's metadata.
    pub etag_timeout: Duration,
    /// The longest wait for each read of a body.
    pub download_timeout: Duration,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("offline", &self.offline)
            .field("etag_timeout", &self.etag_timeout)
            .field("download_timeout", &self.download_timeout)
            .finish()
    }
}

impl HubConfig {
    /// The settings of this process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// The settings a variable lookup gives (the same rules as [`HubConfig::from_env`]).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let home = match var("HF_HOME") {
            Some(home) => PathBuf::from(home),
            None => cache_root(&var).join("huggingface"),
        };
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map_or_else(|| home.join("hub"), PathBuf::from);
        let token = if var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some_and(|v| truthy(&v)) {
            None
        } else {
            var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
                let file = var("HF_TOKEN_PATH").map_or_else(|| home.join("token"), PathBuf::from);
                read_token(&file)
            })
        };
        HubConfig {
            endpoint: var("HF_ENDPOINT")
                .map_or_else(|| DEFAULT_ENDPOINT.to_owned(), |e| e.trim_end_matches('/').to_owned()),
            cache_dir,
            token: token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            etag_timeout: seconds(var("HF_HUB_ETAG_TIMEOUT")),
            download_timeout: seconds(var("HF_HUB_DOWNLOAD_TIMEOUT")),
        }
    }

    /// The settings of `endpoint` with `cache_dir`, no token, online, the default timeouts.
    pub fn new(endpoint: &str, cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            etag_timeout: DEFAULT_TIMEOUT,
            download_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same settings with another cache folder.
    pub fn with_cache_dir(self, cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig { cache_dir: cache_dir.into(), ..self }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self::from_env()
    }
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`, else `.cache` in the working folder.
fn cache_root(var: &impl Fn(&str) -> Option<String>) -> PathBuf {
    var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

fn read_token(file: &Path) -> Option<String> {
    std::fs::read_to_string(file).ok()
}

/// A timeout in seconds (a positive number, at most a day), else the default.
fn seconds(value: Option<String>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

/// `huggingface_hub`'s reading of a boolean variable.
fn truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubConfig::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn the_ecosystem_variables_in_their_order() {
        let plain = config(&[("HOME", "/home/u")]);
        assert_eq!(plain.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(plain.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(plain.token, None);
        assert!(!plain.offline);

        let xdg = config(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(xdg.cache_dir, Path::new("/x/huggingface/hub"));
        let home = config(&[("HOME", "/home/u"), ("HF_HOME", "/h")]);
        assert_eq!(home.cache_dir, Path::new("/h/hub"));
        let hub = config(&[("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "/c")]);
        assert_eq!(hub.cache_dir, Path::new("/c"));
        let old = config(&[("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(old.cache_dir, Path::new("/old"));

        let endpoint = config(&[("HF_ENDPOINT", "http://127.0.0.1:9/")]);
        assert_eq!(endpoint.endpoint, "http://127.0.0.1:9");
        for on in ["1", "ON", "yes", "True"] {
            assert!(config(&[("HF_HUB_OFFLINE", on)]).offline, "{on}");
        }
        for off in ["0", "off", "no", ""] {
            assert!(!config(&[("HF_HUB_OFFLINE", off)]).offline, "{off}");
        }
        assert_eq!((plain.etag_timeout, plain.download_timeout), (DEFAULT_TIMEOUT, DEFAULT_TIMEOUT));
        let timeouts = config(&[("HF_HUB_ETAG_TIMEOUT", "2.5"), ("HF_HUB_DOWNLOAD_TIMEOUT", "30")]);
        assert_eq!(timeouts.etag_timeout, Duration::from_millis(2500));
        assert_eq!(timeouts.download_timeout, Duration::from_secs(30));
        for bad in ["0", "-1", "x", "inf", "1e9"] {
            assert_eq!(config(&[("HF_HUB_ETAG_TIMEOUT", bad)]).etag_timeout, DEFAULT_TIMEOUT, "{bad}");
        }
    }

    #[test]
    fn the_token_from_the_variable_then_the_login_file() {
        let dir = std::env::temp_dir().join(format!("lamina-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_file\n").unwrap();
        let home = dir.to_string_lossy().into_owned();
        assert_eq!(config(&[("HF_HOME", &home)]).token.as_deref(), Some("hf_file"));
        assert_eq!(config(&[("HF_HOME", &home), ("HF_TOKEN", "hf_env")]).token.as_deref(), Some("hf_env"));
        let other = dir.join("other");
        std::fs::write(&other, "hf_path").unwrap();
        let path = other.to_string_lossy().into_owned();
        assert_eq!(config(&[("HF_HOME", &home), ("HF_TOKEN_PATH", &path)]).token.as_deref(), Some("hf_path"));
        let disabled =
            config(&[("HF_HOME", &home), ("HF_TOKEN", "x"), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")]);
        assert_eq!(disabled.token, None);
        assert!(!format!("{:?}", config(&[("HF_TOKEN", "hf_secret")])).contains("hf_secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
