//! Stage `index`: the client-side search index (format and writer in the
//! `fedstac-index` crate). Fed every item as the catalogue writes it; its
//! files go through the [`SiteWriter`] under `index/`, so they are part of the
//! atomic swap and the manifest.

use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};
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

    /// [`Self::finish`] in two halves: the remaining files are encoded and
    /// hashed on a thread of their own, starting now, while this thread
    /// writes other files (a receiver's catalogue pages); [`FinishingIndex::write`]
    /// then writes them, in the order `finish` would have.
    pub fn finish_in_background(self) -> Result<FinishingIndex> {
        // Bounded, so memory stays small if the writing thread falls behind (~16k small files ahead).
        let (tx, rx) = std::sync::mpsc::sync_channel(1 << 14);
        let writer = self.writer;
        let handle = std::thread::Builder::new()
            .name("search-index".into())
            .spawn(move || writer.finish(&mut ChannelSink(tx)).map(|meta| meta.items).map_err(|e| anyhow!("search index: {e}")))
            .context("starting the search index's thread")?;
        Ok(FinishingIndex { rx, handle })
    }
}

/// The index's remaining files as its thread makes them; see [`SearchIndex::finish_in_background`].
pub struct FinishingIndex {
    rx: Receiver<IndexFile>,
    handle: std::thread::JoinHandle<Result<u32>>,
}

/// One index file for the site writer: its path in the site and bytes with their SHA-256, or a file holding them.
enum IndexFile {
    Bytes(String, Vec<u8>, [u8; 32]),
    File(String, std::fs::File),
}

/// Sends index files to the thread that writes the site.
struct ChannelSink(SyncSender<IndexFile>);

impl Sink for ChannelSink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> fedstac_index::write::Result<()> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        self.0.send(IndexFile::Bytes(format!("{}/{path}", fedstac_index::DIR), bytes.to_vec(), sha)).map_err(|_| "the site writer stopped".into())
    }

    fn put_file(&mut self, path: &str, file: &mut std::fs::File) -> fedstac_index::write::Result<()> {
        // A second handle of the same (temp) file: it outlives the index writer's.
        let file = file.try_clone()?;
        self.0.send(IndexFile::File(format!("{}/{path}", fedstac_index::DIR), file)).map_err(|_| "the site writer stopped".into())
    }
}

impl FinishingIndex {
    /// Writes the index's remaining files as they come; returns the number of items indexed.
    pub fn write(self, writer: &mut SiteWriter) -> Result<u32> {
        // On an error here the receiver is dropped: the index's thread stops at its next file.
        for file in self.rx.iter() {
            match file {
                IndexFile::Bytes(path, bytes, sha) => writer.put_hashed(&path, &bytes, sha)?,
                IndexFile::File(path, mut file) => {
                    writer.put_from_file(&path, &mut file)?;
                }
            }
        }
        self.handle.join().map_err(|_| anyhow!("the search index's thread panicked"))?
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
