//! Writes a whole site tree atomically. Files go into a staging directory
//! beside the site; a file whose bytes are unchanged since the last build is
//! hard-linked from the live tree instead (it keeps its mtime, so web-server
//! ETags and partners' conditional requests stay valid). When everything is
//! written, the staging directory is exchanged with the live one in a single
//! `renameat2(RENAME_EXCHANGE)`: readers see the old tree or the new, never a
//! mix, and a crash before the exchange leaves the last good tree in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Published list of every file in the site with its digest: what a build
/// reuses, and what a harvesting partner compares to skip unchanged files.
pub const MANIFEST: &str = "fedstac-manifest.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub files: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub sha256: String,
    pub size: u64,
}

/// Counts of what a write did, for the build summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
}

pub struct SiteWriter {
    live: PathBuf,
    staging: PathBuf,
    previous: Manifest,
    manifest: Manifest,
    stats: WriteStats,
    committed: bool,
}

impl Drop for SiteWriter {
    /// An abandoned build removes its staging tree (the live one was never touched).
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

impl SiteWriter {
    /// Starts a new tree for `live`; leftovers of a crashed build are cleared.
    pub fn begin(live: &Path) -> Result<SiteWriter> {
        let name = live.file_name().with_context(|| format!("output {} has no directory name", live.display()))?;
        let parent = live.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let staging = parent.join(format!(".{}.staging", name.to_string_lossy()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_context(|| format!("removing stale {}", staging.display()))?;
        }
        std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        let previous = std::fs::read(live.join(MANIFEST))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .unwrap_or_default();
        Ok(SiteWriter {
            live: live.to_path_buf(),
            staging,
            previous,
            manifest: Manifest { generator: format!("fedstac {}", env!("CARGO_PKG_VERSION")), files: BTreeMap::new() },
            stats: WriteStats::default(),
            committed: false,
        })
    }

    /// Adds one file at a site-relative path (`/`-separated, no `..`).
    pub fn put(&mut self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        let entry = ManifestEntry { sha256: hex::encode(Sha256::digest(bytes)), size: bytes.len() as u64 };
        let target = self.staging.join(&rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let reused = self.previous.files.get(rel_path) == Some(&entry) && std::fs::hard_link(self.live.join(&rel), &target).is_ok();
        if reused {
            self.stats.unchanged += 1;
        } else {
            let mut f = std::fs::File::create(&target).with_context(|| format!("writing {}", target.display()))?;
            f.write_all(bytes).with_context(|| format!("writing {}", target.display()))?;
            self.stats.written += 1;
        }
        if self.manifest.files.insert(rel_path.to_string(), entry).is_some() {
            bail!("two outputs want the same path {rel_path}");
        }
        Ok(())
    }

    /// Writes the manifest, syncs, and swaps the new tree in.
    pub fn commit(mut self) -> Result<WriteStats> {
        self.committed = true;
        self.stats.removed = self.previous.files.keys().filter(|k| !self.manifest.files.contains_key(*k)).count();
        let bytes = serde_json::to_vec_pretty(&self.manifest)?;
        std::fs::write(self.staging.join(MANIFEST), bytes).context("writing manifest")?;
        // Data must be on disk before the rename makes it live.
        sync_tree(&self.staging)?;
        if self.live.exists() {
            nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, &self.staging, nix::fcntl::AT_FDCWD, &self.live, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
                .with_context(|| format!("swapping {} into place", self.live.display()))?;
            std::fs::remove_dir_all(&self.staging).with_context(|| format!("removing old tree {}", self.staging.display()))?;
        } else {
            std::fs::rename(&self.staging, &self.live).with_context(|| format!("moving {} into place", self.live.display()))?;
        }
        Ok(self.stats)
    }
}

/// Refuses absolute paths and any `..`, so nothing is ever written outside the site.
pub fn safe_relative(rel_path: &str) -> Result<PathBuf> {
    let path = Path::new(rel_path);
    if rel_path.is_empty() || rel_path.contains('\\') || path.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("refusing unsafe site path {rel_path:?}");
    }
    Ok(path.to_path_buf())
}

fn sync_tree(dir: &Path) -> Result<()> {
    // One syncfs for the whole filesystem is far cheaper than fsync per file.
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    nix::unistd::syncfs(&f).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_outside_the_site() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a\\b", "./a"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert!(safe_relative("CMIP6/a/b.json").is_ok());
    }

    #[test]
    fn rebuild_reuses_unchanged_files_and_removes_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("site");
        let mut w = SiteWriter::begin(&live).unwrap();
        w.put("a.json", b"1").unwrap();
        w.put("d/b.json", b"2").unwrap();
        w.commit().unwrap();
        let mtime = std::fs::metadata(live.join("a.json")).unwrap().modified().unwrap();

        let mut w = SiteWriter::begin(&live).unwrap();
        w.put("a.json", b"1").unwrap();
        w.put("c.json", b"3").unwrap();
        let stats = w.commit().unwrap();
        assert_eq!((stats.written, stats.unchanged, stats.removed), (1, 1, 1));
        assert_eq!(std::fs::metadata(live.join("a.json")).unwrap().modified().unwrap(), mtime);
        assert!(!live.join("d/b.json").exists());
        assert!(!dir.path().join(".site.staging").exists());
    }
}
