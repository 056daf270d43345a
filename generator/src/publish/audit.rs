//! The append-only audit log: one JSON object a line (who, what, when, outcome).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// The token's client and subject.
    pub client: &'a str,
    pub subject: &'a str,
    /// `create`, `replace`, `patch`, `delete`, `publish`.
    pub action: &'a str,
    /// Item id, or the upload's key id and sequence.
    pub target: &'a str,
    /// HTTP status answered.
    pub status: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub detail: &'a str,
}

pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn open(state_dir: &Path) -> Result<AuditLog> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        Ok(AuditLog { path: state_dir.join("audit.jsonl") })
    }

    /// Appends entries and syncs them (O_APPEND: whole lines, never rewritten).
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e)?;
            buf.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&buf).with_context(|| format!("writing {}", self.path.display()))?;
        f.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
