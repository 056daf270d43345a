//! The fedstac search index: static files beside a STAC site that a browser
//! queries without a server, downloading only the parts a query needs.
//!
//! One crate holds the format, the writer (feature `write`, used by the
//! generator) and the query engine (used by the viewer in wasm32 and by the
//! native test harness), so the two sides cannot drift apart.
//!
//! # Layout (format version [`VERSION`]) under `<site>/index/`
//!
//! | file | what | fetched |
//! | --- | --- | --- |
//! | `index.json` | [`Meta`]: item count, facets with their values and global counts, text chunk boundaries, time-index years | at start |
//! | `f/<facet>-<value>.bin` | posting list: the docs having that facet value (roaring) | per selected value |
//! | `f/<facet>-<value>-<segment>.bin` | a large posting file (over `write::FACET_SEGMENT_MIN_BYTES`) once more, split by doc range ([`FacetMeta::segments`]) | a deferred filter's segments holding the docs the other filters leave, when fewer bytes than their blocks |
//! | `c/<facet>-<value>.bin` | co-occurrence counts of every other facet's values among those docs | live counts when one facet is filtered |
//! | `k/<block>.bin` | facet codes of the docs of one block of [`Meta::block`] docs, columnar | live counts of combined filters, and large facet filters evaluated on the few docs the other filters leave; only the blocks holding those docs |
//! | `x/<chunk>.bin` | text postings: (token, roaring) for a sorted range of tokens (Pagefind-style chunks); a common token's postings are segmented by doc range: the chunk holds its per-segment doc ranges, counts and file sizes and the first segment | per query term |
//! | `x/<chunk>-<entry>-<segment>.bin` | one later segment of a segmented token (roaring of its docs in that doc range) | in doc order, as far as the result page needs (all of them when what is left is small, or to count exactly) |
//! | `t/s<year>.bin`, `t/e<year>.bin` | time index: docs starting before that year (cumulative) + exact start times within it; same for ends | two per time filter |
//! | `b.bin` | distinct footprints (bbox) with their docs | per bbox filter |
//! | `d/<shard>.bin` | result rows (id, href, start, end, long name) of [`Meta::doc_shard`] consecutive docs | per result page |
//! | `items.fgb` | every footprint as FlatGeobuf with a packed Hilbert R-tree (id, href): for GDAL/QGIS, not the viewer | never by the viewer |
//!
//! Text postings over twice `write::TEXT_SEGMENT_BYTES` (serialized) are
//! segmented (version 2): a word in 6% of 10M items has ~1 MB of postings,
//! but its first 20 results lie in the first ~30 KB. The engine evaluates a
//! query over the docs below the end of the segments it has read
//! ([`query::Engine::more_files`] says which to read next; all that is left
//! when it is at most [`query::COMPLETE_BYTES`]), skipping segments that hold
//! no doc the other filters (facets, time, bbox) leave, and reports the
//! total as exact only when it read every needed segment (or when one word
//! matching one token is the whole query: the chunk holds its doc count);
//! otherwise the total is a lower bound and live counts are not computed
//! until asked for (`exhaustive`). Tokens under the threshold (all of them
//! below ~460,000 items) stay whole.
//!
//! `index.json` also holds the byte size of every posting and block file, so
//! the engine can choose, per query, between downloading a large posting list
//! (`latest=true` covers 90% of the items) and reading that facet from the
//! blocks of the docs the other filters leave ([`query::DEFER_BYTES`]).
//! Version 3 adds segments of the large posting files: the same postings cut
//! by doc range into files of a few KB, so such a filter reads only the
//! segments that hold the other filters' docs (at 10M items `latest=true`
//! with one experiment reads ~40 KB of segments instead of ~340 KB of blocks).
//!
//! Docs are numbered in the order the generator writes the items (scan order,
//! which follows the DRS path, so items of one source/experiment/member are
//! contiguous and roaring run containers keep facet postings small).
//! `.bin` files are raw DEFLATE streams ([`inflate`]); inside, integers are
//! LEB128 varints and bitmaps use the portable roaring serialization
//! (<https://github.com/RoaringBitmap/RoaringFormatSpec>), so any roaring
//! library can read them. Every file is immutable for a given build and
//! written through the generator's atomic site writer (and its manifest).
//!
//! # Query semantics (what the engine evaluates)
//!
//! Facets: OR within a facet, AND across facets (a list-valued property such
//! as `cmip6:activity_id` matches when any of its values is selected). Time:
//! `start_datetime <= to && end_datetime >= from` (inclusive, either end
//! open). Bbox: the item's footprint intersects the box (boundaries touch
//! count). Text: every query term (split like [`tokenize`]) is a prefix of
//! some token of the item's id, title, variable long name or standard name.
//! All filters AND together. This is STAC API Item Search with CQL2 (`=`,
//! `in`, `a_overlaps`, `and`, `datetime`, `bbox`) plus free text.

pub mod codec;
pub mod query;
#[cfg(feature = "write")]
pub mod fgb;
#[cfg(feature = "write")]
mod spill;
#[cfg(feature = "write")]
pub mod write;

use serde::{Deserialize, Serialize};

/// Format version: a reader refuses an index of another version.
pub const VERSION: u32 = 3;
/// Name of the format, in `index.json`.
pub const FORMAT: &str = "fedstac-index";
/// Directory of the index inside a site.
pub const DIR: &str = "index";
/// Rows per result shard.
pub const DOC_SHARD: u32 = 128;
/// Docs per facet-code block.
pub const BLOCK: u32 = 16384;
/// Result rows per page.
pub const PAGE_SIZE: usize = 20;

/// The CMIP6 facets the generator indexes: (STAC property, short name used in
/// URLs, label). `latest` is a boolean property, indexed as "true"/"false".
pub const CMIP6_FACETS: &[(&str, &str, &str)] = &[
    ("cmip6:activity_id", "activity", "Activity"),
    ("cmip6:institution_id", "institution", "Institution"),
    ("cmip6:source_id", "source", "Source (model)"),
    ("cmip6:experiment_id", "experiment", "Experiment"),
    ("cmip6:member_id", "member", "Member"),
    ("cmip6:table_id", "table", "Table"),
    ("cmip6:variable_id", "variable", "Variable"),
    ("cmip6:grid_label", "grid", "Grid"),
    ("cmip6:frequency", "frequency", "Frequency"),
    ("cmip6:realm", "realm", "Realm"),
    ("cmip6:nominal_resolution", "resolution", "Nominal resolution"),
    ("latest", "latest", "Latest version"),
];

/// Item properties whose words the text search covers (besides id and title).
pub const TEXT_PROPERTIES: &[&str] = &["cmip6:variable_long_name", "cmip6:variable_cf_standard_name"];

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: String,
    pub version: u32,
    /// Site name and title, for the viewer's heading.
    pub site: SiteRef,
    pub items: u32,
    pub doc_shard: u32,
    pub block: u32,
    pub facets: Vec<FacetMeta>,
    /// First token of each text chunk `x/<i>.bin`, ascending.
    pub text_chunks: Vec<String>,
    /// Years that have a `t/s<year>.bin` (some item starts in it), ascending.
    pub start_years: Vec<i32>,
    /// Years that have a `t/e<year>.bin` (some item ends in it), ascending.
    pub end_years: Vec<i32>,
    /// Bytes of each facet-code block `k/<block>.bin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_sizes: Vec<u32>,
    /// Distinct footprints in `b.bin`.
    pub boxes: u32,
    /// The FlatGeobuf of footprints, relative to the index directory (absent when not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fgb: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SiteRef {
    pub name: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FacetMeta {
    /// STAC property (`cmip6:variable_id`).
    pub key: String,
    /// Short name used in URLs (`variable`).
    pub name: String,
    pub label: String,
    /// The property is a list (an item may have several values).
    pub multi: bool,
    /// Values, sorted; a value's position is its number in file names.
    pub values: Vec<String>,
    /// Docs per value over the whole index.
    pub counts: Vec<u32>,
    /// Bytes of each value's posting file (`f/<facet>-<value>.bin`): the engine
    /// reads a large one from the blocks instead when other filters are narrow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<u32>,
    /// Large posting files also split by doc range (version 3): value number →
    /// docs per segment `n` (a multiple of [`BLOCK`]); segment `s`
    /// (`f/<facet>-<value>-<s>.bin`, one for every range up to the item
    /// count, empty ones too) holds the value's docs in `s * n .. (s + 1) * n`.
    /// One number per value keeps `index.json`, which every page load reads, small.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub segments: std::collections::BTreeMap<u32, u32>,
    /// For list-valued facets: code - 1 → the value numbers of that combination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub combos: Vec<Vec<u32>>,
}

impl FacetMeta {
    /// Calls `f` with each value number a block code stands for (code 0: the doc has no value).
    pub fn for_code(&self, code: u32, mut f: impl FnMut(u32)) {
        if code == 0 {
            return;
        }
        if self.multi {
            for &v in self.combos.get(code as usize - 1).map(Vec::as_slice).unwrap_or(&[]) {
                f(v);
            }
        } else {
            f(code - 1);
        }
    }
}

/// One result row (`d/<shard>.bin`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Doc {
    pub id: String,
    /// Item JSON, relative to the site root.
    pub href: String,
    /// Seconds since 1970 (UTC).
    pub start: i64,
    pub end: i64,
    /// Variable long name (or title) shown in the result list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// Lower-cased alphanumeric runs: what both the index and queries are split into.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

pub use query::{Engine, Query};
