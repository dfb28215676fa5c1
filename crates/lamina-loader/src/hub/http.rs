//! The one way lamina talks to the Hub: a client that follows redirects itself, sends the
//! token to the endpoint's own origin only, times out when a server stalls, and never
//! reads more of a body than the caller allows.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use super::config::HubConfig;
use super::error::HubError;

/// Redirects followed for one request (the Hub uses one or two: a renamed repo, a CDN).
const MAX_REDIRECTS: usize = 5;

/// The largest error body read (the rest is dropped unread).
pub(crate) const ERROR_BODY_CAP: usize = 64 << 10;

/// The HTTP client of one [`super::Hub`].
#[derive(Clone)]
pub(crate) struct HubClient {
    client: reqwest::Client,
    endpoint: Url,
    /// `Bearer <token>`, marked sensitive so that no `Debug` prints it.
    authorization: Option<HeaderValue>,
    etag_timeout: Duration,
    download_timeout: Duration,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("authorization", &self.authorization.as_ref().map(|_| "<hidden>"))
            .field("etag_timeout", &self.etag_timeout)
            .field("download_timeout", &self.download_timeout)
            .finish()
    }
}

/// How a request treats redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redirects {
    /// Follow every redirect (the token only while on the endpoint's origin).
    Follow,
    /// Follow relative redirects only (a renamed repository), as `huggingface_hub` does
    /// for a file's metadata; answer the first absolute one (its headers describe the
    /// file, its `Location` is where the content is).
    RelativeOnly,
}

impl HubClient {
    /// A client for `config`'s endpoint and token.
    ///
    /// # Errors
    /// [`HubError::Network`] for an endpoint that is not an `http(s)` URL, a token that
    /// is not a valid header value, or a client that cannot be built.
    pub fn new(config: &HubConfig) -> Result<Self, HubError> {
        let failed = |reason: String| HubError::Network { url: config.endpoint.clone(), reason };
        let endpoint = Url::parse(&config.endpoint).map_err(|e| failed(format!("not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(failed("the endpoint must be an http(s) URL with a host".into()));
        }
        let authorization = match &config.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| failed("the token is not a valid header value".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.etag_timeout)
            .read_timeout(config.download_timeout)
            .user_agent(concat!("lamina/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| failed(error_chain(&e)))?;
        Ok(HubClient {
            client,
            endpoint,
            authorization,
            etag_timeout: config.etag_timeout,
            download_timeout: config.download_timeout,
        })
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    /// Whether the token may go to `url`: same scheme, host and port as the endpoint.
    pub fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.endpoint.origin()
    }

    /// Parses an absolute `http(s)` URL the Hub named.
    pub fn parse(&self, url: &str) -> Result<Url, HubError> {
        let parsed = Url::parse(url).map_err(|e| untrusted(url, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(untrusted(url, "not an http(s) URL".into()));
        }
        Ok(parsed)
    }

    /// Sends `method` to `url` with `headers`, following redirects as `redirects` says; a
    /// `HEAD` must answer within the ETag timeout, every read within the download timeout.
    ///
    /// # Errors
    /// [`HubError::Network`] (the connection failed or timed out, naming the URL),
    /// [`HubError::Untrusted`] (a redirect without a usable `Location`, or too many).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        redirects: Redirects,
    ) -> Result<(Response, Url), HubError> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.client.request(method.clone(), url.clone()).headers(headers.clone());
            if let (Some(token), true) = (&self.authorization, self.same_origin(&url)) {
                request = request.header(AUTHORIZATION, token.clone());
            }
            if method == Method::HEAD {
                request = request.timeout(self.etag_timeout);
            }
            let response = request.send().await.map_err(|e| self.network(&url, &e))?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
                return Ok((response, url));
            }
            if redirects == Redirects::RelativeOnly && !relative_location(response.headers()) {
                return Ok((response, url));
            }
            let next = redirect_target(&url, response.headers())?;
            url = next;
        }
        Err(untrusted(url.as_str(), format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// A failed request as [`HubError::Network`], saying so when it timed out.
    pub fn network(&self, url: &Url, error: &reqwest::Error) -> HubError {
        let reason = if error.is_timeout() {
            format!(
                "no answer within the timeout (HF_HUB_ETAG_TIMEOUT {} s, HF_HUB_DOWNLOAD_TIMEOUT {} s): {}",
                self.etag_timeout.as_secs_f64(),
                self.download_timeout.as_secs_f64(),
                error_chain(error)
            )
        } else {
            error_chain(error)
        };
        HubError::Network { url: url.to_string(), reason }
    }
}

/// Whether a redirect's `Location` is relative (no scheme and host of its own).
fn relative_location(headers: &HeaderMap) -> bool {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|text| Url::parse(text).is_err() && !text.starts_with("//"))
}

/// Where a redirect points, resolved against the URL that answered it.
pub(crate) fn redirect_target(url: &Url, headers: &HeaderMap) -> Result<Url, HubError> {
    let location = headers
        .get(LOCATION)
        .ok_or_else(|| untrusted(url.as_str(), "a redirect without a Location header".into()))?;
    let text = location
        .to_str()
        .map_err(|_| untrusted(url.as_str(), "a Location header that is not text".into()))?;
    let next = url.join(text).map_err(|e| untrusted(url.as_str(), format!("Location `{text}`: {e}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(untrusted(url.as_str(), format!("a redirect to `{next}`, not http(s)")));
    }
    Ok(next)
}

/// Reads a whole body, refusing one longer than `cap` bytes without reading past it.
///
/// # Errors
/// [`HubError::TooLarge`] past the cap, [`HubError::Network`] when the connection fails.
pub(crate) async fn read_capped(
    client: &HubClient,
    url: &Url,
    mut response: Response,
    cap: usize,
) -> Result<Vec<u8>, HubError> {
    let too_large = || HubError::TooLarge { url: url.to_string(), limit: cap as u64 };
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| client.network(url, &e))? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error body's text, at most [`ERROR_BODY_CAP`] bytes of it.
pub(crate) async fn error_text(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = ERROR_BODY_CAP.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A refusal of what a server sent.
pub(crate) fn untrusted(url: &str, reason: String) -> HubError {
    HubError::Untrusted { url: url.to_owned(), reason }
}

/// An error and its causes, one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_locations_without_a_host_are_relative() {
        let at = |location: &str| {
            let mut headers = HeaderMap::new();
            headers
                .insert(LOCATION, HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("x")));
            relative_location(&headers)
        };
        assert!(at("/org/renamed/resolve/main/config.json"));
        assert!(at("config.json"));
        assert!(!at("https://cdn.example/object"));
        assert!(!at("//cdn.example/object"));
        assert!(!relative_location(&HeaderMap::new()));
    }
}
