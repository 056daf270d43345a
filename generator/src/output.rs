//! Writes a whole site tree atomically. Files go into a staging directory
//! beside the site; a file whose bytes are unchanged since the last build is
//! hard-linked from the live tree instead (it keeps its mtime, so web-server
//! ETags and partners' conditional requests stay valid). When everything is
//! written, the staging directory is exchanged with the live one in a single
//! `renameat2(RENAME_EXCHANGE)`: readers see the old tree or the new, never a
//! mix, and a crash before the exchange leaves the last good tree in place.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
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
    /// `previous` is what this process wrote last (the live tree holds exactly those files).
    previous_kept: bool,
    /// Writing over the spare tree in place (see [`Spare`]) instead of into a new one.
    spare: Option<Spare>,
    /// The new manifest's entries, kept for the next writer of this process (a long-running receiver).
    entries: Option<Vec<Entry>>,
    /// Where the bundle and manifest are written until the commit (in place: beside the tree, whose own copies are the spare's).
    bundle_path: PathBuf,
    manifest_path: PathBuf,
    /// New files whose bytes are in memory are created on this thread (a
    /// long-running writer), while the writer's thread goes on hashing and
    /// deciding: creating a file costs more than anything else an apply does per file.
    creator: Option<Creator>,
}

/// The thread that creates new files for a [`SiteWriter`], in batches; its
/// first error fails the commit (a second output at one path among them).
struct Creator {
    tx: Option<SyncSender<Vec<NewFile>>>,
    batch: Vec<NewFile>,
    handle: Option<JoinHandle<Result<()>>>,
    /// The path keys handed over: a file may not exist yet while it waits
    /// in a batch or the channel, and [`SiteWriter::holds`] must see it
    /// (16 bytes per new path, only in the receiver's long-running writer).
    pushed: HashSet<u128>,
}

/// A file of the new tree for the creator's thread: its site path, where it
/// goes, what to move out of the way first (a spare's file, into the trash),
/// and what it is.
struct NewFile {
    rel_path: String,
    target: PathBuf,
    discard: Option<PathBuf>,
    op: NewOp,
}

enum NewOp {
    Bytes(Vec<u8>),
    /// A hard link of the live tree's file (unchanged).
    Link(PathBuf),
}

/// What [`SiteWriter::keep_or_link`] may leave to the creator's thread (with one).
#[derive(Clone, Copy, PartialEq)]
enum Handoff {
    /// Nothing: the caller writes the file here (the bundle's thread may read it back).
    Nothing,
    /// The spare's old file's move to the trash, when the caller hands over a new file's bytes.
    /// An unchanged file is linked here, so that a failed link can still write the bytes.
    NewFile,
    /// Also the link of an unchanged file (`carry`: without bytes, a failed link is an error either way).
    Link,
}

/// Where [`SiteWriter::keep_or_link`] left a path.
enum Placed {
    /// It holds the live file (or will: a link on the creator's thread).
    Kept,
    /// Free for a new file, once what is there is moved to the trash path given (not yet done).
    Free(Option<PathBuf>),
}

const CREATE_BATCH: usize = 64;

impl Creator {
    fn start() -> Result<Creator> {
        let (tx, rx) = sync_channel::<Vec<NewFile>>(16);
        let handle = std::thread::Builder::new()
            .name("site-files".into())
            .spawn(move || {
                for file in rx.into_iter().flatten() {
                    if let Some(to) = &file.discard {
                        std::fs::rename(&file.target, to).with_context(|| format!("replacing {}", file.target.display()))?;
                    }
                    match file.op {
                        NewOp::Bytes(bytes) => {
                            create_file(&file.rel_path, &file.target, |f| f.write_all(&bytes))?;
                        }
                        NewOp::Link(source) => match std::fs::hard_link(&source, &file.target) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(twice(&file.rel_path)),
                            Err(e) => return Err(e).with_context(|| format!("linking {} from the live tree", file.rel_path)),
                        },
                    }
                }
                Ok(())
            })
            .context("starting the file writer")?;
        Ok(Creator { tx: Some(tx), batch: Vec::with_capacity(CREATE_BATCH), handle: Some(handle), pushed: HashSet::new() })
    }

    fn push(&mut self, file: NewFile) -> Result<()> {
        self.pushed.insert(path_key(&file.rel_path));
        self.batch.push(file);
        if self.batch.len() < CREATE_BATCH {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(CREATE_BATCH));
        if self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok()) {
            return Ok(());
        }
        // The thread stopped: its error says why.
        self.finish()?;
        bail!("the file writer stopped")
    }

    /// Creates what is left and waits for every file.
    fn finish(&mut self) -> Result<()> {
        if let Some(tx) = self.tx.take() {
            let batch = std::mem::take(&mut self.batch);
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
        }
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the file writer panicked"),
            None => Ok(()),
        }
    }
}

/// The tree a long-running writer swapped out last (the live tree before
/// it), kept beside the site (`.<name>.spare`) with its manifest's entries:
/// the next writer of the same process brings it up to date in place (files
/// whose digest differs from the new one's are replaced, those the new tree
/// lacks removed) and swaps it in, so an apply touches what changed since
/// the tree before last, not every file of the site. Unchanged files of the
/// two trees are hard links of one another (each was linked from the live
/// tree of its time), so a file kept as it stands in the spare is the live
/// file, mtime and all, as a new tree would have it. Trusted only within the
/// process that wrote it; any other process clears it like an old tree.
struct Spare {
    entries: Entries,
    /// Replaced files are moved here (beside the tree, named like an old
    /// tree) and removed in the background: freeing them is what costs.
    trash: Option<PathBuf>,
    trashed: u64,
    /// The directory holding the site and its spare.
    root_parent: PathBuf,
    /// One bit per entry: written again by this writer.
    seen: Vec<u64>,
    seen_count: usize,
}

impl Spare {
    fn new(entries: Entries, root_parent: PathBuf) -> Spare {
        Spare { seen: vec![0; entries.len().div_ceil(64)], entries, seen_count: 0, trash: None, trashed: 0, root_parent }
    }

    /// The spare's entry for a path key, marking it written; `Err` for a second write of one path.
    fn mark(&mut self, key: u128) -> std::result::Result<Option<([u8; 32], u64)>, ()> {
        let Some(i) = self.entries.index_of(key) else { return Ok(None) };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen[word] & bit != 0 {
            return Err(());
        }
        self.seen[word] |= bit;
        self.seen_count += 1;
        Ok(Some((self.entries.0[i].1, self.entries.0[i].2)))
    }

    /// Moves a file of the spare out of the tree, into the trash.
    fn discard(&mut self, target: &Path, name: &str) -> Result<()> {
        let to = self.trash_slot(target, name)?;
        std::fs::rename(target, to).with_context(|| format!("replacing {}", target.display()))
    }

    /// A new name in the trash for a file of the spare at `target`.
    fn trash_slot(&mut self, target: &Path, name: &str) -> Result<PathBuf> {
        let trash = match &self.trash {
            Some(t) => t.clone(),
            None => {
                let t = aside_name(target, name);
                // `target` is in the tree: the trash goes beside the tree.
                let t = t.file_name().map(|f| self.root_parent.join(f)).unwrap_or(t);
                std::fs::create_dir(&t).with_context(|| format!("creating {}", t.display()))?;
                self.trash = Some(t.clone());
                t
            }
        };
        self.trashed += 1;
        Ok(trash.join(self.trashed.to_string()))
    }

    fn is_seen(&self, key: u128) -> bool {
        self.entries.index_of(key).is_some_and(|i| self.seen[i / 64] & (1u64 << (i % 64)) != 0)
    }
}

/// What a long-running process keeps of a site it writes, between two
/// writers: the live manifest's entries (valid while the live manifest is
/// the very file it wrote: same inode, size and mtime), and the spare tree's.
struct KeptSite {
    live: PathBuf,
    manifest_id: FileId,
    previous: Entries,
    /// The live tree holds exactly `previous`'s files and the manifest.
    exact: bool,
    spare: Option<Entries>,
}

/// A file's identity: device, inode, size, mtime (seconds, nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

static KEPT: Mutex<Vec<KeptSite>> = Mutex::new(Vec::new());

/// Takes what this process kept of the site at `live`, if its live manifest is still the one it wrote.
fn take_kept(live: &Path) -> Option<(Entries, Option<Entries>, bool)> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let i = kept.iter().position(|k| k.live == live)?;
    let k = kept.swap_remove(i);
    (file_id(&live.join(MANIFEST)) == Some(k.manifest_id)).then_some((k.previous, k.spare, k.exact))
}

fn keep(site: KeptSite) {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|k| k.live != site.live);
    kept.push(site);
}

const RECORD_BATCH: usize = 128;

/// A file's SHA-256 and size.
type Digest256 = ([u8; 32], u64);

/// A manifest entry as kept in memory: path key (little-endian bytes), SHA-256, size.
type Entry = ([u8; 16], [u8; 32], u64);

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
        // No file is created behind the cleanup's back.
        if let Some(mut c) = self.creator.take() {
            let _ = c.finish();
        }
        if !self.committed {
            if let Some(trash) = self.spare.as_mut().and_then(|s| s.trash.take()) {
                let _ = remove_tree_in_background(trash);
            }
            if self.spare.is_some() && self.background_cleanup {
                // A spare half brought up to date: removed like an old tree.
                let _ = self.remove_in_background();
            } else {
                let _ = std::fs::remove_dir_all(&self.staging);
            }
            let _ = std::fs::remove_file(&self.bundle_path);
            let _ = std::fs::remove_file(&self.manifest_path);
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
        let name = name.to_string_lossy().into_owned();
        let staging = parent.join(format!(".{name}.staging"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_context(|| format!("removing stale {}", staging.display()))?;
        }
        clear_old_trees(parent, &name);
        // A long-running writer reuses what it kept of its own last write: the
        // live manifest's entries, and the spare tree, brought up to date in place.
        let kept = take_kept(live);
        let spare_dir = parent.join(format!(".{name}.spare"));
        let (previous, spare, previous_kept) = match kept {
            Some((previous, spare, exact)) if threaded => {
                let spare = spare.filter(|_| std::fs::rename(&spare_dir, &staging).is_ok());
                (Previous::Memory(previous), spare, exact)
            }
            _ => (read_manifest(&live.join(MANIFEST)), None, false),
        };
        if spare.is_none() {
            if spare_dir.exists() {
                // Not this process's, or out of date: an old tree.
                let old = aside_name(&spare_dir, &name);
                if std::fs::rename(&spare_dir, &old).is_ok() {
                    if threaded {
                        remove_tree_in_background(old)?;
                    } else {
                        let _ = std::fs::remove_dir_all(&old);
                    }
                }
            }
            std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
        }
        // In place, the spare's bundle and manifest stay until the commit replaces them.
        let (bundle_path, manifest_path) = match spare {
            Some(_) => (parent.join(format!(".{name}.bundle.new")), parent.join(format!(".{name}.manifest.new"))),
            None => (staging.join(BUNDLE), staging.join(MANIFEST)),
        };
        let file = std::fs::File::create(&manifest_path).context("creating manifest")?;
        let mut manifest = BufWriter::new(file);
        write!(manifest, "{{\"generator\": \"fedstac {}\", \"files\": {{", env!("CARGO_PKG_VERSION"))?;
        let file = std::fs::File::create(&bundle_path).context("creating the bundle")?;
        // A few batches in flight: enough to keep both threads busy, little memory (a batch is ~0.5 MB of documents).
        let (bundle, bundler, inline) = if threaded {
            let (tx, rx) = sync_channel(4);
            let handle = std::thread::Builder::new().name("bundle".into()).spawn(move || run_bundler(file, rx)).context("starting the bundle writer")?;
            (Some(tx), Some(handle), None)
        } else {
            (None, None, Some(Bundler::new(file)))
        };
        let entries = threaded.then(|| Vec::with_capacity(previous.len() + 1024));
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
            previous_kept,
            spare: spare.map(|s| Spare::new(s, parent.to_path_buf())),
            entries,
            bundle_path,
            manifest_path,
            creator: if threaded { Some(Creator::start()?) } else { None },
        })
    }

    /// Whether this writer has put a file at `rel_path` already. Asked of the
    /// new tree itself, so nothing per path is kept in memory by a build: a
    /// file there is one this writer put, except in a spare tree brought up
    /// to date in place, whose old files count only once written again (its
    /// seen bits), and files still queued for the creator's thread (its set).
    pub fn holds(&self, rel_path: &str) -> Result<bool> {
        let rel = safe_relative(rel_path)?;
        let key = path_key(rel_path);
        if let Some(spare) = &self.spare {
            if spare.entries.index_of(key).is_some() {
                return Ok(spare.is_seen(key));
            }
        }
        if self.creator.as_ref().is_some_and(|c| c.pushed.contains(&key)) {
            return Ok(true);
        }
        match std::fs::symlink_metadata(self.staging.join(&rel)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            // A path under a file (`a.json/b`) is not held either.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking for {} in the new tree", rel.display())),
        }
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
        let mut hasher = Sha256::new();
        file.rewind().context("reading back a temp file")?;
        let size = std::io::copy(file, &mut hasher).context("reading back a temp file")?;
        let sha: [u8; 32] = hasher.finalize().into();
        // Created here, not on the creator's thread: the bundle's thread reads a document back from it.
        self.place(rel_path, sha, size, stac, Content::File(file))?;
        Ok((sha, size))
    }

    /// Keeps a file of the live tree as it is, known by its live manifest
    /// entry (`sha256`, `size`): hard-linked without reading or hashing it (a
    /// document's bytes are read for the bundle on the bundle's thread). Only
    /// for files this writer's live tree holds with that digest; one that is
    /// not there is read and written like [`Self::put`].
    pub fn carry(&mut self, rel_path: &str, sha: [u8; 32], size: u64, stac: bool) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        refuse_own_files(rel_path)?;
        let key = path_key(rel_path);
        let before = self.previous.get(key);
        let source = self.live.join(&rel);
        let placed = self.keep_or_link(&rel, rel_path, key, before, (sha, size), Handoff::Link)?;
        if let Placed::Free(Some(to)) = &placed {
            // Read and written below, on this thread: the spare's file goes now.
            let target = self.staging.join(&rel);
            std::fs::rename(&target, to).with_context(|| format!("replacing {}", target.display()))?;
        }
        if let Placed::Kept = placed {
            self.previous_seen += 1;
            self.stats.unchanged += 1;
            self.manifest_line(rel_path, key, &sha, size, stac)?;
            if stac {
                self.send(Record::File { header: record_header(rel_path, &sha, size), path: source, size })?;
            }
            return Ok(());
        }
        // Not linked (the target's place is free now): read and written.
        let bytes = std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let size = bytes.len() as u64;
        let target = self.staging.join(&rel);
        let linked = before == Some((sha, size)) && self.link_live(&rel, rel_path, &target)?;
        if linked {
            self.stats.unchanged += 1;
        } else {
            self.create(rel_path, &target, |f| f.write_all(&bytes))?;
        }
        self.previous_seen += before.is_some() as usize;
        self.manifest_line(rel_path, key, &sha, size, stac)?;
        if stac {
            self.send(Record::Bytes { header: record_header(rel_path, &sha, size), bytes })?;
        }
        Ok(())
    }

    /// Readies the new tree's place for `rel`: [`Placed::Kept`] when it
    /// holds the live file already (kept from the spare, or hard-linked now;
    /// only if the live tree holds `want` (its entry `before`)), else free for
    /// a new file. A second write of a path is refused. `handoff`: what the
    /// creator's thread, if any, does instead of this one.
    fn keep_or_link(&mut self, rel: &Path, rel_path: &str, key: u128, before: Option<([u8; 32], u64)>, want: ([u8; 32], u64), handoff: Handoff) -> Result<Placed> {
        let live_same = before == Some(want);
        let had = match self.spare.as_mut() {
            Some(spare) => Some(spare.mark(key).map_err(|()| twice(rel_path))?),
            None => None,
        };
        // Same digest in the spare and the live tree: one file (see `Spare`), kept as it is.
        if live_same && had == Some(Some(want)) {
            return Ok(Placed::Kept);
        }
        // A link made here needs the spare's file out of the way first.
        let defer = self.creator.is_some() && (handoff == Handoff::Link || (handoff == Handoff::NewFile && !live_same));
        let target = self.staging.join(rel);
        let mut discard = None;
        match (had, self.spare.as_mut()) {
            (Some(Some(_)), Some(spare)) => {
                let name = self.live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if defer {
                    discard = Some(spare.trash_slot(&target, &name)?);
                } else {
                    spare.discard(&target, &name)?;
                }
            }
            _ => self.make_parent(&target)?,
        }
        if !live_same {
            return Ok(Placed::Free(discard));
        }
        if let Some(creator) = self.creator.as_mut().filter(|_| handoff == Handoff::Link) {
            // A link fails only for a live file gone (an error either way for `carry`) or a second output at the path.
            creator.push(NewFile { rel_path: rel_path.to_string(), target, discard, op: NewOp::Link(self.live.join(rel)) })?;
            return Ok(Placed::Kept);
        }
        Ok(if self.link_live(rel, rel_path, &target)? { Placed::Kept } else { Placed::Free(None) })
    }

    /// Hard-links the live tree's file at `rel` to `target` (false if that fails).
    fn link_live(&self, rel: &Path, rel_path: &str, target: &Path) -> Result<bool> {
        match std::fs::hard_link(self.live.join(rel), target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(twice(rel_path)),
            Err(_) => Ok(false),
        }
    }

    /// Creates a new file at `target` (free: see [`Self::keep_or_link`]) with what `write` writes.
    fn create(&mut self, rel_path: &str, target: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<()> {
        create_file(rel_path, target, write)?;
        self.stats.written += 1;
        Ok(())
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

    fn manifest_line(&mut self, rel_path: &str, key: u128, sha: &[u8; 32], size: u64, stac: bool) -> Result<()> {
        self.written += 1;
        let sep = if self.written == 1 { "" } else { "," };
        self.manifest.write_all(sep.as_bytes())?;
        write_manifest_entry(&mut self.manifest, rel_path, sha, size, stac)?;
        if let Some(entries) = self.entries.as_mut() {
            entries.push((key.to_le_bytes(), *sha, size));
        }
        Ok(())
    }

    fn put_file(&mut self, rel_path: &str, bytes: &[u8], sha: [u8; 32], stac: bool) -> Result<()> {
        self.place(rel_path, sha, bytes.len() as u64, stac, Content::Bytes(bytes))
    }

    /// Files `rel_path` in the new tree: hard-linked from the live tree when its
    /// digest and size are unchanged, else written by `write`; listed in the manifest.
    fn place(&mut self, rel_path: &str, sha: [u8; 32], size: u64, stac: bool, content: Content) -> Result<()> {
        let rel = safe_relative(rel_path)?;
        refuse_own_files(rel_path)?;
        let key = path_key(rel_path);
        let before = self.previous.get(key);
        // A file written from a file is made here: the bundle's thread may read it back.
        let handoff = if matches!(content, Content::Bytes(_)) { Handoff::NewFile } else { Handoff::Nothing };
        if let Placed::Free(discard) = self.keep_or_link(&rel, rel_path, key, before, (sha, size), handoff)? {
            let target = self.staging.join(&rel);
            match (content, self.creator.as_mut()) {
                (Content::Bytes(bytes), Some(creator)) => {
                    creator.push(NewFile { rel_path: rel_path.to_string(), target, discard, op: NewOp::Bytes(bytes.to_vec()) })?;
                    self.stats.written += 1;
                }
                (Content::Bytes(bytes), None) => self.create(rel_path, &target, |f| f.write_all(bytes))?,
                (Content::File(file), _) => self.create(rel_path, &target, |f| {
                    file.rewind()?;
                    std::io::copy(file, f).map(|_| ())
                })?,
            }
        } else {
            self.stats.unchanged += 1;
        }
        // Counted once per path: a second write of a path failed above.
        self.previous_seen += before.is_some() as usize;
        self.manifest_line(rel_path, key, &sha, size, stac)
    }

    /// Finishes the manifest, syncs, and swaps the new tree in.
    pub fn commit(mut self) -> Result<WriteStats> {
        let started = std::time::Instant::now();
        // Every new file exists before the tree is listed, synced and swapped
        // (a failure here drops the writer uncommitted: its tree is removed).
        if let Some(mut creator) = self.creator.take() {
            creator.finish()?;
        }
        self.committed = true;
        // The bundle is listed last; unchanged, it keeps the live copy (and its ETag).
        self.flush_records()?;
        self.bundle = None;
        let (sha, size) = match (self.inline.take(), self.bundler.take().map(|h| h.join())) {
            (Some(bundler), _) => bundler.finish()?,
            (None, Some(Ok(r))) => r?,
            _ => bail!("the bundle writer failed"),
        };
        let bundled = started.elapsed().as_secs_f64();
        let key = path_key(BUNDLE);
        let (staged, live) = (self.staging.join(BUNDLE), self.live.join(BUNDLE));
        let reused = self.previous.get(key) == Some((sha, size)) && same_bytes(&self.bundle_path, &live);
        let in_place = self.spare.is_some();
        if in_place {
            // The spare's bundle is replaced unless it is the live one already.
            let had = self.spare.as_mut().and_then(|s| s.mark(key).ok().flatten());
            if reused && had == Some((sha, size)) {
                std::fs::remove_file(&self.bundle_path).context("replacing the bundle")?;
            } else if reused {
                let _ = std::fs::remove_file(&staged);
                std::fs::hard_link(&live, &staged).context("reusing the unchanged bundle")?;
                std::fs::remove_file(&self.bundle_path).context("replacing the bundle")?;
            } else {
                std::fs::rename(&self.bundle_path, &staged).context("placing the bundle")?;
            }
        } else if reused {
            std::fs::remove_file(&staged).context("replacing the bundle")?;
            std::fs::hard_link(&live, &staged).context("reusing the unchanged bundle")?;
        }
        self.previous_seen += self.previous.get(key).is_some() as usize;
        self.manifest_line(BUNDLE, key, &sha, size, false)?;
        self.stats.removed = self.previous.len() - self.previous_seen;
        self.manifest.write_all(b"\n}}\n")?;
        self.manifest.flush().context("writing manifest")?;
        if let Some(spare) = self.spare.as_mut() {
            // What the spare holds and the new tree does not (listed by the spare's own manifest, still in place).
            if spare.seen_count < spare.entries.len() {
                let name = self.live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                remove_unseen(&self.staging, spare, &name)?;
            }
        }
        // An unchanged manifest keeps its mtime too: a harvesting partner's
        // conditional request for it then answers 304 and the harvest stops there.
        let (staged, live) = (self.staging.join(MANIFEST), self.live.join(MANIFEST));
        if same_bytes(&self.manifest_path, &live) {
            std::fs::remove_file(&self.manifest_path).context("replacing the manifest")?;
            if in_place {
                let _ = std::fs::remove_file(&staged);
            }
            std::fs::hard_link(&live, &staged).context("reusing the unchanged manifest")?;
        } else if in_place {
            std::fs::rename(&self.manifest_path, &staged).context("placing the manifest")?;
        }
        let listed = started.elapsed().as_secs_f64();
        // Data must be on disk before the rename makes it live.
        sync_tree(&self.staging)?;
        let synced = started.elapsed().as_secs_f64();
        if let Some(trash) = self.spare.as_mut().and_then(|s| s.trash.take()) {
            remove_tree_in_background(trash)?;
        }
        if self.live.exists() {
            nix::fcntl::renameat2(nix::fcntl::AT_FDCWD, &self.staging, nix::fcntl::AT_FDCWD, &self.live, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
                .with_context(|| format!("swapping {} into place", self.live.display()))?;
            if let Some(mut entries) = self.entries.take() {
                // The old tree is the next writer's spare, if it is the tree this
                // process wrote last (its entries exact); else it is removed.
                // (Not when the swapped-out tree held files its manifest does not list: those would stay.)
                let spare = match std::mem::take(&mut self.previous) {
                    Previous::Memory(entries) if self.previous_kept => Some(entries),
                    _ => None,
                };
                let name = self.live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let spare_dir = self.staging.with_file_name(format!(".{name}.spare"));
                let spare = match spare {
                    Some(p) if std::fs::rename(&self.staging, &spare_dir).is_ok() => Some(p),
                    _ => {
                        self.remove_in_background()?;
                        None
                    }
                };
                entries.sort_unstable_by_key(|e| e.0);
                entries.dedup_by(|a, b| a.0 == b.0);
                if let Some(id) = file_id(&self.live.join(MANIFEST)) {
                    keep(KeptSite { live: self.live.clone(), manifest_id: id, previous: Entries(entries), exact: true, spare });
                }
            } else if self.background_cleanup {
                self.remove_in_background()?;
            } else {
                std::fs::remove_dir_all(&self.staging).with_context(|| format!("removing old tree {}", self.staging.display()))?;
            }
        } else {
            std::fs::rename(&self.staging, &self.live).with_context(|| format!("moving {} into place", self.live.display()))?;
            if let (Some(mut entries), Some(id)) = (self.entries.take(), file_id(&self.live.join(MANIFEST))) {
                entries.sort_unstable_by_key(|e| e.0);
                entries.dedup_by(|a, b| a.0 == b.0);
                keep(KeptSite { live: self.live.clone(), manifest_id: id, previous: Entries(entries), exact: true, spare: None });
            }
        }
        tracing::debug!(
            "commit of {}: bundle {bundled:.2} s, manifest and removals {:.2} s, syncfs {:.2} s, swap {:.2} s ({} files written, {} unchanged, {} removed)",
            self.live.display(),
            listed - bundled,
            synced - listed,
            started.elapsed().as_secs_f64() - synced,
            self.stats.written,
            self.stats.unchanged,
            self.stats.removed
        );
        Ok(self.stats)
    }
}

/// For a long-running writer (the receiver), at its start: links a spare
/// copy of the live tree (exactly the files its manifest lists, and the
/// manifest), so that its first write is made in place like the later ones
/// (see [`Spare`]). Nothing is done for a site without a manifest; a copy
/// that cannot be made is left out (the first write then makes a new tree).
pub fn prepare_spare(live: &Path) -> Result<()> {
    let Some(id) = file_id(&live.join(MANIFEST)) else { return Ok(()) };
    let name = live.file_name().with_context(|| format!("output {} has no directory name", live.display()))?.to_string_lossy().into_owned();
    let parent = live.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let spare_dir = parent.join(format!(".{name}.spare"));
    clear_old_trees(parent, &name);
    if spare_dir.exists() {
        let old = aside_name(&spare_dir, &name);
        std::fs::rename(&spare_dir, &old).with_context(|| format!("moving {} aside", spare_dir.display()))?;
        remove_tree_in_background(old)?;
    }
    // Built under an old tree's name: a crash leaves it for the next writer to clear.
    let building = aside_name(&spare_dir, &name);
    let mut entries = Vec::new();
    let linked = (|| -> Result<()> {
        std::fs::create_dir_all(&building)?;
        let file = std::fs::File::open(live.join(MANIFEST))?;
        let mut last_dir: Option<PathBuf> = None;
        for line in BufReader::new(file).lines() {
            let line = line?;
            let line = line.trim().trim_end_matches(',');
            if !line.starts_with('"') {
                continue;
            }
            let map: BTreeMap<String, ManifestEntry> = serde_json::from_str(&format!("{{{line}}}"))?;
            for (p, e) in map {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(&e.sha256, &mut sha)?;
                let rel = safe_relative(&p)?;
                let target = building.join(&rel);
                if let Some(dir) = target.parent() {
                    if last_dir.as_deref() != Some(dir) {
                        std::fs::create_dir_all(dir)?;
                        last_dir = Some(dir.to_path_buf());
                    }
                }
                std::fs::hard_link(live.join(&rel), &target)?;
                entries.push((path_key(&p).to_le_bytes(), sha, e.size));
            }
        }
        std::fs::hard_link(live.join(MANIFEST), building.join(MANIFEST))?;
        Ok(())
    })();
    // The live tree must still be the one copied.
    if linked.is_err() || file_id(&live.join(MANIFEST)) != Some(id) || std::fs::rename(&building, &spare_dir).is_err() {
        if let Err(e) = linked {
            tracing::info!("no spare copy of {}: {e:#}", live.display());
        }
        return remove_tree_in_background(building);
    }
    entries.sort_unstable_by_key(|e| e.0);
    entries.dedup_by(|a, b| a.0 == b.0);
    // Once swapped out, the live tree is a spare too, if it holds nothing but what its manifest lists.
    let exact = count_files(live).is_some_and(|n| n == entries.len() + 1);
    keep(KeptSite { live: live.to_path_buf(), manifest_id: id, previous: Entries(entries.clone()), exact, spare: Some(Entries(entries)) });
    Ok(())
}

/// The regular files below `dir`; None if it holds anything else (an empty directory, a link).
fn count_files(dir: &Path) -> Option<usize> {
    let mut n = 0;
    let mut any = false;
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let t = e.file_type().ok()?;
        any = true;
        if t.is_dir() {
            n += count_files(&e.path())?;
        } else if t.is_file() {
            n += 1;
        } else {
            return None;
        }
    }
    any.then_some(n)
}

/// Removes from the spare tree at `dir` the files its manifest lists that
/// the new tree does not hold (directories left empty go too).
fn remove_unseen(dir: &Path, spare: &mut Spare, name: &str) -> Result<()> {
    let path = dir.join(MANIFEST);
    let file = std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        if !line.starts_with('"') {
            continue;
        }
        let Some(Ok(rel_path)) = serde_json::Deserializer::from_str(line).into_iter::<String>().next() else { continue };
        if spare.is_seen(path_key(&rel_path)) || rel_path == BUNDLE {
            continue;
        }
        let rel = safe_relative(&rel_path)?;
        let target = dir.join(&rel);
        if target.exists() {
            spare.discard(&target, name)?;
        }
        // Directories emptied go too, as a new tree would not have them.
        let mut d = target.parent();
        while let Some(p) = d.filter(|p| *p != dir) {
            if std::fs::remove_dir(p).is_err() {
                break;
            }
            d = p.parent();
        }
    }
    Ok(())
}

impl SiteWriter {
    /// Moves the old tree (now at the staging path) aside under a name of its
    /// own and removes it on a thread, so the answer does not wait for it.
    fn remove_in_background(&self) -> Result<()> {
        let name = self.live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let old = aside_name(&self.staging, &name);
        std::fs::rename(&self.staging, &old).with_context(|| format!("moving old tree {} aside", self.staging.display()))?;
        remove_tree_in_background(old)
    }
}

/// A name beside `path` for an old tree of the site `name` (`.<name>.old-<pid>-<n>`).
fn aside_name(path: &Path, name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.old-{}-{n}", std::process::id()))
}

/// Removes an old tree (moved aside already) on a thread.
fn remove_tree_in_background(old: PathBuf) -> Result<()> {
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

/// One manifest line, `\n"<path>": {"sha256":"<hex>","size":<n>[,"stac":true]}`:
/// the bytes serde_json writes for the path and a [`ManifestEntry`], without
/// its allocations (a path that needs escaping goes through serde_json).
fn write_manifest_entry(out: &mut impl Write, rel_path: &str, sha: &[u8; 32], size: u64, stac: bool) -> Result<()> {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(sha, &mut hex)?;
    out.write_all(b"\n")?;
    if rel_path.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(rel_path.as_bytes())?;
        out.write_all(b"\"")?;
    } else {
        serde_json::to_writer(&mut *out, rel_path)?;
    }
    out.write_all(b": {\"sha256\":\"")?;
    out.write_all(&hex)?;
    write!(out, "\",\"size\":{size}")?;
    if stac {
        out.write_all(b",\"stac\":true")?;
    }
    out.write_all(b"}")?;
    Ok(())
}

fn twice(rel_path: &str) -> anyhow::Error {
    anyhow::anyhow!("two outputs want the same path {rel_path}")
}

/// The manifest and the bundle are the writer's own.
fn refuse_own_files(rel_path: &str) -> Result<()> {
    if rel_path == MANIFEST || rel_path == BUNDLE {
        return Err(twice(rel_path));
    }
    Ok(())
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

/// The live manifest's files: what a writer may reuse.
enum Previous {
    /// What a long-running writer kept of its own last write.
    Memory(Entries),
    /// Read from the live manifest (a build): on disk, so a rebuild's memory
    /// does not grow with the site.
    Disk(DiskEntries),
}

impl Default for Previous {
    fn default() -> Self {
        Previous::Memory(Entries::default())
    }
}

impl Previous {
    fn get(&self, key: u128) -> Option<([u8; 32], u64)> {
        match self {
            Previous::Memory(e) => e.get(key),
            Previous::Disk(d) => d.get(key),
        }
    }

    fn len(&self) -> usize {
        match self {
            Previous::Memory(e) => e.len(),
            Previous::Disk(d) => d.len,
        }
    }
}

/// Manifest entries in memory, compact: (path key, sha256, size) sorted by
/// key, 56 bytes a file (a hash map of the same took about twice that).
#[derive(Default)]
struct Entries(Vec<([u8; 16], [u8; 32], u64)>);

impl Entries {
    fn get(&self, key: u128) -> Option<([u8; 32], u64)> {
        self.index_of(key).map(|i| (self.0[i].1, self.0[i].2))
    }

    /// Where a key is. Keys are digests, spread evenly: the search starts
    /// where the key's value says and widens until it brackets the key (a
    /// few nearby cache lines, not a binary search's ~18 far-apart ones).
    fn index_of(&self, key: u128) -> Option<usize> {
        // Byte order is the order of the bytes read as a big-endian number: compared as one.
        let (v, key) = (&self.0, u128::from_be_bytes(key.to_le_bytes()));
        let at = |i: usize| u128::from_be_bytes(v[i].0);
        let n = v.len();
        if n == 0 {
            return None;
        }
        let guess = (((key >> 64) * n as u128) >> 64) as usize;
        let (mut lo, mut hi, mut step) = (guess, guess + 1, 16);
        while lo > 0 && at(lo) > key {
            lo = lo.saturating_sub(step);
            step *= 2;
        }
        step = 16;
        while hi < n && at(hi - 1) < key {
            hi = (hi + step).min(n);
            step *= 2;
        }
        v[lo..hi].binary_search_by(|e| u128::from_be_bytes(e.0).cmp(&key)).ok().map(|i| lo + i)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Manifest entries in a temp file: 56-byte records (path key, sha256, size
/// LE) sorted by key, found through every [`SPARSE`]th key kept in memory
/// (0.125 bytes a file) and one read of the records between two of them.
struct DiskEntries {
    file: std::fs::File,
    len: usize,
    sparse: Vec<[u8; 16]>,
}

/// Records per read of [`DiskEntries`] (7 KB).
const SPARSE: usize = 128;
const RECORD: usize = 56;

impl DiskEntries {
    fn get(&self, key: u128) -> Option<([u8; 32], u64)> {
        let key = key.to_le_bytes();
        // The run of records that would hold the key: after the last sparse key not above it.
        let run = match self.sparse.binary_search(&key) {
            Ok(i) => i,
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let first = run * SPARSE;
        let count = SPARSE.min(self.len - first);
        let mut buf = vec![0u8; count * RECORD];
        if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, (first * RECORD) as u64) {
            // Unreachable short of a failing disk; the file is written again, which is only slower.
            tracing::warn!("reading the live manifest's entries back: {e}");
            return None;
        }
        let records: Vec<&[u8]> = buf.chunks_exact(RECORD).collect();
        let i = records.binary_search_by(|r| r[..16].cmp(&key)).ok()?;
        let r = records[i];
        Some((r[16..48].try_into().expect("32 bytes"), u64::from_le_bytes(r[48..].try_into().expect("8 bytes"))))
    }
}

/// Reads a manifest line by line into path keys, sorted on disk; anything
/// unreadable means "nothing to reuse", which only costs a full rewrite.
fn read_manifest(path: &Path) -> Previous {
    let Ok(file) = std::fs::File::open(path) else { return Previous::default() };
    match manifest_on_disk(file) {
        Ok(entries) => Previous::Disk(entries),
        Err(e) => {
            tracing::warn!("reading {}: {e:#}; every file is written again", path.display());
            Previous::default()
        }
    }
}

fn manifest_on_disk(file: std::fs::File) -> Result<DiskEntries> {
    let mut sort = crate::spill::Spill::default();
    for line in BufReader::new(file).lines().map_while(|l| l.ok()) {
        let line = line.trim().trim_end_matches(',');
        if !line.starts_with('"') {
            continue;
        }
        let Ok(map) = serde_json::from_str::<BTreeMap<String, ManifestEntry>>(&format!("{{{line}}}")) else { continue };
        for (p, e) in map {
            let mut value = [0u8; 40];
            if hex::decode_to_slice(&e.sha256, &mut value[..32]).is_ok() {
                value[32..].copy_from_slice(&e.size.to_le_bytes());
                sort.push(&path_key(&p).to_le_bytes(), &value)?;
            }
        }
    }
    let mut out = BufWriter::new(tempfile::tempfile().context("creating a temp file for the live manifest's entries")?);
    let (mut len, mut sparse, mut last) = (0, Vec::new(), None);
    for record in sort.finish()? {
        let (key, value) = record?;
        let key: [u8; 16] = key.try_into().map_err(|_| anyhow::anyhow!("a sort record of the wrong size"))?;
        // One entry per path (a manifest lists each once; the first wins otherwise).
        if last == Some(key) {
            continue;
        }
        if len % SPARSE == 0 {
            sparse.push(key);
        }
        out.write_all(&key)?;
        out.write_all(&value)?;
        len += 1;
        last = Some(key);
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    sparse.shrink_to_fit();
    Ok(DiskEntries { file, len, sparse })
}

/// Refuses absolute paths and any `..`, so nothing is ever written outside the site.
pub fn safe_relative(rel_path: &str) -> Result<PathBuf> {
    let path = Path::new(rel_path);
    if rel_path.is_empty() || rel_path.contains('\\') || path.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("refusing unsafe site path {rel_path:?}");
    }
    Ok(path.to_path_buf())
}

/// What [`SiteWriter::place`] writes for a new file.
enum Content<'a> {
    Bytes(&'a [u8]),
    /// Copied from the start of a file.
    File(&'a mut std::fs::File),
}

/// Creates a new file at `target` (free: see [`SiteWriter::keep_or_link`]) with what `write` writes.
fn create_file(rel_path: &str, target: &Path, write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<std::fs::File> {
    let mut f = match std::fs::File::options().write(true).create_new(true).open(target) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(twice(rel_path)),
        Err(e) => return Err(e).with_context(|| format!("writing {}", target.display())),
    };
    write(&mut f).with_context(|| format!("writing {}", target.display()))?;
    Ok(f)
}

fn sync_tree(dir: &Path) -> Result<()> {
    // One syncfs for the whole filesystem is far cheaper than fsync per file.
    // Starting each new file's writeback as it is written
    // (sync_file_range(SYNC_FILE_RANGE_WRITE)) left the syncfs little to do
    // but made the apply slower overall (bench/README.md, 2026-12-07).
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    nix::unistd::syncfs(&f).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_are_what_serde_json_writes() {
        for path in ["CMIP6/a/b.json", "index/f/1-2.bin", "caf\u{e9}/\u{7f}x.json", "a\"b.json", "a\\b", "tab\there", "nl\n"] {
            for (size, stac) in [(0, false), (12345678901, true)] {
                let sha = Sha256::digest(path.as_bytes()).into();
                let mut fast = Vec::new();
                write_manifest_entry(&mut fast, path, &sha, size, stac).unwrap();
                let entry = serde_json::to_string(&ManifestEntry { sha256: hex::encode(sha), size, stac }).unwrap();
                assert_eq!(String::from_utf8(fast).unwrap(), format!("\n{}: {entry}", serde_json::to_string(path).unwrap()));
            }
        }
    }

    #[test]
    fn finds_every_key_and_no_other() {
        let keys: Vec<u128> = (0..5000).map(|i| path_key(&format!("p{i}"))).collect();
        let mut v: Vec<([u8; 16], [u8; 32], u64)> = keys.iter().map(|k| (k.to_le_bytes(), [0; 32], 0)).collect();
        v.sort_unstable_by_key(|e| e.0);
        let p = Entries(v);
        for k in &keys {
            assert_eq!(p.index_of(*k).map(|i| p.0[i].0), Some(k.to_le_bytes()));
        }
        for i in 0..5000 {
            assert!(p.index_of(path_key(&format!("q{i}"))).is_none());
        }
        assert!(p.index_of(0).is_none() && p.index_of(u128::MAX).is_none());
        assert!(Entries::default().index_of(7).is_none());
    }

    /// The live manifest read into a temp file finds what the manifest lists
    /// (also at the edges of its sparse runs, and the first of a path listed
    /// twice), and nothing else.
    #[test]
    fn the_manifest_on_disk_finds_every_entry_and_no_other() {
        for n in [0usize, 1, 127, 128, 129, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(MANIFEST);
            let mut out = Vec::new();
            write!(out, "{{\"generator\": \"fedstac test\", \"files\": {{").unwrap();
            let sha = |i: usize| -> [u8; 32] { Sha256::digest(i.to_le_bytes()).into() };
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_manifest_entry(&mut out, &format!("CMIP6/p{i}.json"), &sha(i), i as u64 * 3, i % 2 == 0).unwrap();
            }
            if n > 0 {
                // A second entry for p0: the first is kept.
                out.push(b',');
                write_manifest_entry(&mut out, "CMIP6/p0.json", &sha(99_999), 7, false).unwrap();
            }
            out.extend_from_slice(b"\n}}\n");
            std::fs::write(&path, out).unwrap();
            let previous = read_manifest(&path);
            assert!(matches!(previous, Previous::Disk(_)), "{n} entries");
            assert_eq!(previous.len(), n);
            for i in 0..n {
                assert_eq!(previous.get(path_key(&format!("CMIP6/p{i}.json"))), Some((sha(i), i as u64 * 3)), "p{i} of {n}");
                assert_eq!(previous.get(path_key(&format!("CMIP6/q{i}.json"))), None);
            }
            assert_eq!(previous.get(0), None);
            assert_eq!(previous.get(u128::MAX), None);
        }
        assert_eq!(read_manifest(Path::new("/nonexistent/manifest")).len(), 0);
    }

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

    /// The files below `dir` (the manifest aside) with their bytes.
    fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack: Vec<PathBuf> = dir.exists().then(|| dir.to_path_buf()).into_iter().collect();
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    assert!(std::fs::read_dir(&p).unwrap().next().is_some(), "empty directory {}", p.display());
                    stack.push(p);
                } else {
                    out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_long_running_writer_brings_its_spare_up_to_date_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // The same writes through a long-running writer (spare, in place) and through new trees.
        let (live, fresh) = (dir.path().join("a/site"), dir.path().join("b/site"));
        let rounds: Vec<Vec<(&str, &str)>> = vec![
            vec![("a.json", "1"), ("d/b.json", "2"), ("d/e/c.html", "3")],
            vec![("a.json", "1"), ("d/b.json", "2"), ("d/e/c.html", "4"), ("f/g.json", "5")],
            vec![("a.json", "1"), ("d/b.json", "9"), ("f/g.json", "5")],
            vec![("a.json", "1"), ("d/e/c.html", "3"), ("f/g.json", "5"), ("h.json", "6")],
            vec![("a.json", "1"), ("d/e/c.html", "3"), ("f/g.json", "5"), ("h.json", "6")],
            vec![("a.json", "7"), ("f/g.json", "5")],
        ];
        prepare_spare(&live).unwrap(); // no site yet: nothing to do
        for (n, files) in rounds.iter().enumerate() {
            let mut w = SiteWriter::begin_concurrent(&live).unwrap();
            let in_place = w.spare.is_some();
            assert_eq!(in_place, n >= 2, "round {n}");
            let mut f = SiteWriter::begin(&fresh).unwrap();
            let before: BTreeMap<String, u64> = tree(&live).keys().map(|k| (k.clone(), std::fs::metadata(live.join(k)).unwrap().ino())).collect();
            for (path, body) in files {
                // `holds`: only what this writer put (a spare's old file is not, until written again).
                assert!(!w.holds(path).unwrap() && !f.holds(path).unwrap(), "round {n}: {path} held before it is written");
                if path.ends_with(".json") {
                    w.put_document(path, body.as_bytes()).unwrap();
                    f.put_document(path, body.as_bytes()).unwrap();
                } else {
                    w.put(path, body.as_bytes()).unwrap();
                    f.put(path, body.as_bytes()).unwrap();
                }
                assert!(w.holds(path).unwrap() && f.holds(path).unwrap(), "round {n}: {path} not held once written");
            }
            for (path, _) in rounds[n.saturating_sub(1)].iter().filter(|(p, _)| !files.iter().any(|(q, _)| q == p)) {
                assert!(!w.holds(path).unwrap() && !f.holds(path).unwrap(), "round {n}: {path} (last round's) held");
            }
            assert!(!w.holds("a.json/x").unwrap() && w.holds("../x").is_err());
            if in_place {
                assert!(format!("{:#}", w.put("a.json", b"1").unwrap_err()).contains("two outputs want the same path a.json"));
            }
            let (sw, sf) = (w.commit().unwrap(), f.commit().unwrap());
            assert_eq!((sw.written, sw.unchanged, sw.removed), (sf.written, sf.unchanged, sf.removed), "round {n}");
            assert_eq!(tree(&live), tree(&fresh), "round {n}");
            // An unchanged file is the live one (same inode, so same mtime); a changed one is new.
            for (path, ino) in &before {
                let Some(body) = files.iter().find(|(p, _)| p == path).map(|(_, b)| b) else { continue };
                let was = rounds[n - 1].iter().find(|(p, _)| p == path).map(|(_, b)| b);
                let now = std::fs::metadata(live.join(path)).unwrap().ino();
                assert_eq!(now == *ino, was == Some(body), "round {n}: {path}");
            }
            if n == 4 {
                // Nothing changed: the manifest and the bundle are the live ones too.
                for own in [MANIFEST, BUNDLE] {
                    assert_eq!(std::fs::metadata(live.join(own)).unwrap().ino(), before[own], "{own}");
                }
            }
        }
        assert!(!dir.path().join("a/.site.staging").exists());
        // A spare left by another process is not trusted: cleared, and a new tree made.
        KEPT.lock().unwrap().clear();
        let w = SiteWriter::begin_concurrent(&live).unwrap();
        assert!(w.spare.is_none());
        drop(w);
        // At a receiver's start: a spare copy, used by the first write.
        prepare_spare(&live).unwrap();
        assert!(dir.path().join("a/.site.spare").exists());
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        assert!(w.spare.is_some());
        w.put_document("a.json", b"8").unwrap();
        w.commit().unwrap();
        let mut f = SiteWriter::begin(&fresh).unwrap();
        f.put_document("a.json", b"8").unwrap();
        f.commit().unwrap();
        assert_eq!(tree(&live), tree(&fresh));
        // A write that fails leaves the live tree as it was, and the next one makes a new tree.
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        assert!(w.spare.is_some());
        w.put_document("z.json", b"0").unwrap();
        drop(w);
        assert_eq!(tree(&live), tree(&fresh));
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        assert!(w.spare.is_none());
        w.put_document("a.json", b"8").unwrap();
        w.commit().unwrap();
        assert_eq!(tree(&live), tree(&fresh));
    }

    #[test]
    fn a_file_the_live_manifest_does_not_list_never_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (live, fresh) = (dir.path().join("a/site"), dir.path().join("b/site"));
        for site in [&live, &fresh] {
            let mut w = SiteWriter::begin(site).unwrap();
            w.put_document("a.json", b"1").unwrap();
            w.commit().unwrap();
        }
        // Something outside fedstac left a file in the live tree: the swapped-out tree is not a spare.
        std::fs::write(live.join("stray.json"), b"x").unwrap();
        prepare_spare(&live).unwrap();
        for body in ["2", "3", "4"] {
            let mut w = SiteWriter::begin_concurrent(&live).unwrap();
            let mut f = SiteWriter::begin(&fresh).unwrap();
            w.put_document("a.json", body.as_bytes()).unwrap();
            f.put_document("a.json", body.as_bytes()).unwrap();
            w.commit().unwrap();
            f.commit().unwrap();
            assert_eq!(tree(&live), tree(&fresh), "after writing {body}");
        }
    }

    #[test]
    fn an_unchanged_file_gone_from_the_live_tree_is_written_again() {
        // The live manifest still lists a.json, but something outside fedstac
        // removed the file: the link fails and the writer writes the bytes
        // it has instead of failing this and every later commit.
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("site");
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        w.put_document("a.json", b"1").unwrap();
        w.put("b.html", b"2").unwrap();
        w.commit().unwrap();
        std::fs::remove_file(live.join("a.json")).unwrap();
        std::fs::remove_file(live.join("b.html")).unwrap();
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        w.put_document("a.json", b"1").unwrap();
        w.put("b.html", b"2").unwrap();
        assert!(w.holds("a.json").unwrap() && w.holds("b.html").unwrap());
        w.commit().unwrap();
        assert_eq!(std::fs::read(live.join("a.json")).unwrap(), b"1");
        assert_eq!(std::fs::read(live.join("b.html")).unwrap(), b"2");
    }

    #[test]
    fn a_concurrent_writer_refuses_two_outputs_at_one_path_by_its_commit() {
        // New files are created on the writer's own thread: a second output at a path fails there, and the commit with it.
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("site");
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        for i in 0..200 {
            w.put(&format!("d/{i}.json"), b"1").unwrap();
        }
        let second = w.put("d/7.json", b"2");
        let err = second.and_then(|_| w.commit().map(|_| [0; 32])).unwrap_err();
        assert!(format!("{err:#}").contains("two outputs want the same path d/7.json"), "{err:#}");
        assert!(!live.exists() && !dir.path().join(".site.staging").exists());
        // A writer dropped unfinished leaves nothing behind, whatever its thread was still creating.
        let mut w = SiteWriter::begin_concurrent(&live).unwrap();
        for i in 0..500 {
            w.put(&format!("d/{i}.json"), b"1").unwrap();
        }
        drop(w);
        assert!(!live.exists() && !dir.path().join(".site.staging").exists());
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
