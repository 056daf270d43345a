//! Stage `index`: the client-side search index (format and writer in the
//! `fedstac-index` crate). Fed every item as the catalogue writes it; its
//! files go through the [`SiteWriter`] under `index/`, so they are part of the
//! atomic swap and the manifest.

use anyhow::{anyhow, Result};
use fedstac_index::write::{facet_values, IndexWriter, ItemInput, Options, Sink};
use fedstac_index::{SiteRef, TEXT_PROPERTIES};
use stac::{Bbox, Item};

use crate::config::SiteInfo;
use crate::items::DatasetItem;
use crate::output::SiteWriter;

pub struct SearchIndex {
    writer: IndexWriter,
    keys: Vec<String>,
}

/// Index files written through the site writer, below `index/`.
struct SiteSink<'a>(&'a mut SiteWriter);

impl Sink for SiteSink<'_> {
    fn put(&mut self, path: &str, bytes: &[u8]) -> fedstac_index::write::Result<()> {
        self.0.put(&format!("{}/{path}", fedstac_index::DIR), bytes).map(|_| ()).map_err(|e| format!("{e:#}").into())
    }

    fn put_file(&mut self, path: &str, file: &mut std::fs::File) -> fedstac_index::write::Result<()> {
        self.0.put_from_file(&format!("{}/{path}", fedstac_index::DIR), file).map(|_| ()).map_err(|e| format!("{e:#}").into())
    }
}

impl SearchIndex {
    pub fn new(site: &SiteInfo) -> Result<SearchIndex> {
        let options = Options::cmip6(SiteRef { name: site.name.clone(), title: site.title.clone() });
        let keys = options.facets.iter().map(|(k, _, _)| k.clone()).collect();
        Ok(SearchIndex { writer: IndexWriter::new(options).map_err(|e| anyhow!("search index: {e}"))?, keys })
    }

    /// What the index keeps of a dataset's item, filed under `collection` (taken before the catalogue consumes it).
    pub fn input(&self, dataset: &DatasetItem, collection: &str) -> ItemInput {
        let mut href: Vec<&str> = vec![collection];
        href.extend(dataset.hierarchy.iter().map(String::as_str));
        let file = format!("{}.json", dataset.item.id);
        href.push(&file);
        item_input(&dataset.item, &href.join("/"), &self.keys)
    }

    /// The facet properties the index keeps (for [`item_input`] on other threads).
    pub fn facet_keys(&self) -> &[String] {
        &self.keys
    }

    /// Adds an item the catalogue wrote (doc numbers follow the calls).
    pub fn add(&mut self, writer: &mut SiteWriter, input: ItemInput) -> Result<()> {
        self.writer.add(input, &mut SiteSink(writer)).map_err(|e| anyhow!("search index: {e}"))
    }

    /// [`Self::add`] for an input the caller keeps.
    pub fn add_ref(&mut self, writer: &mut SiteWriter, input: &ItemInput) -> Result<()> {
        self.writer.add_ref(input, &mut SiteSink(writer)).map_err(|e| anyhow!("search index: {e}"))
    }

    /// Writes the remaining index files (before the site writer commits).
    pub fn finish(self, writer: &mut SiteWriter) -> Result<u32> {
        let meta = self.writer.finish(&mut SiteSink(writer)).map_err(|e| anyhow!("search index: {e}"))?;
        Ok(meta.items)
    }
}

/// What the index keeps of an item.
pub fn item_input(item: &Item, href: &str, facet_keys: &[String]) -> ItemInput {
    let p = &item.properties;
    let extra = &p.additional_fields;
    let text: Vec<String> = TEXT_PROPERTIES.iter().filter_map(|k| extra.get(*k).and_then(|v| v.as_str()).map(str::to_string)).collect();
    let bbox = match item.bbox {
        Some(Bbox::TwoDimensional(b)) => b,
        Some(Bbox::ThreeDimensional(b)) => [b[0], b[1], b[3], b[4]],
        None => [-180.0, -90.0, 180.0, 90.0],
    };
    ItemInput {
        id: item.id.clone(),
        href: href.to_string(),
        title: p.title.clone().unwrap_or_default(),
        start: p.start_datetime.or(p.datetime).map(|t| t.timestamp()).unwrap_or(i64::MIN / 2),
        end: p.end_datetime.or(p.datetime).map(|t| t.timestamp()).unwrap_or(i64::MAX / 2),
        bbox,
        facets: facet_keys.iter().map(|k| facet_values(extra.get(k))).collect(),
        label: extra.get("cmip6:variable_long_name").and_then(|v| v.as_str()).map(str::to_string).or_else(|| p.title.clone()).unwrap_or_default(),
        text,
    }
}
