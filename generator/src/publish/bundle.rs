//! The signed site upload: a gzip'd tar whose first entry is the envelope
//! (`fedstac-publish.json`: the publisher's key id, site, sequence, nonce,
//! time, the digest of the receiver manifest the delta was computed against,
//! the whole new tree as path → SHA-256, and which paths travel), second the
//! ed25519 signature over the envelope's bytes (`fedstac-publish.sig`), then
//! the uploaded files as `site/<path>`. The receiver checks the signature
//! before it looks at anything else, then replay (sequence/nonce/time), then
//! every path, then each file's digest as it is staged; only regular files
//! named in the envelope are accepted (no links, no `..`, no absolute paths).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::output::{safe_relative, ManifestEntry, BUNDLE, MANIFEST};

pub const FORMAT: &str = "fedstac-publish/1";
const ENVELOPE: &str = "fedstac-publish.json";
const SIGNATURE: &str = "fedstac-publish.sig";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    pub key_id: String,
    pub site: String,
    /// Strictly increasing per key (the publisher uses Unix milliseconds).
    pub sequence: u64,
    /// Random, never accepted twice.
    pub nonce: String,
    /// Unix seconds when signed; must be close to the receiver's clock.
    pub timestamp: i64,
    /// SHA-256 of the receiver manifest the delta is against (empty: no site yet).
    pub base_manifest: String,
    /// The whole new tree (without the manifest and bundle, which the receiver writes).
    pub files: BTreeMap<String, ManifestEntry>,
    /// The paths whose bytes travel in this upload.
    pub upload: Vec<String>,
}

/// A refusal, with the HTTP status it deserves.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refused {
    Refused { status, message: message.into() }
}

// ------------------------------------------------------------------ keys

/// Writes a new key pair: `<path>` (secret, base64, mode 0600) and `<path>.pub`.
pub fn keygen(path: &Path) -> Result<String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    writeln!(f, "{}", b64.encode(seed))?;
    let public = b64.encode(key.verifying_key().to_bytes());
    std::fs::write(format!("{}.pub", path.display()), format!("{public}\n")).context("writing the public key")?;
    Ok(public)
}

pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).context("key is not base64")?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("key is not 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn parse_public_key(b64: &str) -> Result<VerifyingKey> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).context("public key is not base64")?;
    let raw: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("public key is not 32 bytes"))?;
    VerifyingKey::from_bytes(&raw).context("not an ed25519 public key")
}

// ------------------------------------------------------------------ writing

/// Writes a signed upload: the envelope, its signature, then each path of `envelope.upload` read from `site_dir`.
pub fn write(out: impl Write, envelope: &Envelope, key: &SigningKey, site_dir: &Path) -> Result<()> {
    let env_bytes = serde_json::to_vec(envelope)?;
    let signature = key.sign(&env_bytes);
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    append(&mut tar, ENVELOPE, &env_bytes)?;
    append(&mut tar, SIGNATURE, &signature.to_bytes())?;
    for rel in &envelope.upload {
        let bytes = std::fs::read(site_dir.join(safe_relative(rel)?)).with_context(|| format!("reading {rel}"))?;
        append(&mut tar, &format!("site/{rel}"), &bytes)?;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

/// Appends one regular file (fixed metadata: the upload is reproducible).
pub fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes).with_context(|| format!("adding {name} to the upload"))
}

// ------------------------------------------------------------------ reading

pub struct Opened {
    pub envelope: Envelope,
    /// Path → staged file (digest checked).
    pub staged: HashMap<String, PathBuf>,
}

fn read_small<R: Read>(entry: &mut tar::Entry<R>, max: u64, what: &str) -> Result<Vec<u8>, Refused> {
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(refuse(400, format!("{what} is not a regular file")));
    }
    let size = entry.header().size().map_err(|e| refuse(400, format!("{what}: {e}")))?;
    if size > max {
        return Err(refuse(413, format!("{what} is {size} bytes (limit {max})")));
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry.take(max + 1).read_to_end(&mut buf).map_err(|e| refuse(400, format!("{what}: {e}")))?;
    Ok(buf)
}

/// Opens an upload: signature (by `key_of(key_id)`), then `accept` (site,
/// replay, base manifest), then paths, then the files, staged into `staging`.
/// Nothing outside `staging` is touched.
pub fn open(
    upload: &Path,
    staging: &Path,
    key_of: impl Fn(&str) -> Option<VerifyingKey>,
    accept: impl FnOnce(&Envelope) -> Result<(), Refused>,
    max_file_bytes: u64,
) -> Result<Opened, Refused> {
    let file = std::fs::File::open(upload).map_err(|e| refuse(500, format!("reading the upload: {e}")))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut entries = archive.entries().map_err(|e| refuse(400, format!("not a gzip'd tar: {e}")))?;
    let mut next = |what: &str| -> Result<tar::Entry<_>, Refused> {
        let entry = entries.next().ok_or_else(|| refuse(400, format!("upload ends before {what}")))?.map_err(|e| refuse(400, format!("{what}: {e}")))?;
        Ok(entry)
    };
    let mut e = next(ENVELOPE)?;
    if e.path_bytes().as_ref() != ENVELOPE.as_bytes() {
        return Err(refuse(400, format!("the upload must start with {ENVELOPE}")));
    }
    let env_bytes = read_small(&mut e, 256 << 20, ENVELOPE)?;
    drop(e);
    let mut e = next(SIGNATURE)?;
    if e.path_bytes().as_ref() != SIGNATURE.as_bytes() {
        return Err(refuse(400, format!("{SIGNATURE} must follow {ENVELOPE}")));
    }
    let sig = read_small(&mut e, 64, SIGNATURE)?;
    drop(e);
    // The signature first: until it verifies, the envelope is just bytes.
    #[derive(Deserialize)]
    struct KeyOnly {
        key_id: String,
    }
    let key_id = serde_json::from_slice::<KeyOnly>(&env_bytes).map_err(|e| refuse(400, format!("envelope: {e}")))?.key_id;
    let key = key_of(&key_id).ok_or_else(|| refuse(403, format!("unknown publisher key {key_id:?}")))?;
    let sig = Signature::from_slice(&sig).map_err(|_| refuse(403, "malformed signature"))?;
    key.verify(&env_bytes, &sig).map_err(|_| refuse(403, format!("signature does not verify with key {key_id:?}")))?;
    let envelope: Envelope = serde_json::from_slice(&env_bytes).map_err(|e| refuse(400, format!("envelope: {e}")))?;
    if envelope.format != FORMAT {
        return Err(refuse(400, format!("format {:?} (expected {FORMAT})", envelope.format)));
    }
    accept(&envelope)?;
    for (rel, entry) in &envelope.files {
        if safe_relative(rel).is_err() || rel == MANIFEST || rel == BUNDLE || rel.split('/').any(|c| c.starts_with('.')) {
            return Err(refuse(400, format!("refusing path {rel:?}")));
        }
        if entry.sha256.len() != 64 || hex::decode(&entry.sha256).is_err() {
            return Err(refuse(400, format!("{rel}: bad digest")));
        }
    }
    let mut wanted: HashSet<&str> = HashSet::new();
    for rel in &envelope.upload {
        if !envelope.files.contains_key(rel) || !wanted.insert(rel) {
            return Err(refuse(400, format!("uploaded path {rel:?} is not (once) in the new tree")));
        }
    }
    std::fs::create_dir_all(staging).map_err(|e| refuse(500, format!("staging: {e}")))?;
    let mut staged = HashMap::new();
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| refuse(400, format!("upload entry: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| refuse(400, "entry name is not UTF-8"))?;
        let rel = name.strip_prefix("site/").filter(|r| wanted.contains(r)).ok_or_else(|| refuse(400, format!("entry {name:?} is not an uploaded path of the envelope")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refuse(400, format!("entry {name:?} is not a regular file ({:?})", entry.header().entry_type())));
        }
        if staged.contains_key(rel) {
            return Err(refuse(400, format!("entry {name:?} twice")));
        }
        let expected = &envelope.files[rel];
        let size = entry.header().size().map_err(|e| refuse(400, format!("{name}: {e}")))?;
        if size != expected.size || size > max_file_bytes {
            return Err(refuse(400, format!("{name}: {size} bytes, the envelope says {}", expected.size)));
        }
        let target = staging.join(format!("{n:08}"));
        let mut out = std::fs::File::create(&target).map_err(|e| refuse(500, format!("staging: {e}")))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = entry.read(&mut buf).map_err(|e| refuse(400, format!("{name}: {e}")))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(|e| refuse(500, format!("staging: {e}")))?;
        }
        if hex::encode(hasher.finalize()) != expected.sha256 {
            return Err(refuse(400, format!("{name}: digest differs from the signed envelope")));
        }
        staged.insert(rel.to_string(), target);
    }
    if let Some(missing) = envelope.upload.iter().find(|r| !staged.contains_key(r.as_str())) {
        return Err(refuse(400, format!("{missing} is announced but not in the upload")));
    }
    Ok(Opened { envelope, staged })
}

// ------------------------------------------------------------------ replay

/// Per publisher key: the last sequence and recent nonces, kept in `<state>/replay.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReplayState {
    keys: BTreeMap<String, KeyState>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyState {
    sequence: u64,
    nonces: Vec<String>,
}

/// How far a signed upload's time may be from the receiver's clock.
pub const MAX_SKEW_SECONDS: i64 = 300;

impl ReplayState {
    pub fn load(path: &Path) -> Result<ReplayState> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplayState::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn check(&self, env: &Envelope, now: i64) -> Result<(), Refused> {
        if (env.timestamp - now).abs() > MAX_SKEW_SECONDS {
            return Err(refuse(409, format!("upload signed at {} is more than {MAX_SKEW_SECONDS} s from now ({now})", env.timestamp)));
        }
        if let Some(k) = self.keys.get(&env.key_id) {
            if env.sequence <= k.sequence || k.nonces.contains(&env.nonce) {
                return Err(refuse(409, format!("replayed upload: sequence {} (last accepted {})", env.sequence, k.sequence)));
            }
        }
        if env.nonce.len() < 16 {
            return Err(refuse(400, "nonce too short"));
        }
        Ok(())
    }

    /// Records an accepted upload, durably, before it is applied.
    pub fn record(&mut self, env: &Envelope, path: &Path) -> Result<()> {
        let k = self.keys.entry(env.key_id.clone()).or_default();
        k.sequence = env.sequence;
        k.nonces.push(env.nonce.clone());
        if k.nonces.len() > 1000 {
            k.nonces.remove(0);
        }
        crate::harvest::mirror::write_atomic(path, &serde_json::to_vec(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(sequence: u64, nonce: &str, timestamp: i64) -> Envelope {
        Envelope { format: FORMAT.into(), key_id: "k".into(), site: "s".into(), sequence, nonce: nonce.into(), timestamp, base_manifest: String::new(), files: BTreeMap::new(), upload: Vec::new() }
    }

    #[test]
    fn replays_and_stale_uploads_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.json");
        let mut state = ReplayState::load(&path).unwrap();
        let now = 1_800_000_000;
        let first = envelope(10, "0123456789abcdef", now);
        state.check(&first, now).unwrap();
        state.record(&first, &path).unwrap();
        let state = ReplayState::load(&path).unwrap();
        assert_eq!(state.check(&first, now).unwrap_err().status, 409, "the same upload again");
        assert_eq!(state.check(&envelope(9, "fedcba9876543210", now), now).unwrap_err().status, 409, "an older sequence");
        assert_eq!(state.check(&envelope(11, "0123456789abcdef", now), now).unwrap_err().status, 409, "a used nonce");
        assert_eq!(state.check(&envelope(11, "fedcba9876543210", now - 301), now).unwrap_err().status, 409, "too old");
        state.check(&envelope(11, "fedcba9876543210", now), now).unwrap();
    }
}
