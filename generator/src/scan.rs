//! Stage 1: walk the archive roots and keep the files a recipe takes, with
//! their facets, size and mtime (the cache key). Nothing is opened here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::recipe::{PathRejection, Recipe};

/// A file taken by a recipe.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub root: usize,
    pub path: PathBuf,
    /// Path relative to the root, with `/` separators.
    pub rel_path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub facets: BTreeMap<String, String>,
    /// When the version directory is a symlink: the name it points to.
    pub version_link: Option<String>,
}

/// A path that was seen but not taken, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What the walk saw besides the files it yields.
#[derive(Debug, Default)]
pub struct ScanCounts {
    pub seen: usize,
    /// Files outside the recipe's patterns, counted by reason.
    pub ignored: BTreeMap<PathRejection, usize>,
    /// Paths that could not be walked (permissions, loops, broken links).
    pub errors: Vec<Skipped>,
}

/// Walks the roots in order (following symlinks, as DKRZ's layout is one),
/// each in sorted order, yielding the files their recipes take. Lazy: the
/// archive is never listed in memory.
pub fn scan<'a>(roots: &'a [(PathBuf, &'a Recipe)], counts: &'a mut ScanCounts) -> impl Iterator<Item = ScannedFile> + 'a {
    let mut link_cache: HashMap<PathBuf, Option<String>> = HashMap::new();
    roots.iter().enumerate().flat_map(|(i, (root, recipe))| {
        walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter().map(move |entry| (i, root, *recipe, entry))
    })
    .filter_map(move |(root_index, root, recipe, entry)| {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                let reason = match e.io_error() {
                    Some(io) => io.to_string(),
                    None => e.to_string(),
                };
                counts.errors.push(Skipped { path, reason });
                return None;
            }
        };
        if !entry.file_type().is_file() {
            return None;
        }
        counts.seen += 1;
        let rel = entry.path().strip_prefix(root).ok()?;
        let rel_path = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let facets = match recipe.match_path(&rel_path) {
            Ok(f) => f,
            Err(why) => {
                *counts.ignored.entry(why).or_default() += 1;
                return None;
            }
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                counts.errors.push(Skipped { path: entry.path().to_path_buf(), reason: e.to_string() });
                return None;
            }
        };
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i128).unwrap_or_default();
        // The version directory's symlink target, when it is one (`latest` → v20190710).
        let version_link = facets.get(recipe.version_facet()).and_then(|v| {
            let at = format!("/{rel_path}").find(&format!("/{v}/"))?;
            let dir = root.join(&rel_path[..at + v.len()]);
            if link_cache.len() > 4096 {
                link_cache.clear();
            }
            link_cache.entry(dir.clone()).or_insert_with(|| link_target(&dir)).clone()
        });
        Some(ScannedFile { root: root_index, path: entry.path().to_path_buf(), rel_path, size: meta.len(), mtime_ns, facets, version_link })
    })
}

fn link_target(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}
