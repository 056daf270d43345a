//! `fedstac build`: scan → read (cached, concurrent) → items → catalogue +
//! HTML, written atomically. This module only sequences the stages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::{CachedFile, HeaderCache};
use crate::catalogue::{self, CollectionInput};
use crate::config::SiteConfig;
use crate::html::HtmlPages;
use crate::items::{self, FileRecord, ItemsReport, RootContext};
use crate::output::SiteWriter;
use crate::read;
use crate::recipe::{PathRejection, Recipe};
use crate::scan::{self, ScanResult, ScannedFile};

pub struct BuildOptions {
    pub config: SiteConfig,
    /// Any unreadable file fails the build (nothing is written).
    pub strict: bool,
    /// Files read at once.
    pub jobs: usize,
    pub progress: bool,
}

/// What a build did, for the summary and for tests.
#[derive(Debug, Default, serde::Serialize)]
pub struct BuildSummary {
    pub files_seen: usize,
    pub files_used: usize,
    /// Files opened this run (the rest came from the cache).
    pub files_read: usize,
    pub files_cached: usize,
    #[serde(serialize_with = "serialize_ignored")]
    pub ignored: BTreeMap<PathRejection, usize>,
    /// Files seen but not catalogued, with the reason.
    pub skipped: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub items: usize,
    pub collections: usize,
    pub outputs_written: usize,
    pub outputs_unchanged: usize,
    pub outputs_removed: usize,
    /// The full summary as JSON (beside the cache; it names local paths).
    pub report_path: Option<PathBuf>,
}

pub async fn build(opts: BuildOptions) -> Result<BuildSummary> {
    let config = opts.config;
    let mut summary = BuildSummary::default();

    let mut recipes: Vec<Arc<Recipe>> = Vec::new();
    let mut by_name: BTreeMap<String, Arc<Recipe>> = BTreeMap::new();
    for root in &config.roots {
        let recipe = match by_name.get(&root.recipe) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(Recipe::load(&root.recipe, std::path::Path::new("."), config.cv_dir.as_deref())?);
                by_name.insert(root.recipe.clone(), r.clone());
                r
            }
        };
        recipes.push(recipe);
    }
    if config.cv_dir.is_none() {
        tracing::info!("no cv_dir configured: controlled-vocabulary checks are off");
    }

    // Scan.
    let spinner = progress_spinner(opts.progress, "scanning");
    let scan_roots: Vec<(PathBuf, Arc<Recipe>)> = config.roots.iter().zip(&recipes).map(|(r, rec)| (r.path.clone(), rec.clone())).collect();
    let scanned = tokio::task::spawn_blocking(move || {
        let mut result = ScanResult::default();
        for (i, (path, recipe)) in scan_roots.iter().enumerate() {
            scan::scan_root(i, path, recipe, &mut result);
        }
        result
    })
    .await?;
    spinner.finish_and_clear();
    summary.files_seen = scanned.seen;
    summary.ignored = scanned.ignored;
    for e in scanned.errors {
        summary.skipped.push((e.path.display().to_string(), e.reason));
    }
    for (i, root) in config.roots.iter().enumerate() {
        if !root.path.is_dir() {
            bail!("root {} (#{}) is not a readable directory", root.path.display(), i + 1);
        }
    }

    // Read headers: cached when path, size, mtime and request are unchanged.
    let cache = HeaderCache::load(&config.cache);
    let mut records: Vec<Option<FileRecord>> = vec![None; scanned.files.len()];
    let mut fresh: Vec<CachedFile> = Vec::new();
    let mut to_read = Vec::new();
    for (i, file) in scanned.files.iter().enumerate() {
        let request = recipes[file.root].header_request(&file.facets);
        let key = request_key(&request, config.checksums);
        match cache.get(&file.path, file.size, file.mtime_ns, &key) {
            Some(hit) => {
                records[i] = Some(FileRecord { file: file.clone(), header: hit.header.clone(), checksum: hit.checksum.clone() });
                fresh.push(hit.clone());
                summary.files_cached += 1;
            }
            None => to_read.push((i, file.clone(), request, key)),
        }
    }
    let bar = progress_bar(opts.progress, to_read.len() as u64, "reading");
    let checksums = config.checksums;
    let mut reads = futures::stream::iter(to_read.into_iter().map(|(i, file, request, key)| {
        tokio::task::spawn_blocking(move || {
            let result = read_file(&file, &request, checksums);
            (i, file, key, result)
        })
    }))
    .buffer_unordered(opts.jobs.max(1));
    let mut failures = Vec::new();
    while let Some(joined) = reads.next().await {
        let (i, file, key, result) = joined.context("reader task panicked")?;
        bar.inc(1);
        summary.files_read += 1;
        match result {
            Ok((header, checksum)) => {
                fresh.push(CachedFile { path: file.path.clone(), size: file.size, mtime_ns: file.mtime_ns, request: key, header: header.clone(), checksum: checksum.clone() });
                records[i] = Some(FileRecord { file, header, checksum });
            }
            Err(e) => {
                tracing::warn!("skipping {}: {e:#}", file.path.display());
                failures.push((file.path.display().to_string(), format!("{e:#}")));
            }
        }
    }
    bar.finish_and_clear();
    if opts.strict && !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|(p, r)| format!("  {p}: {r}")).collect();
        bail!("{} file(s) could not be read (--strict):\n{}", failures.len(), list.join("\n"));
    }
    summary.skipped.extend(failures);
    let records: Vec<FileRecord> = records.into_iter().flatten().collect();
    summary.files_used = records.len();

    // Items, one collection per recipe collection id.
    let contexts: Vec<RootContext> = config.roots.iter().zip(&recipes).map(|(r, rec)| RootContext { recipe: rec, data_url: &r.data_url }).collect();
    let mut by_collection: BTreeMap<String, Vec<FileRecord>> = BTreeMap::new();
    for record in records {
        by_collection.entry(recipes[record.file.root].file.collection.id.clone()).or_default().push(record);
    }
    let mut report = ItemsReport::default();
    let mut inputs = Vec::new();
    for records in by_collection.values() {
        let recipe = &recipes[records[0].file.root];
        let items = items::build_items(&config.site.name, &contexts, records, &mut report)?;
        inputs.push(CollectionInput { spec: &recipe.file.collection, extensions: &recipe.file.extensions, items });
    }
    let skipped_by_items: std::collections::HashSet<&str> = report.skipped.iter().map(|(p, _)| p.as_str()).collect();
    summary.files_used -= skipped_by_items.len();
    summary.skipped.extend(report.skipped.iter().cloned());
    summary.warnings = report.warnings;

    // Catalogue and pages, swapped in atomically.
    let pages = HtmlPages::new(config.templates.as_deref())?;
    let mut writer = SiteWriter::begin(&config.output)?;
    let stats = catalogue::write_catalogue(&mut writer, &pages, &config.site, inputs)?;
    let written = writer.commit()?;
    summary.items = stats.items;
    summary.collections = stats.collections;
    summary.outputs_written = written.written;
    summary.outputs_unchanged = written.unchanged;
    summary.outputs_removed = written.removed;

    fresh.sort_by(|a, b| a.path.cmp(&b.path));
    HeaderCache::save(&config.cache, &fresh.iter().collect::<Vec<_>>())?;
    let report_path = config.cache.join("last-build.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("writing {}", report_path.display()))?;
    summary.report_path = Some(report_path);
    Ok(summary)
}

fn read_file(file: &ScannedFile, request: &read::HeaderRequest, checksums: bool) -> Result<(read::FileHeader, Option<String>)> {
    let header = read::read_header(&file.path, request)?;
    let checksum = if checksums { Some(read::file_checksum(&file.path).context("computing checksum")?) } else { None };
    Ok((header, checksum))
}

/// Cache key part: a header read with another request (or another fedstac) is stale.
fn request_key(request: &read::HeaderRequest, checksums: bool) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(serde_json::to_vec(request).unwrap_or_default());
    h.update([checksums as u8]);
    hex::encode(&h.finalize()[..12])
}

fn progress_bar(enabled: bool, len: u64, what: &'static str) -> ProgressBar {
    if !enabled || len == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(what);
    bar.set_style(ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta})").expect("valid template").progress_chars("=> "));
    bar
}

fn progress_spinner(enabled: bool, what: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner().with_message(what);
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    s
}

fn serialize_ignored<S: serde::Serializer>(ignored: &BTreeMap<PathRejection, usize>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(ignored.iter().map(|(k, v)| (k.to_string(), v)))
}
