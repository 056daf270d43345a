//! The index writer: fed one item at a time (in doc order), it streams result
//! shards out as they fill and writes everything else at [`IndexWriter::finish`].
//! Nothing per item stays in memory: the facet codes and the bitmaps go to
//! temp files as their block or doc range fills (module `spill`), and
//! `items.fgb` is assembled in a temp file. What is held grows with the
//! vocabulary (distinct values, words, start and end times, footprints: ~40
//! bytes each), not with the items, as long as items share those (an
//! archive where every item had a time or footprint of its own would hold
//! them per item).

use std::collections::{BTreeMap, HashMap};

use flatgeobuf::geozero::{ColumnValue, GeomProcessor, GeozeroGeometry};
use flatgeobuf::{ColumnType, GeometryType};
use roaring::RoaringBitmap;

use crate::codec;
use crate::fgb::{FgbOptions, FgbStream};
use crate::spill::{Codes, PostingSpill, Postings};
use crate::{tokenize, Doc, FacetMeta, Meta, SiteRef, BLOCK, DOC_SHARD, FORMAT, VERSION};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Where index files go (paths relative to the index directory).
pub trait Sink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> Result<()>;

    /// A file too big to hold in memory (`items.fgb`), read from the start of
    /// `file`. The default reads it whole and calls [`Sink::put`].
    fn put_file(&mut self, path: &str, file: &mut std::fs::File) -> Result<()> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(file, &mut bytes)?;
        self.put(path, &bytes)
    }
}

/// A directory on disk (benchmarks, tests).
pub struct DirSink(pub std::path::PathBuf);

impl Sink for DirSink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let target = self.0.join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(target, bytes)?;
        Ok(())
    }

    fn put_file(&mut self, path: &str, file: &mut std::fs::File) -> Result<()> {
        let target = self.0.join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::io::copy(file, &mut std::fs::File::create(target)?)?;
        Ok(())
    }
}

/// One item as the index sees it.
#[derive(Debug, Clone, Default)]
pub struct ItemInput {
    pub id: String,
    /// Item JSON, relative to the site root.
    pub href: String,
    pub title: String,
    /// Seconds since 1970, UTC.
    pub start: i64,
    pub end: i64,
    pub bbox: [f64; 4],
    /// Per facet of the writer (in its order): (property is a list, values).
    pub facets: Vec<(bool, Vec<String>)>,
    /// More text the search covers (variable long and standard names).
    pub text: Vec<String>,
    /// Shown in the result list.
    pub label: String,
}

/// A property value as facet values: strings as they are, booleans and
/// numbers as JSON text, lists element by element.
pub fn facet_values(v: Option<&serde_json::Value>) -> (bool, Vec<String>) {
    use serde_json::Value;
    fn one(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
            _ => None,
        }
    }
    match v {
        Some(Value::Array(a)) => (true, a.iter().filter_map(one).collect()),
        Some(v) => (false, one(v).into_iter().collect()),
        None => (false, Vec::new()),
    }
}

pub struct Options {
    /// Facets: (STAC property, short name, label).
    pub facets: Vec<(String, String, String)>,
    /// Write `items.fgb` (FlatGeobuf footprints).
    pub fgb: bool,
    pub site: SiteRef,
}

impl Options {
    pub fn cmip6(site: SiteRef) -> Options {
        Options { facets: crate::CMIP6_FACETS.iter().map(|(k, n, l)| (k.to_string(), n.to_string(), l.to_string())).collect(), fgb: true, site }
    }
}

struct FacetBuild {
    key: String,
    name: String,
    label: String,
    multi: bool,
    values: Vec<String>,
    value_index: HashMap<String, u32>,
    /// By value number: its bitmap's key in the spill.
    postings: Vec<u32>,
    /// code - 1 → value numbers (arrival order)
    combos: Vec<Vec<u32>>,
    combo_index: HashMap<Vec<u32>, u32>,
    /// Per doc.
    codes: Codes,
}

pub struct IndexWriter {
    site: SiteRef,
    facets: Vec<FacetBuild>,
    n: u32,
    /// Every bitmap below (by its key) and the facets' postings.
    spill: PostingSpill,
    tokens: HashMap<String, u32>,
    starts: BTreeMap<i64, u32>,
    ends: BTreeMap<i64, u32>,
    boxes: Vec<([f64; 4], u32)>,
    box_index: HashMap<[u64; 4], usize>,
    shard: Vec<Doc>,
    fgb: Option<FgbStream>,
    text_segment_bytes: usize,
    text_segment_step: u32,
    facet_segment_min: usize,
    facet_segment_bytes: usize,
    facet_segment_step: u32,
}

/// A footprint box as a (Multi)Polygon, split at the antimeridian like the item geometry.
pub(crate) struct Footprint(pub(crate) [f64; 4]);

impl GeozeroGeometry for Footprint {
    fn process_geom<P: GeomProcessor>(&self, p: &mut P) -> flatgeobuf::geozero::error::Result<()> {
        let [w, s, e, n] = self.0;
        let parts: Vec<(f64, f64)> = if w <= e { vec![(w, e)] } else { vec![(w, 180.0), (-180.0, e)] };
        p.multipolygon_begin(parts.len(), 0)?;
        for (i, (w, e)) in parts.into_iter().enumerate() {
            p.polygon_begin(false, 1, i)?;
            p.linestring_begin(false, 5, 0)?;
            for (j, (x, y)) in [(w, s), (e, s), (e, n), (w, n), (w, s)].into_iter().enumerate() {
                p.xy(x, y, j)?;
            }
            p.linestring_end(false, 0)?;
            p.polygon_end(false, i)?;
        }
        p.multipolygon_end(0)
    }
}

impl IndexWriter {
    pub fn new(options: Options) -> Result<IndexWriter> {
        let facets = options
            .facets
            .into_iter()
            .map(|(key, name, label)| FacetBuild {
                key,
                name,
                label,
                multi: false,
                values: Vec::new(),
                value_index: HashMap::new(),
                postings: Vec::new(),
                combos: Vec::new(),
                combo_index: HashMap::new(),
                codes: Codes::default(),
            })
            .collect();
        let fgb = if options.fgb {
            // Streamed: bytes as the flatgeobuf crate's FgbWriter writes them,
            // without its ~73 bytes per feature held to the end.
            let mut w = FgbStream::new(
                "items",
                GeometryType::MultiPolygon,
                FgbOptions { crs_code: 4326, title: Some("fedstac item footprints".into()), description: None },
            )?;
            w.add_column("id", ColumnType::String, false);
            w.add_column("href", ColumnType::String, false);
            w.add_column("start_datetime", ColumnType::DateTime, true);
            w.add_column("end_datetime", ColumnType::DateTime, true);
            Some(w)
        } else {
            None
        };
        Ok(IndexWriter {
            site: options.site,
            facets,
            n: 0,
            spill: PostingSpill::new(crate::spill::RANGE_BITS),
            tokens: HashMap::new(),
            starts: BTreeMap::new(),
            ends: BTreeMap::new(),
            boxes: Vec::new(),
            box_index: HashMap::new(),
            shard: Vec::new(),
            fgb,
            text_segment_bytes: TEXT_SEGMENT_BYTES,
            text_segment_step: 1 << 16,
            facet_segment_min: FACET_SEGMENT_MIN_BYTES,
            facet_segment_bytes: FACET_SEGMENT_BYTES,
            facet_segment_step: crate::BLOCK,
        })
    }

    pub fn items(&self) -> u32 {
        self.n
    }

    /// Another segment size for text postings than [`TEXT_SEGMENT_BYTES`] and
    /// other cut points than multiples of 65,536 docs (tests segment every
    /// token of a small index this way).
    pub fn set_text_segments(&mut self, bytes: usize, step: u32) {
        self.text_segment_bytes = bytes.max(1);
        self.text_segment_step = step.max(1);
    }

    /// Other thresholds for segmenting facet postings than
    /// [`FACET_SEGMENT_MIN_BYTES`] (file bytes), [`FACET_SEGMENT_BYTES`] and
    /// segments of multiples of [`crate::BLOCK`] docs (tests segment a small index).
    pub fn set_facet_segments(&mut self, min_bytes: usize, bytes: usize, step: u32) {
        self.facet_segment_min = min_bytes;
        self.facet_segment_bytes = bytes.max(1);
        self.facet_segment_step = step.max(1);
    }

    /// Spill the bitmaps every 2^`bits` docs instead of every 2^17 (tests
    /// spill a small index often). Call before the first item.
    pub fn set_spill_range(&mut self, bits: u32) {
        assert_eq!(self.n, 0, "set_spill_range after items were added");
        self.spill = PostingSpill::new(bits);
    }

    /// Adds the next item (doc number = items added before it).
    pub fn add(&mut self, item: ItemInput, sink: &mut dyn Sink) -> Result<()> {
        self.add_ref(&item, sink)
    }

    /// [`Self::add`] for an item the caller keeps (a receiver keeps every item's input between writes).
    pub fn add_ref(&mut self, item: &ItemInput, sink: &mut dyn Sink) -> Result<()> {
        let doc = self.n;
        self.n = self.n.checked_add(1).ok_or("more than 2^32 items")?;
        for (i, f) in self.facets.iter_mut().enumerate() {
            let (is_list, values) = item.facets.get(i).map_or((false, &[][..]), |(l, v)| (*l, v.as_slice()));
            f.multi |= is_list || values.len() > 1;
            let mut numbers: Vec<u32> = values
                .iter()
                .map(|v| match f.value_index.get(v.as_str()) {
                    Some(&n) => n,
                    None => {
                        let n = f.values.len() as u32;
                        f.value_index.insert(v.clone(), n);
                        f.values.push(v.clone());
                        f.postings.push(self.spill.key());
                        n
                    }
                })
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            for &v in &numbers {
                self.spill.insert(f.postings[v as usize], doc)?;
            }
            let code = if numbers.is_empty() {
                0
            } else if let Some(&c) = f.combo_index.get(&numbers) {
                c
            } else {
                f.combos.push(numbers.clone());
                let c = f.combos.len() as u32;
                f.combo_index.insert(numbers, c);
                c
            };
            f.codes.push(code)?;
        }
        let mut words: Vec<String> = tokenize(&item.id);
        words.extend(tokenize(&item.title));
        for t in &item.text {
            words.extend(tokenize(t));
        }
        words.sort_unstable();
        words.dedup();
        for w in words {
            let key = match self.tokens.get(&w) {
                Some(&k) => k,
                None => *self.tokens.entry(w).or_insert(self.spill.key()),
            };
            self.spill.insert(key, doc)?;
        }
        let key = *self.starts.entry(item.start).or_insert_with(|| self.spill.key());
        self.spill.insert(key, doc)?;
        let key = *self.ends.entry(item.end).or_insert_with(|| self.spill.key());
        self.spill.insert(key, doc)?;
        let slot = *self.box_index.entry(item.bbox.map(f64::to_bits)).or_insert_with(|| {
            self.boxes.push((item.bbox, self.spill.key()));
            self.boxes.len() - 1
        });
        self.spill.insert(self.boxes[slot].1, doc)?;
        if let Some(fgb) = &mut self.fgb {
            let (start, end) = (crate::query::format_rfc3339(item.start), crate::query::format_rfc3339(item.end));
            fgb.add_feature(
                Footprint(item.bbox),
                &[ColumnValue::String(&item.id), ColumnValue::String(&item.href), ColumnValue::DateTime(&start), ColumnValue::DateTime(&end)],
            )?;
        }
        self.shard.push(Doc { id: item.id.clone(), href: item.href.clone(), start: item.start, end: item.end, label: item.label.clone() });
        if self.shard.len() as u32 == DOC_SHARD {
            self.flush_shard(sink)?;
        }
        Ok(())
    }

    fn flush_shard(&mut self, sink: &mut dyn Sink) -> Result<()> {
        if self.shard.is_empty() {
            return Ok(());
        }
        let s = (self.n - 1) / DOC_SHARD;
        sink.put(&format!("d/{s}.bin"), &codec::encode_docs(&self.shard))?;
        self.shard.clear();
        Ok(())
    }

    /// Writes every remaining file and `index.json`; returns the metadata.
    pub fn finish(mut self, sink: &mut dyn Sink) -> Result<Meta> {
        self.flush_shard(sink)?;
        let n = self.n;
        let postings: Postings = std::mem::replace(&mut self.spill, PostingSpill::new(0)).finish()?;
        // Every bitmap is written in its smallest form (runs where they pay).
        let optimized = |key: u32| -> Result<RoaringBitmap> {
            let mut b = postings.get(key)?;
            b.optimize();
            Ok(b)
        };
        let mut metas = Vec::new();
        // Final codes per facet (values renumbered in sorted order).
        let mut codes: Vec<Codes> = Vec::new();
        let mut code_values: Vec<Vec<Vec<u32>>> = Vec::new(); // facet → code → value numbers
        for (fi, f) in self.facets.iter_mut().enumerate() {
            let mut order: Vec<u32> = (0..f.values.len() as u32).collect();
            order.sort_by(|a, b| f.values[*a as usize].cmp(&f.values[*b as usize]));
            let mut renum = vec![0u32; order.len()];
            for (new, &old) in order.iter().enumerate() {
                renum[old as usize] = new as u32;
            }
            let values: Vec<String> = order.iter().map(|&o| f.values[o as usize].clone()).collect();
            let mut counts = Vec::with_capacity(values.len());
            let mut sizes = Vec::with_capacity(values.len());
            let mut segments = BTreeMap::new();
            for (new, &old) in order.iter().enumerate() {
                let b = &optimized(f.postings[old as usize])?;
                counts.push(b.len() as u32);
                let bytes = codec::encode_postings(b);
                sizes.push(bytes.len() as u32);
                sink.put(&format!("f/{fi}-{new}.bin"), &bytes)?;
                // A posting file large enough to be deferred is also written in doc-range
                // segments of about facet_segment_bytes each (if its docs were spread evenly).
                if bytes.len() > self.facet_segment_min && n > 0 {
                    let step = self.facet_segment_step as u64;
                    let even = self.facet_segment_bytes as u64 * n as u64 / bytes.len() as u64;
                    let docs_per = ((even / step).max(1) * step).min(u32::MAX as u64) as u32;
                    for s in 0..n.div_ceil(docs_per) {
                        let lo = s * docs_per;
                        let mut docs = RoaringBitmap::new();
                        docs.append(b.range(lo..lo.saturating_add(docs_per).min(n))).expect("ascending");
                        docs.optimize();
                        sink.put(&format!("f/{fi}-{new}-{s}.bin"), &codec::encode_postings(&docs))?;
                    }
                    segments.insert(new as u32, docs_per);
                }
            }
            f.postings = Vec::new();
            let combos: Vec<Vec<u32>> = f
                .combos
                .iter()
                .map(|c| {
                    let mut c: Vec<u32> = c.iter().map(|&v| renum[v as usize]).collect();
                    c.sort_unstable();
                    c
                })
                .collect();
            let final_codes = if f.multi {
                std::mem::take(&mut f.codes)
            } else {
                let mut out = Codes::default();
                let codes = std::mem::take(&mut f.codes);
                for b in 0..codes.blocks() {
                    for c in codes.block(b)? {
                        out.push(if c == 0 { 0 } else { combos[c as usize - 1][0] + 1 })?;
                    }
                }
                out
            };
            let mut cv = vec![Vec::new()];
            if f.multi {
                cv.extend(combos.iter().cloned());
            } else {
                cv.extend((0..values.len() as u32).map(|v| vec![v]));
            }
            code_values.push(cv);
            codes.push(final_codes);
            metas.push(FacetMeta {
                key: f.key.clone(),
                name: f.name.clone(),
                label: f.label.clone(),
                multi: f.multi,
                values,
                counts,
                sizes,
                segments,
                combos: if f.multi { combos } else { Vec::new() },
            });
        }

        // Co-occurrence: for every facet g and value v, the counts of every other facet's values among v's docs.
        let nf = metas.len();
        for g in 0..nf {
            let mut per_value: Vec<Vec<BTreeMap<u32, u32>>> = vec![vec![BTreeMap::new(); nf]; metas[g].values.len()];
            for f in 0..nf {
                if f == g {
                    continue;
                }
                let (gc, fc) = (code_values[g].len(), code_values[f].len());
                let mut pairs: HashMap<(u32, u32), u32> = HashMap::new();
                let mut dense = if gc * fc <= 1 << 24 { vec![0u32; gc * fc] } else { Vec::new() };
                for block in 0..codes[g].blocks() {
                    for (a, b) in codes[g].block(block)?.into_iter().zip(codes[f].block(block)?) {
                        if a == 0 || b == 0 {
                            continue;
                        }
                        if dense.is_empty() {
                            *pairs.entry((a, b)).or_default() += 1;
                        } else {
                            dense[a as usize * fc + b as usize] += 1;
                        }
                    }
                }
                if !dense.is_empty() {
                    for (i, &c) in dense.iter().enumerate() {
                        if c > 0 {
                            pairs.insert(((i / fc) as u32, (i % fc) as u32), c);
                        }
                    }
                }
                for ((a, b), c) in pairs {
                    for &gv in &code_values[g][a as usize] {
                        for &fv in &code_values[f][b as usize] {
                            *per_value[gv as usize][f].entry(fv).or_default() += c;
                        }
                    }
                }
            }
            for (v, facets) in per_value.into_iter().enumerate() {
                let lists: Vec<Vec<(u32, u32)>> = facets.into_iter().map(|m| m.into_iter().collect()).collect();
                sink.put(&format!("c/{g}-{v}.bin"), &codec::encode_cooccurrence(&lists))?;
            }
        }

        // Facet-code blocks.
        let mut block_sizes = Vec::new();
        for b in 0..n.div_ceil(BLOCK) {
            let lo = (b * BLOCK) as usize;
            let hi = (lo + BLOCK as usize).min(n as usize);
            let cols: Vec<Vec<u32>> = codes.iter().map(|c| c.block(b as usize)).collect::<std::io::Result<_>>()?;
            debug_assert!(cols.iter().all(|c| c.len() == hi - lo));
            let cols: Vec<&[u32]> = cols.iter().map(Vec::as_slice).collect();
            let bytes = codec::encode_block(&cols);
            block_sizes.push(bytes.len() as u32);
            sink.put(&format!("k/{b}.bin"), &bytes)?;
        }
        drop(codes);

        // Text chunks: sorted tokens, cut when a chunk's postings pass TEXT_CHUNK_BYTES;
        // a common token's postings are split by doc range (TextPosting::Segmented).
        // Bitmaps are read twice (sizes, then chunks) rather than held all at once.
        let mut tokens: Vec<(String, u32)> = self.tokens.drain().collect();
        tokens.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text_chunks = Vec::new();
        let mut start = 0;
        let mut size = 0;
        let mut sizes = Vec::with_capacity(tokens.len());
        for (t, key) in tokens.iter() {
            sizes.push(t.len() + optimized(*key)?.serialized_size());
        }
        for i in 0..tokens.len() {
            size += sizes[i];
            // A large posting gets a chunk of its own, so a query for a rare
            // neighbouring word does not download it.
            let next_is_large = i + 1 < tokens.len() && sizes[i + 1] >= TEXT_CHUNK_BYTES / 2;
            if size >= TEXT_CHUNK_BYTES || sizes[i] >= TEXT_CHUNK_BYTES / 2 || next_is_large || i + 1 == tokens.len() {
                let c = text_chunks.len();
                let mut entries = Vec::with_capacity(i + 1 - start);
                for (e, (t, key)) in tokens[start..=i].iter().enumerate() {
                    let b = optimized(*key)?;
                    let posting = if b.serialized_size() > 2 * self.text_segment_bytes {
                        let mut segments = Vec::new();
                        let mut first = RoaringBitmap::new();
                        for (s, (end, mut docs)) in split_by_range(&b, n, self.text_segment_bytes, self.text_segment_step).into_iter().enumerate() {
                            docs.optimize();
                            let count = docs.len() as u32;
                            let bytes = if s == 0 {
                                first = docs;
                                0
                            } else {
                                let file = codec::encode_postings(&docs);
                                sink.put(&format!("x/{c}-{e}-{s}.bin"), &file)?;
                                file.len() as u32
                            };
                            segments.push(codec::SegmentInfo { end, count, bytes });
                        }
                        codec::TextPosting::Segmented(codec::Segmented { count: b.len(), segments, first })
                    } else {
                        codec::TextPosting::Whole(b)
                    };
                    entries.push((&**t, posting));
                }
                let refs: Vec<(&str, &codec::TextPosting)> = entries.iter().map(|(t, p)| (*t, p)).collect();
                sink.put(&format!("x/{c}.bin"), &codec::encode_text_chunk(&refs))?;
                text_chunks.push(tokens[start].0.clone());
                start = i + 1;
                size = 0;
            }
        }
        drop(tokens);

        // Time: per start year, the docs that started in earlier years and the exact starts within it.
        let mut start_years = Vec::new();
        let mut before = RoaringBitmap::new();
        let mut by_year: BTreeMap<i32, Vec<(i64, u32)>> = BTreeMap::new();
        for (ts, key) in std::mem::take(&mut self.starts) {
            by_year.entry(crate::query::year_of(ts)).or_default().push((ts, key));
        }
        let year_postings = |keys: Vec<(i64, u32)>| -> Result<Vec<(i64, RoaringBitmap)>> { keys.into_iter().map(|(ts, key)| Ok((ts, optimized(key)?))).collect() };
        for (y, keys) in by_year {
            before.optimize();
            let exact = year_postings(keys)?;
            let t = codec::TimeYear { beyond: before.clone(), exact };
            sink.put(&format!("t/s{y}.bin"), &codec::encode_time_year(&t))?;
            for (_, b) in &t.exact {
                before |= b;
            }
            start_years.push(y);
        }
        let mut end_years = Vec::new();
        let mut after = RoaringBitmap::new();
        let mut by_year: BTreeMap<i32, Vec<(i64, u32)>> = BTreeMap::new();
        for (ts, key) in std::mem::take(&mut self.ends) {
            by_year.entry(crate::query::year_of(ts)).or_default().push((ts, key));
        }
        for (y, keys) in by_year.into_iter().rev() {
            after.optimize();
            let exact = year_postings(keys)?;
            let t = codec::TimeYear { beyond: after.clone(), exact };
            sink.put(&format!("t/e{y}.bin"), &codec::encode_time_year(&t))?;
            for (_, b) in &t.exact {
                after |= b;
            }
            end_years.push(y);
        }
        end_years.reverse();

        if !self.boxes.is_empty() {
            let boxes = self
                .boxes
                .iter()
                .map(|&(bbox, key)| Ok((bbox, optimized(key)?)))
                .collect::<Result<Vec<_>>>()?;
            sink.put("b.bin", &codec::encode_boxes(&boxes))?;
        }

        let fgb = match self.fgb.take() {
            Some(w) if n > 0 => {
                // ~470 bytes per item: assembled in a temp file, not in memory.
                let mut out = std::io::BufWriter::new(tempfile::tempfile()?);
                w.finish(&mut out)?;
                let mut file = out.into_inner().map_err(|e| e.into_error())?;
                std::io::Seek::rewind(&mut file)?;
                sink.put_file("items.fgb", &mut file)?;
                Some("items.fgb".to_string())
            }
            _ => None,
        };

        let meta = Meta {
            format: FORMAT.to_string(),
            version: VERSION,
            site: self.site,
            items: n,
            doc_shard: DOC_SHARD,
            block: BLOCK,
            facets: metas,
            text_chunks,
            start_years,
            end_years,
            block_sizes,
            boxes: self.boxes.len() as u32,
            fgb,
        };
        let mut json = serde_json::to_vec(&meta)?;
        json.push(b'\n');
        sink.put("index.json", &json)?;
        Ok(meta)
    }
}

/// Postings bytes per text chunk before a new chunk starts.
pub const TEXT_CHUNK_BYTES: usize = 24 * 1024;

/// A facet value's posting file (compressed) over this many bytes is also
/// written in doc-range segments ([`crate::FacetMeta::segments`]): the engine
/// defers only filters over [`crate::query::DEFER_BYTES`] (the same 64 KB), and
/// then reads those segments that hold the other filters' docs when they are
/// fewer bytes than the blocks. At 10M items 15 values are over it.
pub const FACET_SEGMENT_MIN_BYTES: usize = 64 * 1024;

/// Facet posting segments cover a multiple of [`crate::BLOCK`] docs, as many
/// as would take about this many file bytes if the value's docs were spread
/// evenly (at 10M items `latest=true`: 7 blocks, files of 7–12 KB).
pub const FACET_SEGMENT_BYTES: usize = 8 * 1024;

/// A token whose postings take more than twice this many bytes (serialized,
/// before DEFLATE) is split by doc range into segments of about this size,
/// cut at multiples of 65,536 docs (roaring container bounds). Sites under
/// 458,752 items (at most 7 roaring containers of at most 8 KB) never reach
/// it: their postings stay one file.
pub const TEXT_SEGMENT_BYTES: usize = 32 * 1024;

/// `b` cut into consecutive doc ranges `[previous end, end)` covering `0..n`, each
/// closed once its postings pass `target` bytes at a multiple of `step` docs.
fn split_by_range(b: &RoaringBitmap, n: u32, target: usize, step: u32) -> Vec<(u32, RoaringBitmap)> {
    let mut out: Vec<(u32, RoaringBitmap)> = Vec::new();
    let mut cur = RoaringBitmap::new();
    let mut lo = 0u64;
    while lo < n as u64 {
        let hi = (lo + step as u64).min(n as u64);
        cur.append(b.range(lo as u32..hi as u32)).expect("ascending");
        if cur.serialized_size() >= target {
            out.push((hi as u32, std::mem::take(&mut cur)));
        }
        lo = hi;
    }
    match out.last_mut() {
        Some(last) if cur.is_empty() => last.0 = n,
        _ => out.push((n, cur)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{search_dir, Query};

    fn item(i: usize, variable: &str, realm: &[&str], start_year: i64, bbox: [f64; 4]) -> ItemInput {
        let start = crate::query::days_from_civil(start_year, 1, 1) * 86400;
        ItemInput {
            id: format!("CMIP6.CMIP.X.M-{i}.historical.r1i1p1f1.Amon.{variable}.gn.v20200101"),
            href: format!("CMIP6/x/{i}.json"),
            title: String::new(),
            start,
            end: start + 10 * 365 * 86400,
            bbox,
            facets: vec![(false, vec![variable.to_string()]), (true, realm.iter().map(|s| s.to_string()).collect())],
            text: vec![if variable == "tas" { "Near-Surface Air Temperature".into() } else { "Precipitation".into() }],
            label: variable.into(),
        }
    }

    /// The same items, with every text posting segmented (64-doc steps) and without.
    fn segmented_pair() -> (tempfile::TempDir, tempfile::TempDir) {
        let (whole, seg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (dir, segment) in [(&whole, false), (&seg, true)] {
            let mut sink = DirSink(dir.path().to_path_buf());
            let opts = Options {
                facets: vec![("cmip6:variable_id".into(), "variable".into(), "Variable".into()), ("cmip6:realm".into(), "realm".into(), "Realm".into())],
                fgb: false,
                site: SiteRef::default(),
            };
            let mut w = IndexWriter::new(opts).unwrap();
            if segment {
                w.set_text_segments(16, 64);
            }
            for i in 0..1500 {
                // Runs of 50 items per variable, and a rare word now and then.
                let (v, realm): (&str, &[&str]) = if (i / 50) % 3 == 0 { ("pr", &["atmos", "land"]) } else { ("tas", &["atmos"]) };
                let mut it = item(i, v, realm, 1850 + (i as i64 % 200), [-180.0, -90.0, 180.0, 90.0]);
                if i % 97 == 5 {
                    it.title = "rare sighting".into();
                }
                w.add(it, &mut sink).unwrap();
            }
            w.finish(&mut sink).unwrap();
        }
        (whole, seg)
    }

    #[test]
    fn segmented_text_postings_answer_like_whole_ones() {
        use crate::query::{search_dir_opts, SearchOptions};
        let (whole, seg) = segmented_pair();
        assert!(std::fs::read_dir(seg.path().join("x")).unwrap().count() > std::fs::read_dir(whole.path().join("x")).unwrap().count() + 20);
        let queries: &[&[(&str, &str)]] = &[
            &[("q", "air")],
            &[("q", "temperature"), ("page", "7")],
            &[("q", "near surface air")],
            &[("q", "precip"), ("f.realm", "land")],
            &[("q", "rare")],
            &[("q", "rare air")],
            &[("q", "air"), ("f.variable", "pr")],
            &[("q", "t")],
            &[("q", "air"), ("from", "1900-01-01"), ("to", "1910-12-31")],
            &[("q", "cmip6 historical")],
            &[("q", "nosuchword air")],
        ];
        for params in queries {
            let q = Query::from_params(params.iter().copied());
            let want = search_dir(whole.path(), &q, true).unwrap();
            assert!(want.exact);
            // Exhaustive: the same ids, total and counts.
            let exact = search_dir_opts(seg.path(), &q, &SearchOptions { all: true, ..Default::default() }).unwrap();
            assert!(exact.exact, "{params:?}");
            assert_eq!((exact.total, &exact.all, &exact.page, &exact.counts), (want.total, &want.all, &want.page, &want.counts), "{params:?}");
            // As the viewer reads it: the same page; the total exact or a lower bound, and no counts then.
            for defer in [None, Some(0)] {
                let got = search_dir_opts(seg.path(), &q, &SearchOptions { defer_bytes: defer, complete_bytes: Some(0), ..Default::default() }).unwrap();
                assert_eq!(got.page, want.page, "{params:?}");
                for (facet, counts) in &got.counts {
                    assert_eq!(Some(counts), want.counts.get(facet), "{params:?} {facet}");
                }
                if got.exact {
                    assert_eq!(got.total, want.total, "{params:?}");
                } else {
                    assert!(got.total < want.total && got.total >= got.page.len() as u64, "{params:?}: {} of {}", got.total, want.total);
                    assert!(got.counts.is_empty(), "{params:?}");
                }
            }
        }
        // One word matching one token is counted exactly from its segment counts; the
        // first page of a common word needs a fraction of its postings.
        let q = Query::from_params([("q", "temperature")]);
        let progressive = SearchOptions { complete_bytes: Some(0), ..Default::default() };
        let (got, exact) = (search_dir_opts(seg.path(), &q, &progressive).unwrap(), search_dir_opts(seg.path(), &q, &SearchOptions { exact: true, ..Default::default() }).unwrap());
        assert!(got.exact && got.total == exact.total && got.bytes < exact.bytes && got.requests + 10 < exact.requests, "{} vs {} requests", got.requests, exact.requests);
        let q = Query::from_params([("q", "surface temperature")]);
        let got = search_dir_opts(seg.path(), &q, &progressive).unwrap();
        assert!(!got.exact && got.page.len() == crate::PAGE_SIZE);
        // Small leftovers are read whole: exact.
        assert!(search_dir(seg.path(), &q, false).unwrap().exact);
    }

    /// The same 160,000 items (ten blocks), with every facet posting also
    /// segmented (at 1,024-doc steps) and with none.
    fn facet_segmented_pair() -> (tempfile::TempDir, tempfile::TempDir) {
        let (whole, seg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (dir, segment) in [(&whole, false), (&seg, true)] {
            let mut sink = DirSink(dir.path().to_path_buf());
            let opts = Options {
                facets: vec![("cmip6:variable_id".into(), "variable".into(), "Variable".into()), ("cmip6:realm".into(), "realm".into(), "Realm".into())],
                fgb: false,
                site: SiteRef::default(),
            };
            let mut w = IndexWriter::new(opts).unwrap();
            if segment {
                w.set_facet_segments(0, 64, 1024);
            } else {
                w.set_facet_segments(usize::MAX, 64, 1024);
            }
            for i in 0..160_000 {
                // Runs of variables, realms changing on another rhythm, years spreading over the docs.
                let v = ["tas", "pr", "tos", "huss"][(i / 37 + i / 1000) % 4];
                let realm: &[&str] = if (i / 300) % 5 == 0 { &["atmos", "land"] } else if i % 7 == 0 { &["ocean"] } else { &["atmos"] };
                w.add(item(i, v, realm, 1850 + (i as i64 / 200), [-180.0, -90.0, 180.0, 90.0]), &mut sink).unwrap();
            }
            w.finish(&mut sink).unwrap();
        }
        (whole, seg)
    }

    #[test]
    fn segmented_facet_postings_answer_like_blocks_and_whole_postings() {
        use crate::query::{search_dir_opts, DirFiles, Engine, SearchOptions};
        let (whole, seg) = facet_segmented_pair();
        let meta: crate::Meta = serde_json::from_slice(&std::fs::read(seg.path().join("index.json")).unwrap()).unwrap();
        assert!(meta.facets.iter().all(|f| f.segments.len() == f.values.len() && f.segments.values().all(|&n| n % 1024 == 0)));
        let plain: crate::Meta = serde_json::from_slice(&std::fs::read(whole.path().join("index.json")).unwrap()).unwrap();
        assert!(plain.facets.iter().all(|f| f.segments.is_empty()));
        let queries: &[&[(&str, &str)]] = &[
            &[("f.variable", "tas"), ("from", "1900-01-01"), ("to", "1905-12-31")],
            &[("f.variable", "tas"), ("f.variable", "pr"), ("from", "1950-01-01"), ("to", "1950-12-31"), ("page", "2")],
            &[("f.realm", "land"), ("f.variable", "tos"), ("from", "1860-01-01"), ("to", "1870-12-31")],
            &[("f.realm", "ocean"), ("f.realm", "land"), ("q", "precipitation"), ("to", "1880-01-01")],
            &[("f.variable", "huss"), ("f.realm", "atmos"), ("from", "2000-01-01"), ("to", "2001-01-01")],
            &[("f.variable", "tas"), ("q", "nosuchword")],
            &[("f.variable", "tas"), ("f.realm", "ocean")],
        ];
        let mut segment_reads = 0;
        for params in queries {
            let q = Query::from_params(params.iter().copied());
            let want = search_dir_opts(whole.path(), &q, &SearchOptions { all: true, ..Default::default() }).unwrap();
            // Defer every filter (1 byte): segments where they are fewer bytes than blocks; blocks (0); the default.
            for defer in [Some(1), Some(0), None] {
                let got = search_dir_opts(seg.path(), &q, &SearchOptions { all: true, defer_bytes: defer, ..Default::default() }).unwrap();
                assert_eq!((got.total, &got.all, &got.page, &got.counts), (want.total, &want.all, &want.page, &want.counts), "{params:?} defer {defer:?}");
            }
            let mut engine = Engine::new(meta.clone()).unwrap();
            engine.defer_bytes = 1;
            let mut files = DirFiles::new(seg.path());
            files.load(&engine.result_files(&q)).unwrap();
            let filters = engine.filters(&q, &files).unwrap();
            segment_reads += engine.deferred_files(&filters).iter().filter(|p| p.starts_with("f/") && p.matches('-').count() == 2).count();
        }
        assert!(segment_reads > 0, "no query read segments");
    }

    #[test]
    fn segmented_index_is_deterministic() {
        let (a, b) = (segmented_pair().1, segmented_pair().1);
        let mut files = Vec::new();
        for e in walk(a.path()) {
            let rel = e.strip_prefix(a.path()).unwrap().to_path_buf();
            assert_eq!(std::fs::read(&e).unwrap(), std::fs::read(b.path().join(&rel)).unwrap(), "{}", rel.display());
            files.push(rel);
        }
        assert_eq!(files.len(), walk(b.path()).len());
    }

    /// Spilling the bitmaps every 2^9 or 2^17 docs writes the same bytes as
    /// holding them all until the end (one range of 2^31 docs), also for
    /// multi-valued facets, segmented words, several boxes and footprints.
    #[test]
    fn spilled_index_is_byte_identical_to_one_held_in_memory() {
        let build = |bits: u32| {
            let dir = tempfile::tempdir().unwrap();
            let mut sink = DirSink(dir.path().to_path_buf());
            let opts = Options {
                facets: vec![("cmip6:variable_id".into(), "variable".into(), "Variable".into()), ("cmip6:realm".into(), "realm".into(), "Realm".into())],
                fgb: true,
                site: SiteRef::default(),
            };
            let mut w = IndexWriter::new(opts).unwrap();
            w.set_spill_range(bits);
            w.set_text_segments(256, 1024);
            for i in 0..140_000 {
                let v = ["tas", "pr", "tos", "huss"][(i / 37 + i / 1000) % 4];
                let realm: &[&str] = if (i / 300) % 5 == 0 { &["atmos", "land"] } else if i % 7 == 0 { &["ocean"] } else { &["atmos"] };
                let bbox = if i % 11 == 0 { [-10.0, 30.0, 40.0, 70.0] } else { [-180.0, -90.0, 180.0, 90.0] };
                let mut it = item(i, v, realm, 1850 + (i as i64 / 900), bbox);
                if i % 5003 == 1 {
                    it.text.push(format!("rare{}", i % 3));
                }
                w.add(it, &mut sink).unwrap();
            }
            w.finish(&mut sink).unwrap();
            dir
        };
        let whole = build(31);
        let files = walk(whole.path());
        assert!(files.len() > 50, "{} files", files.len());
        for bits in [17, 9] {
            let spilled = build(bits);
            assert_eq!(walk(spilled.path()).len(), files.len(), "ranges of 2^{bits}");
            for e in &files {
                let rel = e.strip_prefix(whole.path()).unwrap();
                assert!(std::fs::read(e).unwrap() == std::fs::read(spilled.path().join(rel)).unwrap(), "{} with ranges of 2^{bits}", rel.display());
            }
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn an_empty_site_has_a_working_index() {
        let dir = tempfile::tempdir().unwrap();
        let w = IndexWriter::new(Options::cmip6(SiteRef::default())).unwrap();
        let meta = w.finish(&mut DirSink(dir.path().to_path_buf())).unwrap();
        assert_eq!(meta.items, 0);
        for params in [&[][..], &[("f.variable", "tas"), ("q", "air"), ("from", "2000-01-01"), ("bbox", "0,0,1,1")][..]] {
            let out = search_dir(dir.path(), &Query::from_params(params.iter().copied()), true).unwrap();
            assert_eq!(out.total, 0);
        }
    }

    #[test]
    fn writes_and_answers_queries() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DirSink(dir.path().to_path_buf());
        let opts = Options {
            facets: vec![("cmip6:variable_id".into(), "variable".into(), "Variable".into()), ("cmip6:realm".into(), "realm".into(), "Realm".into())],
            fgb: true,
            site: SiteRef { name: "t".into(), title: "T".into() },
        };
        let mut w = IndexWriter::new(opts).unwrap();
        let global = [-180.0, -90.0, 180.0, 90.0];
        let europe = [-10.0, 35.0, 30.0, 70.0];
        for i in 0..1500 {
            let (v, realm): (&str, &[&str]) = if i % 3 == 0 { ("pr", &["atmos", "land"]) } else { ("tas", &["atmos"]) };
            w.add(item(i, v, realm, 1850 + (i as i64 % 200), if i % 5 == 0 { europe } else { global }), &mut sink).unwrap();
        }
        let meta = w.finish(&mut sink).unwrap();
        assert_eq!(meta.items, 1500);
        assert_eq!(meta.facets[0].values, ["pr", "tas"]);
        assert!(meta.facets[1].multi);
        let run = |params: &[(&str, &str)]| search_dir(dir.path(), &Query::from_params(params.iter().copied()), true).unwrap();
        let all = run(&[]);
        assert_eq!(all.total, 1500);
        assert_eq!(all.counts["variable"]["pr"], 500);
        let tas = run(&[("f.variable", "tas")]);
        assert_eq!(tas.total, 1000);
        assert_eq!(tas.counts["realm"]["atmos"], 1000);
        assert!(!tas.counts["realm"].contains_key("land"));
        let land = run(&[("f.realm", "land")]);
        assert_eq!(land.total, 500);
        // Text: prefix terms, AND.
        assert_eq!(run(&[("q", "air temp")]).total, 1000);
        let want = (0..1500).filter(|i| i % 3 == 0 && i.to_string().starts_with('3')).count() as u64;
        assert_eq!(run(&[("q", "precip m-3")]).total, want);
        // Time: items overlapping 1900-01-01..1900-12-31.
        let t = run(&[("from", "1900-01-01"), ("to", "1900-12-31")]);
        let want = (0..1500).filter(|i| {
            let s = crate::query::days_from_civil(1850 + (i % 200) as i64, 1, 1) * 86400;
            let (from, to) = (crate::query::parse_time("1900-01-01", false).unwrap(), crate::query::parse_time("1900-12-31", true).unwrap());
            s <= to && s + 10 * 365 * 86400 >= from
        });
        assert_eq!(t.total, want.count() as u64);
        // Bbox and combined filters, counted over blocks.
        let b = run(&[("bbox", "100,0,120,10"), ("f.variable", "tas")]);
        assert_eq!(b.total, (0..1500).filter(|i| i % 3 != 0 && i % 5 != 0).count() as u64);
        assert_eq!(b.counts["realm"]["atmos"] as u64, b.total);
        // The FlatGeobuf reads back (another reader: the crate's own) with every footprint.
        let mut file = std::io::BufReader::new(std::fs::File::open(dir.path().join("items.fgb")).unwrap());
        let mut fgb = flatgeobuf::FgbReader::open(&mut file).unwrap().select_all().unwrap();
        assert_eq!(fgb.header().features_count(), 1500);
        let mut n = 0;
        while let Some(f) = flatgeobuf::FallibleStreamingIterator::next(&mut fgb).unwrap() {
            use flatgeobuf::FeatureProperties;
            assert!(f.property::<String>("id").unwrap().starts_with("CMIP6."));
            n += 1;
        }
        assert_eq!(n, 1500);
        let mut file = std::io::BufReader::new(std::fs::File::open(dir.path().join("items.fgb")).unwrap());
        let europe_only = flatgeobuf::FgbReader::open(&mut file).unwrap().select_bbox(0.0, 40.0, 10.0, 50.0).unwrap();
        assert_eq!(europe_only.features_count(), Some(1500)); // every footprint touches Europe (global or European)
    }
}
