//! The Hub's listings: a revision's commit, and the files of that commit.

use serde::Deserialize;

use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use super::error::HubError;
use super::http::{HubClient, Redirects, error_text, read_capped, untrusted};
use super::reference::{RepoRef, check_file};

/// One file of a repository at a commit, as the tree listing gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoFile {
    /// Its path in the repository.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// For files stored with Git LFS (or Xet): the content's sha256 and size.
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

/// What the Hub knows of a large file's content.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LfsInfo {
    /// The sha256 of the content, in hex.
    pub oid: String,
    /// The content's size.
    pub size: u64,
}

impl RepoFile {
    /// The size the downloaded file must have.
    pub fn content_size(&self) -> u64 {
        self.lfs.as_ref().map_or(self.size, |lfs| lfs.size)
    }
}

/// A repository at one commit: the commit and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The commit the revision points at.
    pub commit: String,
    /// Its files (not folders).
    pub files: Vec<RepoFile>,
}

impl Listing {
    /// The file at `path`.
    pub fn file(&self, path: &str) -> Option<&RepoFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum TreeEntry {
    File(RepoFile),
    Directory {},
}

/// The largest JSON answer read (a tree page of 1000 entries is ~300 KB).
const JSON_CAP: usize = 16 << 20;

/// Tree pages followed for one listing.
const MAX_PAGES: usize = 1000;

/// Files listed for one repository.
const MAX_FILES: usize = 200_000;

/// Lists a repository at a revision: `GET /api/models/{repo}/revision/{revision}` for the
/// commit, then `GET /api/models/{repo}/tree/{commit}?recursive=true`, following the
/// `Link: <...>; rel="next"` pages on the endpoint's own origin.
pub(crate) async fn list(client: &HubClient, repo: &RepoRef, had_token: bool) -> Result<Listing, HubError> {
    let endpoint = client.endpoint().to_owned();
    let revision = repo.revision().replace('/', "%2F");
    let url = client.parse(&format!("{endpoint}/api/models/{}/revision/{revision}", repo.repo_id))?;
    let info: RevisionInfo = get_json(client, &url, repo, had_token).await?.0;
    if !super::reference::is_commit(&info.sha) {
        return Err(untrusted(url.as_str(), format!("`{}` is not a commit hash", info.sha.escape_debug())));
    }
    let mut files = Vec::new();
    let mut next = Some(
        client.parse(&format!("{endpoint}/api/models/{}/tree/{}?recursive=true", repo.repo_id, info.sha))?,
    );
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(untrusted(url.as_str(), format!("more than {MAX_PAGES} pages of files")));
        }
        let (entries, link): (Vec<TreeEntry>, _) = get_json(client, &url, repo, had_token).await?;
        for entry in entries {
            if let TreeEntry::File(file) = entry {
                check_file(&file.path).map_err(|e| untrusted(url.as_str(), e.to_string()))?;
                files.push(file);
            }
        }
        if files.len() > MAX_FILES {
            return Err(untrusted(url.as_str(), format!("more than {MAX_FILES} files")));
        }
        next = match link {
            Some(link) => {
                let page = client.parse(&link).or_else(|_| {
                    url.join(&link).map_err(|e| untrusted(url.as_str(), format!("next page `{link}`: {e}")))
                })?;
                if !client.same_origin(&page) {
                    return Err(untrusted(
                        url.as_str(),
                        format!("the next page `{page}` is not on the endpoint's origin"),
                    ));
                }
                Some(page)
            }
            None => None,
        };
    }
    Ok(Listing { commit: info.sha, files })
}

/// GETs JSON, mapping the Hub's error answers to [`HubError`]s; returns the next page's
/// URL from a `Link` header.
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &HubClient,
    url: &Url,
    repo: &RepoRef,
    had_token: bool,
) -> Result<(T, Option<String>), HubError> {
    let (response, url) = client.send(Method::GET, url.clone(), HeaderMap::new(), Redirects::Follow).await?;
    let status = response.status().as_u16();
    let code = response.headers().get("x-error-code").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let link = response.headers().get("link").and_then(|v| v.to_str().ok()).and_then(next_link);
    let repo_id = repo.repo_id.clone();
    if !(200..300).contains(&status) {
        let body = error_text(response).await;
        return Err(match (status, code.as_deref()) {
            (_, Some("RevisionNotFound")) => {
                HubError::RevisionNotFound { repo: repo_id, revision: repo.revision().to_owned() }
            }
            (_, Some("RepoNotFound")) | (404, None) => HubError::RepoNotFound { repo: repo_id },
            (403, _) => HubError::Forbidden { repo: repo_id },
            (401, _) | (_, Some("GatedRepo")) => HubError::Unauthorized { repo: repo_id, had_token },
            _ => HubError::Server { url: url.to_string(), status, reason: message(&body) },
        });
    }
    let bytes = read_capped(client, &url, response, JSON_CAP).await?;
    let value = serde_json::from_slice(&bytes).map_err(|e| HubError::Server {
        url: url.to_string(),
        status,
        reason: format!("unexpected answer: {e}"),
    })?;
    Ok((value, link))
}

/// The `error` field of a JSON error body, else the body's first 200 characters.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// `<url>; rel="next"` from a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_from_a_link_header() {
        let header = r#"<https://hub/api/models/a/b/tree/x?cursor=abc>; rel="next""#;
        assert_eq!(next_link(header).as_deref(), Some("https://hub/api/models/a/b/tree/x?cursor=abc"));
        assert_eq!(next_link(r#"<https://x>; rel="prev""#), None);
    }
}
