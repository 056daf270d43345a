//! Bearer tokens → who is writing. JWT access tokens are checked against the
//! issuer's keys (OIDC discovery → `jwks_uri`; a token naming an unknown `kid`
//! refetches the set, so the issuer can rotate keys): signature with an
//! allow-listed asymmetric algorithm only (never `none`, never HMAC, so a
//! token "signed" with the public key as an HMAC secret fails), `iss`, `aud`,
//! `exp`/`nbf` with a small leeway. Opaque tokens (or all, with `always`) go
//! to the issuer's RFC 7662 introspection endpoint when configured.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::RwLock;

use super::config::AuthConfig;

/// Who a valid token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// OAuth2 client (`client_id`, else `azp`, else `sub`): what grants are keyed by.
    pub client: String,
    pub subject: String,
    pub scopes: BTreeSet<String>,
}

/// Why a request is not authenticated (→ 401 with `WWW-Authenticate`).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    introspection_endpoint: Option<String>,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

pub struct Authenticator {
    config: AuthConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    jwks_uri: String,
    introspection: Option<(String, String, String)>,
    keys: RwLock<Keys>,
}

/// A refetch for an unknown `kid` happens at most this often (a flood of bogus kids cannot hammer the issuer).
const REFETCH_INTERVAL: Duration = Duration::from_secs(2);

impl Authenticator {
    /// Reads the issuer's discovery document and keys.
    pub async fn discover(config: &AuthConfig) -> Result<Authenticator> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none()).build()?;
        let url = format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'));
        let discovery: Discovery = http.get(&url).send().await.and_then(|r| r.error_for_status()).with_context(|| format!("fetching {url}"))?.json().await.with_context(|| format!("reading {url}"))?;
        if discovery.issuer != config.issuer {
            anyhow::bail!("discovery at {url} names issuer {:?}, not the configured {:?}", discovery.issuer, config.issuer);
        }
        let algorithms = config.algorithms.iter().map(|a| Algorithm::from_str(a).map_err(|_| anyhow!("unknown algorithm {a}"))).collect::<Result<Vec<_>>>()?;
        let introspection = match &config.introspection {
            Some(i) => {
                let endpoint = discovery.introspection_endpoint.clone().context("introspection is configured but the issuer publishes no introspection_endpoint")?;
                let secret = super::read_secret(i.client_secret_file.as_deref(), "FEDSTAC_INTROSPECTION_SECRET")?;
                Some((endpoint, i.client_id.clone(), secret))
            }
            None => None,
        };
        let auth = Authenticator { config: config.clone(), algorithms, http, jwks_uri: discovery.jwks_uri, introspection, keys: RwLock::new(Keys { by_kid: HashMap::new(), fetched: None }) };
        auth.refresh_keys().await?;
        Ok(auth)
    }

    async fn refresh_keys(&self) -> Result<()> {
        let set: JwkSet = self.http.get(&self.jwks_uri).send().await.and_then(|r| r.error_for_status()).with_context(|| format!("fetching {}", self.jwks_uri))?.json().await.with_context(|| format!("reading {}", self.jwks_uri))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    by_kid.insert(kid, k);
                }
                Err(e) => tracing::warn!("issuer key {kid} unusable: {e}"),
            }
        }
        tracing::info!("issuer keys: {}", by_kid.len());
        *self.keys.write().await = Keys { by_kid, fetched: Some(Instant::now()) };
        Ok(())
    }

    /// Checks an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        let token = token.trim();
        let is_jwt = token.split('.').count() == 3;
        match &self.introspection {
            Some(_) if !is_jwt || self.config.introspection.as_ref().is_some_and(|i| i.always) => self.introspect(token).await,
            _ if is_jwt => self.verify_jwt(token).await,
            _ => Err(AuthError::Invalid("not a JWT".into())),
        }
    }

    async fn verify_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not allowed", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("no kid".into()))?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.leeway = self.config.leeway_seconds;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| AuthError::Invalid(e.to_string()))?;
        principal(&data.claims)
    }

    /// The key for `kid`, refetching the issuer's set once if it is unknown (rotation).
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        {
            let keys = self.keys.read().await;
            if let Some(k) = keys.by_kid.get(kid) {
                return Ok(k.clone());
            }
            if keys.fetched.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return Err(AuthError::Invalid(format!("unknown key {kid}")));
            }
        }
        if let Err(e) = self.refresh_keys().await {
            tracing::warn!("refetching issuer keys: {e:#}");
        }
        self.keys.read().await.by_kid.get(kid).cloned().ok_or_else(|| AuthError::Invalid(format!("unknown key {kid}")))
    }

    async fn introspect(&self, token: &str) -> Result<Principal, AuthError> {
        let (endpoint, id, secret) = self.introspection.as_ref().expect("configured");
        let answer: Value = self
            .http
            .post(endpoint)
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::Invalid(format!("introspection: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError::Invalid(format!("introspection: {e}")))?;
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(AuthError::Invalid("token is not active".into()));
        }
        if let Some(iss) = answer.get("iss").and_then(Value::as_str) {
            if iss != self.config.issuer {
                return Err(AuthError::Invalid(format!("issuer {iss}")));
            }
        }
        let aud_ok = match answer.get("aud") {
            Some(Value::String(a)) => *a == self.config.audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(&self.config.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(AuthError::Invalid("wrong audience".into()));
        }
        let now = chrono::Utc::now().timestamp();
        let leeway = self.config.leeway_seconds as i64;
        if answer.get("exp").and_then(Value::as_i64).is_some_and(|exp| exp + leeway < now) {
            return Err(AuthError::Invalid("expired".into()));
        }
        if answer.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf - leeway > now) {
            return Err(AuthError::Invalid("not yet valid".into()));
        }
        principal(&answer)
    }
}

fn principal(claims: &Value) -> Result<Principal, AuthError> {
    let s = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let client = s("client_id").or_else(|| s("azp")).or_else(|| s("sub")).ok_or_else(|| AuthError::Invalid("no client_id or sub".into()))?;
    let subject = s("sub").unwrap_or_else(|| client.clone());
    let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => BTreeSet::new(),
    };
    Ok(Principal { client, subject, scopes })
}
