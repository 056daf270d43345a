//! `fedstac build`: scan → read (cached, concurrent) → items → catalogue +
//! HTML, written atomically. This module only sequences the stages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::{CacheReader, CacheWriter, CachedFile};
use crate::catalogue::CatalogueWriter;
use crate::config::SiteConfig;
use crate::html::HtmlPages;
use crate::items::{self, FileRecord, ItemsReport, RootContext};
use crate::merge::{MergeSummary, Merger};
use crate::output::SiteWriter;
use crate::read;
use crate::recipe::{PathRejection, Recipe};
use crate::scan::{self, ScanCounts, ScannedFile};
use crate::sidecars::{SidecarSummary, Sidecars};

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
    /// Partner items merged in (federation).
    pub merge: MergeSummary,
    /// Kerchunk sidecars (when a root has them enabled).
    pub kerchunk: Option<SidecarSummary>,
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

    for (i, root) in config.roots.iter().enumerate() {
        if !root.path.is_dir() {
            bail!("root {} (#{}) is not a readable directory", root.path.display(), i + 1);
        }
    }
    let started = std::time::Instant::now();
    // Datasets are contiguous in scan order (their files share a directory
    // prefix), so files stream through read → items → catalogue one dataset
    // at a time; nothing per file outlives its dataset.
    let contexts: Vec<RootContext> = config.roots.iter().zip(&recipes).map(|(r, rec)| RootContext { recipe: rec, data_url: &r.data_url }).collect();
    let mut cache = CacheReader::open(&config.cache);
    let mut new_cache = CacheWriter::create(&config.cache)?;
    let pages = HtmlPages::new(config.templates.as_deref())?;
    let mut writer = SiteWriter::begin(&config.output)?;
    let mut catalogue = CatalogueWriter::new(&config.site, &pages);
    // Federation: the partners' mirrored items join this site's (merge.rs).
    let mut merger = Merger::open(&config, &recipes)?;
    // search index (client-side search): fed every item the catalogue writes
    let mut search = crate::search_index::SearchIndex::new(&config.site)?;
    let mut report = ItemsReport::default();
    let mut failures = Vec::new();
    // Kerchunk reference files beside the items (sidecars.rs), when a root asks for them.
    let mut sidecars = Sidecars::new(&config, opts.jobs)?;

    let bar = progress_counter(opts.progress);
    let checksums = config.checksums;
    let jobs = opts.jobs.max(1);
    // Cache lookups run lazily, in scan order, as the stream pulls files.
    let scan_roots: Vec<(PathBuf, &Recipe)> = config.roots.iter().zip(&recipes).map(|(r, rec)| (r.path.clone(), rec.as_ref())).collect();
    let mut counts = ScanCounts::default();
    let lookups = scan::scan(&scan_roots, &mut counts).map(|file| {
        let recipe = &recipes[file.root];
        let request = recipe.header_request(&file.facets);
        let key = request_key(&request, checksums);
        let dataset = match recipe.render("item.base_id", &minijinja::context! { path => &file.facets }) {
            Ok(id) => format!("{}\u{0}{id}", file.root),
            Err(_) => format!("{}\u{0}{}", file.root, file.path.display()),
        };
        let cached = cache.take(file.root, &file.path, file.size, file.mtime_ns, &key);
        (dataset, file, request, key, cached)
    });
    // Ordered, so results come back in scan order; `jobs` files are read at once.
    let mut results = futures::stream::iter(lookups.map(|(dataset, file, request, key, cached)| async move {
        let outcome = match cached {
            Some(hit) => Ok((file, hit, true)),
            None => {
                let path = file.path.display().to_string();
                tokio::task::spawn_blocking(move || match read_file(&file, &request, checksums) {
                    Ok((header, checksum)) => {
                        let entry = CachedFile { root: file.root, path: file.path.clone(), size: file.size, mtime_ns: file.mtime_ns, request: key, header, checksum };
                        Ok((file, entry, false))
                    }
                    Err(e) => Err((file.path.display().to_string(), format!("{e:#}"))),
                })
                .await
                .unwrap_or_else(|e| Err((path, format!("reader task failed: {e}"))))
            }
        };
        (dataset, outcome)
    }))
    .buffered(jobs);

    let mut group: Vec<FileRecord> = Vec::new();
    let mut group_key = String::new();
    while let Some((dataset, outcome)) = results.next().await {
        bar.inc(1);
        if dataset != group_key {
            flush_dataset(&config.site.name, &contexts, &recipes, std::mem::take(&mut group), &mut writer, &mut catalogue, &mut search, &mut merger, sidecars.as_mut(), &mut report)?;
            group_key = dataset;
        }
        match outcome {
            Ok((file, entry, was_cached)) => {
                if was_cached {
                    summary.files_cached += 1;
                } else {
                    summary.files_read += 1;
                }
                new_cache.append(&entry)?;
                group.push(FileRecord { file, header: entry.header, checksum: entry.checksum });
            }
            Err((path, reason)) => {
                summary.files_read += 1;
                tracing::warn!("skipping {path}: {reason}");
                failures.push((path, reason));
            }
        }
    }
    flush_dataset(&config.site.name, &contexts, &recipes, group, &mut writer, &mut catalogue, &mut search, &mut merger, sidecars.as_mut(), &mut report)?;
    // Federation: datasets held only at partners (merge.rs).
    while let Some(next) = merger.next_partner_only(&mut report.warnings) {
        let (recipe, dataset) = next?;
        let id = dataset.item.id.clone();
        let indexed = search.input(&dataset, &recipe.file.collection.id);
        // A partner item that cannot be written (its metadata breaks a page) is left out, not fatal;
        // add_item renders before it writes, so nothing of it is left behind.
        match catalogue.add_item(&mut writer, &recipe.file.collection, &recipe.file.extensions, dataset) {
            Ok(true) => search.add(&mut writer, indexed).with_context(|| format!("indexing item {id}"))?,
            Ok(false) => {}
            Err(e) => report.warnings.push(format!("{id}: partner item left out: {e:#}")),
        }
    }
    summary.merge = merger.summary();
    bar.finish_and_clear();
    drop(results);
    summary.files_seen = counts.seen;
    summary.ignored = counts.ignored;
    for e in counts.errors {
        summary.skipped.push((e.path.display().to_string(), e.reason));
    }

    if opts.strict && !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|(p, r)| format!("  {p}: {r}")).collect();
        bail!("{} file(s) could not be read (--strict):\n{}", failures.len(), list.join("\n"));
    }
    summary.files_used = summary.files_read + summary.files_cached - failures.len();
    summary.skipped.extend(failures);
    let skipped_by_items: std::collections::HashSet<&str> = report.skipped.iter().map(|(p, _)| p.as_str()).collect();
    summary.files_used -= skipped_by_items.len();
    summary.skipped.extend(report.skipped.iter().cloned());
    summary.warnings = report.warnings;

    // Catalogue pages, then the atomic swap.
    let t_items = started.elapsed();
    let stats = catalogue.finish(&mut writer)?;
    search.finish(&mut writer)?;
    let t_pages = started.elapsed();
    let written = writer.commit()?;
    tracing::debug!("timings: scan+read+items {:.2?}, catalogue pages {:.2?}, sync+swap {:.2?}", t_items, t_pages - t_items, started.elapsed() - t_pages);
    new_cache.commit()?;
    summary.kerchunk = sidecars.map(Sidecars::finish).transpose()?;
    summary.items = stats.items;
    summary.collections = stats.collections;
    summary.outputs_written = written.written;
    summary.outputs_unchanged = written.unchanged;
    summary.outputs_removed = written.removed;

    let report_path = config.cache.join("last-build.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&summary)?).with_context(|| format!("writing {}", report_path.display()))?;
    summary.report_path = Some(report_path);
    Ok(summary)
}

/// Builds one dataset's items, merges partner copies in, and hands them to the catalogue.
#[allow(clippy::too_many_arguments)]
fn flush_dataset(
    site_name: &str,
    contexts: &[RootContext],
    recipes: &[Arc<Recipe>],
    records: Vec<FileRecord>,
    writer: &mut SiteWriter,
    catalogue: &mut CatalogueWriter,
    search: &mut crate::search_index::SearchIndex,
    merger: &mut Merger,
    mut sidecars: Option<&mut Sidecars>,
    report: &mut ItemsReport,
) -> Result<()> {
    let Some(first) = records.first() else { return Ok(()) };
    let recipe = &recipes[first.file.root];
    let mut datasets = items::build_items(site_name, contexts, &records, report)?;
    if let Some(sidecars) = sidecars.as_deref_mut() {
        for dataset in datasets.iter_mut() {
            // A dataset found again under another root is not written (below): nor are its sidecars.
            if !catalogue.has_item(writer, &recipe.file.collection, dataset)? {
                sidecars.add(writer, dataset, &mut report.warnings).with_context(|| format!("kerchunk sidecars of {}", dataset.item.id))?;
            }
        }
    }
    // Federation: partner copies, held_at, latest/retracted across sites (merge.rs).
    merger.merge_local(&mut datasets, &mut report.warnings)?;
    for dataset in datasets {
        let id = dataset.item.id.clone();
        // search index: the item as written, at its path in the tree
        let indexed = search.input(&dataset, &recipe.file.collection.id);
        if !catalogue.add_item(writer, &recipe.file.collection, &recipe.file.extensions, dataset).with_context(|| format!("writing item {id}"))? {
            report.warnings.push(format!("{id}: found again under another root; the first copy is kept"));
        } else {
            search.add(writer, indexed).with_context(|| format!("indexing item {id}"))?;
        }
    }
    Ok(())
}

fn read_file(file: &ScannedFile, request: &read::HeaderRequest, checksums: bool) -> Result<(read::FileHeader, Option<String>)> {
    let started = std::time::Instant::now();
    let header = read::read_header(&file.path, request)?;
    tracing::trace!("read {} in {:.1?}", file.path.display(), started.elapsed());
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

/// Files are counted as they stream by: the total is not known in advance.
fn progress_counter(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} files ({per_sec}) {elapsed}").expect("valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn serialize_ignored<S: serde::Serializer>(ignored: &BTreeMap<PathRejection, usize>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(ignored.iter().map(|(k, v)| (k.to_string(), v)))
}
