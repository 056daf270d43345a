//! The clients: tokens by the OAuth2 client-credentials flow (oauth2 crate),
//! `fedstac push` (items and patches into a partner's transaction endpoint)
//! and `fedstac publish` (sign and upload the delta of a built site).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bundle::{self, Envelope};
use crate::output::{ManifestEntry, BUNDLE, MANIFEST};

/// How a client gets its token (YAML). The secret comes from a file or the
/// environment (`FEDSTAC_CLIENT_SECRET`), never from the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// The issuer (its discovery document gives the token endpoint) …
    #[serde(default)]
    pub issuer: Option<String>,
    /// … or the token endpoint itself.
    #[serde(default)]
    pub token_url: Option<String>,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    pub scope: String,
    /// The receiver's audience (RFC 8707 resource indicator).
    pub resource: String,
}

impl ClientAuth {
    pub fn load(path: &Path) -> Result<ClientAuth> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut a: ClientAuth = serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(f) = a.client_secret_file.as_mut() {
            if f.is_relative() {
                *f = path.parent().unwrap_or(Path::new(".")).join(&*f);
            }
        }
        Ok(a)
    }

    /// A fresh access token (client credentials).
    pub async fn token(&self, http: &reqwest::Client) -> Result<String> {
        let token_url = match (&self.token_url, &self.issuer) {
            (Some(t), _) => t.clone(),
            (None, Some(iss)) => {
                let url = format!("{}/.well-known/openid-configuration", iss.trim_end_matches('/'));
                let d: Value = http.get(&url).send().await.and_then(|r| r.error_for_status()).with_context(|| format!("fetching {url}"))?.json().await?;
                d["token_endpoint"].as_str().with_context(|| format!("{url} names no token_endpoint"))?.to_string()
            }
            (None, None) => bail!("the client config needs issuer or token_url"),
        };
        let secret = super::read_secret(self.client_secret_file.as_deref(), "FEDSTAC_CLIENT_SECRET")?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone())).set_client_secret(ClientSecret::new(secret)).set_token_uri(TokenUrl::new(token_url)?);
        let mut req = client.exchange_client_credentials().add_extra_param("resource", self.resource.clone());
        for s in self.scope.split_whitespace() {
            req = req.add_scope(Scope::new(s.to_string()));
        }
        let token = req.request_async(http).await.map_err(|e| anyhow::anyhow!("token request for {}: {e:?}", self.client_id))?;
        Ok(token.access_token().secret().clone())
    }
}

/// An HTTP client for talking to receivers and issuers (no redirects: a token is never sent elsewhere).
pub fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(3600)).redirect(reqwest::redirect::Policy::none()).build()?)
}

// ------------------------------------------------------------------ push

pub enum PushOp {
    /// POST an item or a FeatureCollection.
    Create { collection: String, body: Value },
    Replace { collection: String, id: String, body: Value },
    /// JSON Patch when the body is an array, merge patch when an object.
    Patch { collection: String, id: String, body: Value },
    Delete { collection: String, id: String },
}

/// Sends one transaction; returns the status and the answer's body.
pub async fn push(receiver: &str, auth: &ClientAuth, op: PushOp) -> Result<(u16, Value)> {
    let http = http()?;
    let token = auth.token(&http).await?;
    let base = receiver.trim_end_matches('/');
    let item_url = |c: &str, id: &str| format!("{base}/collections/{c}/items/{id}");
    let req = match op {
        PushOp::Create { collection, body } => http.post(format!("{base}/collections/{collection}/items")).json(&body),
        PushOp::Replace { collection, id, body } => http.put(item_url(&collection, &id)).json(&body),
        PushOp::Patch { collection, id, body } => {
            let ct = if body.is_array() { "application/json-patch+json" } else { "application/merge-patch+json" };
            http.patch(item_url(&collection, &id)).header("content-type", ct).body(serde_json::to_vec(&body)?)
        }
        PushOp::Delete { collection, id } => http.delete(item_url(&collection, &id)),
    };
    let resp = req.bearer_auth(token).send().await.context("sending the transaction")?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

// ------------------------------------------------------------------ publish

#[derive(Debug, Default, Serialize)]
pub struct PublishReport {
    pub receiver: String,
    pub files: usize,
    pub uploaded: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub upload_bytes: u64,
    pub seconds: f64,
    pub status: u16,
    pub answer: Value,
    /// Paths sent (the first 100).
    pub changed: Vec<String>,
    pub removed_paths: Vec<String>,
}

#[derive(Deserialize)]
struct Manifest {
    files: BTreeMap<String, ManifestEntry>,
}

fn parse_manifest(bytes: &[u8]) -> Result<BTreeMap<String, ManifestEntry>> {
    if bytes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut files = serde_json::from_slice::<Manifest>(bytes).context("reading a manifest")?.files;
    files.remove(MANIFEST);
    files.remove(BUNDLE);
    Ok(files)
}

/// Uploads the delta between the built site in `site_dir` and what the
/// receiver holds, signed with `key` under `key_id`.
pub async fn publish(site_dir: &Path, site_name: &str, receiver: &str, auth: &ClientAuth, key: &ed25519_dalek::SigningKey, key_id: &str) -> Result<PublishReport> {
    let started = Instant::now();
    let http = http()?;
    let token = auth.token(&http).await?;
    let base = receiver.trim_end_matches('/');
    let resp = http.get(format!("{base}/publish/manifest")).bearer_auth(&token).send().await.context("asking the receiver for its manifest")?;
    if !resp.status().is_success() {
        bail!("receiver manifest: HTTP {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let remote_bytes = resp.bytes().await?;
    let remote = parse_manifest(&remote_bytes)?;
    let local_bytes = std::fs::read(site_dir.join(MANIFEST)).with_context(|| format!("reading {} (build the site first)", site_dir.join(MANIFEST).display()))?;
    let files = parse_manifest(&local_bytes)?;
    let upload: Vec<String> = files.iter().filter(|(p, e)| remote.get(*p).is_none_or(|r| r.sha256 != e.sha256 || r.size != e.size)).map(|(p, _)| p.clone()).collect();
    let removed: Vec<String> = remote.keys().filter(|p| !files.contains_key(*p)).cloned().collect();
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let now = chrono::Utc::now();
    let envelope = Envelope {
        format: bundle::FORMAT.into(),
        key_id: key_id.into(),
        site: site_name.into(),
        sequence: now.timestamp_millis() as u64,
        nonce: hex::encode(nonce),
        timestamp: now.timestamp(),
        base_manifest: if remote_bytes.is_empty() { String::new() } else { hex::encode(Sha256::digest(&remote_bytes)) },
        files: files.clone(),
        upload: upload.clone(),
    };
    let mut body = Vec::new();
    bundle::write(&mut body, &envelope, key, site_dir)?;
    let upload_bytes = body.len() as u64;
    let resp = http.post(format!("{base}/publish")).bearer_auth(&token).header("content-type", "application/vnd.fedstac.publish+tar+gzip").body(body).send().await.context("uploading")?;
    let status = resp.status().as_u16();
    let answer: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or(Value::Null);
    Ok(PublishReport {
        receiver: receiver.into(),
        files: files.len(),
        uploaded: upload.len(),
        removed: removed.len(),
        unchanged: files.len() - upload.len(),
        upload_bytes,
        seconds: started.elapsed().as_secs_f64(),
        status,
        answer,
        changed: upload.into_iter().take(100).collect(),
        removed_paths: removed.into_iter().take(100).collect(),
    })
}
