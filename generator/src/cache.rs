//! The header cache that makes rebuilds incremental: what was read from each
//! file (and its checksum), keyed by path + size + mtime + what was asked.
//! A file whose key is unchanged is never opened again. The cache is private
//! (it names local paths) and lives outside the published site.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::read::FileHeader;

const CACHE_FILE: &str = "headers.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedFile {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    /// Fingerprint of the header request and fedstac version that produced `header`.
    pub request: String,
    pub header: FileHeader,
    pub checksum: Option<String>,
}

#[derive(Default)]
pub struct HeaderCache {
    entries: BTreeMap<PathBuf, CachedFile>,
}

impl HeaderCache {
    /// Loads the cache; a missing or damaged cache is only a slower build.
    pub fn load(dir: &Path) -> HeaderCache {
        let path = dir.join(CACHE_FILE);
        let Ok(file) = std::fs::File::open(&path) else { return HeaderCache::default() };
        let mut entries = BTreeMap::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            match line.map_err(anyhow::Error::from).and_then(|l| Ok(serde_json::from_str::<CachedFile>(&l)?)) {
                Ok(entry) => {
                    entries.insert(entry.path.clone(), entry);
                }
                Err(e) => {
                    tracing::warn!("ignoring header cache {} from line {}: {e}", path.display(), n + 1);
                    return HeaderCache::default();
                }
            }
        }
        HeaderCache { entries }
    }

    /// The cached entry if the file is unchanged and was read with the same request.
    pub fn get(&self, path: &Path, size: u64, mtime_ns: i128, request: &str) -> Option<&CachedFile> {
        self.entries.get(path).filter(|e| e.size == size && e.mtime_ns == mtime_ns && e.request == request)
    }

    /// Writes the entries atomically (temp file + rename).
    pub fn save(dir: &Path, entries: &[&CachedFile]) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating cache dir {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating temp file in {}", dir.display()))?;
        {
            let mut w = BufWriter::new(tmp.as_file_mut());
            for e in entries {
                serde_json::to_writer(&mut w, e)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        tmp.persist(dir.join(CACHE_FILE)).with_context(|| format!("writing {}", dir.join(CACHE_FILE).display()))?;
        Ok(())
    }
}
