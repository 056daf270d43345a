//! Applies writes to the served site. The site stays a plain static tree
//! written by [`SiteWriter`]: a batch of item changes re-runs the catalogue,
//! page and search-index stages over the site's items (the live ones, read
//! back, plus the batch) into a staging tree that is swapped in with one
//! `renameat2(RENAME_EXCHANGE)`. Readers see the old tree or the new one; a
//! crash (kill -9) mid-apply leaves the old tree and a stale staging tree
//! that the next apply clears. Files that are not generated here (the viewer,
//! Kerchunk sidecars) are carried over unchanged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use stac::Item;

use super::partner::{self, Effect, Effects};
use crate::catalogue::{CatalogueWriter, ItemFacts, PreparedItem};
use crate::config::SiteInfo;
use crate::html::HtmlPages;
use crate::items::DatasetItem;
use crate::merge::Placer;
use crate::output::{safe_relative, ManifestEntry, SiteWriter, BUNDLE, MANIFEST};
use crate::recipe::Recipe;
use crate::search_index::SearchIndex;
use fedstac_index::write::ItemInput;

/// One item's fate in a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// The item as it is to be written (sanitized).
    Put(Value),
    Delete,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ApplyStats {
    pub items: usize,
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub seconds: f64,
}

/// What an apply keeps of a STAC document of the site for the next one,
/// valid while the document has digest `sha`: whether it is an item, and
/// what the catalogue and search index take of it.
struct Known {
    sha: [u8; 32],
    id: String,
    feature: bool,
    /// None for a non-item, or an item that takes the slow path (no recipe for its collection).
    item: Option<(ItemFacts, ItemInput)>,
}

/// A new item rendered, waiting for its turn to be written.
struct Prepared<'r> {
    recipe: &'r Arc<Recipe>,
    href: String,
    item: PreparedItem,
    indexed: ItemInput,
}

fn digest(entry: &ManifestEntry) -> Result<[u8; 32]> {
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&entry.sha256, &mut sha).with_context(|| format!("manifest digest {:?}", entry.sha256))?;
    Ok(sha)
}

#[derive(Deserialize)]
struct Manifest {
    files: BTreeMap<String, ManifestEntry>,
}

pub struct Site {
    dir: PathBuf,
    info: SiteInfo,
    placer: Placer,
    pages: HtmlPages,
    facet_keys: Vec<String>,
    /// The last apply's STAC documents, by site path (the site is written only by this process).
    known: Mutex<HashMap<String, Arc<Known>>>,
}

impl Site {
    pub fn open(dir: &Path, info: &SiteInfo, recipes: &[String], templates: Option<&Path>) -> Result<Site> {
        let recipes = recipes.iter().map(|r| Recipe::load(r, Path::new("."), None).map(Arc::new)).collect::<Result<Vec<_>>>()?;
        let facet_keys = SearchIndex::new(info)?.facet_keys().to_vec();
        Ok(Site { dir: dir.to_path_buf(), info: info.clone(), placer: Placer::new(recipes)?, pages: HtmlPages::new(templates)?, facet_keys, known: Mutex::new(HashMap::new()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn placer(&self) -> &Placer {
        &self.placer
    }

    /// The collection an id belongs to, and the item's path in the site.
    pub fn locate(&self, id: &str) -> Result<(String, String), String> {
        let p = self.placer.place(id, None)?;
        let collection = self.placer.recipe(p.recipe).file.collection.id.clone();
        let mut path = vec![collection.clone()];
        path.extend(p.hierarchy);
        path.push(format!("{id}.json"));
        Ok((collection, path.join("/")))
    }

    /// The live item (the links the catalogue adds removed), if the site holds it.
    pub fn read_item(&self, id: &str) -> Result<Option<Value>> {
        let Ok((_, rel)) = self.locate(id) else { return Ok(None) };
        match std::fs::read(self.dir.join(&rel)) {
            Ok(bytes) => {
                let mut v: Value = serde_json::from_slice(&bytes).with_context(|| format!("reading {rel}"))?;
                strip_tree_links(&mut v);
                Ok(Some(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {rel}")),
        }
    }

    /// The live manifest's bytes (what a publisher diffs against); empty for a new site.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        std::fs::read(self.dir.join(MANIFEST)).unwrap_or_default()
    }

    fn manifest(&self) -> Result<BTreeMap<String, ManifestEntry>> {
        match std::fs::read(self.dir.join(MANIFEST)) {
            Ok(bytes) => Ok(serde_json::from_slice::<Manifest>(&bytes).context("reading the live manifest")?.files),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).context("reading the live manifest"),
        }
    }

    fn spec(&self, collection: &str) -> Option<&Arc<Recipe>> {
        self.placer.recipes().iter().find(|r| r.file.collection.id == collection)
    }

    /// Rewrites the site with `changes` applied to its items.
    pub fn apply(&self, changes: &BTreeMap<String, Change>) -> Result<ApplyStats> {
        let live = self.manifest()?;
        self.regenerate(&Source { dir: &self.dir, files: &live, uploaded: None, live: &live }, changes)
    }

    /// Writes the site from `source`'s items with `changes` applied, regenerating
    /// catalogues, pages of changed items and the search index; one atomic swap.
    ///
    /// Unchanged items keep their JSON and page: both are hard-linked by the
    /// digests the manifest lists, unread (the bundle's thread reads the
    /// JSON), and what the catalogue and index take of an item is kept
    /// between applies, keyed by its path and digest; an item not kept yet
    /// is parsed once. New items are rendered on every core.
    fn regenerate(&self, source: &Source, changes: &BTreeMap<String, Change>) -> Result<ApplyStats> {
        let started = std::time::Instant::now();
        let manifest = source.files;
        let mut writer = SiteWriter::begin_concurrent(&self.dir)?;
        let mut catalogue = CatalogueWriter::new(&self.info, &self.pages);
        let mut search = SearchIndex::new(&self.info)?;
        // Held for the whole apply; replaced only by a successful one.
        let mut kept_docs = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let known = &*kept_docs;
        let mut next: HashMap<String, Arc<Known>> = HashMap::with_capacity(known.len() + changes.len());
        let add = |writer: &mut SiteWriter, catalogue: &mut CatalogueWriter, search: &mut SearchIndex, collection: &str, hierarchy: Vec<String>, value: Value| -> Result<()> {
            let recipe = self.spec(collection).ok_or_else(|| anyhow!("no recipe for collection {collection}"))?;
            let item: Item = serde_json::from_value(value).context("not a STAC item")?;
            let dataset = DatasetItem { item, hierarchy, files: Vec::new() };
            let id = dataset.item.id.clone();
            let indexed = search.input(&dataset, collection);
            if catalogue.add_item(writer, &recipe.file.collection, &recipe.file.extensions, dataset).with_context(|| format!("writing item {id}"))? {
                search.add(writer, indexed).with_context(|| format!("indexing item {id}"))?;
            }
            Ok(())
        };
        let stac_json: std::collections::HashSet<&str> = manifest.iter().filter(|(_, e)| e.stac).map(|(p, _)| p.as_str()).collect();
        let index_dir = format!("{}/", fedstac_index::DIR);
        for (rel, entry) in manifest {
            if rel == MANIFEST || rel == BUNDLE || rel.starts_with(&index_dir) {
                continue;
            }
            if !entry.stac {
                // Pages beside STAC documents are regenerated; anything else is carried over.
                if rel.strip_suffix(".html").is_some_and(|stem| stac_json.contains(format!("{stem}.json").as_str())) {
                    continue;
                }
                source.carry(&mut writer, rel, entry)?;
                continue;
            }
            // What the catalogue and index take of the item: kept from an earlier apply, or parsed now.
            let sha = digest(entry)?;
            let kept = known.get(rel).filter(|k| k.sha == sha).cloned();
            let kept = match kept {
                Some(k) => k,
                None => {
                    // A catalogue or collection (regenerated), or an item this batch replaces: not read.
                    let stem = rel.rsplit('/').next().and_then(|f| f.strip_suffix(".json")).unwrap_or_default();
                    if matches!(stem, "catalog" | "collection") || changes.contains_key(stem) {
                        continue;
                    }
                    Arc::new(self.understand(source, rel, sha)?)
                }
            };
            let Known { id, item, feature, .. } = &*kept;
            if !feature {
                next.insert(rel.clone(), kept.clone());
                continue; // catalogues and collections are regenerated
            }
            if changes.contains_key(id) {
                continue;
            }
            let parts: Vec<&str> = rel.split('/').collect();
            if parts.len() < 2 {
                bail!("item {rel} is not inside a collection");
            }
            let hierarchy: Vec<String> = parts[1..parts.len() - 1].iter().map(|s| s.to_string()).collect();
            // Unchanged: its JSON and page are kept as they are (rendering is most of an apply's cost).
            let html_rel = format!("{}.html", rel.trim_end_matches(".json"));
            let recipe = self.spec(parts[0]);
            if let (Some(html_entry), Some(recipe), Some((facts, indexed))) = (manifest.get(&html_rel), recipe, item) {
                if catalogue.file_written_item(&writer, &recipe.file.collection, &recipe.file.extensions, facts, hierarchy)? {
                    source.carry(&mut writer, rel, entry)?;
                    source.carry(&mut writer, &html_rel, html_entry)?;
                    search.add_ref(&mut writer, indexed).with_context(|| format!("indexing item {id}"))?;
                }
                next.insert(rel.clone(), kept.clone());
                continue;
            }
            let mut value: Value = serde_json::from_slice(&source.read(rel)?).with_context(|| format!("reading {rel}"))?;
            strip_tree_links(&mut value);
            add(&mut writer, &mut catalogue, &mut search, parts[0], hierarchy, value)?;
        }
        let carried = started.elapsed().as_secs_f64();
        // New and changed items: rendered on every core, written in order.
        let puts: Vec<(&String, &Value)> = changes.iter().filter_map(|(id, c)| if let Change::Put(v) = c { Some((id, v)) } else { None }).collect();
        let preparer = catalogue.preparer();
        let keys = search.facet_keys().to_vec();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let prepare = |&(id, value): &(&String, &Value)| -> Result<Prepared> {
            let p = self.placer.place(id, None).map_err(|e| anyhow!(e))?;
            let collection = self.placer.recipe(p.recipe).file.collection.id.clone();
            let recipe = self.spec(&collection).ok_or_else(|| anyhow!("no recipe for collection {collection}"))?;
            let item = Item::deserialize(value).context("not a STAC item")?;
            let href = std::iter::once(collection.as_str()).chain(p.hierarchy.iter().map(String::as_str)).chain(std::iter::once(format!("{}.json", item.id).as_str())).collect::<Vec<_>>().join("/");
            let indexed = crate::search_index::item_input(&item, &href, &keys);
            let dataset = DatasetItem { item, hierarchy: p.hierarchy, files: Vec::new() };
            let item = preparer.prepare(&recipe.file.collection, dataset).with_context(|| format!("writing item {id}"))?;
            Ok(Prepared { recipe, href, item, indexed })
        };
        // Written in the batch's order as they come, while the next ones render.
        in_order(&puts, threads, 32, prepare, |r| {
            let Prepared { recipe, href, item, indexed } = r?;
            let id = item.facts.id.clone();
            let known = Known { sha: item.json_sha(), id: id.clone(), feature: true, item: Some((item.facts.clone(), indexed.clone())) };
            if catalogue.add_prepared(&mut writer, &recipe.file.collection, &recipe.file.extensions, item)? {
                search.add(&mut writer, indexed).with_context(|| format!("indexing item {id}"))?;
                next.insert(href, Arc::new(known));
            }
            Ok(())
        })?;
        let rendered = started.elapsed().as_secs_f64();
        // The index's files are encoded on their own thread meanwhile, and written after the pages (their place in the manifest).
        let index = search.finish_in_background()?;
        let stats = catalogue.finish(&mut writer)?;
        let pages = started.elapsed().as_secs_f64();
        index.write(&mut writer)?;
        let indexed = started.elapsed().as_secs_f64();
        let w = writer.commit()?;
        let committed = started.elapsed().as_secs_f64();
        // Each phase's own seconds (the search index's per-item part is in the first two).
        tracing::debug!(
            "apply of {} change(s): kept items {carried:.2} s, rendering new items {:.2} s, catalogue pages {:.2} s, search index {:.2} s, commit {:.2} s ({} files written)",
            changes.len(),
            rendered - carried,
            pages - rendered,
            indexed - pages,
            committed - indexed,
            w.written
        );
        // The last apply's map is freed off this thread (100k entries take a while).
        let old = std::mem::replace(&mut *kept_docs, next);
        std::thread::spawn(move || drop(old));
        Ok(ApplyStats { items: stats.items, written: w.written, unchanged: w.unchanged, removed: w.removed, seconds: started.elapsed().as_secs_f64() })
    }

    /// Reads a STAC document of the site once: what the catalogue and index
    /// take of it if it is an item; `None` for one not to keep (a catalogue).
    fn understand(&self, source: &Source, rel: &str, sha: [u8; 32]) -> Result<Known> {
        let bytes = source.read(rel)?;
        let item: Item = match serde_json::from_slice(&bytes) {
            Ok(item) => item,
            Err(e) => {
                // Not an item (catalogues and collections are regenerated), or a broken one.
                let value: Value = serde_json::from_slice(&bytes).with_context(|| format!("reading {rel}"))?;
                if value.get("type").and_then(Value::as_str) != Some("Feature") {
                    return Ok(Known { sha, id: String::new(), feature: false, item: None });
                }
                return Err(e).with_context(|| format!("reading {rel}"));
            }
        };
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        let collection = rel.split('/').next().unwrap_or_default();
        // Outside a collection, or one without a recipe: the slow path says what is wrong.
        let facts = self.spec(collection).filter(|_| !dir.is_empty()).map(|r| ItemFacts::of(&item, &r.file.collection));
        let item_facts = facts.map(|f| (f, crate::search_index::item_input(&item, &format!("{dir}/{}.json", item.id), &self.facet_keys)));
        Ok(Known { sha, id: item.id, feature: true, item: item_facts })
    }

    /// Readies a long-running receiver's first apply at its start, as later
    /// ones find things: every item of the site read once (what the catalogue
    /// and index take of it, on every core), and a spare copy of the tree
    /// linked for the first apply to write in place.
    pub fn warm_up(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let live = self.manifest()?;
        let todo: Vec<(&String, [u8; 32])> = live
            .iter()
            .filter(|(rel, e)| e.stac && !matches!(rel.rsplit('/').next(), Some("catalog.json" | "collection.json")))
            .map(|(rel, e)| digest(e).map(|sha| (rel, sha)))
            .collect::<Result<_>>()?;
        let source = Source { dir: &self.dir, files: &live, uploaded: None, live: &live };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        let per = todo.len().div_ceil(threads).max(1);
        let read: Vec<(String, Known)> = std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(per)
                .map(|chunk| scope.spawn(|| chunk.iter().filter_map(|(rel, sha)| self.understand(&source, rel, *sha).ok().map(|k| (rel.to_string(), k))).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let n = read.len();
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = read.into_iter().map(|(rel, k)| (rel, Arc::new(k))).collect();
        drop(live);
        crate::output::prepare_spare(&self.dir)?;
        tracing::info!("ready: {n} documents read, spare tree linked, in {:.2} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Replaces the site with an uploaded one: `files` is the whole new tree
    /// (path → digest); bytes come from `uploaded` (staged, digests already
    /// checked) or, for files the publisher did not send, from the live tree,
    /// which must hold exactly that digest. The partners' writes kept by the
    /// receiver (`partners`) are laid on top in the same atomic apply; with
    /// none, the publisher's files are taken byte for byte.
    pub fn apply_upload(&self, files: &BTreeMap<String, ManifestEntry>, uploaded: &HashMap<String, PathBuf>, partners: &Effects) -> Result<UploadStats> {
        let live = self.manifest()?;
        let source = Source { dir: &self.dir, files, uploaded: Some(uploaded), live: &live };
        if partners.is_empty() {
            let mut writer = SiteWriter::begin(&self.dir)?;
            for (rel, entry) in files {
                let bytes = source.read(rel)?;
                if entry.stac {
                    writer.put_document(rel, &bytes)?;
                } else {
                    writer.put(rel, &bytes)?;
                }
            }
            let w = writer.commit()?;
            return Ok(UploadStats { written: w.written, unchanged: w.unchanged, removed: w.removed, ..Default::default() });
        }
        let mut changes = BTreeMap::new();
        let mut stats = UploadStats::default();
        for (id, by_client) in partners {
            let Ok((_, rel)) = self.locate(id) else { continue };
            let in_tree = || -> Result<Option<Value>> {
                if !files.contains_key(&rel) {
                    return Ok(None);
                }
                let mut v: Value = serde_json::from_slice(&source.read(&rel)?).with_context(|| format!("reading uploaded {rel}"))?;
                strip_tree_links(&mut v);
                Ok(Some(v))
            };
            // One partner's own dataset, or its deletion, wins over the tree; replicas of several partners compose.
            let mut item: Option<Value> = None;
            let mut touched = false;
            for (client, effect) in by_client {
                match effect {
                    Effect::Own { item: own } => {
                        item = Some(own.clone());
                        touched = true;
                    }
                    Effect::Deleted => {
                        if files.contains_key(&rel) {
                            changes.insert(id.clone(), Change::Delete);
                        }
                        touched = false;
                        item = None;
                        break;
                    }
                    Effect::Replicas { node, assets } => {
                        if item.is_none() {
                            item = in_tree()?;
                        }
                        match item.as_mut() {
                            Some(v) => {
                                for key in partner::set_replicas(v, node, assets) {
                                    stats.pending.push(format!("{id}#{key} ({client})"));
                                }
                                touched = true;
                            }
                            None => stats.pending.push(format!("{id} ({client})")),
                        }
                    }
                }
            }
            if let (true, Some(v)) = (touched, item) {
                changes.insert(id.clone(), Change::Put(v));
            }
        }
        stats.reapplied = changes.len();
        let applied = self.regenerate(&source, &changes)?;
        stats.written = applied.written;
        stats.unchanged = applied.unchanged;
        stats.removed = applied.removed;
        Ok(stats)
    }
}

/// Runs `work` over `inputs` on `threads` threads, `chunk` inputs at a time,
/// and hands the results to `sink` on this thread in input order, each as
/// soon as it and all before it are ready: the sink's writes overlap the work
/// on what follows (rendering on every core, writing meanwhile). Stops at the
/// sink's first error; a panic in `work` is an error.
fn in_order<I: Sync, O: Send>(inputs: &[I], threads: usize, chunk: usize, work: impl Fn(&I) -> O + Sync, mut sink: impl FnMut(O) -> Result<()>) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if threads <= 1 || inputs.len() <= chunk {
        return inputs.iter().try_for_each(|i| sink(work(i)));
    }
    let chunks = inputs.len().div_ceil(chunk);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Workers take chunks in order, so few outputs wait out of turn; at
        // worst (one chunk slow) the batch's outputs, whose inputs are in memory anyway.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<O>)>(2 * threads);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (tx, next, work) = (tx.clone(), &next, &work);
                scope.spawn(move || loop {
                    // Chunks are taken in order, so few wait out of turn below.
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    if c >= chunks {
                        break;
                    }
                    let out: Vec<O> = inputs[c * chunk..((c + 1) * chunk).min(inputs.len())].iter().map(work).collect();
                    if tx.send((c, out)).is_err() {
                        break; // the sink failed
                    }
                })
            })
            .collect();
        drop(tx);
        // Owns the receiver: dropped on the sink's error, which stops the workers.
        let result = (move || -> Result<()> {
            let mut waiting: BTreeMap<usize, Vec<O>> = BTreeMap::new();
            let mut want = 0;
            for (c, out) in rx {
                waiting.insert(c, out);
                while let Some(out) = waiting.remove(&want) {
                    out.into_iter().try_for_each(&mut sink)?;
                    want += 1;
                }
            }
            if want < chunks {
                bail!("an item's rendering panicked");
            }
            Ok(())
        })();
        let panicked = handles.into_iter().map(|h| h.join().is_err()).fold(false, |a, b| a | b);
        match result {
            Ok(()) if panicked => bail!("an item's rendering panicked"),
            r => r,
        }
    })
}

/// What an upload did: files, and the partner writes laid on top (`pending`:
/// replicas whose item or asset the uploaded tree lacks; they stay kept).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UploadStats {
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub reapplied: usize,
    pub pending: Vec<String>,
}

/// Where a regeneration reads the site's files: the live tree, or an upload
/// (staged files, else the live tree's, which must match the signed digest).
struct Source<'a> {
    dir: &'a Path,
    files: &'a BTreeMap<String, ManifestEntry>,
    uploaded: Option<&'a HashMap<String, PathBuf>>,
    live: &'a BTreeMap<String, ManifestEntry>,
}

impl Source<'_> {
    /// Keeps a file as the source has it: hard-linked from the live tree by
    /// its digest when the live tree holds it, else read and written.
    fn carry(&self, writer: &mut SiteWriter, rel: &str, entry: &ManifestEntry) -> Result<()> {
        let staged = self.uploaded.is_some_and(|u| u.contains_key(rel));
        if !staged && self.live.get(rel).is_some_and(|l| l.sha256 == entry.sha256 && l.size == entry.size) {
            return writer.carry(rel, digest(entry)?, entry.size, entry.stac);
        }
        let bytes = self.read(rel)?;
        if entry.stac {
            writer.put_document(rel, &bytes)
        } else {
            writer.put(rel, &bytes).map(|_| ())
        }
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        if let Some(staged) = self.uploaded.and_then(|u| u.get(rel)) {
            return std::fs::read(staged).with_context(|| format!("reading staged {rel}"));
        }
        if self.uploaded.is_some() {
            let want = self.files.get(rel).map(|e| &e.sha256);
            if want.is_none() || self.live.get(rel).map(|l| &l.sha256) != want {
                bail!("{rel} was not uploaded and the site does not hold it with that digest");
            }
        }
        std::fs::read(self.dir.join(safe_relative(rel)?)).with_context(|| format!("reading {rel}"))
    }
}

/// Removes the links the catalogue adds to every item (root, parent,
/// collection, self, its HTML page): they are made again where it is filed.
pub fn strip_tree_links(item: &mut Value) {
    if let Some(links) = item.get_mut("links").and_then(Value::as_array_mut) {
        links.retain(|l| {
            let rel = l.get("rel").and_then(Value::as_str).unwrap_or("");
            let html = rel == "alternate" && l.get("type").and_then(Value::as_str) == Some("text/html");
            !(matches!(rel, "root" | "parent" | "collection" | "self") || html)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::in_order;

    #[test]
    fn in_order_hands_results_over_in_input_order_and_stops_at_the_first_error() {
        let inputs: Vec<u64> = (0..1000).collect();
        // Uneven work, so chunks finish out of turn.
        let work = |&i: &u64| {
            if i % 97 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            i * 3
        };
        for threads in [1, 2, 4] {
            let mut got = Vec::new();
            in_order(&inputs, threads, 7, work, |o| {
                got.push(o);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, inputs.iter().map(|i| i * 3).collect::<Vec<_>>(), "{threads} threads");
            let mut seen = 0;
            let err = in_order(&inputs, threads, 7, work, |o| {
                seen += 1;
                if o == 300 * 3 {
                    anyhow::bail!("stop at 300");
                }
                Ok(())
            })
            .unwrap_err();
            assert_eq!((format!("{err}"), seen), ("stop at 300".to_string(), 301), "{threads} threads");
        }
        let err = in_order(&inputs, 2, 7, |&i: &u64| if i == 500 { panic!("boom") } else { i }, |_| Ok(())).unwrap_err();
        assert!(format!("{err}").contains("panicked"));
    }
}
