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
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

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
    /// The bundle is compressed on its own thread (it also reads carried documents' bytes).
    bundle: Option<SyncSender<Vec<Record>>>,
    /// Records not yet handed to the bundle's thread (sent in batches: one wake-up each).
    records: Vec<Record>,
    bundler: Option<JoinHandle<Result<Digest256>>>,
    /// The bundle written on this thread instead (a build: a second thread
    /// gains little there, and documents freed on another thread than the one
    /// that made them stay in the allocator's hands, ~50 MiB at 100k items).
    inline: Option<Bundler>,
    /// The directory made last (see `make_parent`).
    last_dir: Option<PathBuf>,
    stats: WriteStats,
    committed: bool,
    /// Remove the old tree on a background thread after the swap (a long-running receiver).
    background_cleanup: bool,
}

const RECORD_BATCH: usize = 128;

/// A file's SHA-256 and size.
type Digest256 = ([u8; 32], u64);

/// One record of the bundle, in write order: its bytes, or a file holding them.
enum Record {
    Bytes { header: Header, bytes: Vec<u8> },
    File { header: Header, path: PathBuf, size: u64 },
}

/// A record's header: `<site path>\t<sha256 hex>\t<byte length>\n`.
struct Header {
    rel_path: String,
    sha: [u8; 32],
    size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the bundle's records in order; at the end, its SHA-256 and size.
struct Bundler {
    gz: flate2::write::GzEncoder<Hashing<BufWriter<std::fs::File>>>,
    buf: Vec<u8>,
}

impl Bundler {
    fn new(file: std::fs::File) -> Bundler {
        // Level 1: JSON still shrinks ~8×, and the build barely notices. The gzip
        // header carries no timestamp, so the bundle is deterministic.
        let gz = flate2::write::GzEncoder::new(Hashing { inner: BufWriter::with_capacity(1 << 16, file), hasher: Sha256::new(), size: 0 }, flate2::Compression::fast());
        Bundler { gz, buf: Vec::new() }
    }

    fn write(&mut self, record: Record) -> Result<()> {
        let (header, bytes) = match record {
            Record::Bytes { header, bytes } => {
                self.buf = bytes;
                (header, &self.buf)
            }
            Record::File { header, path, size } => {
                self.buf.clear();
                let mut f = std::fs::File::open(&path).with_context(|| format!("reading {} for the bundle", path.display()))?;
                std::io::Read::read_to_end(&mut f, &mut self.buf).with_context(|| format!("reading {} for the bundle", path.display()))?;
                if self.buf.len() as u64 != size {
                    bail!("{} is not the size the manifest says ({} bytes, not {size})", path.display(), self.buf.len());
                }
                (header, &self.buf)
            }
        };
        // Written piece by piece as it always was: deflate's output depends on how its input is split.
        writeln!(self.gz, "{}\t{}\t{}", header.rel_path, hex::encode(header.sha), header.size).context("writing the bundle")?;
        self.gz.write_all(bytes).context("writing the bundle")?;
        self.gz.write_all(b"\n").context("writing the bundle")?;
        Ok(())
    }

    fn finish(self) -> Result<Digest256> {
        let mut out = self.gz.finish().context("writing the bundle")?;
        out.flush().context("writing the bundle")?;
        Ok((out.hasher.finalize().into(), out.size))
    }
}

/// The bundle's thread: writes the records as they come.
fn run_bundler(file: std::fs::File, rx: std::sync::mpsc::Receiver<Vec<Record>>) -> Result<Digest256> {
    let mut bundler = Bundler::new(file);
    for record in rx.into_iter().flatten() {
        bundler.write(record)?;
    }
    bundler.finish()
}

/// Old trees being removed in the background (their paths), so that a new
/// writer only clears leftovers no thread is working on.
static CLEANUPS: Mutex<Vec<(PathBuf, JoinHandle<()>)>> = Mutex::new(Vec::new());

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
        Self::start(live, false)
    }

    /// [`Self::begin`] for a long-running process (the receiver): the bundle
    /// is compressed on its own thread, and after the swap the old tree is
    /// removed on a background thread (a later writer for the same site clears
    /// what a process that ended first left behind).
    pub fn begin_concurrent(live: &Path) -> Result<SiteWriter> {
        let mut writer = Self::start(live, true)?;
        writer.background_cleanup = true;
        Ok(writer)
    }

    fn start(live: &Path, threaded: bool) -> Result<SiteWriter> {
        let name = live.file_name().with_context(|| format!("output {} has no directory name", live.display()))?;
        let parent = live.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let staging = parent.join(format!(".{}.staging", name.to_string_lossy()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_context(|| format!("removing stale {}", staging.display()))?;
        }
        clear_old_trees(parent, &name.to_string_lossy());
        std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        let previous = read_manifest(&live.join(MANIFEST));
        let file = std::fs::File::create(staging.join(MANIFEST)).context("creating manifest")?;
        let mut manifest = BufWriter::new(file);
        write!(manifest, "{{\"generator\": \"fedstac {}\", \"files\": {{", env!("CARGO_PKG_VERSION"))?;
        let file = std::fs::File::create(staging.join(BUNDLE)).context("creating the bundle")?;
        // A few batches in flight: enough to keep both threads busy, little memory (a batch is ~0.5 MB of documents).
        let (bundle, bundler, inline) = if threaded {
            let (tx, rx) = sync_channel(4);
            let handle = std::thread::Builder::new().name("bundle".into()).spawn(move || run_bundler(file, rx)).context("starting the bundle writer")?;
            (Some(tx), Some(handle), None)
        } else {
            (None, None, Some(Bundler::new(file)))
        };
        Ok(SiteWriter {
            live: live.to_path_buf(),
            staging,
            previous,
            written: 0,
            previous_seen: 0,
            manifest,
            bundle,
            records: Vec::with_capacity(RECORD_BATCH),
            bundler,
            inline,
            last_dir: None,
            stats: WriteStats::default(),
            committed: false,
            background_cleanup: false,
        })
    }

    /// Adds a STAC document (catalogue, collection or item): a file, and a record in the bundle.
    pub fn put_document(&mut self, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        self.put_hashed_document(rel_path, bytes, sha)
    }

    /// [`Self::put_document`] for bytes whose SHA-256 is known.
    pub fn put_hashed_document(&mut self, rel_path: &str, bytes: &[u8], sha: [u8; 32]) -> Result<()> {
        self.put_file(rel_path, bytes, sha, true)?;
        self.send(Record::Bytes { header: record_header(rel_path, &sha, bytes.len() as u64), bytes: bytes.to_vec() })
    }

    /// Adds one file at a site-relative path (`/`-separated, no `..`); returns its SHA-256.
    pub fn put(&mut self, rel_path: &str, bytes: &[u8]) -> Result<[u8; 32]> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        self.put_file(rel_path, bytes, sha, false)?;
        Ok(sha)
    }

    /// [`Self::put`] for bytes whose SHA-256 is known.
    pub fn put_hashed(&mut self, rel_path: &str, bytes: &[u8], sha: [u8; 32]) -> Result<()> {
        self.put_file(rel_path, bytes, sha, false)
    }

    /// Adds one file too big to hold in memory, read from the start of `file`
    /// (read twice: once to hash it, once to copy it when it changed).
    pub fn put_from_file(&mut self, rel_path: &str, file: &mut std::fs::File) -> Result<[u8; 32]> {
        self.place_from_file(rel_path, file, false).map(|(sha, _)| sha)
    }

    /// [`Self::put_document`] for a document written to `file` (a catalogue
    /// page listing thousands of items): the bundle reads it back from the new tree.
    pub fn put_document_from_file(&mut self, rel_path: &str, file: &mut std::fs::File) -> Result<()> {
        let (sha, size) = self.place_from_file(rel_path, file, true)?;
        let path = self.staging.join(safe_relative(rel_path)?);
        self.send(Record::File { header: record_header(rel_path, &sha, size), path, size })
    }

    fn place_from_file(&mut self, rel_path: &str, file: &mut std::fs::File, stac: bool) -> Result<Digest256> {
        use std::io::Seek;
        let mut hasher = Sha256::new();
        file.rewind().context("reading back a temp file")?;
        let size = std::io::copy(file, &mut hasher).context("reading back a temp file")?;
        let sha: [u8; 32] = hasher.finalize().into();
        self.place(rel_path, sha, size, stac, |f| {
            file.rewind()?;
            std::io::copy(file, f).map(|_| ())
        })?;
        Ok((sha, size))
    }

    /// Keeps a file of the live tree as it is, known by its live manifest
    /// entry (`sha256`, `size`): hard-linked without reading or hashing it (a
    /// document's bytes are read for the bundle on the bundle's thread). Only
    /// for files this writer's live tree holds with that digest; one that is
    /// not there is read and written like [`Self::put`].
    pub fn carry(&mut self, rel_path: &str, sha: [u8; 32], size: u64, stac: bool) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        let before = self.previous.get(path_key(rel_path));
        let source = self.live.join(&rel);
        let target = self.staging.join(&rel);
        if before == Some((sha, size)) {
            self.make_parent(&target)?;
            match std::fs::hard_link(&source, &target) {
                Ok(()) => {
                    self.previous_seen += 1;
                    self.stats.unchanged += 1;
                    self.manifest_line(rel_path, &sha, size, stac)?;
                    if stac {
                        self.send(Record::File { header: record_header(rel_path, &sha, size), path: source, size })?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!("two outputs want the same path {rel_path}"),
                Err(_) => {}
            }
        }
        let bytes = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        if stac {
            self.put_document(rel_path, &bytes)
        } else {
            self.put(rel_path, &bytes).map(|_| ())
        }
    }

    fn send(&mut self, record: Record) -> Result<()> {
        self.records.push(record);
        if self.records.len() < RECORD_BATCH {
            return Ok(());
        }
        self.flush_records()
    }

    fn flush_records(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.records, Vec::with_capacity(RECORD_BATCH));
        if let Some(bundler) = self.inline.as_mut() {
            return batch.into_iter().try_for_each(|r| bundler.write(r));
        }
        let sent = self.bundle.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if !sent {
            // The bundle thread stopped: its error says why.
            self.bundle = None;
            return match self.bundler.take().map(|h| h.join()) {
                Some(Ok(Err(e))) => Err(e),
                _ => bail!("the bundle writer stopped"),
            };
        }
        Ok(())
    }

    /// Creates the directory of `target` unless it is the last one made
    /// (files come mostly directory by directory; nothing per directory is kept).
    fn make_parent(&mut self, target: &Path) -> Result<()> {
        if let Some(dir) = target.parent() {
            if self.last_dir.as_deref() != Some(dir) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                self.last_dir = Some(dir.to_path_buf());
            }
        }
        Ok(())
    }

    fn manifest_line(&mut self, rel_path: &str, sha: &[u8; 32], size: u64, stac: bool) -> Result<()> {
        self.written += 1;
        let sep = if self.written == 1 { "" } else { "," };
        let entry = serde_json::to_string(&ManifestEntry { sha256: hex::encode(sha), size, stac })?;
        write!(self.manifest, "{sep}\n{}: {entry}", serde_json::to_string(rel_path)?)?;
        Ok(())
    }

    fn put_file(&mut self, rel_path: &str, bytes: &[u8], sha: [u8; 32], stac: bool) -> Result<()> {
        self.place(rel_path, sha, bytes.len() as u64, stac, |f| f.write_all(bytes))
    }

    /// Files `rel_path` in the new tree: hard-linked from the live tree when its
    /// digest and size are unchanged, else written by `write`; listed in the manifest.
    fn place(&mut self, rel_path: &str, sha: [u8; 32], size: u64, stac: bool, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        let key = path_key(rel_path);
        let target = self.staging.join(&rel);
        self.make_parent(&target)?;
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
        self.manifest_line(rel_path, &sha, size, stac)
    }

    /// Finishes the manifest, syncs, and swaps the new tree in.
    pub fn commit(mut self) -> Result<WriteStats> {
        self.committed = true;
        // The bundle is listed last; unchanged, it keeps the live copy (and its ETag).
        self.flush_records()?;
        self.bundle = None;
        let (sha, size) = match (self.inline.take(), self.bundler.take().map(|h| h.join())) {
            (Some(bundler), _) => bundler.finish()?,
            (None, Some(Ok(r))) => r?,
            _ => bail!("the bundle writer failed"),
        };
        let (staged, live) = (self.staging.join(BUNDLE), self.live.join(BUNDLE));
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
            if self.background_cleanup {
                self.remove_in_background()?;
            } else {
                std::fs::remove_dir_all(&self.staging).with_context(|| format!("removing old tree {}", self.staging.display()))?;
            }
        } else {
            std::fs::rename(&self.staging, &self.live).with_context(|| format!("moving {} into place", self.live.display()))?;
        }
        Ok(self.stats)
    }
}

impl SiteWriter {
    /// Moves the old tree (now at the staging path) aside under a name of its
    /// own and removes it on a thread, so the answer does not wait for it.
    fn remove_in_background(&self) -> Result<()> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = self.live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self.staging.with_file_name(format!(".{name}.old-{}-{n}", std::process::id()));
        std::fs::rename(&self.staging, &old).with_context(|| format!("moving old tree {} aside", self.staging.display()))?;
        let mut cleanups = CLEANUPS.lock().unwrap_or_else(|e| e.into_inner());
        // At most a couple in flight: an older one is waited for (disk space).
        while cleanups.len() >= 2 {
            let (_, h) = cleanups.remove(0);
            let _ = h.join();
        }
        let path = old.clone();
        let handle = std::thread::Builder::new()
            .name("old-tree".into())
            .spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!("removing old tree {}: {e}", path.display());
                }
            })
            .context("starting the old tree's removal")?;
        cleanups.push((old, handle));
        Ok(())
    }
}

/// Removes old trees of the site at `parent/name` that a process (this one
/// or one that ended) moved aside and no thread of this process is removing.
fn clear_old_trees(parent: &Path, name: &str) {
    let prefix = format!(".{name}.old-");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let mut cleanups = CLEANUPS.lock().unwrap_or_else(|e| e.into_inner());
    cleanups.retain(|(_, h)| !h.is_finished());
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with(&prefix) && !cleanups.iter().any(|(p, _)| *p == path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn record_header(rel_path: &str, sha: &[u8; 32], size: u64) -> Header {
    Header { rel_path: rel_path.to_string(), sha: *sha, size }
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
