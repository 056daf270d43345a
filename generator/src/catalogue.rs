//! Stage 5: lay the items out as a static, self-contained STAC 1.1 tree with
//! relative links (it works under any URL prefix and when moved):
//!
//! ```text
//! catalog.json                          root catalogue (the site)
//! <collection>/collection.json          one per recipe collection (CMIP6, CORDEX)
//! <collection>/<level>/…/catalog.json   sub-catalogues from the recipe's hierarchy
//! <collection>/<level>/…/<id>.json      items
//! ```
//! Every JSON document has an HTML page beside it (`.html`), linked both ways.
//! Items are written as they arrive; the short summary of each that the
//! catalogue pages list goes to an external sort ([`Spill`]) and comes back,
//! node by node, when the pages are written at the end: memory follows the
//! number of catalogue nodes, not of items.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use stac::{Bbox, Catalog, Collection, Extent, Item, Link, SpatialExtent, TemporalExtent};

use crate::config::SiteInfo;
use crate::html::{HtmlPages, ListingRows, PageKind};
use crate::items::DatasetItem;
use crate::output::SiteWriter;
use crate::recipe::CollectionSpec;
use crate::spill::{Sorted, Spill};

#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogueStats {
    pub collections: usize,
    pub catalogs: usize,
    pub items: usize,
}

/// A catalogue node: sub-catalogues by name, and how many items are filed
/// here and below (the items' rows wait in the spill).
#[derive(Default)]
struct Node {
    children: BTreeMap<String, Node>,
    count: usize,
}

/// What a collection page and document need, accumulated item by item.
struct CollectionState {
    spec: CollectionSpec,
    extensions: Vec<String>,
    tree: Node,
    bbox: Option<[f64; 4]>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    /// summary property → value label → (value, count); `None` once it has
    /// more than MAX_SUMMARY_VALUES values.
    summaries: BTreeMap<String, Option<BTreeMap<String, (Value, usize)>>>,
}

/// A facet with more distinct values than this (member ids in a huge archive)
/// is left out of the collection summaries and page: a list that long helps
/// no one there, and the search index is where such facets are browsed.
const MAX_SUMMARY_VALUES: usize = 1000;

pub struct CatalogueWriter<'a> {
    pages: &'a HtmlPages,
    site: SiteInfo,
    collections: BTreeMap<String, CollectionState>,
    /// Item rows keyed by [`node_key`], 0x00 and the id: node by node in page order, by id within a node.
    rows: Spill,
    stats: CatalogueStats,
}

impl<'a> CatalogueWriter<'a> {
    pub fn new(site: &SiteInfo, pages: &'a HtmlPages) -> CatalogueWriter<'a> {
        CatalogueWriter { pages, site: site.clone(), collections: BTreeMap::new(), rows: Spill::default(), stats: CatalogueStats::default() }
    }

    /// Whether this item was written already (the same dataset under two
    /// roots). Asked of the site writer's new tree (is a file at the item's
    /// path?), so nothing per item is kept here. That is a check by path, not
    /// by id: the same id placed at two paths (two recipes placing it under
    /// other collections or hierarchy levels) would be written at both.
    pub fn has_item(&self, writer: &SiteWriter, spec: &CollectionSpec, dataset: &DatasetItem) -> Result<bool> {
        writer.holds(&item_path(&spec.id, &dataset.hierarchy, &dataset.item.id))
    }

    /// Writes one item (JSON and page) and files its summary. Returns false,
    /// writing nothing, for an item written already (see [`Self::has_item`]).
    pub fn add_item(&mut self, writer: &mut SiteWriter, spec: &CollectionSpec, extensions: &[String], dataset: DatasetItem) -> Result<bool> {
        if self.has_item(writer, spec, &dataset)? {
            return Ok(false);
        }
        let prepared = self.preparer().prepare(spec, dataset)?;
        self.add_prepared(writer, spec, extensions, prepared)
    }

    /// What renders items' documents and pages; shareable between threads.
    pub fn preparer(&self) -> ItemPreparer<'a> {
        ItemPreparer { pages: self.pages, site_name: self.site.name.clone(), site_url: self.site.url.clone() }
    }

    /// Writes an item [`ItemPreparer::prepare`]d, and files its summary
    /// (false, writing nothing, for an item written already: see [`Self::has_item`]).
    pub fn add_prepared(&mut self, writer: &mut SiteWriter, spec: &CollectionSpec, extensions: &[String], item: PreparedItem) -> Result<bool> {
        let json_path = format!("{}/{}.json", item.dir, item.facts.id);
        if writer.holds(&json_path)? {
            return Ok(false);
        }
        writer.put_hashed_document(&json_path, &item.json, item.json_sha)?;
        writer.put_hashed(&format!("{}/{}.html", item.dir, item.facts.id), item.html.as_bytes(), item.html_sha)?;
        self.file_item(spec, extensions, &item.facts, item.hierarchy)?;
        Ok(true)
    }

    /// Files an item that an earlier run wrote at its place (the publish
    /// receiver: an unchanged item keeps its JSON and page bytes, which this
    /// run would render identically; the caller carries them over). Returns
    /// false, filing nothing, for an item `writer` holds already (see
    /// [`Self::has_item`]): then the caller carries nothing.
    pub fn file_written_item(&mut self, writer: &SiteWriter, spec: &CollectionSpec, extensions: &[String], facts: &ItemFacts, hierarchy: Vec<String>) -> Result<bool> {
        if writer.holds(&item_path(&spec.id, &hierarchy, &facts.id))? {
            return Ok(false);
        }
        self.file_item(spec, extensions, facts, hierarchy)?;
        Ok(true)
    }

    /// Keeps what the catalogue pages need of a written item.
    fn file_item(&mut self, spec: &CollectionSpec, extensions: &[String], facts: &ItemFacts, hierarchy: Vec<String>) -> Result<()> {
        let state = self.collections.entry(spec.id.clone()).or_insert_with(|| CollectionState {
            spec: spec.clone(),
            extensions: extensions.to_vec(),
            tree: Node::default(),
            bbox: None,
            start: None,
            end: None,
            summaries: BTreeMap::new(),
        });
        state.absorb(facts);
        let mut node = &mut state.tree;
        node.count += 1;
        for level in &hierarchy {
            node = node.children.entry(level.clone()).or_default();
            node.count += 1;
        }
        let mut key = node_key(&spec.id, &hierarchy);
        key.push(0);
        key.extend_from_slice(facts.id.as_bytes());
        self.rows.push(&key, &facts.row.encode())?;
        self.stats.items += 1;
        Ok(())
    }

    /// Writes every collection, sub-catalogue and the root catalogue.
    pub fn finish(mut self, writer: &mut SiteWriter) -> Result<CatalogueStats> {
        let mut root = Catalog::new(&self.site.name, if self.site.description.is_empty() { &self.site.title } else { &self.site.description });
        root.title = Some(self.site.title.clone());
        root.links.push(Link::root("./catalog.json").json());
        root.links.push(html_link("./catalog.html"));
        let mut root_children = Vec::new();
        // Rows come back in the order write_node visits the nodes (collections
        // by id, then depth first, children by name), each node's by item id.
        let mut rows = std::mem::take(&mut self.rows).finish()?.peekable();
        for (id, state) in std::mem::take(&mut self.collections) {
            let (collection, facets) = state.collection();
            root.links.push(Link::child(format!("./{id}/collection.json")).json().title(collection.title.clone()));
            root_children.push(json!({"title": collection.title, "href": format!("./{id}/collection.html"), "count": state.tree.count}));
            self.write_node(writer, &id, &[], &state.tree, Some((collection, facets)), &mut rows)?;
            self.stats.collections += 1;
        }
        if let Some(row) = rows.next() {
            anyhow::bail!("catalogue row {:?} belongs to no catalogue node", String::from_utf8_lossy(&row?.0));
        }
        let page = json!({"kind": "catalog", "stac": root, "children": root_children, "breadcrumbs": [], "json_href": "./catalog.json"});
        writer.put_document("catalog.json", &to_json(&root)?)?;
        writer.put("catalog.html", self.pages.render(PageKind::Catalog, &page)?.as_bytes())?;
        self.stats.catalogs += 1;
        Ok(self.stats)
    }

    /// Writes a collection (`levels` empty) or sub-catalogue, and recurses.
    fn write_node(
        &mut self,
        writer: &mut SiteWriter,
        collection_id: &str,
        levels: &[String],
        node: &Node,
        collection: Option<(Collection, Value)>,
        rows_in: &mut std::iter::Peekable<Sorted>,
    ) -> Result<()> {
        let up = "../".repeat(levels.len() + 1);
        let dir = std::iter::once(collection_id.to_string()).chain(levels.iter().cloned()).collect::<Vec<_>>().join("/");
        let mut links = vec![Link::root(format!("{up}catalog.json")).json()];
        let parent = if levels.len() == 1 { "../collection.json" } else { "../catalog.json" };
        links.push(Link::parent(parent).json());
        let mut children = Vec::new();
        for (name, child) in &node.children {
            links.push(Link::child(format!("./{name}/catalog.json")).json().title(name.clone()));
            children.push(json!({"title": name, "href": format!("./{name}/catalog.html"), "count": child.count}));
        }
        let (json_name, html_name, kind, facets, stac_value) = match collection {
            Some((mut c, facets)) => {
                links[1] = Link::parent("../catalog.json").json();
                c.links = links;
                c.links.push(html_link("./collection.html"));
                ("collection.json", "collection.html", PageKind::Collection, facets, serde_json::to_value(&c)?)
            }
            None => {
                let name = levels.last().expect("a sub-catalogue has a level");
                let mut cat = Catalog::new(name, format!("{collection_id} {}", levels.join(" / ")));
                cat.title = Some(name.clone());
                cat.links = links;
                cat.links.push(html_link("./catalog.html"));
                self.stats.catalogs += 1;
                ("catalog.json", "catalog.html", PageKind::Catalog, Value::Null, serde_json::to_value(&cat)?)
            }
        };

        // The node's items are streamed from the sort into its document (as
        // links, before the HTML link) and, through a temp file, into its page:
        // a node listing any number of items costs one row of memory.
        let mut prefix = node_key(collection_id, levels);
        prefix.push(0);
        let mut json_file = tempfile::tempfile().context("creating a temp file for a catalogue page")?;
        let listed = {
            let doc = StreamedDocument { doc: &stac_value, items: RefCell::new(ItemLinks { rows_in, prefix: &prefix, listed: ListedRows::create()? }) };
            let mut out = BufWriter::new(&mut json_file);
            serde_json::to_writer_pretty(&mut out, &doc).with_context(|| format!("writing {dir}/{json_name}"))?;
            out.write_all(b"\n")?;
            out.flush()?;
            drop(out);
            doc.items.into_inner().listed.finish()?
        };
        writer.put_document_from_file(&format!("{dir}/{json_name}"), &mut json_file)?;
        drop(json_file);
        let page = json!({
            "kind": if matches!(kind, PageKind::Collection) { "collection" } else { "catalog" },
            "stac": stac_value, "children": children, "facets": facets,
            "breadcrumbs": breadcrumbs(collection_id, levels), "json_href": format!("./{json_name}"),
        });
        let mut html_file = tempfile::tempfile().context("creating a temp file for a catalogue page")?;
        let errors = listed.errors.clone();
        let mut out = BufWriter::new(&mut html_file);
        self.pages.render_listing(kind, &page, listed, &mut out)?;
        out.flush()?;
        drop(out);
        if let Some(e) = errors.lock().expect("not poisoned").take() {
            anyhow::bail!("reading back the items of {dir}/{html_name}: {e}");
        }
        writer.put_from_file(&format!("{dir}/{html_name}"), &mut html_file)?;

        for (name, child) in &node.children {
            let mut next = levels.to_vec();
            next.push(name.clone());
            self.write_node(writer, collection_id, &next, child, None, rows_in)?;
        }
        Ok(())
    }
}

/// Renders items' documents and pages (the part of writing an item that
/// needs no writer: it runs on several threads, the writes stay in order).
#[derive(Clone)]
pub struct ItemPreparer<'a> {
    pages: &'a HtmlPages,
    site_name: String,
    site_url: Option<String>,
}

/// An item ready to write: its JSON and page with their digests, and what the catalogue files of it.
pub struct PreparedItem {
    dir: String,
    hierarchy: Vec<String>,
    json: Vec<u8>,
    json_sha: [u8; 32],
    html: String,
    html_sha: [u8; 32],
    pub facts: ItemFacts,
}

impl PreparedItem {
    /// The SHA-256 of the item's JSON as written.
    pub fn json_sha(&self) -> [u8; 32] {
        self.json_sha
    }
}

impl ItemPreparer<'_> {
    /// Links the item into its place, renders its JSON and page, and hashes both.
    pub fn prepare(&self, spec: &CollectionSpec, dataset: DatasetItem) -> Result<PreparedItem> {
        let DatasetItem { mut item, hierarchy, .. } = dataset;
        let up = "../".repeat(hierarchy.len() + 1);
        let dir = item_dir(&spec.id, &hierarchy);
        let (parent_json, parent_page) = if hierarchy.is_empty() { ("collection.json", "collection.html") } else { ("catalog.json", "catalog.html") };
        item.links.splice(
            0..0,
            [
                Link::root(format!("{up}catalog.json")).json(),
                Link::parent(format!("./{parent_json}")).json(),
                Link::collection(format!("{}collection.json", "../".repeat(hierarchy.len()))).json(),
                html_link(format!("./{}.html", item.id)),
            ],
        );
        let mut crumbs = breadcrumbs(&spec.id, &hierarchy);
        crumbs.push(json!({"title": hierarchy.last().cloned().unwrap_or_else(|| spec.id.clone()), "href": format!("./{parent_page}")}));
        // `site`: the item page says when a dataset is held elsewhere (federation).
        // Kerchunk: the sidecar's URL and how to open it (sidecars.rs).
        let kerchunk = crate::sidecars::page_snippet(&serde_json::to_value(&item.assets)?, &format!("{dir}/{}.json", item.id), self.site_url.as_deref());
        let page = json!({"kind": "item", "stac": item, "breadcrumbs": crumbs, "json_href": format!("./{}.json", item.id), "site": self.site_name, "kerchunk": kerchunk, "file_count": data_files(&item)});
        // Render both before writing either, so a failure leaves no orphan behind.
        let html = self.pages.render(PageKind::Item, &page)?;
        let json = to_json(&item)?;
        let json_sha = Sha256::digest(&json).into();
        let html_sha = Sha256::digest(html.as_bytes()).into();
        Ok(PreparedItem { dir, hierarchy, json, json_sha, html, html_sha, facts: ItemFacts::of(&item, spec) })
    }
}

/// What the catalogue keeps of an item: its row in a listing page, and what
/// its collection's extent and summaries take from it (for `spec`'s collection).
#[derive(Debug, Clone)]
pub struct ItemFacts {
    pub id: String,
    bbox: Option<[f64; 4]>,
    time_invariant: bool,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    /// Per summary of the collection spec (in its order): the item's values, if it has the property.
    summaries: Vec<Option<Vec<Value>>>,
    row: ItemRow,
}

impl ItemFacts {
    pub fn of(item: &Item, spec: &CollectionSpec) -> ItemFacts {
        let p = &item.properties;
        ItemFacts {
            id: item.id.clone(),
            bbox: match item.bbox {
                Some(Bbox::TwoDimensional(b)) => Some(b),
                _ => None,
            },
            time_invariant: p.additional_fields.get("fedstac:time_invariant") == Some(&Value::Bool(true)),
            start: p.start_datetime,
            end: p.end_datetime,
            summaries: spec
                .summaries
                .iter()
                .map(|key| match p.additional_fields.get(key) {
                    Some(Value::Array(a)) => Some(a.clone()),
                    Some(v) => Some(vec![v.clone()]),
                    None => None,
                })
                .collect(),
            row: ItemRow::of(item),
        }
    }
}

/// The directory of an item in the site: `<collection>/<hierarchy...>`.
fn item_dir(collection: &str, hierarchy: &[String]) -> String {
    std::iter::once(collection).chain(hierarchy.iter().map(String::as_str)).collect::<Vec<_>>().join("/")
}

/// Where an item's JSON goes in the site: `<collection>/<hierarchy...>/<id>.json`.
fn item_path(collection: &str, hierarchy: &[String], id: &str) -> String {
    format!("{}/{id}.json", item_dir(collection, hierarchy))
}

impl CollectionState {
    fn absorb(&mut self, item: &ItemFacts) {
        if let Some(b) = item.bbox {
            // An antimeridian-crossing box widens the collection to all longitudes.
            let (w, e) = if b[0] > b[2] { (-180.0, 180.0) } else { (b[0], b[2]) };
            self.bbox = Some(match self.bbox {
                None => [w, b[1], e, b[3]],
                Some(a) => [a[0].min(w), a[1].min(b[1]), a[2].max(e), a[3].max(b[3])],
            });
        }
        // Time-invariant datasets (fx) span all time by convention; they say nothing about the collection's period.
        if !item.time_invariant {
            if let Some(s) = item.start {
                self.start = Some(self.start.map_or(s, |a| a.min(s)));
            }
            if let Some(e) = item.end {
                self.end = Some(self.end.map_or(e, |a| a.max(e)));
            }
        }
        for (key, values) in self.spec.summaries.iter().zip(&item.summaries) {
            let Some(values) = values else { continue };
            let slot = self.summaries.entry(key.clone()).or_insert_with(|| Some(BTreeMap::new()));
            let Some(counts) = slot else { continue };
            for v in values {
                let label = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                counts.entry(label).or_insert_with(|| (v.clone(), 0)).1 += 1;
            }
            if counts.len() > MAX_SUMMARY_VALUES {
                tracing::info!("{key} has over {MAX_SUMMARY_VALUES} values: left out of the {} collection summaries", self.spec.id);
                *slot = None;
            }
        }
    }

    /// The collection document and its facet counts (in the recipe's order).
    fn collection(&self) -> (Collection, Value) {
        let mut c = Collection::new(&self.spec.id, &self.spec.description);
        c.title = Some(self.spec.title.clone());
        c.license = self.spec.license.clone();
        c.extensions = self.extensions.clone();
        if !self.spec.keywords.is_empty() {
            c.keywords = Some(self.spec.keywords.clone());
        }
        c.extent = Extent {
            spatial: SpatialExtent { bbox: vec![Bbox::TwoDimensional(self.bbox.unwrap_or([-180.0, -90.0, 180.0, 90.0]))] },
            temporal: TemporalExtent { interval: vec![[self.start, self.end]] },
            additional_fields: Map::new(),
        };
        let facets: Vec<Value> = self
            .spec
            .summaries
            .iter()
            .filter_map(|k| self.summaries.get(k).and_then(Option::as_ref).map(|values| (k, values)))
            .map(|(k, values)| {
                json!({
                    "name": k, "label": k.rsplit(':').next().unwrap_or(k),
                    "values": values.iter().map(|(label, (_, n))| json!({"value": label, "count": n})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let summaries: Map<String, Value> =
            self.summaries.iter().filter_map(|(k, v)| Some((k.clone(), Value::Array(v.as_ref()?.values().map(|(v, _)| v.clone()).collect())))).collect();
        if !summaries.is_empty() {
            c.summaries = Some(summaries);
        }
        (c, Value::Array(facets))
    }
}

/// Links from a page at `levels` below the collection back up to the root.
fn breadcrumbs(collection_id: &str, levels: &[String]) -> Vec<Value> {
    let up = "../".repeat(levels.len() + 1);
    let mut crumbs = vec![json!({"title": "Catalogue", "href": format!("{up}catalog.html")})];
    for i in 0..levels.len() {
        let back = "../".repeat(levels.len() - i);
        let (title, page) = if i == 0 { (collection_id.to_string(), "collection.html") } else { (levels[i - 1].clone(), "catalog.html") };
        crumbs.push(json!({"title": title, "href": format!("{back}{page}")}));
    }
    crumbs
}

/// The sort key of a catalogue node: its collection and levels, each ended
/// by 0x01, so that bytewise order is the pages' order (a node before its
/// children, children by name); an item's row key is this, 0x00 and its id,
/// so a node's rows come before its children's. (Path components hold no
/// control characters.)
fn node_key(collection_id: &str, levels: &[String]) -> Vec<u8> {
    let mut key = Vec::new();
    for part in std::iter::once(collection_id).chain(levels.iter().map(String::as_str)) {
        key.extend_from_slice(part.as_bytes());
        key.push(1);
    }
    key
}

/// What a listing page shows of an item: spilled per item until the end of the build.
#[derive(Debug, Clone)]
struct ItemRow {
    title: Option<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    files: usize,
    latest: Option<bool>,
}

impl ItemRow {
    /// A compact binary form for the spill (times exact to the nanosecond).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.title.as_ref().map_or(0, String::len));
        let time = |out: &mut Vec<u8>, t: &Option<DateTime<Utc>>| match t {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.timestamp().to_le_bytes());
                out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
            }
            None => out.push(0),
        };
        time(&mut out, &self.start);
        time(&mut out, &self.end);
        out.extend_from_slice(&(self.files as u64).to_le_bytes());
        out.push(match self.latest {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        if let Some(title) = &self.title {
            out.push(1);
            out.extend_from_slice(title.as_bytes());
        }
        out
    }

    fn decode(mut b: &[u8]) -> Result<ItemRow> {
        fn take<'b>(b: &mut &'b [u8], n: usize) -> Result<&'b [u8]> {
            anyhow::ensure!(b.len() >= n, "damaged catalogue row");
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        let time = |b: &mut &[u8]| -> Result<Option<DateTime<Utc>>> {
            if take(b, 1)?[0] == 0 {
                return Ok(None);
            }
            let secs = i64::from_le_bytes(take(b, 8)?.try_into()?);
            let nanos = u32::from_le_bytes(take(b, 4)?.try_into()?);
            Ok(Some(DateTime::from_timestamp(secs, nanos).ok_or_else(|| anyhow::anyhow!("damaged catalogue row"))?))
        };
        let start = time(&mut b)?;
        let end = time(&mut b)?;
        let files = u64::from_le_bytes(take(&mut b, 8)?.try_into()?) as usize;
        let latest = match take(&mut b, 1)?[0] {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        };
        let title = if b.is_empty() { None } else { Some(String::from_utf8(b[1..].to_vec())?) };
        Ok(ItemRow { title, start, end, files, latest })
    }

    fn of(item: &Item) -> ItemRow {
        let p = &item.properties;
        ItemRow {
            title: p.title.clone(),
            start: p.start_datetime,
            end: p.end_datetime,
            files: data_files(item),
            latest: p.additional_fields.get("latest").and_then(Value::as_bool),
        }
    }
}

/// The item's data files: its assets but Kerchunk sidecars (sidecars.rs).
fn data_files(item: &Item) -> usize {
    item.assets.values().filter(|a| !a.roles.iter().any(|r| r == "kerchunk")).count()
}

fn html_link(href: impl ToString) -> Link {
    Link::new(href, "alternate").r#type("text/html".to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A catalogue or collection document (`doc`, as `serde_json` would write it)
/// whose item links are pulled from the sort while it is written: they go
/// before its last link (the HTML page), where the whole document had them.
struct StreamedDocument<'d, 'r> {
    doc: &'d Value,
    items: RefCell<ItemLinks<'r>>,
}

/// A node's rows, coming back from the sort: written as item links, and kept
/// in a temp file for the HTML page.
struct ItemLinks<'r> {
    rows_in: &'r mut std::iter::Peekable<Sorted>,
    /// The node's [`node_key`] and 0x00: its own rows start with it.
    prefix: &'r [u8],
    listed: ListedRows,
}

impl serde::Serialize for StreamedDocument<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(fields) = self.doc else { return self.doc.serialize(serializer) };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            match value {
                Value::Array(links) if key == "links" => map.serialize_entry(key, &StreamedLinks { links, items: &self.items })?,
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

struct StreamedLinks<'a, 'r> {
    links: &'a [Value],
    items: &'a RefCell<ItemLinks<'r>>,
}

impl serde::Serialize for StreamedLinks<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let (own, last) = self.links.split_at(self.links.len().saturating_sub(1));
        let mut seq = serializer.serialize_seq(None)?;
        for link in own {
            seq.serialize_element(link)?;
        }
        let mut items = self.items.borrow_mut();
        let ItemLinks { rows_in, prefix, listed } = &mut *items;
        let prefix: &[u8] = prefix;
        while let Some(next) = rows_in.next_if(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))) {
            let (key, value) = next.map_err(|e| S::Error::custom(format!("{e:#}")))?;
            let id = std::str::from_utf8(&key[prefix.len()..]).map_err(S::Error::custom)?;
            let row = ItemRow::decode(&value).map_err(|e| S::Error::custom(format!("{e:#}")))?;
            let link = serde_json::to_value(Link::item(format!("./{id}.json")).geojson().title(row.title.clone())).map_err(S::Error::custom)?;
            seq.serialize_element(&link)?;
            listed.push(id, &value).map_err(|e| S::Error::custom(format!("{e:#}")))?;
        }
        for link in last {
            seq.serialize_element(link)?;
        }
        seq.end()
    }
}

/// The rows a page lists, in an anonymous temp file: `u32` length, then the
/// id's `u32` length, the id and the encoded [`ItemRow`].
struct ListedRows {
    out: BufWriter<std::fs::File>,
    count: usize,
}

impl ListedRows {
    fn create() -> Result<ListedRows> {
        Ok(ListedRows { out: BufWriter::new(tempfile::tempfile().context("creating a temp file for a catalogue page")?), count: 0 })
    }

    fn push(&mut self, id: &str, row: &[u8]) -> Result<()> {
        self.out.write_all(&((4 + id.len() + row.len()) as u32).to_le_bytes())?;
        self.out.write_all(&(id.len() as u32).to_le_bytes())?;
        self.out.write_all(id.as_bytes())?;
        self.out.write_all(row)?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> Result<PageRows> {
        let file = self.out.into_inner().map_err(|e| e.into_error()).context("writing a temp file for a catalogue page")?;
        Ok(PageRows { file: Arc::new(file), count: self.count, errors: Arc::default() })
    }
}

/// The template's `items`: each pass over them reads the temp file afresh
/// (positioned reads, so passes don't disturb each other). A read error ends
/// the rows and is reported after rendering.
#[derive(Debug)]
struct PageRows {
    file: Arc<std::fs::File>,
    count: usize,
    errors: Arc<Mutex<Option<String>>>,
}

impl ListingRows for PageRows {
    fn len(&self) -> usize {
        self.count
    }

    fn rows(&self) -> Box<dyn Iterator<Item = Value> + Send + Sync> {
        Box::new(PageRowReader { file: self.file.clone(), pos: 0, buf: Vec::new(), at: 0, errors: self.errors.clone() })
    }
}

struct PageRowReader {
    file: Arc<std::fs::File>,
    /// File offset of the end of `buf`.
    pos: u64,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    at: usize,
    errors: Arc<Mutex<Option<String>>>,
}

impl PageRowReader {
    /// The next record's bytes, reading more of the file as needed (None at the end).
    fn next_record(&mut self) -> Result<Option<(usize, usize)>> {
        use std::os::unix::fs::FileExt;
        loop {
            let unread = &self.buf[self.at..];
            if unread.len() >= 4 {
                let len = u32::from_le_bytes(unread[..4].try_into().expect("4 bytes")) as usize;
                if unread.len() >= 4 + len {
                    let start = self.at + 4;
                    self.at = start + len;
                    return Ok(Some((start, start + len)));
                }
            }
            self.buf.drain(..self.at);
            self.at = 0;
            let have = self.buf.len();
            self.buf.resize(have + (64 << 10), 0);
            let n = self.file.read_at(&mut self.buf[have..], self.pos)?;
            self.buf.truncate(have + n);
            self.pos += n as u64;
            if n == 0 {
                anyhow::ensure!(self.buf.is_empty(), "the temp file ends inside a row");
                return Ok(None);
            }
        }
    }

    fn row(&self, start: usize, end: usize) -> Result<Value> {
        let record = &self.buf[start..end];
        anyhow::ensure!(record.len() >= 4, "damaged row");
        let id_len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize;
        anyhow::ensure!(record.len() >= 4 + id_len, "damaged row");
        let id = std::str::from_utf8(&record[4..4 + id_len])?;
        let row = ItemRow::decode(&record[4 + id_len..])?;
        Ok(json!({"id": id, "href": format!("./{id}.html"), "start": row.start, "end": row.end, "files": row.files, "latest": row.latest}))
    }
}

impl Iterator for PageRowReader {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        let row = self.next_record().and_then(|r| r.map(|(start, end)| self.row(start, end)).transpose());
        match row {
            Ok(row) => row,
            Err(e) => {
                *self.errors.lock().expect("not poisoned") = Some(format!("{e:#}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(n: usize) -> PageRows {
        let mut listed = ListedRows::create().unwrap();
        for i in 0..n {
            let row = ItemRow { title: Some("t".repeat(i % 50)), start: DateTime::from_timestamp(i as i64 * 86400, 0), end: None, files: i, latest: Some(i % 2 == 0) };
            listed.push(&format!("id-{i}-{}", "x".repeat(i % 97)), &row.encode()).unwrap();
        }
        listed.finish().unwrap()
    }

    #[test]
    fn page_rows_read_back_in_order_on_every_pass() {
        // ~500 KB of rows: several refills of the 64 KiB read buffer, records split across them.
        let rows = listed(5000);
        assert_eq!(rows.len(), 5000);
        for _ in 0..2 {
            let got: Vec<Value> = rows.rows().collect();
            assert_eq!(got.len(), 5000);
            for (i, row) in got.iter().enumerate() {
                let id = format!("id-{i}-{}", "x".repeat(i % 97));
                assert_eq!(row["id"], id);
                assert_eq!(row["href"], format!("./{id}.html"));
                assert_eq!(row["files"], i);
                assert_eq!(row["latest"], i % 2 == 0);
                assert_eq!(row["end"], Value::Null);
            }
        }
        assert!(rows.errors.lock().unwrap().is_none());
    }

    #[test]
    fn a_damaged_rows_file_is_reported_not_silently_shortened() {
        let rows = listed(100);
        let size = rows.file.metadata().unwrap().len();
        rows.file.set_len(size - 3).unwrap();
        assert_eq!(rows.rows().count(), 99);
        let error = rows.errors.lock().unwrap().take().expect("an error is recorded");
        assert!(error.contains("ends inside a row"), "{error}");
    }
}
