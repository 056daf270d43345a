//! The header cache that makes rebuilds incremental: what was read from each
//! file (and its checksum), keyed by path + size + mtime + what was asked.
//! A file whose key is unchanged is never opened again. The cache is private
//! (it names local paths) and lives outside the published site.
//!
//! Entries are stored in scan order (root, then path component by component,
//! which is the order of a sorted directory walk), so a build streams the old
//! cache alongside the scan and writes the new one as it goes: memory does not
//! grow with the archive.

use std::cmp::Ordering;
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::read::FileHeader;

const CACHE_FILE: &str = "headers.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedFile {
    pub root: usize,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    /// Fingerprint of the header request and fedstac version that produced `header`.
    pub request: String,
    pub header: FileHeader,
    pub checksum: Option<String>,
}

/// Reads the previous cache forward, in scan order.
pub struct CacheReader {
    lines: Option<Lines<BufReader<std::fs::File>>>,
    next: Option<CachedFile>,
}

impl CacheReader {
    /// Opens the cache; a missing or damaged cache is only a slower build.
    pub fn open(dir: &Path) -> CacheReader {
        let lines = std::fs::File::open(dir.join(CACHE_FILE)).ok().map(|f| BufReader::new(f).lines());
        let mut reader = CacheReader { lines, next: None };
        reader.advance();
        reader
    }

    fn advance(&mut self) {
        self.next = None;
        let Some(lines) = self.lines.as_mut() else { return };
        match lines.next() {
            Some(Ok(line)) => match serde_json::from_str::<CachedFile>(&line) {
                Ok(entry) => self.next = Some(entry),
                Err(e) => {
                    tracing::warn!("header cache is damaged ({e}); reading the remaining files again");
                    self.lines = None;
                }
            },
            _ => self.lines = None,
        }
    }

    /// The cached entry for a file if it is unchanged and was read with the
    /// same request. Calls must come in scan order.
    pub fn take(&mut self, root: usize, path: &Path, size: u64, mtime_ns: i128, request: &str) -> Option<CachedFile> {
        while let Some(entry) = &self.next {
            match scan_order(entry.root, &entry.path, root, path) {
                Ordering::Less => self.advance(),
                Ordering::Greater => return None,
                Ordering::Equal => {
                    let hit = entry.size == size && entry.mtime_ns == mtime_ns && entry.request == request;
                    let entry = self.next.take();
                    self.advance();
                    return if hit { entry } else { None };
                }
            }
        }
        None
    }
}

/// Scan order: by root, then component-wise (`Path`'s order), as a sorted walk visits files.
fn scan_order(a_root: usize, a: &Path, b_root: usize, b: &Path) -> Ordering {
    a_root.cmp(&b_root).then_with(|| a.cmp(b))
}

/// Writes the new cache beside the old one; `commit` renames it into place.
pub struct CacheWriter {
    dir: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
}

impl CacheWriter {
    pub fn create(dir: &Path) -> Result<CacheWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
        let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating temp file in {}", dir.display()))?;
        Ok(CacheWriter { dir: dir.to_path_buf(), out: BufWriter::new(tmp) })
    }

    pub fn append(&mut self, entry: &CachedFile) -> Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        let path = self.dir.join(CACHE_FILE);
        tmp.persist(&path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}
