//! Stage: Kerchunk sidecars. For every catalogued netCDF file of a root with
//! `kerchunk` enabled, a Kerchunk v1 reference file in the site, and for a
//! multi-file dataset one more that combines them along time; the item gets
//! assets for them.
//!
//! ```text
//! kerchunk/<item id>/<file name>.json   one per file
//! kerchunk/<item id>/dataset.json       the files combined (multi-file datasets)
//! ```
//!
//! Assets: `kerchunk` opens the whole dataset (the combined sidecar, or the
//! only file's); for multi-file datasets `kerchunk_<file name>` each file.
//! Roles `references` + `kerchunk`, `protocol: kerchunk` (as the CMIP6
//! extension allows), `application/json`. Variables that could not be
//! referenced are listed in the asset's `fedstac:unreferenced` and reported
//! as warnings naming file and variable; the file's other variables are
//! referenced.
//!
//! Incremental: each file's references are cached under
//! `<cache>/kerchunk/` by path + size + mtime, without their URLs (so a
//! change of URL mode reads nothing again); a rebuild reads only new or
//! changed files. The combined sidecar is recomputed from the cached parts
//! (in memory, milliseconds). Output bytes depend only on the inputs.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stac::Asset;

use crate::config::{ReferenceUrls, SiteConfig};
use crate::items::DatasetItem;
use crate::kerchunk::{self, References};
use crate::output::SiteWriter;
use crate::scan::ScannedFile;

/// Site directory of the sidecars.
pub const SITE_DIR: &str = "kerchunk";
/// Asset key of the sidecar that opens the whole dataset.
pub const DATASET_ASSET: &str = "kerchunk";
/// In `relative` mode: the Kerchunk template that readers set to the URL of
/// the sidecar's directory (`template_overrides={"u": …}`).
pub const DIR_TEMPLATE: &str = "u";
/// Asset field naming [`DIR_TEMPLATE`] when the sidecar uses it.
pub const DIR_TEMPLATE_FIELD: &str = "fedstac:dir_template";
/// Asset field listing variables that could not be referenced (name → why).
pub const UNREFERENCED_FIELD: &str = "fedstac:unreferenced";

/// Bumped whenever the references a file gives change (invalidates the cache).
const CACHE_FORMAT: u32 = 1;
const CACHE_DIR: &str = "kerchunk";

/// What the stage did, for the build summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SidecarSummary {
    /// Per-file sidecars written.
    pub files: usize,
    /// Files whose references were read this run (the rest came from the cache).
    pub read: usize,
    pub cached: usize,
    /// Combined (multi-file) sidecars written.
    pub combined: usize,
    /// Files without references (unreadable as HDF5 / netCDF classic).
    pub failed: usize,
    /// Variables left out, each also a warning.
    pub unreferenced_variables: usize,
    /// Multi-file datasets whose files could not be combined (each also a warning).
    pub not_combined: usize,
}

/// The sidecar stage of one build.
pub struct Sidecars {
    /// Per root: the URL mode, when sidecars are on.
    modes: Vec<Option<ReferenceUrls>>,
    /// Where the site goes live (absolute, lexically normal): relative URLs start there.
    output: PathBuf,
    cache_dir: PathBuf,
    /// Names of the cache entries used this build, through an external sort
    /// (the rest are removed at the end; nothing per file stays in memory).
    used: crate::spill::Spill,
    jobs: usize,
    summary: SidecarSummary,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    format: u32,
    version: String,
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    /// `References::to_cache_bytes`, or why the file has none.
    refs: std::result::Result<Vec<u8>, String>,
}

impl Sidecars {
    /// None when no root has sidecars enabled.
    pub fn new(config: &SiteConfig, jobs: usize) -> Result<Option<Sidecars>> {
        let modes: Vec<Option<ReferenceUrls>> = config.roots.iter().map(|r| r.kerchunk_urls()).collect();
        if modes.iter().all(Option::is_none) {
            return Ok(None);
        }
        let cache_dir = config.cache.join(CACHE_DIR);
        std::fs::create_dir_all(&cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
        Ok(Some(Sidecars {
            modes,
            output: normal_absolute(&config.output)?,
            cache_dir,
            used: crate::spill::Spill::default(),
            jobs: jobs.max(1),
            summary: SidecarSummary::default(),
        }))
    }

    /// Writes the sidecars of one dataset and adds their assets to its item.
    /// Problems become warnings (prefixed with the item id); only I/O on the
    /// site or the cache fails the build.
    pub fn add(&mut self, writer: &mut SiteWriter, dataset: &mut DatasetItem, warnings: &mut Vec<String>) -> Result<()> {
        let id = dataset.item.id.clone();
        let files: Vec<&(String, ScannedFile)> = dataset.files.iter().filter(|(_, f)| self.modes.get(f.root).copied().flatten().is_some()).collect();
        if files.is_empty() {
            return Ok(());
        }
        let sidecar_dir = self.output.join(SITE_DIR).join(&id);
        let site_dir = format!("{SITE_DIR}/{id}");
        let up = "../".repeat(dataset.hierarchy.len() + 1);
        let created = dataset.item.properties.created.clone();

        let loaded = self.load_all(&files)?;
        let mut parts = Vec::new();
        let mut file_assets = Vec::new();
        for ((key, file), result) in files.iter().zip(loaded) {
            let refs = match result {
                Ok(refs) => refs,
                Err(reason) => {
                    self.summary.failed += 1;
                    warnings.push(format!("{id}: kerchunk: {key}: no references: {reason}"));
                    continue;
                }
            };
            let mode = self.modes[file.root].expect("filtered on enabled roots");
            let href = dataset.item.assets.get(key).map(|a| a.href.clone()).unwrap_or_default();
            let refs = match mode {
                ReferenceUrls::Public => refs.with_url(&href, &[]),
                ReferenceUrls::Local => refs.with_url(&normal_absolute(&file.path)?.to_string_lossy(), &[]),
                ReferenceUrls::Relative => {
                    let rel = relative_url(&sidecar_dir, &normal_absolute(&file.path)?);
                    refs.with_url(&format!("{{{{{DIR_TEMPLATE}}}}}/{rel}"), &[(DIR_TEMPLATE, ".")])
                }
            };
            for (var, reason) in refs.skipped() {
                self.summary.unreferenced_variables += 1;
                warnings.push(format!("{id}: kerchunk: {key}: variable {var} is not referenced: {reason}"));
            }
            let name = format!("{key}.json");
            writer.put(&format!("{site_dir}/{name}"), &refs.to_json())?;
            self.summary.files += 1;
            let asset = sidecar_asset(&format!("{up}{site_dir}/{name}"), &format!("Kerchunk references of {key}"), created.as_deref(), mode, &refs);
            file_assets.push((key.clone(), asset));
            parts.push(refs);
        }

        if files.len() == 1 {
            if let Some((_, asset)) = file_assets.pop() {
                let mut asset = asset;
                asset.title = Some("Kerchunk references: the dataset as one Zarr store".into());
                dataset.item.assets.insert(DATASET_ASSET.into(), asset);
            }
            return Ok(());
        }
        let mode = self.modes[files[0].1.root].expect("enabled");
        if parts.len() == files.len() {
            match kerchunk::combine_along_time(&parts) {
                Ok(combined) => {
                    writer.put(&format!("{site_dir}/dataset.json"), &combined.to_json())?;
                    self.summary.combined += 1;
                    let title = format!("Kerchunk references: the {} files combined along time, as one Zarr store", parts.len());
                    let asset = sidecar_asset(&format!("{up}{site_dir}/dataset.json"), &title, created.as_deref(), mode, &combined);
                    dataset.item.assets.insert(DATASET_ASSET.into(), asset);
                }
                Err(e) => {
                    self.summary.not_combined += 1;
                    warnings.push(format!("{id}: kerchunk: the files were not combined: {e:#}"));
                }
            }
        } else {
            self.summary.not_combined += 1;
            warnings.push(format!("{id}: kerchunk: the files were not combined: {} of {} have no references", files.len() - parts.len(), files.len()));
        }
        for (key, asset) in file_assets {
            dataset.item.assets.insert(format!("{DATASET_ASSET}_{key}"), asset);
        }
        Ok(())
    }

    /// Every file's references (URL-less), from the cache or read now,
    /// `jobs` files at a time.
    fn load_all(&mut self, files: &[&(String, ScannedFile)]) -> Result<Vec<std::result::Result<References, String>>> {
        let mut out: Vec<Option<std::result::Result<References, String>>> = Vec::with_capacity(files.len());
        let mut misses = Vec::new();
        for (i, (_, file)) in files.iter().enumerate() {
            let name = cache_name(&file.path);
            self.used.push(name.as_bytes(), &[])?;
            match self.lookup(&name, file) {
                Some(hit) => {
                    self.summary.cached += 1;
                    out.push(Some(hit));
                }
                None => {
                    misses.push(i);
                    out.push(None);
                }
            }
        }
        if !misses.is_empty() {
            let next = AtomicUsize::new(0);
            let results = Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for _ in 0..self.jobs.min(misses.len()) {
                    s.spawn(|| loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = misses.get(k) else { break };
                        let path = &files[i].1.path;
                        let started = std::time::Instant::now();
                        // An empty URL: the cached form has none; `with_url` sets it.
                        let refs = kerchunk::file_references(path, "").map_err(|e| format!("{e:#}"));
                        tracing::trace!("kerchunk references of {} in {:.1?}", path.display(), started.elapsed());
                        results.lock().expect("no panics while holding").push((i, refs));
                    });
                }
            });
            for (i, refs) in results.into_inner().expect("threads joined") {
                self.summary.read += 1;
                let file = &files[i].1;
                self.store(&cache_name(&file.path), file, &refs)?;
                out[i] = Some(refs);
            }
        }
        Ok(out.into_iter().map(|r| r.expect("every file loaded")).collect())
    }

    fn lookup(&self, name: &str, file: &ScannedFile) -> Option<std::result::Result<References, String>> {
        let bytes = std::fs::read(self.cache_dir.join(name)).ok()?;
        let entry: CacheEntry = bincode::deserialize(&bytes).ok()?;
        let fresh = entry.format == CACHE_FORMAT
            && entry.version == env!("CARGO_PKG_VERSION")
            && entry.path == file.path
            && entry.size == file.size
            && entry.mtime_ns == file.mtime_ns;
        if !fresh {
            return None;
        }
        match entry.refs {
            Ok(bytes) => References::from_cache_bytes(&bytes).ok().map(Ok),
            Err(reason) => Some(Err(reason)),
        }
    }

    fn store(&self, name: &str, file: &ScannedFile, refs: &std::result::Result<References, String>) -> Result<()> {
        let entry = CacheEntry {
            format: CACHE_FORMAT,
            version: env!("CARGO_PKG_VERSION").into(),
            path: file.path.clone(),
            size: file.size,
            mtime_ns: file.mtime_ns,
            refs: refs.as_ref().map(References::to_cache_bytes).map_err(Clone::clone),
        };
        let bytes = bincode::serialize(&entry).context("encoding a sidecar cache entry")?;
        // Temp file + rename: a crash never leaves a half-written entry.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.cache_dir).with_context(|| format!("creating a temp file in {}", self.cache_dir.display()))?;
        std::io::Write::write_all(&mut tmp, &bytes).context("writing the sidecar cache")?;
        let path = self.cache_dir.join(name);
        tmp.persist(&path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// After the site is committed: drops cache entries of files no longer
    /// catalogued, and returns the summary.
    pub fn finish(self) -> Result<SidecarSummary> {
        // Both lists sorted, then walked side by side.
        let mut present = crate::spill::Spill::default();
        let entries = std::fs::read_dir(&self.cache_dir).with_context(|| format!("listing {}", self.cache_dir.display()))?;
        for entry in entries {
            present.push(std::os::unix::ffi::OsStrExt::as_bytes(entry?.file_name().as_os_str()), &[])?;
        }
        let mut used = self.used.finish()?.peekable();
        for entry in present.finish()? {
            let (name, _) = entry?;
            let mut kept = false;
            while let Some(next) = used.next_if(|u| u.as_ref().map_or(true, |(u, _)| *u <= name)) {
                kept |= next?.0 == name;
            }
            if !kept {
                let _ = std::fs::remove_file(self.cache_dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name)));
            }
        }
        Ok(self.summary)
    }
}

fn sidecar_asset(href: &str, title: &str, created: Option<&str>, mode: ReferenceUrls, refs: &References) -> Asset {
    let mut asset = Asset::new(href).role("references").role("kerchunk");
    asset.r#type = Some("application/json".into());
    asset.title = Some(title.to_string());
    asset.created = created.map(str::to_string);
    let extra = &mut asset.additional_fields;
    extra.insert("protocol".into(), json!("kerchunk"));
    if mode == ReferenceUrls::Relative {
        extra.insert(DIR_TEMPLATE_FIELD.into(), json!(DIR_TEMPLATE));
    }
    if !refs.skipped().is_empty() {
        let skipped: serde_json::Map<String, Value> = refs.skipped().iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        extra.insert(UNREFERENCED_FIELD.into(), Value::Object(skipped));
    }
    asset
}

/// Cache file name of a source file: a digest of its path.
fn cache_name(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!("{}.bin", hex::encode(&digest[..16]))
}

/// Absolute and without `.`/`..` (lexically: the web server sees the path
/// as configured, symlinks included).
fn normal_absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// URL path from directory `from` to file `to` (both absolute, normal),
/// percent-encoded.
fn relative_url(from: &Path, to: &Path) -> String {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); a.len() - common];
    parts.extend(b[common..].iter().map(|c| encode_segment(&c.as_os_str().to_string_lossy())));
    parts.join("/")
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an item page shows of a Kerchunk asset: its URL (absolute when the
/// site's URL is configured or the href is absolute), and a Python snippet
/// that opens it. `item_path` is the item's site path (`CMIP6/…/<id>.json`).
pub fn page_snippet(assets: &Value, item_path: &str, site_url: Option<&str>) -> Option<Value> {
    let asset = assets.get(DATASET_ASSET)?;
    let href = asset.get("href")?.as_str()?;
    let base = url::Url::parse("http://site.invalid/").expect("valid").join(item_path).ok()?;
    let resolved = base.join(href).ok()?;
    let (url, absolute) = if resolved.host_str() == Some("site.invalid") {
        let path = resolved.path().trim_start_matches('/');
        match site_url {
            Some(site) => (format!("{}/{path}", site.trim_end_matches('/')), true),
            None => (href.to_string(), false),
        }
    } else {
        (resolved.to_string(), true)
    };
    // The snippet is code to paste: partner metadata must not break out of its strings.
    if url.chars().any(|c| c == '"' || c == '\\' || c.is_whitespace() || c.is_control()) {
        return None;
    }
    let dir_template = asset.get(DIR_TEMPLATE_FIELD).and_then(Value::as_str).filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let dir = url.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_else(|| ".".into());
    // Each data file's own sidecar (a single file's is the dataset's).
    let all = assets.as_object()?;
    let is_sidecar = |a: &Value| a.get("roles").and_then(Value::as_array).is_some_and(|r| r.iter().any(|x| x == "kerchunk"));
    let data: Vec<&String> = all.iter().filter(|(_, a)| !is_sidecar(a)).map(|(k, _)| k).collect();
    let mut files = serde_json::Map::new();
    for key in &data {
        if let Some(h) = all.get(&format!("{DATASET_ASSET}_{key}")).and_then(|a| a.get("href")).and_then(Value::as_str) {
            files.insert(key.to_string(), json!(h));
        }
    }
    if files.is_empty() && data.len() == 1 {
        files.insert(data[0].clone(), json!(href));
    }
    Some(json!({
        "url": url, "absolute": absolute, "dir": dir, "dir_template": dir_template,
        "unreferenced": asset.get(UNREFERENCED_FIELD), "files": files,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_climb_to_the_common_directory() {
        let from = Path::new("/srv/www/site/kerchunk/ID");
        assert_eq!(relative_url(from, Path::new("/srv/www/archive/a b/x.nc")), "../../../archive/a%20b/x.nc");
        assert_eq!(relative_url(from, Path::new("/srv/www/site/kerchunk/ID/x.nc")), "x.nc");
        assert_eq!(normal_absolute(Path::new("/a/b/../c/./d")).unwrap(), PathBuf::from("/a/c/d"));
    }

    #[test]
    fn page_snippets_resolve_the_sidecar() {
        let assets = json!({"kerchunk": {"href": "../../kerchunk/X/dataset.json", DIR_TEMPLATE_FIELD: "u"}});
        let s = page_snippet(&assets, "CMIP6/a/X.json", Some("https://h.org/stac/")).unwrap();
        assert_eq!(s["url"], "https://h.org/stac/kerchunk/X/dataset.json");
        assert_eq!(s["dir"], "https://h.org/stac/kerchunk/X");
        assert_eq!(s["dir_template"], "u");
        let s = page_snippet(&assets, "CMIP6/a/X.json", None).unwrap();
        assert_eq!((s["url"].as_str(), s["absolute"].as_bool()), (Some("../../kerchunk/X/dataset.json"), Some(false)));
    }
}
