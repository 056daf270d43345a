//! `fedstac harvest`: mirrors a partner's static STAC catalogue into
//! `<cache>/partners/<name>/` (see [`mirror`]), for `fedstac build` to merge
//! ([`crate::merge`]). The published site is never touched here.
//!
//! The crawl starts at the partner's root `catalog.json` and follows `child`
//! and `item` links that stay below the root's directory (a link cycle is
//! visited once; depth and document count are bounded). Requests run
//! concurrently (bounded), each with a timeout, retries with backoff and a
//! size limit ([`fetch`]). Every document is checked before it is kept
//! ([`sanitize`]).
//!
//! Cheap re-harvests:
//! - A fedstac partner publishes `fedstac-manifest.json` (every file's
//!   SHA-256). It is fetched first, conditionally: a 304 means nothing
//!   changed, and the whole harvest costs one request. Otherwise only
//!   documents whose digest differs from the mirrored copy are fetched.
//! - Any other static catalogue: every document is fetched conditionally
//!   (If-None-Match / If-Modified-Since), so unchanged ones cost a 304.
//!
//! - A first harvest, or one where at least an eighth of the partner's STAC
//!   documents changed, takes the partner's bundle ([`crate::output::BUNDLE`]):
//!   every document in one gzip download, each record checked against the
//!   manifest's digest and sanitized like a fetched document ([`bundle`]).
//!   A bundle that fails or does not match leaves the rest to the crawl.
//!
//! A failed or refused document keeps its last good copy (reported); a
//! document gone from the partner (404, or no longer linked) is dropped. An
//! interrupted harvest resumes from its journal.

pub mod bundle;
pub mod fetch;
pub mod mirror;
pub mod sanitize;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::{PartnerConfig, SiteConfig};
use crate::merge::Placer;
use crate::output::{BUNDLE, MANIFEST};
use fetch::{FetchError, FetchOptions, Fetched, Fetcher, Validators};
use mirror::{DocEntry, Journal, JournalHeader, ManifestState, MirrorHeader, MirrorReader, MirrorWriter};
use sanitize::{Doc, Scope};

#[derive(Debug, Clone)]
pub struct HarvestOptions {
    pub fetch: FetchOptions,
    /// Requests in flight at once.
    pub jobs: usize,
    /// Largest catalogue or item accepted.
    pub max_document_bytes: u64,
    /// Largest manifest accepted.
    pub max_manifest_bytes: u64,
    /// The crawl gives up (keeping the old mirror) past this many documents.
    pub max_documents: usize,
    /// Catalogue levels followed below the root.
    pub max_depth: usize,
    /// An interrupted harvest younger than this is resumed from its journal.
    pub resume_within: Duration,
    /// Take the partner's bundle when much has changed (off: one request per document).
    pub use_bundle: bool,
    /// Largest bundle accepted.
    pub max_bundle_bytes: u64,
    pub progress: bool,
}

impl Default for HarvestOptions {
    fn default() -> Self {
        HarvestOptions {
            fetch: FetchOptions::default(),
            jobs: 16,
            max_document_bytes: 16 << 20,
            max_manifest_bytes: 1 << 30,
            max_documents: 10_000_000,
            max_depth: 32,
            resume_within: Duration::from_secs(24 * 3600),
            use_bundle: true,
            max_bundle_bytes: 64 << 30,
            progress: false,
        }
    }
}

/// What one harvest did (also written to `<mirror>/report.json`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct HarvestReport {
    pub partner: String,
    pub url: String,
    /// `updated`, `unchanged`, or `failed` (nothing was changed).
    pub outcome: String,
    /// What happened to `fedstac-manifest.json`.
    pub manifest: String,
    pub seconds: f64,
    pub requests: u64,
    /// Received: status lines, headers and bodies.
    pub bytes: u64,
    pub not_modified: u64,
    pub retries: u64,
    /// Documents in the mirror now.
    pub catalogs: usize,
    pub items: usize,
    /// Documents downloaded (200) this run.
    pub fetched: usize,
    /// Documents known current without a request (the manifest said so).
    pub reused: usize,
    /// Documents taken from the journal of an interrupted harvest.
    pub resumed: usize,
    /// Documents taken from the partner's bundle.
    pub bundled: usize,
    /// What happened to the partner's bundle.
    pub bundle: String,
    pub items_added: usize,
    pub items_changed: usize,
    pub items_removed: usize,
    /// Documents that failed or were refused but whose last good copy was kept.
    pub kept_previous: usize,
    pub refused: usize,
    pub failed: usize,
    /// Refused, failed, missing or skipped documents (the first 1000).
    pub problems: Vec<Problem>,
    /// Things dropped from accepted documents (the first 1000).
    pub notes: Vec<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub url: String,
    /// `refused`, `failed`, `not-found`, `duplicate`, `skipped`.
    pub kind: String,
    pub reason: String,
    pub kept_previous: bool,
}

const LISTED: usize = 1000;

impl HarvestReport {
    fn problem(&mut self, url: &str, kind: &str, reason: String, kept_previous: bool) {
        match kind {
            "refused" | "duplicate" => self.refused += 1,
            "failed" | "not-found" => self.failed += 1,
            _ => {}
        }
        self.kept_previous += kept_previous as usize;
        if self.problems.len() < LISTED {
            self.problems.push(Problem { url: url.to_string(), kind: kind.to_string(), reason, kept_previous });
        }
    }

    fn note(&mut self, url: &str, note: String) {
        if self.notes.len() < LISTED {
            self.notes.push(format!("{url}: {note}"));
        }
    }

    /// 0: clean; 2: harvested with problems; 1: failed.
    pub fn exit_code(&self) -> u8 {
        if self.outcome == "failed" {
            1
        } else if self.refused + self.failed > 0 {
            2
        } else {
            0
        }
    }
}

/// A partner to harvest.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
}

impl From<&PartnerConfig> for Target {
    fn from(p: &PartnerConfig) -> Target {
        Target { name: p.name.clone(), url: p.url.clone() }
    }
}

/// Harvests every partner of a site config, in order.
pub async fn harvest_config(config: &SiteConfig, opts: &HarvestOptions) -> Result<Vec<HarvestReport>> {
    let placer = Arc::new(Placer::for_config(config)?);
    let mut reports = Vec::new();
    for p in &config.partners {
        reports.push(harvest(&Target::from(p), &config.cache, placer.clone(), opts).await.with_context(|| format!("harvesting {}", p.name))?);
    }
    Ok(reports)
}

/// A mirrored document from the last complete harvest.
struct OldDoc {
    offset: u64,
    len: usize,
    sha: String,
    validators: Validators,
    manifest_match: bool,
    links: Option<Vec<(String, String)>>,
    item_id: Option<String>,
}

/// A document written to the journal by an interrupted harvest.
struct JournalDoc {
    offset: u64,
    len: usize,
    sha: String,
    validators: Validators,
    not_modified: bool,
    links: Option<Vec<(String, String)>>,
    item_id: Option<String>,
    from_bundle: bool,
}

/// Where a document's line in the new mirror comes from.
#[derive(Clone, Copy)]
enum Line {
    Old(u64, usize),
    Journal(u64, usize),
}

struct NewDoc {
    line: Line,
    sha: String,
    item_id: Option<String>,
    links: Option<Vec<(String, String)>>,
}

struct Task {
    /// Normalized (as `Url` writes it): parsed again only when fetched.
    url: String,
    depth: usize,
}

enum Outcome {
    NotModified,
    Fresh { validators: Validators, sha: String, doc: Result<Doc, String> },
    Failed(FetchError),
}

/// Which copy the validators of a conditional request came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Old,
    Journal,
}

/// Harvests one partner into `<cache>/partners/<name>/`.
pub async fn harvest(target: &Target, cache: &Path, placer: Arc<Placer>, opts: &HarvestOptions) -> Result<HarvestReport> {
    let started = Instant::now();
    if !crate::config::is_site_name(&target.name) {
        bail!("partner name {:?} must be letters, digits, '-', '_' or '.'", target.name);
    }
    let mut root = Url::parse(&target.url).with_context(|| format!("partner URL {:?}", target.url))?;
    if root.scheme() != "http" && root.scheme() != "https" {
        bail!("partner URL {} is not http(s)", target.url);
    }
    if root.path().ends_with('/') {
        // The site's directory: its root catalogue is catalog.json.
        root = root.join("catalog.json")?;
    }
    let root_key = root.to_string();
    let scope = Scope::of_root(&root);
    let dir = mirror::partner_dir(cache, &target.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = lock(&dir)?;
    let mut report = HarvestReport { partner: target.name.clone(), url: root_key.clone(), ..Default::default() };

    // The last complete harvest (ignored if it was of another URL).
    let mirror_path = dir.join(mirror::MIRROR_FILE);
    let old_reader = MirrorReader::open(&mirror_path).unwrap_or_else(|e| {
        tracing::warn!("{e:#}: harvesting {} afresh", target.name);
        None
    });
    let old_reader = old_reader.filter(|r| r.header().url == root_key);
    let old_header = old_reader.as_ref().map(|r| r.header().clone());
    let mut old: HashMap<String, OldDoc> = HashMap::new();
    if let Some(r) = &old_reader {
        for entry in r.heads() {
            let Ok((offset, len, e)) = entry else {
                tracing::warn!("the mirror of {} is damaged; harvesting afresh", target.name);
                old.clear();
                break;
            };
            let item_id = e.item_id().map(str::to_string);
            old.insert(e.url, OldDoc { offset, len, sha: e.sha256, validators: Validators { etag: e.etag, last_modified: e.last_modified }, manifest_match: e.manifest_match, links: e.links, item_id });
        }
    }
    let mut old_file = old_reader.map(MirrorReader::into_file);

    // An interrupted harvest of the same URL is resumed from its journal.
    let journal_path = dir.join(mirror::JOURNAL_FILE);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let resumed = mirror::read_journal(&journal_path, &root_key, opts.resume_within);
    let mut journaled: HashMap<String, JournalDoc> = HashMap::new();
    let valid_len = resumed.as_ref().map(|(_, len)| *len);
    for (offset, len, e) in resumed.map(|(e, _)| e).unwrap_or_default() {
        let item_id = e.item_id().map(str::to_string);
        let doc = JournalDoc { offset, len, sha: e.sha256, validators: Validators { etag: e.etag, last_modified: e.last_modified }, not_modified: e.not_modified, links: e.links, item_id, from_bundle: false };
        if doc.not_modified && !old.contains_key(&e.url) {
            continue;
        }
        journaled.insert(e.url, doc);
    }
    if !journaled.is_empty() {
        tracing::info!("resuming the interrupted harvest of {} ({} documents journaled)", target.name, journaled.len());
    }
    let mut journal = Journal::open(&journal_path, &JournalHeader { fedstac_journal: 1, url: root_key.clone(), started: now }, valid_len)?;

    let mut fetch_opts = opts.fetch.clone();
    fetch_opts.timeout = fetch_opts.timeout.max(Duration::from_millis(1));
    let fetcher = Fetcher::http(fetch_opts)?;

    // A first harvest takes the partner's bundle whenever there is one: its
    // download starts beside the manifest's (a partner without one answers 404).
    let early_bundle = (opts.use_bundle && old.is_empty() && journaled.is_empty()).then(|| {
        let (fetcher, url, limit, dest) = (fetcher.clone(), scope.base().join(BUNDLE), opts.max_bundle_bytes, dir.join(BUNDLE_DOWNLOAD));
        tokio::spawn(async move {
            let url = url.map_err(|e| FetchError::Refused(e.to_string()))?;
            fetcher.download(&url, limit, &dest).await
        })
    });
    let mut early_bundle = EarlyBundle { task: early_bundle, dest: dir.join(BUNDLE_DOWNLOAD) };

    // The manifest, when the partner publishes one.
    let manifest_url = scope.base().join(MANIFEST)?;
    let known_manifest = old_header.as_ref().and_then(|h| h.manifest.clone()).map(|m| Validators { etag: m.etag, last_modified: m.last_modified });
    let mut manifest: Option<PartnerManifest> = None;
    let mut manifest_state: Option<ManifestState> = None;
    let mut manifest_unchanged = false;
    match fetcher.get(&manifest_url, known_manifest.as_ref().filter(|v| !v.is_empty()), opts.max_manifest_bytes).await {
        Ok(Fetched::Body { bytes, validators }) => match parse_manifest(&bytes) {
            Ok(m) => {
                report.manifest = format!("fetched ({} files listed)", m.files.len());
                manifest = Some(m);
                manifest_state = Some(ManifestState { etag: validators.etag, last_modified: validators.last_modified });
            }
            Err(e) => report.manifest = format!("unusable ({e}); every document is fetched conditionally"),
        },
        Ok(Fetched::NotModified) => {
            report.manifest = "unchanged (304)".into();
            manifest_state = old_header.as_ref().and_then(|h| h.manifest.clone());
            manifest_unchanged = true;
        }
        Err(FetchError::NotFound) => report.manifest = "none: every document is fetched conditionally".into(),
        Err(e) => report.manifest = format!("{e}; every document is fetched conditionally"),
    }

    // Much to fetch: the bundle brings every document in one request.
    report.bundle = "not used".into();
    if let Some(m) = manifest.as_ref().filter(|_| opts.use_bundle) {
        if let Some(bundle_sha) = m.files.get(BUNDLE) {
            let holds = |path: &str, sha: &str| {
                let Ok(url) = scope.base().join(path) else { return false };
                let key = url.to_string();
                old.get(&key).is_some_and(|o| o.sha == sha) || journaled.get(&key).is_some_and(|j| j.sha == sha)
            };
            let stale = if old.is_empty() && journaled.is_empty() { m.stac.len() } else { m.stac.iter().filter(|p| !holds(p, &m.files[*p])).count() };
            if stale >= 16 && stale * 8 >= m.stac.len() {
                let taken = take_bundle(&fetcher, &scope, &placer, m, bundle_sha, &dir, opts, early_bundle.task.take(), &mut journal, &mut journaled, &mut report).await;
                report.bundle = match taken {
                    Ok(n) => format!("{n} documents taken"),
                    Err(e) => format!("{e:#}; the rest is fetched one document at a time"),
                };
            }
        }
    }

    // The crawl.
    early_bundle.cancel().await;
    tracing::debug!("crawl starts at {:.2?}", started.elapsed());
    let bar = progress_bar(opts.progress, &target.name);
    let mut new: BTreeMap<String, NewDoc> = BTreeMap::new();
    let mut visited: HashSet<String> = HashSet::with_capacity(manifest.as_ref().map_or(old.len(), |m| m.files.len() / 2).max(old.len()) + 1);
    visited.insert(root_key.clone());
    let mut queue: VecDeque<Task> = VecDeque::from([Task { url: root_key.clone(), depth: 0 }]);
    let mut inflight = FuturesUnordered::new();
    let mut truncated = false;
    let mut root_problem: Option<String> = None;
    let jobs = opts.jobs.max(1);
    bar.set_length(1);

    loop {
        while inflight.len() < jobs {
            let Some(task) = queue.pop_front() else { break };
            let key = task.url.clone();
            let listed = manifest.as_ref().and_then(|m| scope.relative_str(&task.url).and_then(|rel| m.files.get(rel)));
            // 1. Journaled by the interrupted harvest (and still current per the manifest).
            if let Some(j) = journaled.get(&key) {
                let current = match (&manifest, listed) {
                    (Some(_), Some(sha)) => *sha == j.sha,
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                if current {
                    let (line, links) = if j.not_modified {
                        let o = &old[&key];
                        (Line::Old(o.offset, o.len), o.links.clone())
                    } else {
                        (Line::Journal(j.offset, j.len), j.links.clone())
                    };
                    let item_id = if j.not_modified { old[&key].item_id.clone() } else { j.item_id.clone() };
                    if j.from_bundle {
                        report.bundled += 1;
                    } else {
                        report.resumed += 1;
                    }
                    new.insert(key.clone(), NewDoc { line, sha: j.sha.clone(), item_id, links: links.clone() });
                    expand(&mut queue, &mut visited, &links, task.depth, opts, &mut truncated, &mut report, &bar);
                    bar.inc(1);
                    continue;
                }
            }
            // 2. Unchanged per the manifest: no request at all.
            if let Some(o) = old.get(&key) {
                let current = match listed {
                    Some(sha) => *sha == o.sha,
                    None => manifest_unchanged && o.manifest_match,
                };
                if current {
                    report.reused += 1;
                    new.insert(key.clone(), NewDoc { line: Line::Old(o.offset, o.len), sha: o.sha.clone(), item_id: o.item_id.clone(), links: o.links.clone() });
                    let links = o.links.clone();
                    expand(&mut queue, &mut visited, &links, task.depth, opts, &mut truncated, &mut report, &bar);
                    bar.inc(1);
                    continue;
                }
            }
            // 3. Fetch, conditionally when we hold a copy.
            let (known, validators) = match (journaled.get(&key).filter(|j| !j.not_modified), old.get(&key)) {
                (Some(j), _) => (Some(Known::Journal), Some(j.validators.clone())),
                (None, Some(o)) => (Some(Known::Old), Some(o.validators.clone())),
                _ => (None, None),
            };
            let fetcher = fetcher.clone();
            let placer = placer.clone();
            let scope = scope.clone();
            let limit = opts.max_document_bytes;
            let listed = listed.cloned();
            inflight.push(tokio::spawn(async move {
                let url = match Url::parse(&task.url) {
                    Ok(url) => url,
                    Err(e) => return (task, known, listed, Outcome::Failed(FetchError::Refused(e.to_string()))),
                };
                let outcome = match fetcher.get(&url, validators.as_ref().filter(|v| !v.is_empty()), limit).await {
                    Ok(Fetched::NotModified) => Outcome::NotModified,
                    Ok(Fetched::Body { bytes, validators }) => {
                        let sha = hex::encode(Sha256::digest(&bytes));
                        let doc = sanitize::classify(&bytes, &url, &scope, &placer);
                        Outcome::Fresh { validators, sha, doc }
                    }
                    Err(e) => Outcome::Failed(e),
                };
                (task, known, listed, outcome)
            }));
        }
        let Some(done) = inflight.next().await else { break };
        let (task, known, listed, outcome) = done.map_err(|e| anyhow!("a harvest task failed: {e}"))?;
        bar.inc(1);
        let key = task.url.clone();
        let is_root = key == root_key;
        match outcome {
            Outcome::Fresh { validators, sha, doc: Ok(doc) } => {
                if is_root && !matches!(doc, Doc::Catalog { .. }) {
                    root_problem = Some(format!("{key} is an item, not a catalogue"));
                    continue;
                }
                report.fetched += 1;
                let manifest_match = listed.as_deref() == Some(sha.as_str());
                let base = DocEntry { url: key.clone(), etag: validators.etag, last_modified: validators.last_modified, sha256: sha.clone(), manifest_match, ..Default::default() };
                let (mut entry, item_id) = doc_entry(base, doc, &mut report);
                let (offset, len) = journal.append(&entry)?;
                let links = entry.links.take();
                // Same bytes as the mirrored copy (a server without validators): keep that line.
                let line = match old.get(&key) {
                    Some(o) if o.sha == sha && o.manifest_match == manifest_match => Line::Old(o.offset, o.len),
                    _ => Line::Journal(offset, len),
                };
                new.insert(key.clone(), NewDoc { line, sha, item_id, links: links.clone() });
                expand(&mut queue, &mut visited, &links, task.depth, opts, &mut truncated, &mut report, &bar);
            }
            Outcome::NotModified => {
                let copy = match known {
                    Some(Known::Journal) => journaled.get(&key).map(|j| (Line::Journal(j.offset, j.len), j.sha.clone(), j.item_id.clone(), j.links.clone())),
                    Some(Known::Old) => old.get(&key).map(|o| (Line::Old(o.offset, o.len), o.sha.clone(), o.item_id.clone(), o.links.clone())),
                    None => None,
                };
                let Some((line, sha, item_id, links)) = copy else {
                    report.problem(&key, "failed", "304 without a copy to confirm".into(), false);
                    continue;
                };
                if known == Some(Known::Old) {
                    journal.append(&DocEntry { url: key.clone(), sha256: sha.clone(), not_modified: true, ..Default::default() })?;
                }
                new.insert(key.clone(), NewDoc { line, sha, item_id, links: links.clone() });
                expand(&mut queue, &mut visited, &links, task.depth, opts, &mut truncated, &mut report, &bar);
            }
            Outcome::Fresh { doc: Err(why), .. } => {
                report.fetched += 1;
                if is_root && !old.contains_key(&key) {
                    root_problem = Some(format!("{key}: refused: {why}"));
                }
                let kept = keep_previous(&old, &key, &mut new, &mut queue, &mut visited, task.depth, opts, &mut truncated, &mut report, &bar);
                report.problem(&key, "refused", why, kept);
            }
            Outcome::Failed(FetchError::NotFound) => {
                if is_root {
                    root_problem = Some(format!("{key}: not found"));
                }
                report.problem(&key, "not-found", "not found (404); dropped".into(), false);
            }
            Outcome::Failed(e) => {
                if is_root && !old.contains_key(&key) {
                    root_problem = Some(format!("{key}: {e}"));
                }
                let kind = if matches!(e, FetchError::Refused(_)) { "refused" } else { "failed" };
                let kept = keep_previous(&old, &key, &mut new, &mut queue, &mut visited, task.depth, opts, &mut truncated, &mut report, &bar);
                report.problem(&key, kind, e.to_string(), kept);
            }
        }
    }
    bar.finish_and_clear();
    let crawled = started.elapsed();
    tracing::debug!("crawl ends at {crawled:.2?}");
    let stats = &fetcher.stats;
    report.requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    report.bytes = stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
    report.not_modified = stats.not_modified.load(std::sync::atomic::Ordering::Relaxed);
    report.retries = stats.retries.load(std::sync::atomic::Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    let report_path = dir.join(mirror::REPORT_FILE);
    report.path = Some(report_path.display().to_string());

    let failed = if let Some(why) = root_problem {
        Some(format!("the partner's root catalogue could not be read ({why})"))
    } else if truncated {
        Some(format!("more than {} documents: the crawl was stopped", opts.max_documents))
    } else {
        None
    };
    if let Some(why) = failed {
        // Nothing changes: the last complete harvest stays as it is; the journal is kept for a resume.
        report.outcome = "failed".into();
        report.problem(&root_key, "failed", why, old_header.is_some());
        mirror::write_atomic(&report_path, &serde_json::to_vec_pretty(&report)?)?;
        return Ok(report);
    }

    // One item per id: the first URL (in sorted order) wins.
    let mut first_url: HashMap<String, String> = HashMap::new();
    let mut duplicates = Vec::new();
    for (url, doc) in &new {
        if let Some(id) = &doc.item_id {
            match first_url.get(id) {
                Some(first) => duplicates.push((url.clone(), format!("item id {id} is also at {first}; dropped"))),
                None => {
                    first_url.insert(id.clone(), url.clone());
                }
            }
        }
    }
    for (url, why) in duplicates {
        new.remove(&url);
        report.problem(&url, "duplicate", why, false);
    }

    // Counts and whether anything changed.
    let old_items: HashMap<&str, &str> = old.values().filter_map(|o| Some((o.item_id.as_deref()?, o.sha.as_str()))).collect();
    let new_items: HashMap<&str, &str> = new.values().filter_map(|d| Some((d.item_id.as_deref()?, d.sha.as_str()))).collect();
    report.items = new_items.len();
    report.catalogs = new.values().filter(|d| d.links.is_some()).count();
    report.items_added = new_items.keys().filter(|id| !old_items.contains_key(*id)).count();
    report.items_removed = old_items.keys().filter(|id| !new_items.contains_key(*id)).count();
    report.items_changed = new_items.iter().filter(|(id, sha)| old_items.get(*id).is_some_and(|s| s != *sha)).count();
    let header = MirrorHeader { fedstac_mirror: 1, partner: target.name.clone(), url: root_key.clone(), manifest: manifest_state };
    let same_docs = new.len() == old.len() && new.iter().all(|(url, d)| matches!(d.line, Line::Old(..)) && old.contains_key(url));
    let changed = old_header.as_ref() != Some(&header) || !same_docs;

    journal.flush()?;
    tracing::debug!("mirror starts at {:.2?}", started.elapsed());
    if changed {
        let mut journal_file = File::open(journal.path()).with_context(|| format!("reading {}", journal.path().display()))?;
        let mut writer = MirrorWriter::create(&dir, &header)?;
        // Lines that follow each other in the old mirror or the journal are copied as one run.
        let mut run: Option<(bool, u64, u64)> = None; // (from the journal, start, end)
        let mut copy_run = |writer: &mut MirrorWriter, run: Option<(bool, u64, u64)>| -> Result<()> {
            match run {
                Some((true, start, end)) => writer.copy(&mut journal_file, start, end - start),
                Some((false, start, end)) => writer.copy(old_file.as_mut().context("old mirror")?, start, end - start),
                None => Ok(()),
            }
        };
        for doc in new.values() {
            let (journal_line, offset, len) = match doc.line {
                Line::Old(offset, len) => (false, offset, len as u64),
                Line::Journal(offset, len) => (true, offset, len as u64),
            };
            run = match run {
                Some((j, start, end)) if j == journal_line && end == offset => Some((j, start, offset + len + 1)),
                other => {
                    copy_run(&mut writer, other)?;
                    Some((journal_line, offset, offset + len + 1))
                }
            };
        }
        copy_run(&mut writer, run)?;
        writer.commit(&mirror_path)?;
        report.outcome = "updated".into();
        tracing::debug!("harvest {}: crawl {crawled:.2?}, mirror written in {:.2?}", target.name, started.elapsed() - crawled);
    } else {
        report.outcome = "unchanged".into();
    }
    drop(journal);
    let _ = std::fs::remove_file(&journal_path);
    report.seconds = started.elapsed().as_secs_f64();
    mirror::write_atomic(&report_path, &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// Fills a mirror entry from a sanitized document; its notes go to the report.
fn doc_entry(entry: DocEntry, doc: Doc, report: &mut HarvestReport) -> (DocEntry, Option<String>) {
    let (entry, item_id, notes) = entry_of(entry, doc);
    for n in notes {
        report.note(&entry.url, n);
    }
    (entry, item_id)
}

/// A mirror entry from a sanitized document: the entry, the item's id, its notes.
fn entry_of(mut entry: DocEntry, doc: Doc) -> (DocEntry, Option<String>, Vec<String>) {
    match doc {
        Doc::Catalog { links, notes } => {
            entry.links = Some(links);
            (entry, None, notes)
        }
        Doc::Item { item, id, notes } => {
            entry.item = Some(item);
            (entry, Some(id), notes)
        }
    }
}

/// A bundle record, sanitized and serialized as its journal line.
struct TakenRecord {
    url: String,
    sha: String,
    line: Vec<u8>,
    links: Option<Vec<(String, String)>>,
    item_id: Option<String>,
    notes: Vec<String>,
}

/// Downloads the partner's bundle and journals every record that the
/// manifest lists with the same digest and that sanitizes, as if it had been
/// fetched; the crawl then finds them current. Returns how many were taken
/// (those journaled before an error stay taken).
///
/// A pipeline, so that every core works: one thread inflates and splits the
/// bundle (checking each record's digest), the others sanitize and serialize
/// batches of records, and this thread appends their lines to the journal in
/// bundle order.
#[allow(clippy::too_many_arguments)]
async fn take_bundle(
    fetcher: &Fetcher,
    scope: &Scope,
    placer: &Placer,
    manifest: &PartnerManifest,
    bundle_sha: &str,
    dir: &Path,
    opts: &HarvestOptions,
    early: Option<tokio::task::JoinHandle<Result<(String, u64), FetchError>>>,
    journal: &mut Journal,
    journaled: &mut HashMap<String, JournalDoc>,
    report: &mut HarvestReport,
) -> Result<usize> {
    let url = scope.base().join(BUNDLE)?;
    tracing::debug!("bundle: {} of {} STAC documents to take", manifest.stac.len(), manifest.files.len());
    let download = dir.join(BUNDLE_DOWNLOAD);
    let started = Instant::now();
    let downloaded = match early {
        Some(task) => task.await.unwrap_or_else(|e| Err(FetchError::Transient(format!("the download stopped: {e}")))),
        None => fetcher.download(&url, opts.max_bundle_bytes, &download).await,
    };
    let (sha, size) = downloaded.map_err(|e| {
        let _ = std::fs::remove_file(&download);
        anyhow!("{url}: {e}")
    })?;
    tracing::debug!("bundle: {size} bytes downloaded in {:.2?}", started.elapsed());
    let mut taken_docs: Vec<(String, JournalDoc)> = Vec::new();
    let result = (|| -> Result<()> {
        if sha != bundle_sha {
            bail!("{url}: its SHA-256 {sha} is not the manifest's {bundle_sha} (rebuilt meanwhile?)");
        }
        let file = File::open(&download).with_context(|| format!("reading {}", download.display()))?;
        let resumed: &HashMap<String, JournalDoc> = journaled;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
        let (batch_tx, batch_rx) = std::sync::mpsc::sync_channel::<(usize, Vec<bundle::Record>)>(workers * 2);
        let batch_rx = std::sync::Mutex::new(batch_rx);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<(usize, Vec<TakenRecord>)>(workers * 2);
        std::thread::scope(|s| {
            let max_document_bytes = opts.max_document_bytes;
            let reader = s.spawn(move || -> Result<()> {
                let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
                let mut records = bundle::BundleReader::new(std::io::BufReader::with_capacity(1 << 20, gz), max_document_bytes);
                for seq in 0.. {
                    let mut batch = Vec::with_capacity(BUNDLE_BATCH);
                    let mut failed = None;
                    for record in records.by_ref().take(BUNDLE_BATCH) {
                        match record {
                            Ok(r) => batch.push(r),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    // Records before a bad one are still taken.
                    let last = batch.len() < BUNDLE_BATCH;
                    if !batch.is_empty() && batch_tx.send((seq, batch)).is_err() {
                        return Ok(()); // the writer stopped; it reports why
                    }
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    if last {
                        break;
                    }
                }
                Ok(())
            });
            for _ in 0..workers {
                let (batch_rx, done_tx) = (&batch_rx, done_tx.clone());
                s.spawn(move || loop {
                    let next = batch_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, batch))) = next else { return };
                    let taken = batch.into_iter().filter_map(|record| take_record(record, manifest, resumed, scope, placer)).collect();
                    if done_tx.send((seq, taken)).is_err() {
                        return;
                    }
                });
            }
            drop(done_tx);
            // Batches arrive in any order; lines are journaled in bundle order.
            let mut waiting: BTreeMap<usize, Vec<TakenRecord>> = BTreeMap::new();
            let mut next = 0;
            for (seq, taken) in done_rx.iter() {
                waiting.insert(seq, taken);
                while let Some(batch) = waiting.remove(&next) {
                    next += 1;
                    for t in batch {
                        for n in t.notes {
                            report.note(&t.url, n);
                        }
                        let (offset, len) = journal.append_line(&t.line)?;
                        taken_docs.push((t.url, JournalDoc { offset, len, sha: t.sha, validators: Validators::default(), not_modified: false, links: t.links, item_id: t.item_id, from_bundle: true }));
                    }
                }
            }
            reader.join().map_err(|_| anyhow!("the bundle reader panicked"))?.with_context(|| format!("{url}"))
        })
    })();
    let taken = taken_docs.len();
    journaled.extend(taken_docs);
    let _ = std::fs::remove_file(&download);
    tracing::debug!("bundle: {taken} documents taken in {:.2?}", started.elapsed());
    result.map(|()| taken).map_err(|e| anyhow!("{e:#} ({taken} documents taken before)"))
}

/// Sanitizes one bundle record into its journal line; None when the manifest
/// does not list it with this digest, it is already journaled, or it is
/// refused (a refused document is left to the crawl, which fetches and
/// reports it).
fn take_record(record: bundle::Record, manifest: &PartnerManifest, journaled: &HashMap<String, JournalDoc>, scope: &Scope, placer: &Placer) -> Option<TakenRecord> {
    if manifest.files.get(&record.path) != Some(&record.sha256) || crate::output::safe_relative(&record.path).is_err() {
        return None;
    }
    let doc_url = scope.base().join(&record.path).ok()?;
    if journaled.get(doc_url.as_str()).is_some_and(|j| j.sha == record.sha256) {
        return None;
    }
    let doc = sanitize::classify(&record.bytes, &doc_url, scope, placer).ok()?;
    let url = doc_url.to_string();
    let base = DocEntry { url: url.clone(), sha256: record.sha256.clone(), manifest_match: true, ..Default::default() };
    let (mut entry, item_id, notes) = entry_of(base, doc);
    let line = serde_json::to_vec(&entry).ok()?;
    let links = entry.links.take();
    Some(TakenRecord { url, sha: record.sha256, line, links, item_id, notes })
}

const BUNDLE_BATCH: usize = 256;

/// Where the bundle is downloaded to (in the partner's cache directory).
const BUNDLE_DOWNLOAD: &str = "bundle.download";

/// A bundle download started before the manifest said whether it is needed.
struct EarlyBundle {
    task: Option<tokio::task::JoinHandle<Result<(String, u64), FetchError>>>,
    dest: std::path::PathBuf,
}

impl EarlyBundle {
    /// Stops a download that was not taken and removes what it wrote.
    async fn cancel(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
            let _ = std::fs::remove_file(&self.dest);
        }
    }
}

/// Queues the links of a catalogue (each URL once, within depth and count limits).
#[allow(clippy::too_many_arguments)]
fn expand(queue: &mut VecDeque<Task>, visited: &mut HashSet<String>, links: &Option<Vec<(String, String)>>, depth: usize, opts: &HarvestOptions, truncated: &mut bool, report: &mut HarvestReport, bar: &ProgressBar) {
    for (_, href) in links.iter().flatten() {
        if visited.contains(href) {
            continue;
        }
        if visited.len() >= opts.max_documents {
            *truncated = true;
            return;
        }
        if depth + 1 > opts.max_depth {
            report.problem(href, "skipped", format!("deeper than {} catalogue levels", opts.max_depth), false);
            continue;
        }
        visited.insert(href.clone());
        queue.push_back(Task { url: href.clone(), depth: depth + 1 });
        bar.inc_length(1);
    }
}

/// Keeps the last good copy of a document that failed; true when there was one.
#[allow(clippy::too_many_arguments)]
fn keep_previous(
    old: &HashMap<String, OldDoc>,
    key: &str,
    new: &mut BTreeMap<String, NewDoc>,
    queue: &mut VecDeque<Task>,
    visited: &mut HashSet<String>,
    depth: usize,
    opts: &HarvestOptions,
    truncated: &mut bool,
    report: &mut HarvestReport,
    bar: &ProgressBar,
) -> bool {
    let Some(o) = old.get(key) else { return false };
    new.insert(key.to_string(), NewDoc { line: Line::Old(o.offset, o.len), sha: o.sha.clone(), item_id: o.item_id.clone(), links: o.links.clone() });
    expand(queue, visited, &o.links, depth, opts, truncated, report, bar);
    true
}

/// The partner's manifest.
struct PartnerManifest {
    /// Site path → SHA-256 (hex).
    files: HashMap<String, String>,
    /// Paths of the STAC documents (those in the bundle).
    stac: Vec<String>,
}

fn parse_manifest(bytes: &[u8]) -> Result<PartnerManifest> {
    /// The manifest's `files`, read straight into a [`PartnerManifest`] (it lists every file of the site).
    struct Files(PartnerManifest);
    impl<'de> serde::Deserialize<'de> for Files {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Files;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map of site paths to {sha256, size, stac}")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Files, A::Error> {
                    #[derive(serde::Deserialize)]
                    struct Entry {
                        sha256: String,
                        #[serde(default)]
                        stac: bool,
                    }
                    let mut m = PartnerManifest { files: HashMap::default(), stac: Vec::new() };
                    while let Some((path, entry)) = map.next_entry::<String, Entry>()? {
                        if entry.stac {
                            m.stac.push(path.clone());
                        }
                        m.files.insert(path, entry.sha256);
                    }
                    Ok(Files(m))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        files: Files,
    }
    let m: Manifest = serde_json::from_slice(bytes).context("not a fedstac manifest")?;
    Ok(m.files.0)
}

fn lock(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    let path = dir.join("lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| anyhow!("another harvest holds {} ({e})", path.display()))
}

fn progress_bar(enabled: bool, name: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} harvest {prefix}: {pos}/{len} documents ({per_sec}) {elapsed}").expect("valid template"),
    );
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Items of a mirror, for reports and tests: id → sanitized item.
pub fn mirrored_items(cache: &Path, partner: &str) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    if let Some(r) = MirrorReader::open(&mirror::mirror_file(cache, partner))? {
        for entry in r.items() {
            let (_, _, item) = entry?;
            if let Some(id) = item.get("id").and_then(|v| v.as_str()) {
                out.insert(id.to_string(), item.clone());
            }
        }
    }
    Ok(out)
}

/// Site names of the holders an item lists (primary and alternates), for `diff`.
pub fn holders(item: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for asset in item.get("assets").and_then(|a| a.as_object()).into_iter().flat_map(|a| a.values()) {
        if let Some(n) = asset.get("alternate:name").and_then(|v| v.as_str()) {
            out.insert(n.to_string());
        }
        for (k, alt) in asset.get("alternate").and_then(|a| a.as_object()).into_iter().flatten() {
            out.insert(alt.get("alternate:name").and_then(|v| v.as_str()).unwrap_or(k).to_string());
        }
    }
    out
}
