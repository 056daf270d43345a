//! Fetching one partner document: over HTTP(S) with reqwest (rustls), or
//! from a local directory (for `fedstac diff` of a site on disk). Every
//! request has a timeout, transient failures are retried with exponential
//! backoff, bodies are read up to a size limit, conditional requests carry
//! the validators (ETag, Last-Modified) of the last copy, and only JSON is
//! taken. Bytes and requests are counted for the harvest report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER};
use reqwest::StatusCode;
use url::Url;

/// Limits and patience of a fetcher.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Whole request, headers and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Further attempts after a transient failure (connection, timeout, 5xx, 429).
    pub retries: u32,
    /// First backoff; doubled after each failed attempt (with jitter), capped at 30 s.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { timeout: Duration::from_secs(30), connect_timeout: Duration::from_secs(10), retries: 3, backoff: Duration::from_millis(250) }
    }
}

/// What the last copy of a document was served with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

#[derive(Debug)]
pub enum Fetched {
    /// 200: the document, with its new validators.
    Body { bytes: Vec<u8>, validators: Validators },
    /// 304: the last copy is current.
    NotModified,
}

/// Why a document could not be had. `Transient` failures were retried
/// already; a harvest keeps the last good copy of such a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// 404 / 410, or no such file.
    NotFound,
    /// Timeouts, refused or dropped connections, truncated bodies, 5xx, 429.
    Transient(String),
    /// Refused by us: wrong content type, over the size limit, other 4xx.
    Refused(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound => f.write_str("not found (404)"),
            FetchError::Transient(why) => write!(f, "failed: {why}"),
            FetchError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// Counters shared by all requests of one run.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub requests: AtomicU64,
    /// Received: status lines, headers and bodies.
    pub bytes: AtomicU64,
    pub not_modified: AtomicU64,
    pub retries: AtomicU64,
}

/// Where documents come from.
#[derive(Clone)]
enum Source {
    Http(reqwest::Client),
    /// `file:` URLs below this directory only.
    Dir(PathBuf),
}

#[derive(Clone)]
pub struct Fetcher {
    source: Source,
    opts: FetchOptions,
    pub stats: Arc<FetchStats>,
}

impl Fetcher {
    pub fn http(opts: FetchOptions) -> anyhow::Result<Fetcher> {
        // Redirects: a few, and only on the same host (a partner cannot send us elsewhere).
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if attempt.previous().first().and_then(|u| u.host_str()) != attempt.url().host_str() {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("fedstac/", env!("CARGO_PKG_VERSION"), " (harvest)"))
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .redirect(policy)
            .tcp_nodelay(true)
            .build()?;
        Ok(Fetcher { source: Source::Http(client), opts, stats: Arc::default() })
    }

    /// Reads `file:` URLs below `dir` (no validators, no retries).
    pub fn dir(dir: PathBuf, opts: FetchOptions) -> Fetcher {
        Fetcher { source: Source::Dir(dir), opts, stats: Arc::default() }
    }

    /// GETs `url` (conditionally when `known` has validators), reading at most `limit` bytes.
    pub async fn get(&self, url: &Url, known: Option<&Validators>, limit: u64) -> Result<Fetched, FetchError> {
        let client = match &self.source {
            Source::Http(c) => c,
            Source::Dir(dir) => return self.read_file(dir, url, limit).await,
        };
        let mut attempt = 0;
        loop {
            match self.try_get(client, url, known, limit).await {
                Err(FetchError::Transient(why)) if attempt < self.opts.retries => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff(self.opts.backoff, attempt, url.as_str());
                    tracing::debug!("{url}: {why}; retry {attempt} in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// GETs a large file (the partner's bundle) into `dest`, hashing it on the
    /// way; returns its SHA-256 (hex) and size. Retried like [`Fetcher::get`].
    pub async fn download(&self, url: &Url, limit: u64, dest: &std::path::Path) -> Result<(String, u64), FetchError> {
        let mut attempt = 0;
        loop {
            match self.try_download(url, limit, dest).await {
                Err(FetchError::Transient(why)) if attempt < self.opts.retries => {
                    attempt += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff(self.opts.backoff, attempt, url.as_str());
                    tracing::debug!("{url}: {why}; retry {attempt} in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn try_download(&self, url: &Url, limit: u64, dest: &std::path::Path) -> Result<(String, u64), FetchError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let client = match &self.source {
            Source::Http(c) => c,
            Source::Dir(_) => return Err(FetchError::Refused("bundles are only downloaded over HTTP(S)".into())),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        // The client's timeout is sized for one document; a bundle may take minutes.
        let timeout = self.opts.timeout.max(Duration::from_secs(3600));
        let mut response = client.get(url.clone()).timeout(timeout).send().await.map_err(|e| FetchError::Transient(describe(&e)))?;
        let status = response.status();
        self.stats.bytes.fetch_add(header_bytes(response.headers()), Ordering::Relaxed);
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(FetchError::NotFound),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => return Err(FetchError::Transient(format!("HTTP {s}"))),
            s if !s.is_success() => return Err(FetchError::Refused(format!("HTTP {s}"))),
            _ => {}
        }
        if let Some(len) = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()) {
            if len > limit {
                return Err(FetchError::Refused(format!("{len} bytes is over the size limit of {limit} bytes")));
            }
        }
        let local = |e: std::io::Error| FetchError::Transient(format!("writing {}: {e}", dest.display()));
        let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(dest).await.map_err(local)?);
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    self.stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(FetchError::Refused(format!("over the size limit of {limit} bytes")));
                    }
                    hasher.update(&chunk);
                    file.write_all(&chunk).await.map_err(local)?;
                }
                Ok(None) => break,
                Err(e) => return Err(FetchError::Transient(describe(&e))),
            }
        }
        file.flush().await.map_err(local)?;
        Ok((hex::encode(hasher.finalize()), size))
    }

    async fn try_get(&self, client: &reqwest::Client, url: &Url, known: Option<&Validators>, limit: u64) -> Result<Fetched, FetchError> {
        let mut request = client.get(url.clone());
        if let Some(v) = known {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, lm);
            }
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = request.send().await.map_err(|e| FetchError::Transient(describe(&e)))?;
        let status = response.status();
        self.stats.bytes.fetch_add(header_bytes(response.headers()), Ordering::Relaxed);
        match status {
            StatusCode::NOT_MODIFIED => {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                return Ok(Fetched::NotModified);
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(FetchError::NotFound),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
                let after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
                if let Some(secs) = after {
                    // Honour a short Retry-After on top of our own backoff.
                    tokio::time::sleep(Duration::from_secs(secs.min(30))).await;
                }
                return Err(FetchError::Transient(format!("HTTP {status}")));
            }
            s if s.is_server_error() => return Err(FetchError::Transient(format!("HTTP {s}"))),
            s if !s.is_success() => return Err(FetchError::Refused(format!("HTTP {s}"))),
            _ => {}
        }
        let headers = response.headers();
        if let Some(ct) = headers.get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !is_json_type(&ct) {
                return Err(FetchError::Refused(format!("content type {ct:?} is not JSON")));
            }
        }
        if let Some(len) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()) {
            if len > limit {
                return Err(FetchError::Refused(format!("{len} bytes is over the size limit of {limit} bytes")));
            }
        }
        let validators = Validators {
            etag: headers.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string),
            last_modified: headers.get(LAST_MODIFIED).and_then(|v| v.to_str().ok()).map(str::to_string),
        };
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    self.stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if bytes.len() as u64 + chunk.len() as u64 > limit {
                        return Err(FetchError::Refused(format!("over the size limit of {limit} bytes")));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                // A body cut short (the connection closed before Content-Length) lands here.
                Err(e) => return Err(FetchError::Transient(describe(&e))),
            }
        }
        Ok(Fetched::Body { bytes, validators })
    }

    async fn read_file(&self, dir: &std::path::Path, url: &Url, limit: u64) -> Result<Fetched, FetchError> {
        let path = url.to_file_path().map_err(|_| FetchError::Refused(format!("{url} is not a local file URL")))?;
        // Normalised by the URL parser: no `..` survives, so prefix is enough.
        if !path.starts_with(dir) {
            return Err(FetchError::Refused(format!("{} is outside {}", path.display(), dir.display())));
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FetchError::NotFound),
            Err(e) => return Err(FetchError::Transient(e.to_string())),
        };
        if meta.len() > limit {
            return Err(FetchError::Refused(format!("{} bytes is over the size limit of {limit} bytes", meta.len())));
        }
        let bytes = tokio::fs::read(&path).await.map_err(|e| FetchError::Transient(e.to_string()))?;
        self.stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(Fetched::Body { bytes, validators: Validators::default() })
    }
}

/// JSON media types; `application/octet-stream` is tolerated because plain
/// file servers use it for extensions they do not know (`.geojson`).
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence == "application/geo+json" || essence.ends_with("+json") || essence == "text/json" || essence == "application/octet-stream"
}

/// Status line and headers as received (approximately: names, values, separators).
fn header_bytes(headers: &HeaderMap) -> u64 {
    17 + headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() as u64 + 2
}

/// Exponential backoff with a deterministic jitter (the URL spreads retries of different documents).
fn backoff(base: Duration, attempt: u32, url: &str) -> Duration {
    let exp = base.saturating_mul(1 << attempt.min(16).saturating_sub(1));
    let spread = url.bytes().fold(attempt as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) % 1000;
    let jittered = exp.mul_f64(0.75 + spread as f64 / 2000.0);
    jittered.min(Duration::from_secs(30))
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "body cut short"
    } else if e.is_redirect() {
        "bad redirect"
    } else {
        "request failed"
    };
    // The source chain says what happened underneath (reset, closed, …).
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types() {
        for ok in ["application/json", "application/geo+json; charset=utf-8", "application/schema+json", "application/octet-stream"] {
            assert!(is_json_type(ok), "{ok}");
        }
        for bad in ["text/html", "text/plain", "image/png", ""] {
            assert!(!is_json_type(bad), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(100);
        let a1 = backoff(b, 1, "u");
        let a3 = backoff(b, 3, "u");
        assert!(a1 >= Duration::from_millis(75) && a1 <= Duration::from_millis(125), "{a1:?}");
        assert!(a3 > a1 * 3, "{a3:?}");
        assert_eq!(backoff(b, 30, "u"), Duration::from_secs(30));
    }
}
