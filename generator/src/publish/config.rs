//! The receiver's config (YAML): where the served site is, who it is, which
//! issuer's tokens count, and what each partner client and publisher may do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::SiteInfo;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub listen: SocketAddr,
    /// The directory the static web server serves (replaced as a whole on each write).
    pub site_dir: PathBuf,
    /// Audit log, replay state and upload staging (not served).
    pub state_dir: PathBuf,
    pub site: SiteInfo,
    /// Recipes that place items in the site (built-in names or YAML paths); the built-ins by default.
    #[serde(default)]
    pub recipes: Vec<String>,
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// Largest transaction request body (bytes).
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Largest site upload (bytes).
    #[serde(default = "default_upload")]
    pub max_upload_bytes: u64,
    pub auth: AuthConfig,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub publishers: Vec<Publisher>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The OAuth2/OIDC issuer (`iss`); keys come from its discovery document's `jwks_uri`.
    pub issuer: String,
    /// This receiver's audience (`aud`), the resource indicator clients ask for.
    pub audience: String,
    /// Accepted JWT algorithms; asymmetric only (`none` and HMAC never).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Scope needed for item transactions.
    #[serde(default = "default_write_scope")]
    pub write_scope: String,
    /// Scope needed for site uploads.
    #[serde(default = "default_publish_scope")]
    pub publish_scope: String,
    /// RFC 7662: opaque tokens (and JWTs too with `always`) are checked at the issuer's introspection endpoint.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub client_id: String,
    /// The receiver's own client secret (file; else `FEDSTAC_INTROSPECTION_SECRET`).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub always: bool,
}

/// What one OAuth2 client (a partner, or the site's own publisher) may write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The token's `client_id` (or `sub`).
    pub client: String,
    /// Its node name: the `alternate:name` of its replicas.
    #[serde(default)]
    pub node: Option<String>,
    /// Hosts of its data: an item whose every href is at one of them is its own.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// May add or change alternates under its node name on any item.
    #[serde(default)]
    pub replicas: bool,
    /// May create, replace, retract and delete its own items.
    #[serde(default)]
    pub own_datasets: bool,
    /// Anything, including site uploads.
    #[serde(default)]
    pub admin: bool,
}

/// A key that may sign site uploads, and the client that may send them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    pub key_id: String,
    /// Base64 ed25519 public key, inline or in a file (`fedstac keygen` writes `<key>.pub`).
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    pub client: String,
}

fn default_body() -> usize {
    32 << 20
}
fn default_upload() -> u64 {
    16 << 30
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"].map(String::from).to_vec()
}
fn default_leeway() -> u64 {
    30
}
fn default_write_scope() -> String {
    "stac:write".into()
}
fn default_publish_scope() -> String {
    "stac:publish".into()
}

impl ReceiverConfig {
    pub fn load(path: &Path) -> Result<ReceiverConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading receiver config {}", path.display()))?;
        let mut c: ReceiverConfig = serde_yaml_ng::from_str(&text).with_context(|| format!("parsing receiver config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut c.site_dir);
        fix(&mut c.state_dir);
        if let Some(t) = c.templates.as_mut() {
            fix(t);
        }
        for p in &mut c.publishers {
            if let Some(f) = p.public_key_file.as_mut() {
                fix(f);
            }
        }
        if let Some(i) = c.auth.introspection.as_mut() {
            if let Some(f) = i.client_secret_file.as_mut() {
                fix(f);
            }
        }
        for r in &mut c.recipes {
            if (r.ends_with(".yaml") || r.ends_with(".yml")) && Path::new(r).is_relative() {
                *r = base.join(&*r).to_string_lossy().into_owned();
            }
        }
        c.check().with_context(|| format!("in receiver config {}", path.display()))?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if !crate::config::is_site_name(&self.site.name) {
            bail!("site.name {:?} must be letters, digits, '-', '_' or '.'", self.site.name);
        }
        for a in &self.auth.algorithms {
            if a.eq_ignore_ascii_case("none") || a.starts_with("HS") {
                bail!("algorithm {a} is not allowed: bearer tokens must be signed with the issuer's private key");
            }
        }
        for g in &self.grants {
            if let Some(n) = &g.node {
                if !crate::config::is_site_name(n) {
                    bail!("grant for {}: node {n:?} is not a site name", g.client);
                }
            }
            if g.replicas && g.node.is_none() {
                bail!("grant for {}: replicas need a node name", g.client);
            }
        }
        Ok(())
    }
}
