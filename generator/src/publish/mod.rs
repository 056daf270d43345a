//! Publishing: writes into a served static site through a small
//! authenticated service, and the clients that talk to it.
//!
//! - [`receiver`]: `fedstac receive`, HTTP (axum): STAC Transactions for
//!   items and signed site uploads, writing into the site directory a static
//!   web server serves.
//! - [`auth`]: OAuth2 bearer tokens (JWT against the issuer's JWKS, or RFC 7662
//!   introspection) → a [`auth::Principal`]; [`grants`] say what it may write.
//! - [`store`]: applies a batch of item changes to the site (validated, then
//!   the catalogue, pages and search index regenerated and swapped in atomically).
//! - [`bundle`]: the signed upload format (ed25519 over a manifest of SHA-256 digests).
//! - [`client`]: `fedstac publish` and `fedstac push` (client-credentials tokens).
//! - [`partner`]: the partner writes kept so that they outlive the site's own uploads.
//! - [`audit`]: the append-only JSON-lines log of every write.

pub mod audit;
pub mod auth;
pub mod bundle;
pub mod client;
pub mod config;
pub mod grants;
pub mod partner;
pub mod receiver;
pub mod store;

/// Reads a secret from a file (trailing whitespace trimmed), else from an
/// environment variable; never from the command line.
pub fn read_secret(file: Option<&std::path::Path>, env: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading secret {}", path.display()))?;
        return Ok(text.trim_end().to_string());
    }
    std::env::var(env).with_context(|| format!("no secret: give a secret file or set {env}"))
}
