//! The query engine. It is synchronous and does no I/O: each step says which
//! index files it needs ([`Engine::result_files`], [`Engine::count_files`],
//! [`Engine::page_files`]), the caller fetches them (over HTTP in the viewer,
//! from disk natively) into a [`Files`] store, and the next step computes.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::codec::{self, FormatError, Result};
use crate::{tokenize, Doc, Meta, FORMAT, PAGE_SIZE, VERSION};

/// Facet counts over blocks are computed only when the docs they must look
/// at span at most this many blocks; broader combined filters show no counts.
pub const MAX_COUNT_BLOCKS: usize = 24;

/// A facet filter whose posting files total more than this is evaluated from
/// the blocks of the docs the other filters leave (when they span at most
/// [`MAX_DEFER_BLOCKS`] blocks) instead of downloading its postings.
pub const DEFER_BYTES: u64 = 64 * 1024;
pub const MAX_DEFER_BLOCKS: usize = 32;

/// [`Engine::likely_page_files`] guesses the page's rows before the
/// deferred filters are applied only when they pass at least this share of all items.
pub const LIKELY_PASS: f64 = 0.5;

/// Segmented text postings ([`codec::Segmented`]) are read in doc order only
/// as far as the result page needs, unless what is left of them is at most
/// this many bytes: then all of it, so the total and the counts are exact.
pub const COMPLETE_BYTES: u64 = 128 * 1024;

/// A search: what the viewer's URL holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Facet short name → selected values (OR within, AND across facets).
    pub facets: BTreeMap<String, Vec<String>>,
    /// Free text: every term must prefix some token.
    pub text: String,
    /// Inclusive time range in seconds since 1970 (either end open).
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// West, south, east, north (west > east crosses the antimeridian).
    pub bbox: Option<[f64; 4]>,
    /// 0-based result page.
    pub page: usize,
}

impl Query {
    /// From URL query parameters (`f.<facet>=<value>` repeated, `q`, `from`,
    /// `to` as dates or RFC 3339 times, `bbox=w,s,e,n`, `page` 1-based).
    /// Parameters it does not know (`site`, `item`) are ignored.
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Query {
        let mut q = Query::default();
        for (k, v) in params {
            match k {
                "q" => q.text = v.to_string(),
                "from" => q.from = parse_time(v, false),
                "to" => q.to = parse_time(v, true),
                "bbox" => {
                    let parts: Vec<f64> = v.split(',').filter_map(|p| p.trim().parse().ok()).collect();
                    if let [w, s, e, n] = parts[..] {
                        if [w, s, e, n].iter().all(|x| x.is_finite()) && s <= n {
                            q.bbox = Some([w, s, e, n]);
                        }
                    }
                }
                "page" => q.page = v.parse::<usize>().unwrap_or(1).max(1) - 1,
                _ => {
                    if let Some(name) = k.strip_prefix("f.") {
                        let values = q.facets.entry(name.to_string()).or_default();
                        if !values.iter().any(|x| x == v) {
                            values.push(v.to_string());
                        }
                    }
                }
            }
        }
        q.facets.retain(|_, v| !v.is_empty());
        q
    }

    /// URL query parameters, in a canonical order (the inverse of [`Query::from_params`]).
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.text.trim().is_empty() {
            out.push(("q".to_string(), self.text.clone()));
        }
        for (name, values) in &self.facets {
            for v in values {
                out.push((format!("f.{name}"), v.clone()));
            }
        }
        if let Some(t) = self.from {
            out.push(("from".to_string(), format_time(t)));
        }
        if let Some(t) = self.to {
            out.push(("to".to_string(), format_time(t)));
        }
        if let Some(b) = self.bbox {
            out.push(("bbox".to_string(), b.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(",")));
        }
        if self.page > 0 {
            out.push(("page".to_string(), (self.page + 1).to_string()));
        }
        out
    }

    /// True when nothing filters (every item matches).
    pub fn is_empty(&self) -> bool {
        self.facets.is_empty() && tokenize(&self.text).is_empty() && self.from.is_none() && self.to.is_none() && self.bbox.is_none()
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Year of a timestamp (seconds since 1970, UTC).
pub fn year_of(ts: i64) -> i32 {
    civil_from_days(ts.div_euclid(86400)).0 as i32
}

/// `YYYY-MM-DD` (whole day; `end_of_day` gives its last second) or
/// `YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`.
pub fn parse_time(s: &str, end_of_day: bool) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    let day = days_from_civil(y, m, d) * 86400;
    let Some(time) = time else { return Some(day + if end_of_day { 86399 } else { 0 }) };
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (c, sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
    } else {
        (time, 0)
    };
    let mut hms = clock.splitn(3, ':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next().unwrap_or("0").parse().ok()?;
    let sec: f64 = hms.next().unwrap_or("0").parse().ok()?;
    Some(day + h * 3600 + mi * 60 + sec.floor() as i64 - offset)
}

/// `YYYY-MM-DD` for whole days (00:00:00 or 23:59:59), else RFC 3339.
pub fn format_time(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(86400));
    let secs = ts.rem_euclid(86400);
    if secs == 0 || secs == 86399 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn format_rfc3339(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(86400));
    let secs = ts.rem_euclid(86400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Fetched index files, decompressed, by path relative to the index directory.
pub trait Files {
    fn get(&self, path: &str) -> Option<&[u8]>;
}

impl Files for HashMap<String, Vec<u8>> {
    fn get(&self, path: &str) -> Option<&[u8]> {
        HashMap::get(self, path).map(Vec::as_slice)
    }
}

fn need<'a>(files: &'a dyn Files, path: &str) -> Result<&'a [u8]> {
    files.get(path).ok_or_else(|| FormatError(format!("{path} was not loaded")))
}

pub struct Engine {
    pub meta: Meta,
    /// See [`DEFER_BYTES`] (tests lower it to exercise both paths).
    pub defer_bytes: u64,
    /// See [`COMPLETE_BYTES`] (tests set 0 to read segments progressively at any size).
    pub complete_bytes: u64,
    by_name: HashMap<String, usize>,
    value_index: Vec<HashMap<String, u32>>,
}

/// The bitmaps a query's filters select; `None` means "no restriction".
pub struct Filters {
    items: u32,
    /// Per filtered facet: (facet number, docs having a selected value).
    facets: Vec<(usize, RoaringBitmap)>,
    /// Text ∩ time ∩ bbox.
    other: Option<RoaringBitmap>,
    /// Facet filters read from block codes rather than postings: (facet, selected value numbers, sorted).
    deferred: Vec<(usize, Vec<u32>)>,
    /// The results, once [`Engine::resolve`] applied the deferred filters.
    resolved: Option<RoaringBitmap>,
    /// Docs below this are evaluated (the segments of common words read so
    /// far reach this far); the rest is unknown. `items` when complete.
    limit: u32,
    /// The exact total when the filters are not complete but it is known anyway
    /// (one word matching one segmented token, nothing else: its doc count).
    known_total: Option<u64>,
    /// The docs the filters other than text and the deferred ones leave
    /// (`None`: all): text segments holding none of them are not needed.
    candidates: Option<RoaringBitmap>,
    /// Text segments were left out for holding no candidates: the selected
    /// facets' own counts (without their filter) are unknown.
    skipped: bool,
    /// `combine(None)`, computed once: deferral, resolving, the total and
    /// every facet's count plan need it (reset when `facets` changes).
    known: OnceCell<Option<Arc<RoaringBitmap>>>,
}

impl Filters {
    /// The known (posting-list) filters, leaving out facet `skip`.
    fn combine(&self, skip: Option<usize>) -> Option<RoaringBitmap> {
        let mut acc: Option<RoaringBitmap> = self.other.clone();
        for (f, b) in &self.facets {
            if Some(*f) == skip {
                continue;
            }
            acc = Some(match acc {
                None => b.clone(),
                Some(a) => a & b,
            });
        }
        acc
    }

    /// Every known (posting-list) filter combined, shared.
    fn known(&self) -> Option<Arc<RoaringBitmap>> {
        self.known.get_or_init(|| self.combine(None).map(Arc::new)).clone()
    }

    fn all(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.items);
        all
    }

    /// Are the results all the docs matching the query? Otherwise they are
    /// those below [`Filters::limit`], the first in doc order.
    pub fn complete(&self) -> bool {
        self.limit >= self.items
    }

    /// Can every facet's live counts be computed? (Complete, and no text
    /// segment left out because the selected facets excluded its docs.)
    pub fn counts_complete(&self) -> bool {
        self.complete() && !self.skipped
    }

    /// Docs below this are evaluated.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The number of matching docs when it is known: always when complete.
    pub fn total(&self) -> Option<u64> {
        if self.complete() {
            Some(match (&self.resolved, self.known()) {
                (Some(r), _) => r.len(),
                (None, Some(k)) => k.len(),
                (None, None) => self.items as u64,
            })
        } else {
            self.known_total
        }
    }

    /// Every doc matching the query (below [`Filters::limit`]), ascending (after [`Engine::resolve`]).
    pub fn results(&self) -> RoaringBitmap {
        if let Some(r) = &self.resolved {
            return r.clone();
        }
        self.known().map(|k| (*k).clone()).unwrap_or_else(|| self.all())
    }
}

/// Does a doc's code satisfy a facet filter?
fn code_matches(facet: &crate::FacetMeta, code: u32, values: &[u32]) -> bool {
    let mut hit = false;
    facet.for_code(code, |v| hit |= values.binary_search(&v).is_ok());
    hit
}

/// A facet filter: (facet number, selected value numbers).
type Selection = (usize, Vec<u32>);

/// How one facet's live counts are computed.
#[derive(Debug, Clone)]
pub enum CountPlan {
    /// Nothing but the facet itself filters: the global counts.
    Global,
    /// One other facet filters: sum its values' co-occurrence files.
    Cooccurrence { facet: usize, files: Vec<String> },
    /// Count the codes of these docs in their blocks (those passing the deferred filters).
    Blocks { docs: Arc<RoaringBitmap>, blocks: Vec<u32>, deferred: Vec<(usize, Vec<u32>)> },
    /// The docs span too many blocks: no counts.
    TooBroad,
    /// The results are not complete (segmented text read in part): no counts.
    Partial,
}

/// How the deferred facet filters are evaluated ([`Engine::deferral`]).
enum Deferral {
    /// From the facet codes in these blocks.
    Blocks(Vec<u32>),
    /// From these segments (or whole files) of their postings.
    Segments(Vec<SegmentPart>),
    /// From their whole postings, which then count as known filters.
    Postings,
}

/// The files of one deferred value's postings that a query reads.
struct SegmentPart {
    facet: usize,
    files: Vec<String>,
    bytes: u64,
}

/// A segmented token that a query term matches ([`codec::Segmented`]).
struct SegmentedToken {
    /// `x/<chunk>-<entry>`: segment `s` is in `<prefix>-<s>.bin`.
    prefix: String,
    seg: codec::Segmented,
    /// Segments 0..loaded are evaluated (in the file store, or not needed).
    loaded: usize,
    /// Per segment: does it hold docs the other filters leave?
    needed: Vec<bool>,
    /// Some evaluated segment with docs was not read (not needed).
    skipped: bool,
}

impl SegmentedToken {
    fn path(&self, s: usize) -> String {
        format!("{}-{s}.bin", self.prefix)
    }

    /// The needed segments not evaluated yet.
    fn rest(&self) -> impl Iterator<Item = usize> + '_ {
        (self.loaded..self.seg.segments.len()).filter(|&s| self.needed[s])
    }

    /// Every segment with docs not read yet (what exact counts need).
    fn unread<'a>(&'a self, files: &'a dyn Files) -> impl Iterator<Item = usize> + 'a {
        (1..self.seg.segments.len()).filter(move |&s| self.seg.segments[s].count > 0 && files.get(&self.path(s)).is_none())
    }
}

/// One query term: the docs its tokens hold below `limit`.
struct TermDocs {
    docs: RoaringBitmap,
    limit: u32,
    tokens: usize,
}

impl Engine {
    pub fn new(meta: Meta) -> std::result::Result<Engine, String> {
        if meta.format != FORMAT || meta.version != VERSION {
            return Err(format!("index format {} v{} is not {FORMAT} v{VERSION}", meta.format, meta.version));
        }
        let by_name = meta.facets.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let value_index = meta.facets.iter().map(|f| f.values.iter().enumerate().map(|(i, v)| (v.clone(), i as u32)).collect()).collect();
        Ok(Engine { meta, defer_bytes: DEFER_BYTES, complete_bytes: COMPLETE_BYTES, by_name, value_index })
    }

    pub fn from_json(bytes: &[u8]) -> std::result::Result<Engine, String> {
        let meta: Meta = serde_json::from_slice(bytes).map_err(|e| format!("index.json: {e}"))?;
        Engine::new(meta)
    }

    pub fn facet(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Selected facets as (facet number, value numbers); values the index does
    /// not know select nothing, facets it does not know are ignored.
    fn selections(&self, q: &Query) -> Vec<(usize, Vec<u32>)> {
        q.facets
            .iter()
            .filter_map(|(name, values)| {
                let f = self.facet(name)?;
                Some((f, values.iter().filter_map(|v| self.value_index[f].get(v).copied()).collect()))
            })
            .collect()
    }

    /// Facet selections split into those read from postings and those
    /// deferred to the blocks (large postings, when something else narrows).
    fn split(&self, q: &Query) -> (Vec<Selection>, Vec<Selection>) {
        let mut sel = self.selections(q);
        let cost = |(f, values): &(usize, Vec<u32>)| -> u64 { values.iter().map(|&v| self.meta.facets[*f].sizes.get(v as usize).copied().unwrap_or(0) as u64).sum() };
        sel.sort_by_key(|s| (cost(s), s.0));
        let narrowing = !Self::terms(q).is_empty() || q.from.is_some() || q.to.is_some() || q.bbox.is_some();
        let (mut known, mut deferred) = (Vec::new(), Vec::new());
        for (f, mut values) in sel {
            values.sort_unstable();
            if cost(&(f, values.clone())) > self.defer_bytes && (narrowing || !known.is_empty()) {
                deferred.push((f, values));
            } else {
                known.push((f, values));
            }
        }
        (known, deferred)
    }

    /// The blocks holding any of `docs`, ascending, or `None` when there are
    /// more than `max`. It jumps from one doc to the first doc of the next
    /// block (one seek per block), stopping past `max`: `rank` per block sums
    /// the lengths of every container before it, and a run container's length
    /// is a sum over its runs, which made this most of a broad query's time.
    pub fn blocks_within(&self, docs: &RoaringBitmap, max: usize) -> Option<Vec<u32>> {
        let size = self.meta.block.max(1);
        let mut out = Vec::new();
        let mut it = docs.iter();
        while let Some(d) = it.next() {
            if d >= self.meta.items {
                break;
            }
            if out.len() == max {
                return None;
            }
            let b = d / size;
            out.push(b);
            match (b + 1).checked_mul(size) {
                Some(next) => it.advance_to(next),
                None => break,
            }
        }
        Some(out)
    }

    fn terms(q: &Query) -> Vec<String> {
        let mut t = tokenize(&q.text);
        t.sort();
        t.dedup();
        t
    }

    /// Text chunks that may hold tokens starting with `term`.
    fn text_chunks_for(&self, term: &str) -> Vec<usize> {
        let c = &self.meta.text_chunks;
        (0..c.len()).filter(|&i| (i + 1 == c.len() || c[i + 1].as_str() > term) && (c[i].as_str() <= term || c[i].starts_with(term))).collect()
    }

    fn start_year_file(&self, to: i64) -> Option<String> {
        let y = year_of(to);
        self.meta.start_years.iter().rev().find(|&&s| s <= y).map(|s| format!("t/s{s}.bin"))
    }

    fn end_year_file(&self, from: i64) -> Option<String> {
        let y = year_of(from);
        self.meta.end_years.iter().find(|&&e| e >= y).map(|e| format!("t/e{e}.bin"))
    }

    /// Files the result set needs.
    pub fn result_files(&self, q: &Query) -> Vec<String> {
        let mut out = BTreeSet::new();
        for (f, values) in self.split(q).0 {
            for v in values {
                out.insert(format!("f/{f}-{v}.bin"));
            }
        }
        for term in Self::terms(q) {
            for c in self.text_chunks_for(&term) {
                out.insert(format!("x/{c}.bin"));
            }
        }
        if let Some(to) = q.to {
            out.extend(self.start_year_file(to));
        }
        if let Some(from) = q.from {
            out.extend(self.end_year_file(from));
        }
        if q.bbox.is_some() && self.meta.boxes > 0 {
            out.insert("b.bin".to_string());
        }
        out.into_iter().collect()
    }

    /// The files a query reads first, known from `index.json` and the URL
    /// alone: [`Engine::result_files`], and the result rows when nothing
    /// filters (every doc matches). The viewer's page starts fetching these
    /// while its wasm loads (viewer/index.html computes the same list).
    pub fn first_files(&self, q: &Query) -> Vec<String> {
        let mut out = self.result_files(q);
        if q.is_empty() {
            let start = (q.page * PAGE_SIZE) as u64;
            let docs: Vec<u32> = (start..(start + PAGE_SIZE as u64).min(self.meta.items as u64)).map(|d| d as u32).collect();
            out.extend(self.page_files(&docs));
        }
        out
    }

    /// The query's filter bitmaps (needs [`Engine::result_files`]).
    pub fn filters(&self, q: &Query, files: &dyn Files) -> Result<Filters> {
        let mut facets = Vec::new();
        let (known, deferred) = self.split(q);
        for (f, values) in known {
            let mut b = RoaringBitmap::new();
            for v in values {
                b |= codec::decode_postings(need(files, &format!("f/{f}-{v}.bin"))?)?;
            }
            facets.push((f, b));
        }
        let mut other: Option<RoaringBitmap> = None;
        let mut and = |b: RoaringBitmap| {
            other = Some(match other.take() {
                None => b,
                Some(a) => a & b,
            })
        };
        if let Some(to) = q.to {
            let mut b = RoaringBitmap::new();
            if let Some(path) = self.start_year_file(to) {
                let t = codec::decode_time_year(need(files, &path)?)?;
                b = t.beyond;
                for (ts, docs) in &t.exact {
                    if *ts <= to {
                        b |= docs;
                    }
                }
            }
            and(b);
        }
        if let Some(from) = q.from {
            let mut b = RoaringBitmap::new();
            if let Some(path) = self.end_year_file(from) {
                let t = codec::decode_time_year(need(files, &path)?)?;
                b = t.beyond;
                for (ts, docs) in &t.exact {
                    if *ts >= from {
                        b |= docs;
                    }
                }
            }
            and(b);
        }
        if let Some(qb) = q.bbox {
            let mut b = RoaringBitmap::new();
            if self.meta.boxes > 0 {
                for (ib, docs) in codec::decode_boxes(need(files, "b.bin")?)? {
                    if boxes_intersect(&ib, &qb) {
                        b |= docs;
                    }
                }
            }
            and(b);
        }
        // The docs the other filters leave: text segments without any are not read.
        let candidates = facets.iter().fold(other.clone(), |acc, (_, b)| Some(match acc {
            None => b.clone(),
            Some(a) => a & b,
        }));
        let (terms, segmented) = self.text_terms(q, files, candidates.as_ref())?;
        let limit = terms.iter().map(|t| t.limit).min().unwrap_or(u32::MAX).min(self.meta.items);
        let single = terms.len() == 1 && terms[0].tokens == 1 && segmented.len() == 1;
        let skipped = segmented.iter().any(|t| t.skipped);
        for t in terms {
            other = Some(match other.take() {
                None => t.docs,
                Some(a) => a & t.docs,
            });
        }
        // Docs past the segments read so far are unknown.
        if limit < self.meta.items {
            if let Some(b) = other.as_mut() {
                b.remove_range(limit..);
            }
        }
        // A filter every doc passes (a box around global footprints) restricts nothing:
        // dropping it keeps the cheap count plans available.
        if other.as_ref().is_some_and(|b| b.len() == self.meta.items as u64) {
            other = None;
        }
        let nothing_else = facets.is_empty() && deferred.is_empty() && q.from.is_none() && q.to.is_none() && q.bbox.is_none();
        let known_total = (single && nothing_else).then(|| segmented[0].seg.count);
        Ok(Filters { items: self.meta.items, facets, other, deferred, resolved: None, limit, known_total, candidates, skipped, known: OnceCell::new() })
    }

    /// Per query term, the docs of the tokens it prefixes (as far as their
    /// segments are loaded), and the segmented tokens among them.
    /// Segments without docs, or without any of `candidates`, count as read.
    fn text_terms(&self, q: &Query, files: &dyn Files, candidates: Option<&RoaringBitmap>) -> Result<(Vec<TermDocs>, Vec<SegmentedToken>)> {
        let mut chunks: HashMap<usize, Vec<(String, codec::TextPosting)>> = HashMap::new();
        let mut terms = Vec::new();
        let mut segmented = Vec::new();
        for term in Self::terms(q) {
            let mut t = TermDocs { docs: RoaringBitmap::new(), limit: u32::MAX, tokens: 0 };
            for c in self.text_chunks_for(&term) {
                if let std::collections::hash_map::Entry::Vacant(e) = chunks.entry(c) {
                    e.insert(codec::decode_text_chunk(need(files, &format!("x/{c}.bin"))?)?);
                }
                for (i, (token, posting)) in chunks[&c].iter().enumerate() {
                    if !token.starts_with(term.as_str()) {
                        continue;
                    }
                    t.tokens += 1;
                    match posting {
                        codec::TextPosting::Whole(docs) => t.docs |= docs,
                        codec::TextPosting::Segmented(seg) => {
                            t.docs |= &seg.first;
                            let mut st = SegmentedToken { prefix: format!("x/{c}-{i}"), seg: seg.clone(), loaded: 1, needed: Vec::new(), skipped: false };
                            st.needed = (0..seg.segments.len())
                                .map(|s| seg.segments[s].count > 0 && candidates.is_none_or(|c| c.range_cardinality(seg.start(s)..seg.segments[s].end) > 0))
                                .collect();
                            while st.loaded < seg.segments.len() {
                                if let Some(raw) = files.get(&st.path(st.loaded)) {
                                    t.docs |= codec::decode_postings(raw)?;
                                } else if st.needed[st.loaded] {
                                    break;
                                } else if seg.segments[st.loaded].count > 0 {
                                    // Not read: no candidate there. The results are exact, but the
                                    // counts of a selected facet (which leave its own filter out) are not.
                                    st.skipped = true;
                                }
                                st.loaded += 1;
                            }
                            if st.loaded < seg.segments.len() {
                                t.limit = t.limit.min(seg.segments[st.loaded - 1].end);
                            }
                            segmented.push(st);
                        }
                    }
                }
            }
            terms.push(t);
        }
        Ok((terms, segmented))
    }

    /// Bytes of the text segments the query has not read yet (what counting
    /// exactly would still download).
    pub fn rest_bytes(&self, q: &Query, filters: &Filters, files: &dyn Files) -> Result<u64> {
        let (_, segmented) = self.text_terms(q, files, filters.candidates.as_ref())?;
        Ok(segmented.iter().map(|t| t.unread(files).map(|s| t.seg.segments[s].bytes as u64).sum::<u64>()).sum())
    }

    /// The text segments to read next (after [`Engine::resolve`]), or none
    /// when the results are complete or, unless `exhaustive`, hold the first
    /// `wanted` results. What is left is read whole when it is at most
    /// [`COMPLETE_BYTES`]; otherwise the range read grows by an estimate
    /// of how far the missing results are (at least doubling while none are found).
    pub fn more_files(&self, q: &Query, filters: &Filters, files: &dyn Files, wanted: u64, exhaustive: bool) -> Result<Vec<String>> {
        if exhaustive {
            // Everything, so that the selected facets' counts are exact too.
            let (_, segmented) = self.text_terms(q, files, filters.candidates.as_ref())?;
            return Ok(segmented.iter().flat_map(|t| t.unread(files).map(|s| t.path(s))).collect::<BTreeSet<_>>().into_iter().collect());
        }
        if filters.complete() {
            return Ok(Vec::new());
        }
        let (_, segmented) = self.text_terms(q, files, filters.candidates.as_ref())?;
        let rest: u64 = segmented.iter().map(|t| t.rest().map(|s| t.seg.segments[s].bytes as u64).sum::<u64>()).sum();
        let all = rest <= self.complete_bytes;
        let have = filters.results().len();
        if !all && have >= wanted {
            return Ok(Vec::new());
        }
        let limit = filters.limit as u64;
        let target = if all {
            u64::MAX
        } else {
            match ((wanted - have) * limit).checked_div(have) {
                Some(gap) => limit + gap * 5 / 4,
                None => limit * 2,
            }
        }
        .max(limit + 1);
        let mut out = BTreeSet::new();
        for t in &segmented {
            for s in t.rest() {
                if (t.seg.start(s) as u64) < target && files.get(&t.path(s)).is_none() {
                    out.insert(t.path(s));
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Files the deferred filters need: the blocks of the docs the other
    /// filters leave, or the segments of their postings that hold those docs,
    /// or (when those span too many blocks) the postings after all.
    pub fn deferred_files(&self, filters: &Filters) -> Vec<String> {
        if filters.deferred.is_empty() {
            return Vec::new();
        }
        match self.deferral(filters) {
            Deferral::Blocks(blocks) => blocks.iter().map(|b| format!("k/{b}.bin")).collect(),
            Deferral::Segments(parts) => parts.into_iter().flat_map(|p| p.files).collect::<BTreeSet<_>>().into_iter().collect(),
            Deferral::Postings => filters.deferred.iter().flat_map(|(f, values)| values.iter().map(move |v| format!("f/{f}-{v}.bin"))).collect(),
        }
    }

    /// How the deferred filters are evaluated. The blocks when that is
    /// possible and cheaper than their postings (always, when `defer_bytes`
    /// is 0); then, when fewer bytes still, the segments of their postings
    /// that hold the docs the other filters leave (whole postings for a value
    /// without segments). Segments answer exactly what the blocks answer for
    /// those docs, and the deferred filters stay deferred for the live counts,
    /// so the choice changes bytes, never results or counts.
    fn deferral(&self, filters: &Filters) -> Deferral {
        let Some(k) = filters.known() else { return Deferral::Postings };
        let Some(blocks) = self.blocks_within(&k, MAX_DEFER_BLOCKS) else { return Deferral::Postings };
        let block_cost: u64 = blocks.iter().map(|&b| self.meta.block_sizes.get(b as usize).copied().unwrap_or(0) as u64).sum();
        let posting_cost: u64 =
            filters.deferred.iter().flat_map(|(f, values)| values.iter().map(move |&v| self.meta.facets[*f].sizes.get(v as usize).copied().unwrap_or(0) as u64)).sum();
        if self.defer_bytes == 0 {
            return Deferral::Blocks(blocks);
        }
        if block_cost >= posting_cost {
            return Deferral::Postings;
        }
        let segmented = filters.deferred.iter().any(|(f, values)| values.iter().any(|v| self.meta.facets[*f].segments.contains_key(v)));
        if segmented {
            let docs: &RoaringBitmap = &k;
            let parts: Vec<SegmentPart> = filters.deferred.iter().flat_map(|(f, values)| values.iter().map(move |&v| self.segment_part(*f, v, docs))).collect();
            if parts.iter().map(|p| p.bytes).sum::<u64>() < block_cost {
                return Deferral::Segments(parts);
            }
        }
        Deferral::Blocks(blocks)
    }

    /// The files of value `v` of facet `f` that hold its docs among `docs`:
    /// the segments whose doc range holds any of them (one seek per segment),
    /// or the whole posting file when it has no segments.
    /// Their bytes are estimated (`index.json` holds no size per segment): the
    /// whole file's share for the segment's docs, plus half for compressing
    /// small files separately (7–12 KB each for `latest=true` at 10M, ~8 KB even).
    fn segment_part(&self, f: usize, v: u32, docs: &RoaringBitmap) -> SegmentPart {
        let facet = &self.meta.facets[f];
        let size = facet.sizes.get(v as usize).copied().unwrap_or(0) as u64;
        let per = match facet.segments.get(&v) {
            Some(&per) if per > 0 => per,
            _ => return SegmentPart { facet: f, files: vec![format!("f/{f}-{v}.bin")], bytes: size },
        };
        let estimate = (size * per as u64 * 3).div_ceil(2 * self.meta.items.max(1) as u64);
        let mut part = SegmentPart { facet: f, files: Vec::new(), bytes: 0 };
        let mut it = docs.iter();
        while let Some(d) = it.next() {
            let s = d / per;
            part.files.push(format!("f/{f}-{v}-{s}.bin"));
            part.bytes += estimate;
            match (s + 1).checked_mul(per) {
                Some(next) => it.advance_to(next),
                None => break,
            }
        }
        part
    }

    /// Applies the deferred filters (needs [`Engine::deferred_files`]).
    pub fn resolve(&self, filters: &mut Filters, files: &dyn Files) -> Result<()> {
        if filters.deferred.is_empty() {
            return Ok(());
        }
        let known = filters.known();
        match (known, self.deferral(filters)) {
            (Some(k), Deferral::Blocks(blocks)) => {
                let mut out = RoaringBitmap::new();
                for b in blocks {
                    let cols = codec::decode_block(need(files, &format!("k/{b}.bin"))?)?;
                    let lo = b * self.meta.block;
                    for d in k.range(lo..lo + cols.first().map_or(0, |c| c.len()) as u32) {
                        let i = (d - lo) as usize;
                        if filters.deferred.iter().all(|(f, values)| cols.get(*f).is_some_and(|c| code_matches(&self.meta.facets[*f], c[i], values))) {
                            out.insert(d);
                        }
                    }
                }
                filters.resolved = Some(out);
            }
            (Some(k), Deferral::Segments(parts)) => {
                // Per deferred facet, the union of its values' docs within the
                // ranges that hold the known docs: exact for those docs.
                let mut out = (*k).clone();
                for (f, _) in &filters.deferred {
                    let mut b = RoaringBitmap::new();
                    for p in parts.iter().filter(|p| p.facet == *f) {
                        for path in &p.files {
                            b |= codec::decode_postings(need(files, path)?)?;
                        }
                    }
                    out &= b;
                }
                filters.resolved = Some(out);
            }
            _ => {
                for (f, values) in std::mem::take(&mut filters.deferred) {
                    let mut b = RoaringBitmap::new();
                    for v in values {
                        b |= codec::decode_postings(need(files, &format!("f/{f}-{v}.bin"))?)?;
                    }
                    filters.facets.push((f, b));
                }
                filters.known = OnceCell::new();
            }
        }
        Ok(())
    }

    /// How each facet's live counts are found.
    pub fn count_plans(&self, q: &Query, filters: &Filters) -> Vec<CountPlan> {
        let selections = self.selections(q);
        // Facets without a filter of their own count the same docs: their
        // combination and its blocks are computed once (shared, not cloned).
        let shared: OnceCell<(Arc<RoaringBitmap>, Option<Vec<u32>>)> = OnceCell::new();
        (0..self.meta.facets.len())
            .map(|f| {
                if !filters.complete() || (filters.skipped && selections.iter().any(|(g, _)| *g == f)) {
                    return CountPlan::Partial;
                }
                let others: Vec<&(usize, Vec<u32>)> = selections.iter().filter(|(g, _)| *g != f).collect();
                if others.is_empty() && filters.other.is_none() {
                    return CountPlan::Global;
                }
                if filters.other.is_none() && others.len() == 1 {
                    let (g, values) = others[0];
                    if !self.meta.facets[*g].multi || values.len() <= 1 {
                        return CountPlan::Cooccurrence { facet: *g, files: values.iter().map(|v| format!("c/{g}-{v}.bin")).collect() };
                    }
                }
                let deferred: Vec<(usize, Vec<u32>)> = filters.deferred.iter().filter(|(g, _)| *g != f).cloned().collect();
                let (docs, touched) = if filters.facets.iter().any(|(g, _)| *g == f) {
                    let docs = Arc::new(filters.combine(Some(f)).unwrap_or_else(|| filters.all()));
                    let touched = self.blocks_within(&docs, MAX_COUNT_BLOCKS);
                    (docs, touched)
                } else {
                    shared
                        .get_or_init(|| {
                            let docs = filters.known().unwrap_or_else(|| Arc::new(filters.all()));
                            let touched = self.blocks_within(&docs, MAX_COUNT_BLOCKS);
                            (docs, touched)
                        })
                        .clone()
                };
                match touched {
                    None => CountPlan::TooBroad,
                    Some(blocks) => CountPlan::Blocks { docs, blocks, deferred },
                }
            })
            .collect()
    }

    pub fn count_files(plans: &[CountPlan]) -> Vec<String> {
        let mut out = BTreeSet::new();
        for p in plans {
            match p {
                CountPlan::Cooccurrence { files, .. } => out.extend(files.iter().cloned()),
                CountPlan::Blocks { blocks, .. } => out.extend(blocks.iter().map(|b| format!("k/{b}.bin"))),
                _ => {}
            }
        }
        out.into_iter().collect()
    }

    /// Live counts per facet and value (`None`: too broad to count).
    pub fn counts(&self, plans: &[CountPlan], files: &dyn Files) -> Result<Vec<Option<Vec<u32>>>> {
        let mut decoded: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        let mut cooc: HashMap<String, Vec<Vec<(u32, u32)>>> = HashMap::new();
        let mut out = Vec::with_capacity(plans.len());
        for (f, plan) in plans.iter().enumerate() {
            let facet = &self.meta.facets[f];
            let mut counts = vec![0u32; facet.values.len()];
            match plan {
                CountPlan::Global => counts.clone_from(&facet.counts),
                CountPlan::TooBroad | CountPlan::Partial => {
                    out.push(None);
                    continue;
                }
                CountPlan::Cooccurrence { files: paths, .. } => {
                    for path in paths {
                        if !cooc.contains_key(path) {
                            cooc.insert(path.clone(), codec::decode_cooccurrence(need(files, path)?)?);
                        }
                        for &(v, n) in cooc[path].get(f).map(Vec::as_slice).unwrap_or(&[]) {
                            if let Some(c) = counts.get_mut(v as usize) {
                                *c += n;
                            }
                        }
                    }
                }
                CountPlan::Blocks { docs, blocks, deferred } => {
                    for &b in blocks {
                        if let std::collections::hash_map::Entry::Vacant(e) = decoded.entry(b) {
                            e.insert(codec::decode_block(need(files, &format!("k/{b}.bin"))?)?);
                        }
                        let cols = &decoded[&b];
                        let col = cols.get(f).ok_or_else(|| FormatError(format!("block {b} has no facet {f}")))?;
                        let lo = b * self.meta.block;
                        for d in docs.range(lo..lo + col.len() as u32) {
                            let i = (d - lo) as usize;
                            if !deferred.iter().all(|(g, values)| cols.get(*g).is_some_and(|c| code_matches(&self.meta.facets[*g], c[i], values))) {
                                continue;
                            }
                            facet.for_code(col[i], |v| {
                                if let Some(c) = counts.get_mut(v as usize) {
                                    *c += 1;
                                }
                            });
                        }
                    }
                }
            }
            out.push(Some(counts));
        }
        Ok(out)
    }

    /// Docs shown on result page `page`.
    pub fn page_docs(results: &RoaringBitmap, page: usize) -> Vec<u32> {
        Self::docs_from(results, (page * PAGE_SIZE) as u64, PAGE_SIZE)
    }

    /// `n` docs from position `start` on (one `select`, then in order).
    fn docs_from(docs: &RoaringBitmap, start: u64, n: usize) -> Vec<u32> {
        match u32::try_from(start).ok().and_then(|s| docs.select(s)) {
            Some(first) => docs.range(first..).take(n).collect(),
            None => Vec::new(),
        }
    }

    /// Row files the result page will likely need, known before the query's
    /// last round (deferred filters, more text segments), so the caller can
    /// fetch them in that round instead of one more round after it. Without
    /// deferred filters they are certain: the results found so far are the
    /// first in doc order, so those on the page stay there. With deferred
    /// filters the results are some of the docs the other filters leave;
    /// when the deferred ones pass at least [`LIKELY_PASS`] of all items
    /// (their global counts), this takes the docs at the page's positions
    /// scaled by that rate; otherwise nothing (a guess would mostly be wasted).
    pub fn likely_page_files(&self, q: &Query, filters: &Filters) -> Vec<String> {
        if let Some(r) = &filters.resolved {
            return self.page_files(&Self::page_docs(r, q.page));
        }
        let items = self.meta.items.max(1) as f64;
        let pass: f64 = filters
            .deferred
            .iter()
            .map(|(f, values)| {
                let facet = &self.meta.facets[*f];
                let n: u64 = values.iter().map(|&v| facet.counts.get(v as usize).copied().unwrap_or(0) as u64).sum();
                (n as f64 / items).min(1.0)
            })
            .product();
        if pass < LIKELY_PASS {
            return Vec::new();
        }
        let start = ((q.page * PAGE_SIZE) as f64 / pass).floor() as u64;
        let end = (((q.page + 1) * PAGE_SIZE) as f64 / pass).ceil() as u64;
        let docs = match filters.known() {
            Some(k) => Self::docs_from(&k, start, (end - start) as usize),
            None => (start..end.min(filters.limit as u64)).map(|d| d as u32).collect(),
        };
        self.page_files(&docs)
    }

    pub fn page_files(&self, docs: &[u32]) -> Vec<String> {
        let shards: BTreeSet<u32> = docs.iter().map(|d| d / self.meta.doc_shard).collect();
        shards.into_iter().map(|s| format!("d/{s}.bin")).collect()
    }

    /// Result rows of `docs` (needs [`Engine::page_files`]).
    pub fn rows(&self, docs: &[u32], files: &dyn Files) -> Result<Vec<Doc>> {
        let mut shards: HashMap<u32, Vec<Doc>> = HashMap::new();
        let mut out = Vec::with_capacity(docs.len());
        for &d in docs {
            let s = d / self.meta.doc_shard;
            if let std::collections::hash_map::Entry::Vacant(e) = shards.entry(s) {
                e.insert(codec::decode_docs(need(files, &format!("d/{s}.bin"))?)?);
            }
            let row = shards[&s].get((d % self.meta.doc_shard) as usize).ok_or_else(|| FormatError(format!("doc {d} missing from its shard")))?;
            out.push(row.clone());
        }
        Ok(out)
    }
}

/// Longitude intervals of a box (two when it crosses the antimeridian).
fn lon_intervals(b: &[f64; 4]) -> Vec<(f64, f64)> {
    if b[0] <= b[2] {
        vec![(b[0], b[2])]
    } else {
        vec![(b[0], 180.0), (-180.0, b[2])]
    }
}

/// Closed boxes intersect (touching counts, as in CQL2 `s_intersects`).
pub fn boxes_intersect(a: &[f64; 4], b: &[f64; 4]) -> bool {
    if a[1] > b[3] || a[3] < b[1] {
        return false;
    }
    lon_intervals(a).iter().any(|(aw, ae)| lon_intervals(b).iter().any(|(bw, be)| aw <= be && ae >= bw))
}

/// A native reader of an index directory, for tests, the CLI and benchmarks.
pub struct DirFiles {
    pub dir: std::path::PathBuf,
    pub files: HashMap<String, Vec<u8>>,
    /// Compressed bytes read from disk (what a browser would download).
    pub bytes: u64,
    pub requests: u64,
    /// Print each file read and its size to stderr (`FEDSTAC_SEARCH_TRACE=1`).
    pub trace: bool,
}

impl DirFiles {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> DirFiles {
        DirFiles { dir: dir.into(), files: HashMap::new(), bytes: 0, requests: 0, trace: std::env::var_os("FEDSTAC_SEARCH_TRACE").is_some() }
    }

    pub fn load(&mut self, paths: &[String]) -> std::io::Result<()> {
        for p in paths {
            if self.files.contains_key(p) {
                continue;
            }
            let raw = std::fs::read(self.dir.join(p))?;
            if self.trace {
                eprintln!("{p}\t{}", raw.len());
            }
            self.bytes += raw.len() as u64;
            self.requests += 1;
            let plain = codec::inflate(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{p}: {e}")))?;
            self.files.insert(p.clone(), plain);
        }
        Ok(())
    }
}

impl Files for DirFiles {
    fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }
}

/// Everything a search returns, natively (the viewer runs the same steps).
#[derive(Debug, serde::Serialize)]
pub struct SearchOutcome {
    /// The number of results when `exact`; otherwise those found so far (a lower bound).
    pub total: u64,
    /// Is `total` the number of matching items? (False when common words'
    /// segmented postings were read only as far as the page needs.)
    pub exact: bool,
    /// Ids of the requested page.
    pub page: Vec<String>,
    /// Every matching id, ascending by doc number (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<String>>,
    /// Facet name → value → count (facets too broad to count are absent).
    pub counts: BTreeMap<String, BTreeMap<String, u32>>,
    pub bytes: u64,
    pub requests: u64,
    /// [`Engine::first_files`]: what the viewer's page prefetches for this query.
    pub first_files: Vec<String>,
}

/// How [`search_dir_opts`] searches.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// List every matching id (implies `exact`).
    pub all: bool,
    /// Read every segment of common words, so the total and counts are exact.
    pub exact: bool,
    /// Another [`DEFER_BYTES`] (0 defers every facet filter it can).
    pub defer_bytes: Option<u64>,
    /// Another [`COMPLETE_BYTES`].
    pub complete_bytes: Option<u64>,
}

/// Runs a query against an index directory the way the viewer does.
pub fn search_dir(dir: &std::path::Path, q: &Query, all: bool) -> std::result::Result<SearchOutcome, String> {
    search_dir_opts(dir, q, &SearchOptions { all, ..Default::default() })
}

/// [`search_dir`] with another [`DEFER_BYTES`] (0 defers every facet filter it can).
pub fn search_dir_with(dir: &std::path::Path, q: &Query, all: bool, defer_bytes: Option<u64>) -> std::result::Result<SearchOutcome, String> {
    search_dir_opts(dir, q, &SearchOptions { all, defer_bytes, ..Default::default() })
}

/// The steps of a search up to its results, over a file loader: result files,
/// then deferred filters and more text segments until [`Engine::more_files`]
/// asks for nothing more.
pub fn evaluate<E: From<FormatError>>(engine: &Engine, q: &Query, files: &mut DirFiles, exhaustive: bool, io: impl Fn(std::io::Error) -> E) -> std::result::Result<Filters, E> {
    files.load(&engine.first_files(q)).map_err(&io)?;
    let wanted = ((q.page + 1) * PAGE_SIZE) as u64;
    loop {
        let mut filters = engine.filters(q, files)?;
        let deferred = engine.deferred_files(&filters);
        if !deferred.is_empty() {
            // The page's likely rows come in the same round (the viewer does the same).
            let mut round = deferred;
            round.extend(engine.likely_page_files(q, &filters));
            files.load(&round).map_err(&io)?;
        }
        engine.resolve(&mut filters, files)?;
        let mut more = engine.more_files(q, &filters, files, wanted, exhaustive)?;
        if more.is_empty() {
            return Ok(filters);
        }
        more.extend(engine.likely_page_files(q, &filters));
        files.load(&more).map_err(&io)?;
    }
}

impl From<FormatError> for String {
    fn from(e: FormatError) -> String {
        e.to_string()
    }
}

pub fn search_dir_opts(dir: &std::path::Path, q: &Query, opts: &SearchOptions) -> std::result::Result<SearchOutcome, String> {
    let meta = std::fs::read(dir.join("index.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut engine = Engine::from_json(&meta)?;
    if let Some(d) = opts.defer_bytes {
        engine.defer_bytes = d;
    }
    if let Some(c) = opts.complete_bytes {
        engine.complete_bytes = c;
    }
    let mut files = DirFiles::new(dir);
    files.bytes = meta.len() as u64;
    files.requests = 1;
    let io = |e: std::io::Error| e.to_string();
    let first_files = engine.first_files(q);
    let filters = evaluate::<String>(&engine, q, &mut files, opts.all || opts.exact, io)?;
    let results = filters.results();
    let plans = engine.count_plans(q, &filters);
    files.load(&Engine::count_files(&plans)).map_err(io)?;
    let counts = engine.counts(&plans, &files).map_err(|e| e.to_string())?;
    let docs = Engine::page_docs(&results, q.page);
    files.load(&engine.page_files(&docs)).map_err(io)?;
    let page = engine.rows(&docs, &files).map_err(|e| e.to_string())?.into_iter().map(|d| d.id).collect();
    let (bytes, requests) = (files.bytes, files.requests);
    let all = if opts.all {
        let docs: Vec<u32> = results.iter().collect();
        files.load(&engine.page_files(&docs)).map_err(io)?;
        Some(engine.rows(&docs, &files).map_err(|e| e.to_string())?.into_iter().map(|d| d.id).collect())
    } else {
        None
    };
    let counts = engine
        .meta
        .facets
        .iter()
        .zip(counts)
        .filter_map(|(f, c)| Some((f.name.clone(), f.values.iter().cloned().zip(c?).filter(|(_, n)| *n > 0).collect())))
        .collect();
    let (total, exact) = match filters.total() {
        Some(t) => (t, true),
        None => (results.len(), false),
    };
    Ok(SearchOutcome { total, exact, page, all, counts, bytes, requests, first_files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for (s, want) in [("1970-01-01", 0), ("2015-01-01", 1420070400), ("0001-01-01", -62135596800), ("9999-12-31", 253402214400)] {
            assert_eq!(parse_time(s, false), Some(want), "{s}");
            assert_eq!(format_time(want), s);
        }
        assert_eq!(parse_time("2015-01-01", true), Some(1420070400 + 86399));
        assert_eq!(parse_time("2015-01-01T12:00:00Z", false), Some(1420070400 + 43200));
        assert_eq!(parse_time("2015-01-01T12:00:00+01:00", false), Some(1420070400 + 39600));
        assert_eq!(year_of(-62135596800), 1);
        assert_eq!(year_of(253402300799), 9999);
        assert_eq!(parse_time("2015-13-01", false), None);
    }

    #[test]
    fn params_round_trip() {
        let q = Query::from_params([("f.variable", "tas"), ("f.variable", "pr"), ("q", "air temp"), ("from", "2015-01-01"), ("to", "2020-12-31"), ("bbox", "-10,30,20,60"), ("page", "3")]);
        assert_eq!(q.facets["variable"], ["tas", "pr"]);
        assert_eq!(q.page, 2);
        let back: Vec<(String, String)> = q.to_params();
        let again = Query::from_params(back.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(q, again);
    }

    fn engine_of(items: u32) -> Engine {
        let meta = Meta {
            format: FORMAT.into(),
            version: VERSION,
            site: Default::default(),
            items,
            doc_shard: crate::DOC_SHARD,
            block: crate::BLOCK,
            facets: Vec::new(),
            text_chunks: Vec::new(),
            start_years: Vec::new(),
            end_years: Vec::new(),
            block_sizes: Vec::new(),
            boxes: 0,
            fgb: None,
        };
        Engine::new(meta).unwrap()
    }

    #[test]
    fn blocks_within_agrees_with_ranks() {
        let items = 1_000_000;
        let e = engine_of(items);
        let by_rank = |docs: &RoaringBitmap| -> Vec<u32> {
            (0..items.div_ceil(crate::BLOCK))
                .filter(|&b| {
                    let lo = b * crate::BLOCK;
                    let hi = (lo + crate::BLOCK).min(items);
                    docs.rank(hi - 1) > if lo == 0 { 0 } else { docs.rank(lo - 1) }
                })
                .collect()
        };
        let mut cases: Vec<RoaringBitmap> = vec![RoaringBitmap::new(), (0..items).collect(), [0, 16383, 16384, items - 1].into_iter().collect()];
        // Runs, sparse docs and dense bitmaps, across block and container edges.
        let mut x = 7u64;
        for _ in 0..20 {
            let mut b = RoaringBitmap::new();
            for _ in 0..(x % 50) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let start = (x >> 33) as u32 % items;
                let len = ((x >> 13) as u32 % 40_000).min(items - start);
                if x & 1 == 0 {
                    b.insert_range(start..start + len);
                } else {
                    b.insert(start);
                }
            }
            cases.push(b);
        }
        for docs in &cases {
            let want = by_rank(docs);
            assert_eq!(e.blocks_within(docs, usize::MAX).as_ref(), Some(&want));
            for max in [0, 1, 3, want.len().saturating_sub(1), want.len()] {
                let got = e.blocks_within(docs, max);
                if want.len() <= max {
                    assert_eq!(got.as_ref(), Some(&want));
                } else {
                    assert_eq!(got, None, "{} blocks, max {max}", want.len());
                }
            }
        }
    }

    /// viewer/index.html computes `Engine::first_files` in JS while the wasm
    /// loads, with copies of these constants.
    #[test]
    fn viewer_prefetch_constants_match() {
        let html = include_str!("../../viewer/index.html");
        let want = format!("var VERSION = {VERSION}, DEFER_BYTES = {DEFER_BYTES}, PAGE_SIZE = {PAGE_SIZE};");
        assert!(html.contains(&want), "viewer/index.html should declare `{want}`");
    }

    #[test]
    fn antimeridian_boxes() {
        let pacific = [170.0, -10.0, -170.0, 10.0];
        assert!(boxes_intersect(&pacific, &[175.0, 0.0, 179.0, 5.0]));
        assert!(boxes_intersect(&pacific, &[-175.0, 0.0, -172.0, 5.0]));
        assert!(!boxes_intersect(&pacific, &[0.0, 0.0, 10.0, 5.0]));
        assert!(boxes_intersect(&[0.0, 0.0, 10.0, 10.0], &[10.0, 10.0, 20.0, 20.0]));
    }
}
