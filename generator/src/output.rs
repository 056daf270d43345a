//! Writes a whole site tree atomically. Files go into a staging directory
//! beside the site; a file whose bytes are unchanged since the last build is
//! hard-linked from the live tree instead (it keeps its mtime, so web-server
//! ETags and partners' conditional requests stay valid). When everything is
//! written, the staging directory is exchanged with the live one in a single
//! `renameat2(RENAME_EXCHANGE)`: readers see the old tree or the new, never a
//! mix, and a crash before the exchange leaves the last good tree in place.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Published list of every file in the site with its digest: what a build
/// reuses, and what a harvesting partner compares to skip unchanged files.
/// A JSON object `{"generator": …, "files": {path: {sha256, size}}}`, written
/// one file per line as the build goes, so neither writing nor reading it
/// needs the whole list in memory.
pub const MANIFEST: &str = "fedstac-manifest.json";

/// Published beside the manifest: every STAC document of the site (catalogues,
/// collections, items) in one gzip stream, so a harvesting partner takes a
/// whole site in one request instead of one per document. Records, in write
/// order: `<site path>\t<sha256 hex>\t<byte length>\n<the bytes>\n`. Listed
/// in the manifest with its own digest (written last, so the manifest is
/// what vouches for it).
pub const BUNDLE: &str = "fedstac-bundle.gz";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub sha256: String,
    pub size: u64,
    /// A STAC document, also in the bundle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stac: bool,
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
    /// The live tree's files: path key → (sha256, size).
    previous: Previous,
    /// Files written so far. Two outputs at one path are refused by the
    /// staging tree itself (files are created with `create_new`, links fail
    /// on an existing name), so nothing per path is kept in memory.
    written: usize,
    /// How many of `previous` were written again (the rest are removed).
    previous_seen: usize,
    manifest: BufWriter<std::fs::File>,
    bundle: flate2::write::GzEncoder<BufWriter<std::fs::File>>,
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
        let previous = read_manifest(&live.join(MANIFEST));
        let file = std::fs::File::create(staging.join(MANIFEST)).context("creating manifest")?;
        let mut manifest = BufWriter::new(file);
        write!(manifest, "{{\"generator\": \"fedstac {}\", \"files\": {{", env!("CARGO_PKG_VERSION"))?;
        let file = std::fs::File::create(staging.join(BUNDLE)).context("creating the bundle")?;
        // Level 1: JSON still shrinks ~8×, and the build barely notices. The gzip
        // header carries no timestamp, so the bundle is deterministic.
        let bundle = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        Ok(SiteWriter {
            live: live.to_path_buf(),
            staging,
            previous,
            written: 0,
            previous_seen: 0,
            manifest,
            bundle,
            stats: WriteStats::default(),
            committed: false,
        })
    }

    /// Adds a STAC document (catalogue, collection or item): a file, and a record in the bundle.
    pub fn put_document(&mut self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let sha = self.put_file(rel_path, bytes, true)?;
        write!(self.bundle, "{rel_path}\t{}\t{}\n", hex::encode(sha), bytes.len()).context("writing the bundle")?;
        self.bundle.write_all(bytes).context("writing the bundle")?;
        self.bundle.write_all(b"\n").context("writing the bundle")?;
        Ok(())
    }

    /// Adds one file at a site-relative path (`/`-separated, no `..`); returns its SHA-256.
    pub fn put(&mut self, rel_path: &str, bytes: &[u8]) -> Result<[u8; 32]> {
        self.put_file(rel_path, bytes, false)
    }

    fn put_file(&mut self, rel_path: &str, bytes: &[u8], stac: bool) -> Result<[u8; 32]> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        self.place(rel_path, sha, bytes.len() as u64, stac, |f| f.write_all(bytes))?;
        Ok(sha)
    }

    /// Adds one file too big to hold in memory, read from the start of `file`
    /// (read twice: once to hash it, once to copy it when it changed).
    pub fn put_from_file(&mut self, rel_path: &str, file: &mut std::fs::File) -> Result<[u8; 32]> {
        use std::io::Seek;
        let mut hasher = Sha256::new();
        file.rewind().context("reading back a temp file")?;
        let size = std::io::copy(file, &mut hasher).context("reading back a temp file")?;
        let sha: [u8; 32] = hasher.finalize().into();
        self.place(rel_path, sha, size, false, |f| {
            file.rewind()?;
            std::io::copy(file, f).map(|_| ())
        })?;
        Ok(sha)
    }

    /// Files `rel_path` in the new tree: hard-linked from the live tree when its
    /// digest and size are unchanged, else written by `write`; listed in the manifest.
    fn place(&mut self, rel_path: &str, sha: [u8; 32], size: u64, stac: bool, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        let key = path_key(rel_path);
        let target = self.staging.join(&rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let twice = || anyhow::anyhow!("two outputs want the same path {rel_path}");
        let before = self.previous.get(key);
        let reused = before == Some((sha, size))
            && match std::fs::hard_link(self.live.join(&rel), &target) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(twice()),
                Err(_) => false,
            };
        if reused {
            self.stats.unchanged += 1;
        } else {
            let mut f = match std::fs::File::options().write(true).create_new(true).open(&target) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(twice()),
                Err(e) => return Err(e).with_context(|| format!("writing {}", target.display())),
            };
            write(&mut f).with_context(|| format!("writing {}", target.display()))?;
            self.stats.written += 1;
        }
        // Counted once per path: a second write of a path failed above.
        self.previous_seen += before.is_some() as usize;
        self.written += 1;
        let sep = if self.written == 1 { "" } else { "," };
        let entry = serde_json::to_string(&ManifestEntry { sha256: hex::encode(sha), size, stac })?;
        write!(self.manifest, "{sep}\n{}: {entry}", serde_json::to_string(rel_path)?)?;
        Ok(())
    }

    /// Finishes the manifest, syncs, and swaps the new tree in.
    pub fn commit(mut self) -> Result<WriteStats> {
        self.committed = true;
        // The bundle is listed last; unchanged, it keeps the live copy (and its ETag).
        self.bundle.try_finish().context("writing the bundle")?;
        self.bundle.get_mut().flush().context("writing the bundle")?;
        let (staged, live) = (self.staging.join(BUNDLE), self.live.join(BUNDLE));
        let (sha, size) = file_digest(&staged)?;
        let reused = self.previous.get(path_key(BUNDLE)) == Some((sha, size)) && same_bytes(&staged, &live);
        if reused {
            std::fs::remove_file(&staged).context("replacing the bundle")?;
            std::fs::hard_link(&live, &staged).context("reusing the unchanged bundle")?;
        }
        self.previous_seen += self.previous.get(path_key(BUNDLE)).is_some() as usize;
        let sep = if self.written == 0 { "" } else { "," };
        let entry = serde_json::to_string(&ManifestEntry { sha256: hex::encode(sha), size, stac: false })?;
        write!(self.manifest, "{sep}\n{}: {entry}", serde_json::to_string(BUNDLE)?)?;
        self.stats.removed = self.previous.len() - self.previous_seen;
        self.manifest.write_all(b"\n}}\n")?;
        self.manifest.flush().context("writing manifest")?;
        // An unchanged manifest keeps its mtime too: a harvesting partner's
        // conditional request for it then answers 304 and the harvest stops there.
        let (staged, live) = (self.staging.join(MANIFEST), self.live.join(MANIFEST));
        if same_bytes(&staged, &live) {
            std::fs::remove_file(&staged).context("replacing the manifest")?;
            std::fs::hard_link(&live, &staged).context("reusing the unchanged manifest")?;
        }
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

/// SHA-256 and size of a file, read in a stream.
fn file_digest(path: &Path) -> Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok((hasher.finalize().into(), size))
}

/// Whether two files hold the same bytes (false if either is unreadable).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else { return false };
    if ma.len() != mb.len() {
        return false;
    }
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else { return false };
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    loop {
        let (Ok(ba), Ok(bb)) = (ra.fill_buf(), rb.fill_buf()) else { return false };
        if ba.is_empty() || bb.is_empty() {
            return ba.is_empty() && bb.is_empty();
        }
        let n = ba.len().min(bb.len());
        if ba[..n] != bb[..n] {
            return false;
        }
        ra.consume(n);
        rb.consume(n);
    }
}

/// A 128-bit key for a site path (collisions are out of reach at any archive size).
fn path_key(rel_path: &str) -> u128 {
    let digest = Sha256::digest(rel_path.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// The live manifest, compact: (path key, sha256, size) sorted by key, 56
/// bytes a file (a hash map of the same took about twice that).
#[derive(Default)]
struct Previous(Vec<([u8; 16], [u8; 32], u64)>);

impl Previous {
    fn get(&self, key: u128) -> Option<([u8; 32], u64)> {
        let key = key.to_le_bytes();
        self.0.binary_search_by(|e| e.0.cmp(&key)).ok().map(|i| (self.0[i].1, self.0[i].2))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Reads a manifest line by line into path keys; anything unreadable means
/// "nothing to reuse", which only costs a full rewrite.
fn read_manifest(path: &Path) -> Previous {
    let mut out = Vec::new();
    let done = |mut out: Vec<([u8; 16], [u8; 32], u64)>| {
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out.shrink_to_fit();
        Previous(out)
    };
    let Ok(file) = std::fs::File::open(path) else { return done(out) };
    for line in BufReader::new(file).lines().map_while(|l| l.ok()) {
        let line = line.trim().trim_end_matches(',');
        if !line.starts_with('"') {
            continue;
        }
        let Ok(map) = serde_json::from_str::<BTreeMap<String, ManifestEntry>>(&format!("{{{line}}}")) else { continue };
        for (p, e) in map {
            let mut sha = [0u8; 32];
            if hex::decode_to_slice(&e.sha256, &mut sha).is_ok() {
                out.push((path_key(&p).to_le_bytes(), sha, e.size));
            }
        }
    }
    done(out)
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

    #[test]
    fn refuses_two_outputs_at_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("site");
        for reuse in [false, true] {
            let mut w = SiteWriter::begin(&live).unwrap();
            w.put("a.json", b"1").unwrap();
            // the second write of a path fails, whether it would be linked (unchanged) or written
            let err = w.put("a.json", if reuse { b"1" } else { b"2" }).unwrap_err();
            assert!(format!("{err:#}").contains("two outputs want the same path a.json"), "{err:#}");
            assert!(w.put(MANIFEST, b"{}").is_err());
            let mut big = tempfile::tempfile().unwrap();
            big.write_all(b"streamed").unwrap();
            w.put_from_file("d/big.bin", &mut big).unwrap();
            w.commit().unwrap();
            assert_eq!(std::fs::read(live.join("a.json")).unwrap(), b"1");
            assert_eq!(std::fs::read(live.join("d/big.bin")).unwrap(), b"streamed");
        }
    }
}
