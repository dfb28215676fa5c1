//! A model on the Hub: `org/name`, optionally `@revision` and `:file`.

use std::fmt;
use std::str::FromStr;

use super::error::HubError;

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A repository on the Hub, a revision and optionally one file of it (a `.gguf` file, or
/// a quantization tag such as `Q4_K_M` that names one).
///
/// Written `org/name`, `org/name@revision`, `org/name:file` or `org/name@revision:file`
/// (`:Q4_K_M` as llama.cpp's `-hf` takes it).
///
/// ```
/// use lamina_loader::hub::RepoRef;
/// let r: RepoRef = "Qwen/Qwen2.5-0.5B-Instruct-GGUF@main:Q4_K_M".parse().unwrap();
/// assert_eq!(r.repo_id, "Qwen/Qwen2.5-0.5B-Instruct-GGUF");
/// assert_eq!(r.revision(), "main");
/// assert_eq!(r.file.as_deref(), Some("Q4_K_M"));
/// assert!("../etc".parse::<RepoRef>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// `org/name`.
    pub repo_id: String,
    /// A branch, tag or commit; `main` when `None`.
    pub revision: Option<String>,
    /// A file of the repository (or a quantization tag naming one `.gguf` file).
    pub file: Option<String>,
}

impl RepoRef {
    /// `repo_id` at its default revision, checked.
    ///
    /// # Errors
    /// [`HubError::InvalidReference`] when it is not a valid `org/name`.
    pub fn new(repo_id: &str) -> Result<Self, HubError> {
        check_repo_id(repo_id)?;
        Ok(RepoRef { repo_id: repo_id.to_owned(), revision: None, file: None })
    }

    /// The same repository at `revision`, checked.
    ///
    /// # Errors
    /// [`HubError::InvalidReference`] for a revision that could leave the cache's folders.
    pub fn at(self, revision: &str) -> Result<Self, HubError> {
        check_revision(revision)?;
        Ok(RepoRef { revision: Some(revision.to_owned()), ..self })
    }

    /// The same repository with one named file, checked.
    ///
    /// # Errors
    /// [`HubError::InvalidReference`] for a file name that is not a relative path inside
    /// the repository.
    pub fn with_file(self, file: &str) -> Result<Self, HubError> {
        check_file(file)?;
        Ok(RepoRef { file: Some(file.to_owned()), ..self })
    }

    /// The revision (`main` by default).
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }

    /// The cache folder's name: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo_id.replace('/', "--"))
    }

    /// Whether `text` reads as a repo reference rather than a path: `org/name` with the
    /// Hub's characters, not starting with `.` or `/`.
    pub fn looks_like(text: &str) -> bool {
        text.parse::<RepoRef>().is_ok()
    }
}

impl FromStr for RepoRef {
    type Err = HubError;

    fn from_str(text: &str) -> Result<Self, HubError> {
        let (head, file) = match text.split_once(':') {
            Some((head, file)) => (head, Some(file)),
            None => (text, None),
        };
        let (repo_id, revision) = match head.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (head, None),
        };
        let mut reference = RepoRef::new(repo_id)?;
        if let Some(revision) = revision {
            reference = reference.at(revision)?;
        }
        if let Some(file) = file {
            reference = reference.with_file(file)?;
        }
        Ok(reference)
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo_id)?;
        if let Some(revision) = &self.revision {
            write!(f, "@{revision}")?;
        }
        if let Some(file) = &self.file {
            write!(f, ":{file}")?;
        }
        Ok(())
    }
}

fn invalid(reference: &str, reason: &str) -> HubError {
    HubError::InvalidReference { reference: reference.to_owned(), reason: reason.to_owned() }
}

/// `huggingface_hub`'s rule: `org/name`, each part of letters, digits, `-`, `_`, `.`,
/// neither starting nor ending with `-` or `.`, no `--` or `..`, at most 96 characters.
fn check_repo_id(repo_id: &str) -> Result<(), HubError> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
    };
    match repo_id.split_once('/') {
        _ if repo_id.len() > 96 => Err(invalid(repo_id, "a repo id has at most 96 characters")),
        _ if repo_id.contains("--") || repo_id.contains("..") => {
            Err(invalid(repo_id, "a repo id holds no `--` or `..`"))
        }
        Some((org, name)) if part_ok(org) && part_ok(name) => Ok(()),
        _ => Err(invalid(repo_id, "not a repo id of the form `org/name`")),
    }
}

/// A branch, tag or commit: the characters git allows in a ref that keep it a path inside
/// `refs/` (no `..`, no leading `/`, no empty component).
fn check_revision(revision: &str) -> Result<(), HubError> {
    let ok = !revision.is_empty()
        && revision.len() <= 255
        && revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && revision.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok { Ok(()) } else { Err(invalid(revision, "not a revision (a branch, tag or commit)")) }
}

/// A file of a repository: a relative path of normal components.
pub(crate) fn check_file(file: &str) -> Result<(), HubError> {
    let ok = !file.is_empty()
        && file.len() <= 1024
        && !file.contains('\\')
        && !file.chars().any(char::is_control)
        && file.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok { Ok(()) } else { Err(invalid(file, "not a relative file path inside the repository")) }
}

/// Whether a revision is a full commit hash.
pub(crate) fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        for text in
            ["org/name", "org/name@v1.0", "org/name@refs/pr/1:model-Q4_K_M.gguf", "a.b/c_d-e:sub/x.gguf"]
        {
            assert_eq!(text.parse::<RepoRef>().unwrap().to_string(), text);
        }
        let r: RepoRef = "org/name".parse().unwrap();
        assert_eq!((r.revision(), r.folder_name().as_str()), ("main", "models--org--name"));
    }

    #[test]
    fn hostile_references_are_refused() {
        for text in [
            "",
            "name",
            "/abs/path",
            "./org/name",
            "org/name/extra",
            "../x",
            "org/..",
            "org/-x",
            "org/x.",
            "o--r/name",
            "org/na me",
            "org/name@",
            "org/name@../../x",
            "org/name@/abs",
            "org/name@a//b",
            "org/name:",
            "org/name:../x.gguf",
            "org/name:/x.gguf",
            "org/name:a\\b",
            "org/name:a/./b",
        ] {
            assert!(text.parse::<RepoRef>().is_err(), "{text:?} was accepted");
        }
        assert!(RepoRef::new(&format!("org/{}", "x".repeat(100))).is_err());
        assert!(!RepoRef::looks_like("tests/fixtures/checkpoints/x"));
        assert!(RepoRef::looks_like("HuggingFaceTB/SmolLM2-135M-Instruct"));
    }
}
