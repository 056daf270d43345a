//! The local mirror of one partner: `<cache>/partners/<name>/`, outside the
//! published site (the site has a single writer, `fedstac build`).
//!
//! - `mirror.jsonl`: the last complete harvest. A header line, then one line
//!   per document (sorted by URL): its validators (ETag, Last-Modified), the
//!   SHA-256 of the bytes served, and either the catalogue's links or the
//!   sanitized item. Replaced atomically (temp file + rename), so a build
//!   reads the previous harvest or the new one, never a mix.
//! - `journal.jsonl`: the harvest in progress, one line per document as it
//!   arrives (flushed each time). An interrupted harvest resumes from it; a
//!   finished one folds it into `mirror.jsonl` and removes it.
//! - `report.json`: what the last harvest did.
//! - `lock`: held while a harvest runs.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MIRROR_FILE: &str = "mirror.jsonl";
pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const REPORT_FILE: &str = "report.json";

pub fn partner_dir(cache: &Path, partner: &str) -> PathBuf {
    cache.join("partners").join(partner)
}

pub fn mirror_file(cache: &Path, partner: &str) -> PathBuf {
    partner_dir(cache, partner).join(MIRROR_FILE)
}

/// First line of `mirror.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MirrorHeader {
    pub fedstac_mirror: u32,
    pub partner: String,
    pub url: String,
    /// Validators of the partner's `fedstac-manifest.json`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// One document, as the mirror and the journal record it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DocEntry {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// SHA-256 (hex) of the bytes as served.
    pub sha256: String,
    /// The partner's manifest listed this very digest when it was fetched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manifest_match: bool,
    /// Journal only: a 304, so the mirror's entry is still current.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_modified: bool,
    /// A catalogue: `[rel, absolute URL]` of its child and item links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<(String, String)>>,
    /// An item, sanitized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Value>,
}

impl DocEntry {
    pub fn item_id(&self) -> Option<&str> {
        self.item.as_ref()?.get("id")?.as_str()
    }
}

/// A mirror or journal line without the item's body: what a harvest needs
/// to know of its last copy (reading it is several times faster).
#[derive(Debug, Clone, Deserialize)]
pub struct DocHead {
    pub url: String,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    pub sha256: String,
    #[serde(default)]
    pub manifest_match: bool,
    #[serde(default)]
    pub not_modified: bool,
    #[serde(default)]
    pub links: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub item: Option<ItemHead>,
}

/// Only the id of a mirrored item (serde skips the rest).
#[derive(Debug, Clone, Deserialize)]
pub struct ItemHead {
    #[serde(default)]
    pub id: Option<String>,
}

impl DocHead {
    pub fn item_id(&self) -> Option<&str> {
        self.item.as_ref()?.id.as_deref()
    }
}

/// The item of one mirror line.
pub fn item_of_line(line: &[u8]) -> Result<Value> {
    let entry: DocEntry = serde_json::from_slice(line).context("damaged mirror line")?;
    entry.item.context("mirror line holds no item")
}

/// Reads `mirror.jsonl` forward; lines can be re-read later by offset.
pub struct MirrorReader {
    file: File,
    header: MirrorHeader,
    /// Where the first document line starts.
    start: u64,
}

impl MirrorReader {
    /// None when there is no mirror yet.
    pub fn open(path: &Path) -> Result<Option<MirrorReader>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut reader = BufReader::new(file.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let header: MirrorHeader = serde_json::from_str(&first).with_context(|| format!("{} has no mirror header", path.display()))?;
        if header.fedstac_mirror != 1 {
            bail!("{}: mirror format {} is not known to this fedstac", path.display(), header.fedstac_mirror);
        }
        Ok(Some(MirrorReader { file, header, start: first.len() as u64 }))
    }

    pub fn header(&self) -> &MirrorHeader {
        &self.header
    }

    /// Every document line: (offset, length without the newline, entry).
    pub fn entries(&self) -> impl Iterator<Item = Result<(u64, usize, DocEntry)>> {
        self.parsed()
    }

    /// Every document line without item bodies.
    pub fn heads(&self) -> impl Iterator<Item = Result<(u64, usize, DocHead)>> {
        self.parsed()
    }

    fn parsed<T: serde::de::DeserializeOwned>(&self) -> impl Iterator<Item = Result<(u64, usize, T)>> {
        self.raw_lines().map(|r| {
            let (offset, line) = r?;
            let entry: T = serde_json::from_slice(&line).with_context(|| format!("damaged mirror line at byte {offset}"))?;
            Ok((offset, line.len(), entry))
        })
    }

    /// Every item: (offset, length, sanitized item).
    pub fn items(&self) -> impl Iterator<Item = Result<(u64, usize, Value)>> {
        self.entries().filter_map(|r| match r {
            Ok((o, l, e)) => e.item.map(|i| Ok((o, l, i))),
            Err(e) => Some(Err(e)),
        })
    }

    fn raw_lines(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> {
        let mut reader = self.file.try_clone().map(BufReader::new);
        if let Ok(r) = reader.as_mut() {
            let _ = r.seek(SeekFrom::Start(self.start));
        }
        let mut offset = self.start;
        std::iter::from_fn(move || {
            let r = match reader.as_mut() {
                Ok(r) => r,
                Err(_) => return None,
            };
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => None,
                Ok(n) => {
                    let at = offset;
                    offset += n as u64;
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    Some(Ok((at, line)))
                }
                Err(e) => Some(Err(e.into())),
            }
        })
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

/// First line of `journal.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalHeader {
    pub fedstac_journal: u32,
    pub url: String,
    /// When the interrupted harvest started (Unix seconds).
    pub started: u64,
}

/// Room for the 64 lines between flushes.
const JOURNAL_BUFFER: usize = 1 << 20;

/// The journal of a harvest in progress.
pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    /// Where the next line starts.
    end: u64,
    scratch: Vec<u8>,
    pending: usize,
    last_flush: std::time::Instant,
}

impl Journal {
    /// Continues the journal at `path` (its first `valid_len` bytes are kept) or starts a new one.
    pub fn open(path: &Path, header: &JournalHeader, valid_len: Option<u64>) -> Result<Journal> {
        match valid_len {
            Some(len) => {
                let file = std::fs::OpenOptions::new().write(true).open(path).with_context(|| format!("opening {}", path.display()))?;
                // Cut a half-written last line off.
                file.set_len(len)?;
                let mut out = BufWriter::with_capacity(JOURNAL_BUFFER, file);
                out.seek(SeekFrom::Start(len))?;
                Ok(Journal { path: path.to_path_buf(), out, end: len, scratch: Vec::new(), pending: 0, last_flush: std::time::Instant::now() })
            }
            None => {
                let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
                let mut out = BufWriter::with_capacity(JOURNAL_BUFFER, file);
                let mut line = serde_json::to_vec(header)?;
                line.push(b'\n');
                out.write_all(&line)?;
                out.flush()?;
                Ok(Journal { path: path.to_path_buf(), out, end: line.len() as u64, scratch: Vec::new(), pending: 0, last_flush: std::time::Instant::now() })
            }
        }
    }

    /// Appends one entry; lines reach the file at least every 64 entries or
    /// 250 ms, so a killed harvest loses only its last moments of work.
    /// Returns the line's offset and length.
    pub fn append(&mut self, entry: &DocEntry) -> Result<(u64, usize)> {
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        serde_json::to_writer(&mut line, entry)?;
        let appended = self.append_line(&line);
        self.scratch = line;
        appended
    }

    /// Appends one entry already serialized (one line of JSON, without its newline).
    pub fn append_line(&mut self, line: &[u8]) -> Result<(u64, usize)> {
        let (at, len) = (self.end, line.len());
        self.out.write_all(line).and_then(|()| self.out.write_all(b"\n")).with_context(|| format!("writing {}", self.path.display()))?;
        self.end += len as u64 + 1;
        self.pending += 1;
        if self.pending >= 64 || self.last_flush.elapsed() >= std::time::Duration::from_millis(250) {
            self.flush()?;
        }
        Ok((at, len))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))?;
        self.pending = 0;
        self.last_flush = std::time::Instant::now();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the journal of an interrupted harvest of `url` started less than
/// `max_age` ago: its entries with their offsets, and the length of its
/// complete lines. None when there is no usable journal.
/// A journal's entries (offset, length, head) and the length of its complete lines.
pub type JournalContents = (Vec<(u64, usize, DocHead)>, u64);

pub fn read_journal(path: &Path, url: &str, max_age: std::time::Duration) -> Option<JournalContents> {
    let file = File::open(path).ok()?;
    let mut reader = BufReader::new(file);
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first).ok()?;
    if first.last() != Some(&b'\n') {
        return None;
    }
    let header: JournalHeader = serde_json::from_slice(&first).ok()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    if header.fedstac_journal != 1 || header.url != url || now.saturating_sub(header.started) > max_age.as_secs() {
        return None;
    }
    let mut entries = Vec::new();
    let mut offset = first.len() as u64;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if line.last() != Some(&b'\n') {
                    break; // half-written
                }
                line.pop();
                match serde_json::from_slice::<DocHead>(&line) {
                    Ok(e) => entries.push((offset, line.len(), e)),
                    Err(_) => break,
                }
                offset += n as u64;
            }
        }
    }
    Some((entries, offset))
}

/// Writes a new `mirror.jsonl` beside the old one; `commit` renames it into place.
pub struct MirrorWriter {
    out: BufWriter<tempfile::NamedTempFile>,
}

impl MirrorWriter {
    pub fn create(dir: &Path, header: &MirrorHeader) -> Result<MirrorWriter> {
        let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a temp file in {}", dir.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp);
        serde_json::to_writer(&mut out, header)?;
        out.write_all(b"\n")?;
        Ok(MirrorWriter { out })
    }

    pub fn line(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Copies `len` bytes at `offset` of `from` (whole lines, newlines
    /// included): runs of lines move in one call, in the kernel where it can.
    pub fn copy(&mut self, from: &mut File, offset: u64, len: u64) -> Result<()> {
        self.out.flush()?;
        from.seek(SeekFrom::Start(offset))?;
        let copied = std::io::copy(&mut from.take(len), self.out.get_mut().as_file_mut())?;
        if copied != len {
            bail!("{len} bytes expected at byte {offset}, {copied} found");
        }
        Ok(())
    }

    pub fn commit(self, path: &Path) -> Result<()> {
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Writes a small file atomically (temp file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
