//! What can go wrong on the way to and from the Hub.

use std::path::PathBuf;

/// A Hub failure, naming the repository (and file) it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The text is not a repo reference.
    #[error("`{reference}`: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No repository by that id (or it is private and no token may see it).
    #[error("{repo}: no such repository on the Hub")]
    RepoNotFound {
        /// `org/name`.
        repo: String,
    },
    /// The repository has no such branch, tag or commit.
    #[error("{repo}: no revision `{revision}`")]
    RevisionNotFound {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// The repository needs a token (gated or private), or the token was refused.
    #[error("{repo}: {}", if *.had_token {
        "the Hub refused the token (HF_TOKEN or the login file)"
    } else {
        "a gated or private repository: set HF_TOKEN (or run `huggingface-cli login`) with a token that may read it"
    })]
    Unauthorized {
        /// `org/name`.
        repo: String,
        /// Whether a token was sent.
        had_token: bool,
    },
    /// The token may not read this repository (a gated repo whose terms were not accepted).
    #[error("{repo}: access denied; accept the repository's terms on the Hub for this token's account")]
    Forbidden {
        /// `org/name`.
        repo: String,
    },
    /// The repository does not hold what the loader needs.
    #[error("{repo}@{revision}: {reason}")]
    NoModel {
        /// `org/name`.
        repo: String,
        /// The revision listed.
        revision: String,
        /// What is missing or ambiguous.
        reason: String,
    },
    /// Offline (`HF_HUB_OFFLINE`, or the Hub unreachable) and the cache lacks a file.
    #[error("{repo}@{revision}: `{file}` is not in the cache at {} and the Hub is {why}", cache.display())]
    NotCached {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The missing file (or `refs/<revision>`).
        file: String,
        /// The cache folder looked in.
        cache: PathBuf,
        /// Why the Hub was not asked: "offline (HF_HUB_OFFLINE)" or the network error.
        why: String,
    },
    /// The Hub could not be reached, or the connection failed.
    #[error("{url}: {reason}")]
    Network {
        /// The request's URL.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// The Hub answered something other than what its API documents.
    #[error("{url}: HTTP {status}: {reason}")]
    Server {
        /// The request's URL.
        url: String,
        /// The status code.
        status: u16,
        /// The body's message or the parse error.
        reason: String,
    },
    /// The server sent something lamina will not act on: a header that would become a
    /// path (ETag, commit) and is not a hash, a commit other than the listed one, a
    /// redirect without a usable `Location`, a listing page on another origin.
    #[error("{url}: refused: {reason}")]
    Untrusted {
        /// The request's URL.
        url: String,
        /// What was refused.
        reason: String,
    },
    /// A response body longer than lamina reads for it (a listing, an error, a file past
    /// its listed size).
    #[error("{url}: the answer is longer than the {limit} bytes allowed for it")]
    TooLarge {
        /// The request's URL.
        url: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// A file's download failed (after the retries; what was written so far is kept
    /// aside, never taken as the file, and resumed by the next attempt).
    #[error("{repo}: downloading `{file}` failed: {reason}")]
    Download {
        /// `org/name`.
        repo: String,
        /// The file.
        file: String,
        /// The client's error.
        reason: String,
    },
    /// A downloaded file is not what the Hub's listing says (size or sha256); it was
    /// removed from the cache.
    #[error("{repo}: `{file}` has {what} {actual}, the Hub lists {expected}; the download was discarded")]
    Integrity {
        /// `org/name`.
        repo: String,
        /// The file.
        file: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// The listed value.
        expected: String,
        /// The downloaded file's value.
        actual: String,
    },
    /// A cache file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io { path: path.into(), source }
    }
}
