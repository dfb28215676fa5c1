//! A loopback server that answers as the Hugging Face Hub does, for tests: the revision
//! and tree listings, `resolve` with `Range`, `ETag`, `X-Repo-Commit`, and a redirect to a
//! second host (a "CDN") for large files; gated repositories; and injected faults
//! (connections cut mid-file, corrupted bytes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One file of a repository.
#[derive(Clone)]
pub struct HubFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

impl HubFile {
    fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    /// Large files are stored in LFS and redirected to the CDN, as the Hub does.
    fn lfs(&self) -> bool {
        self.path.ends_with(".safetensors") || self.path.ends_with(".gguf")
    }

    /// The git object id (any stable 40-hex string serves here).
    fn git_oid(&self) -> String {
        self.sha256()[..40].to_owned()
    }
}

/// A repository: its id, commit, files and (for a gated one) the token that may read it.
#[derive(Clone)]
pub struct HubRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<HubFile>,
    pub token: Option<String>,
}

impl HubRepo {
    /// The files of a fixture folder, plus a README the loader must not fetch.
    pub fn from_folder(id: &str, folder: &Path, names: &[&str]) -> Self {
        let mut files: Vec<HubFile> = names
            .iter()
            .map(|name| HubFile {
                path: (*name).to_owned(),
                bytes: std::fs::read(folder.join(name)).unwrap(),
            })
            .collect();
        files.push(HubFile { path: "README.md".into(), bytes: b"# a model card\n".to_vec() });
        HubRepo {
            id: id.to_owned(),
            commit: hex(&Sha256::digest(id.as_bytes()))[..40].to_owned(),
            files,
            token: None,
        }
    }
}

/// A request the server saw: its path, the first byte of its range, whether it carried
/// an `Authorization` header, and on which of the two hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub range_start: Option<u64>,
    pub bytes_sent: u64,
    pub authorization: bool,
    pub cdn: bool,
}

/// Faults to inject.
#[derive(Default)]
pub struct Faults {
    /// File path -> (ranged requests to answer whole first, cuts left, cut after this
    /// many bytes of a ranged body).
    pub cut: HashMap<String, (usize, usize, usize)>,
    /// Files served with one byte flipped.
    pub corrupt: Vec<String>,
    /// File path -> headers set on its `resolve` answers (an empty value removes one).
    pub headers: HashMap<String, Vec<(&'static str, String)>>,
    /// A `Link: <...>; rel="next"` on every tree page.
    pub tree_link: Option<String>,
    /// Tree pages as an endless body.
    pub endless_tree: bool,
    /// Files whose content is an endless body that ignores `Range`.
    pub endless: Vec<String>,
    /// Files whose content sends its headers and a few bytes, then nothing.
    pub stall: Vec<String>,
}

struct Shared {
    repos: Vec<HubRepo>,
    cdn: String,
    /// Bytes handed out by endless bodies.
    streamed: Arc<std::sync::atomic::AtomicU64>,
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Faults>,
}

/// The running server.
pub struct FakeHub {
    pub endpoint: String,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeHub {
    /// Starts the Hub and its CDN on two loopback ports.
    pub async fn start(repos: Vec<HubRepo>) -> Self {
        let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cdn = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (hub_addr, cdn_addr): (SocketAddr, SocketAddr) =
            (hub.local_addr().unwrap(), cdn.local_addr().unwrap());
        let shared = Arc::new(Shared {
            repos,
            cdn: format!("http://{cdn_addr}"),
            streamed: Arc::default(),
            seen: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
        });
        let router = axum::Router::new().fallback(answer).with_state(shared.clone());
        let tasks = vec![
            tokio::spawn(async move { axum::serve(hub, router.clone()).await.unwrap() }),
            tokio::spawn({
                let router = axum::Router::new().fallback(answer).with_state(shared.clone());
                async move { axum::serve(cdn, router).await.unwrap() }
            }),
        ];
        FakeHub { endpoint: format!("http://{hub_addr}"), shared, tasks }
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The CDN's origin.
    pub fn cdn(&self) -> String {
        self.shared.cdn.clone()
    }

    /// Bytes that endless bodies handed to the network so far.
    pub fn streamed(&self) -> u64 {
        self.shared.streamed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the requests seen.
    pub fn clear(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// Sets the faults.
    pub fn faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Stops answering.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if let Some(code) = code {
        response.headers_mut().insert("x-error-code", HeaderValue::from_str(code).unwrap());
    }
    response
}

/// An endless body of `byte`s, counted into `streamed`.
fn endless(streamed: &Arc<std::sync::atomic::AtomicU64>, byte: u8) -> Body {
    let streamed = streamed.clone();
    Body::from_stream(futures_util::stream::repeat_with(move || {
        streamed.fetch_add(65536, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(Bytes::from(vec![byte; 65536]))
    }))
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let on_cdn = !host.is_empty() && shared.cdn.ends_with(host);
    let record = |bytes_sent: u64| {
        shared.seen.lock().unwrap().push(Seen {
            path: path.clone(),
            range_start: range.map(|r| r.0),
            bytes_sent,
            authorization: headers.contains_key(header::AUTHORIZATION),
            cdn: on_cdn,
        })
    };
    if on_cdn && !path.starts_with("/cdn/") {
        record(0);
        return error(StatusCode::NOT_FOUND, None, "the CDN serves objects only");
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let Some(file) = shared.repos.iter().flat_map(|r| &r.files).find(|f| f.sha256() == sha) else {
            return error(StatusCode::NOT_FOUND, None, "no such object");
        };
        return serve_bytes(&shared, file, range, HeaderMap::new(), record);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (api, repo_parts) = match parts.first() {
        Some(&"api") if parts.get(1) == Some(&"models") => (true, &parts[2..]),
        _ => (false, &parts[..]),
    };
    let [org, name, kind, revision, rest @ ..] = repo_parts else {
        return error(StatusCode::NOT_FOUND, None, "not found");
    };
    let id = format!("{org}/{name}");
    let Some(repo) = shared.repos.iter().find(|r| r.id == id) else {
        record(0);
        return error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found");
    };
    if let Some(token) = &repo.token {
        let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match sent {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    Some("GatedRepo"),
                    "Access to this model is restricted",
                );
            }
            Some(value) if value != format!("Bearer {token}") => {
                return error(StatusCode::UNAUTHORIZED, None, "Invalid credentials in Authorization header");
            }
            Some(_) => {}
        }
    }
    let revision = revision.replace("%2F", "/");
    if revision != "main" && revision != repo.commit {
        record(0);
        return error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), "Invalid rev id");
    }
    record(0);
    match (api, *kind) {
        (true, "revision") => axum::Json(serde_json::json!({
            "id": repo.id,
            "sha": repo.commit,
            "siblings": repo.files.iter().map(|f| serde_json::json!({ "rfilename": f.path })).collect::<Vec<_>>(),
        }))
        .into_response(),
        (true, "tree") if shared.faults.lock().unwrap().endless_tree => {
            (StatusCode::OK, endless(&shared.streamed, b' ')).into_response()
        }
        (true, "tree") => {
            let link = shared.faults.lock().unwrap().tree_link.clone();
            let mut response = axum::Json(
            repo.files
                .iter()
                .map(|f| {
                    let mut entry = serde_json::json!({ "type": "file", "oid": f.git_oid(), "size": f.bytes.len(), "path": f.path });
                    if f.lfs() {
                        entry["lfs"] = serde_json::json!({ "oid": f.sha256(), "size": f.bytes.len(), "pointerSize": 134 });
                    }
                    entry
                })
                .chain([serde_json::json!({ "type": "directory", "oid": "0", "size": 0, "path": "empty" })])
                .collect::<Vec<_>>(),
            )
            .into_response();
            if let Some(link) = link {
                response.headers_mut().insert(
                    header::LINK,
                    HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")).unwrap(),
                );
            }
            response
        }
        (false, "resolve") => {
            let wanted = rest.join("/");
            let Some(file) = repo.files.iter().find(|f| f.path == wanted) else {
                return error(StatusCode::NOT_FOUND, Some("EntryNotFound"), "Entry not found");
            };
            let mut extra = HeaderMap::new();
            extra.insert("x-repo-commit", HeaderValue::from_str(&repo.commit).unwrap());
            let overrides = shared.faults.lock().unwrap().headers.get(&file.path).cloned().unwrap_or_default();
            let apply = |extra: &mut HeaderMap| {
                for (name, value) in &overrides {
                    match value.as_str() {
                        "" => extra.remove(*name),
                        value => extra.insert(*name, HeaderValue::from_str(value).unwrap()),
                    };
                }
            };
            if file.lfs() {
                extra.insert("x-linked-etag", HeaderValue::from_str(&format!("\"{}\"", file.sha256())).unwrap());
                extra.insert("x-linked-size", HeaderValue::from(file.bytes.len()));
                extra.insert(header::LOCATION, HeaderValue::from_str(&format!("{}/cdn/{}", shared.cdn, file.sha256())).unwrap());
                apply(&mut extra);
                let mut response = StatusCode::FOUND.into_response();
                response.headers_mut().extend(extra);
                return response;
            }
            extra.insert(header::ETAG, HeaderValue::from_str(&format!("\"{}\"", file.git_oid())).unwrap());
            apply(&mut extra);
            serve_bytes(&shared, file, range, extra, |_| {})
        }
        _ => error(StatusCode::NOT_FOUND, None, "not found"),
    }
}

/// `bytes=a-b` (inclusive) or `bytes=a-`.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()))
}

fn serve_bytes(
    shared: &Shared,
    file: &HubFile,
    range: Option<(u64, Option<u64>)>,
    extra: HeaderMap,
    record: impl Fn(u64),
) -> Response {
    let len = file.bytes.len() as u64;
    let (start, end) = match range {
        Some((start, end)) => (start, end.unwrap_or(len - 1).min(len - 1)),
        None => (0, len - 1),
    };
    if start > end {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let mut faults = shared.faults.lock().unwrap();
    if faults.endless.contains(&file.path) {
        record(0);
        let mut response = (StatusCode::OK, endless(&shared.streamed, b'x')).into_response();
        response.headers_mut().extend(extra);
        return response;
    }
    if faults.stall.contains(&file.path) {
        record(0);
        let head = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))]);
        let body = Body::from_stream(futures_util::StreamExt::chain(head, futures_util::stream::pending()));
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().extend(extra);
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return response;
    }
    let mut body = file.bytes[start as usize..=end as usize].to_vec();
    if faults.corrupt.contains(&file.path) {
        if let Some(b) = body.last_mut() {
            *b ^= 0xff;
        }
    }
    let cut = match faults.cut.get_mut(&file.path) {
        Some((skip, _, _)) if *skip > 0 && body.len() > 1 => {
            *skip -= 1;
            None
        }
        Some((_, left, after)) if *left > 0 && body.len() > 1 => {
            *left -= 1;
            Some((*after).min(body.len() - 1))
        }
        _ => None,
    };
    record(cut.unwrap_or(body.len()) as u64);
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let length = body.len();
    let stream_body = match cut {
        Some(after) => {
            let head = Bytes::from(body[..after].to_vec());
            Body::from_stream(futures_util::stream::iter([
                Ok(head),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")),
            ]))
        }
        None => Body::from(body),
    };
    let mut response = (status, stream_body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.extend(extra);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if range.is_some() {
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).unwrap(),
        );
    }
    response
}
