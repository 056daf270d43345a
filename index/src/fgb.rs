//! A streaming FlatGeobuf writer for `items.fgb`, byte-identical to what the
//! `flatgeobuf` crate's [`FgbWriter`] writes with the same header, columns
//! and features, but in memory bounded by [`RUN`] features instead of
//! ~73 bytes for every feature ([`FgbWriter`] keeps each feature's node and
//! offset until it writes the index).
//!
//! How: features are encoded by the crate's own writer, [`RUN`] at a time
//! (index off, so it writes them in the order added), into one temp file;
//! each feature's box and place in that file goes to a node temp file. At
//! [`FgbStream::finish`] the nodes are sorted externally in the crate's
//! Hilbert order (runs of [`RUN`] sorted in memory, then merged), the packed
//! R-tree is built level by level into temp files while the sorted leaves
//! stream past, and the file is written: magic, header, index (root level
//! first, as FlatGeobuf stores it), features in sorted order.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;

use flatgeobuf::geozero::{ColumnValue, GeomProcessor, GeozeroGeometry, PropertyProcessor};
use flatgeobuf::packed_r_tree::{NodeItem, PackedRTree};
use flatgeobuf::{Column, ColumnArgs, ColumnType, Crs, CrsArgs, FgbWriter, FgbWriterOptions, GeometryType, Header, HeaderArgs};

use crate::write::Result;

/// Features encoded per batch, and nodes per sorted run.
pub const RUN: usize = 32_768;

/// One node record in the temp files: box, place of the feature in the
/// feature temp file (offset, size with its length prefix), Hilbert value.
const REC: usize = 4 * 8 + 8 + 8 + 4;

#[derive(Clone)]
struct Rec {
    bbox: [f64; 4],
    at: u64,
    size: u64,
    hilbert: u32,
}

impl Rec {
    fn encode(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut b = [0u8; REC];
        for (i, v) in self.bbox.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[32..40].copy_from_slice(&self.at.to_le_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..52].copy_from_slice(&self.hilbert.to_le_bytes());
        out.write_all(&b)
    }

    fn decode(b: &[u8]) -> Rec {
        let f = |i: usize| f64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Rec {
            bbox: [f(0), f(1), f(2), f(3)],
            at: u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
            size: u64::from_le_bytes(b[40..48].try_into().expect("8 bytes")),
            hilbert: u32::from_le_bytes(b[48..52].try_into().expect("4 bytes")),
        }
    }

    fn node(&self) -> NodeItem {
        let [min_x, min_y, max_x, max_y] = self.bbox;
        NodeItem { min_x, min_y, max_x, max_y, offset: 0 }
    }
}

/// The header fields this writer supports (what `items.fgb` uses).
#[derive(Debug, Clone, Default)]
pub struct FgbOptions {
    pub crs_code: i32,
    pub title: Option<String>,
    pub description: Option<String>,
}

/// Collects a geometry's bounding box the way the crate's feature writer does
/// (every coordinate of the feature's geometry).
struct BoxOf(NodeItem);

impl GeomProcessor for BoxOf {
    fn xy(&mut self, x: f64, y: f64, _idx: usize) -> flatgeobuf::geozero::error::Result<()> {
        self.0.expand_xy(x, y);
        Ok(())
    }
    fn coordinate(&mut self, x: f64, y: f64, _z: Option<f64>, _m: Option<f64>, _t: Option<f64>, _tm: Option<u64>, _idx: usize) -> flatgeobuf::geozero::error::Result<()> {
        self.0.expand_xy(x, y);
        Ok(())
    }
}

pub struct FgbStream {
    name: String,
    geometry_type: GeometryType,
    options: FgbOptions,
    columns: Vec<(String, ColumnType, bool)>,
    run: usize,
    /// Encodes the current batch of features (the crate's writer, index off).
    batch: Option<FgbWriter<'static>>,
    /// Boxes of the current batch, in the order added.
    batch_boxes: Vec<[f64; 4]>,
    features: BufWriter<File>,
    features_len: u64,
    nodes: BufWriter<File>,
    count: u64,
    extent: NodeItem,
}

/// A `Write` that counts what goes through.
struct Counting<'a, W: Write>(&'a mut W, &'a mut u64);

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        *self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl FgbStream {
    /// A writer with the crate's default node size (16) and index on.
    /// `geometry_type` must be a declared type (not `Unknown`): the header
    /// is written from it, not from what the features turn out to be.
    pub fn new(name: &str, geometry_type: GeometryType, options: FgbOptions) -> Result<FgbStream> {
        FgbStream::with_run(name, geometry_type, options, RUN)
    }

    /// [`Self::new`] with another run size (tests merge many runs of a few nodes).
    pub(crate) fn with_run(name: &str, geometry_type: GeometryType, options: FgbOptions, run: usize) -> Result<FgbStream> {
        if geometry_type == GeometryType::Unknown {
            return Err("FgbStream needs a declared geometry type".into());
        }
        Ok(FgbStream {
            name: name.to_string(),
            geometry_type,
            options,
            columns: Vec::new(),
            run: run.max(1),
            batch: None,
            batch_boxes: Vec::new(),
            features: BufWriter::new(tempfile::tempfile()?),
            features_len: 0,
            nodes: BufWriter::new(tempfile::tempfile()?),
            count: 0,
            extent: NodeItem::create(0),
        })
    }

    /// Adds a column (before the first feature).
    pub fn add_column(&mut self, name: &str, column_type: ColumnType, nullable: bool) {
        assert!(self.count == 0, "columns are added before the features");
        self.columns.push((name.to_string(), column_type, nullable));
    }

    pub fn features(&self) -> u64 {
        self.count
    }

    fn batch_writer(&self) -> Result<FgbWriter<'static>> {
        let mut w = FgbWriter::create_with_options(
            &self.name,
            self.geometry_type,
            FgbWriterOptions { write_index: false, ..Default::default() },
        )?;
        for (name, t, nullable) in &self.columns {
            let nullable = *nullable;
            w.add_column(name, *t, |_, c| c.nullable = nullable);
        }
        Ok(w)
    }

    /// Adds a feature; `properties` are the values of the columns in order.
    pub fn add_feature(&mut self, geom: impl GeozeroGeometry, properties: &[ColumnValue]) -> Result<()> {
        let mut bbox = BoxOf(NodeItem::create(0));
        geom.process_geom(&mut bbox)?;
        if self.batch.is_none() {
            self.batch = Some(self.batch_writer()?);
        }
        let columns = &self.columns;
        let mut failed = None;
        self.batch.as_mut().expect("set above").add_feature_geom(geom, |f| {
            for (i, (v, (name, _, _))) in properties.iter().zip(columns).enumerate() {
                if let Err(e) = f.property(i, name, v) {
                    failed.get_or_insert(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        self.extent.expand(&bbox.0);
        let NodeItem { min_x, min_y, max_x, max_y, .. } = bbox.0;
        self.batch_boxes.push([min_x, min_y, max_x, max_y]);
        self.count += 1;
        if self.batch_boxes.len() >= self.run {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Writes the batch's features (the crate's writer writes magic, a header
    /// and the features in the order added; the features are found by their
    /// length prefixes) and a node record for each.
    fn flush_batch(&mut self) -> Result<()> {
        let Some(batch) = self.batch.take() else { return Ok(()) };
        let start = self.features_len;
        batch.write(Counting(&mut self.features, &mut self.features_len))?;
        self.features.flush()?;
        let file = self.features.get_ref();
        let mut prefix = [0u8; 4];
        file.read_exact_at(&mut prefix, start + 8)?;
        let mut at = start + 8 + 4 + u32::from_le_bytes(prefix) as u64;
        for bbox in self.batch_boxes.drain(..) {
            file.read_exact_at(&mut prefix, at)?;
            let size = 4 + u32::from_le_bytes(prefix) as u64;
            Rec { bbox, at, size, hilbert: 0 }.encode(&mut self.nodes)?;
            at += size;
        }
        if at != self.features_len {
            return Err(format!("FlatGeobuf batch: features end at {at}, the writer wrote to {}", self.features_len).into());
        }
        Ok(())
    }

    /// The header, exactly as [`FgbWriter`] builds it (same builder calls in the same order).
    fn header(&self) -> Vec<u8> {
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let crs_args = CrsArgs { code: self.options.crs_code, ..Default::default() };
        let mut header_args = HeaderArgs {
            name: Some(fbb.create_string(&self.name)),
            geometry_type: self.geometry_type,
            index_node_size: PackedRTree::DEFAULT_NODE_SIZE,
            crs: Some(Crs::create(&mut fbb, &crs_args)),
            title: self.options.title.as_deref().map(|v| fbb.create_string(v)),
            description: self.options.description.as_deref().map(|v| fbb.create_string(v)),
            ..Default::default()
        };
        let mut columns = Vec::new();
        for (name, t, nullable) in &self.columns {
            let col = ColumnArgs { name: Some(fbb.create_string(name)), type_: *t, nullable: *nullable, ..Default::default() };
            columns.push(Column::create(&mut fbb, &col));
        }
        header_args.columns = Some(fbb.create_vector(&columns));
        let e = &self.extent;
        header_args.envelope = Some(fbb.create_vector(&[e.min_x, e.min_y, e.max_x, e.max_y]));
        header_args.features_count = self.count;
        let header = Header::create(&mut fbb, &header_args);
        fbb.finish_size_prefixed(header, None);
        fbb.finished_data().to_vec()
    }

    /// Writes the whole file to `out`.
    pub fn finish(mut self, mut out: impl Write) -> Result<()> {
        self.flush_batch()?;
        out.write_all(&[b'f', b'g', b'b', flatgeobuf::VERSION, b'f', b'g', b'b', 0])?;
        out.write_all(&self.header())?;
        if self.count == 0 {
            return Ok(());
        }
        let nodes = std::mem::replace(&mut self.nodes, BufWriter::new(tempfile::tempfile()?));
        let mut nodes = nodes.into_inner().map_err(|e| e.into_error())?;
        nodes.rewind()?;
        let runs = self.sorted_runs(nodes)?;
        let features = self.features.into_inner().map_err(|e| e.into_error())?;

        // The tree's levels, leaves first, with where each starts in the
        // stored order (root first); the same arithmetic as the crate's.
        let node_size = PackedRTree::DEFAULT_NODE_SIZE as usize;
        let mut sizes = vec![self.count as usize];
        let mut n = self.count as usize;
        loop {
            n = n.div_ceil(node_size);
            sizes.push(n);
            if n == 1 {
                break;
            }
        }
        let total: usize = sizes.iter().sum();
        let mut starts = Vec::with_capacity(sizes.len());
        let mut end = total;
        for s in &sizes {
            starts.push(end - s);
            end -= s;
        }
        let mut levels = Levels { files: Vec::new(), written: vec![0; sizes.len()], parents: vec![None; sizes.len()], starts, node_size };
        for _ in &sizes {
            levels.files.push(BufWriter::new(tempfile::tempfile()?));
        }

        // The sorted leaves: their feature offsets in the output, and the
        // order in which the features are copied.
        let mut order = BufWriter::new(tempfile::tempfile()?);
        let mut offset = 0u64;
        let mut merged = 0u64;
        for rec in Merge::new(&runs.0, &runs.1)? {
            let rec = rec?;
            let mut node = rec.node();
            node.offset = offset;
            offset += rec.size;
            levels.push(0, node)?;
            order.write_all(&rec.at.to_le_bytes())?;
            order.write_all(&rec.size.to_le_bytes())?;
            merged += 1;
        }
        if merged != self.count {
            return Err(format!("FlatGeobuf index: {merged} nodes merged of {}", self.count).into());
        }
        for level in 1..sizes.len() {
            if let Some((node, _)) = levels.parents[level].take() {
                levels.push(level, node)?;
            }
        }
        for (level, size) in sizes.iter().enumerate() {
            if levels.written[level] != *size {
                return Err(format!("FlatGeobuf index: level {level} has {} nodes, expected {size}", levels.written[level]).into());
            }
        }
        for file in levels.files.into_iter().rev() {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            std::io::copy(&mut file, &mut out)?;
        }

        let mut order = BufReader::new(order.into_inner().map_err(|e| e.into_error())?);
        order.rewind()?;
        let mut entry = [0u8; 16];
        let mut buf = Vec::new();
        for _ in 0..self.count {
            order.read_exact(&mut entry)?;
            let at = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let size = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
            buf.resize(size as usize, 0);
            features.read_exact_at(&mut buf, at)?;
            out.write_all(&buf)?;
        }
        Ok(())
    }

    /// Reads the node records in runs of `self.run`, gives each its Hilbert
    /// value and sorts each run like the crate's `hilbert_sort` (descending,
    /// stable); returns the runs' file and (start, length) of each run.
    fn sorted_runs(&self, nodes: File) -> Result<(File, Vec<(u64, u64)>)> {
        let mut input = BufReader::new(nodes);
        let mut runs_file = BufWriter::new(tempfile::tempfile()?);
        let mut runs = Vec::new();
        let mut left = self.count;
        let mut run = Vec::with_capacity(self.run.min(self.count as usize));
        let mut b = [0u8; REC];
        let mut at = 0u64;
        while left > 0 {
            let take = left.min(self.run as u64);
            run.clear();
            for _ in 0..take {
                input.read_exact(&mut b)?;
                let mut rec = Rec::decode(&b);
                rec.hilbert = hilbert_bbox(&rec.node(), &self.extent);
                run.push(rec);
            }
            // Stable: equal values keep the order added, as in the crate.
            run.sort_by_key(|r| std::cmp::Reverse(r.hilbert));
            for rec in &run {
                rec.encode(&mut runs_file)?;
            }
            runs.push((at, take));
            at += take * REC as u64;
            left -= take;
        }
        let file = runs_file.into_inner().map_err(|e| e.into_error())?;
        Ok((file, runs))
    }
}

/// The tree's levels being written (0 = leaves), each into its temp file,
/// with the parent node each level is filling.
struct Levels {
    files: Vec<BufWriter<File>>,
    written: Vec<usize>,
    parents: Vec<Option<(NodeItem, usize)>>,
    starts: Vec<usize>,
    node_size: usize,
}

impl Levels {
    /// Writes `node` as the next node of `level` and adds it to its parent
    /// (which points at its first child by index in the stored order).
    fn push(&mut self, level: usize, node: NodeItem) -> Result<()> {
        node.write(&mut self.files[level])?;
        let index = self.starts[level] + self.written[level];
        self.written[level] += 1;
        if level + 1 == self.files.len() {
            return Ok(());
        }
        let (parent, children) = self.parents[level + 1].get_or_insert_with(|| (NodeItem::create(index as u64), 0));
        parent.expand(&node);
        *children += 1;
        if *children == self.node_size {
            let (parent, _) = self.parents[level + 1].take().expect("set above");
            self.push(level + 1, parent)?;
        }
        Ok(())
    }
}

/// Merges sorted runs: the highest Hilbert value first, on ties the earlier
/// run (runs hold consecutive features, so this is the order added).
struct Merge<'a> {
    file: &'a File,
    readers: Vec<RunReader>,
    heap: BinaryHeap<(u32, std::cmp::Reverse<usize>)>,
    heads: Vec<Option<Rec>>,
}

struct RunReader {
    at: u64,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

/// Records read from a run at a time (the merge holds one such buffer per run).
const READ_RECS: usize = 256;

impl RunReader {
    fn next(&mut self, file: &File) -> Result<Option<Rec>> {
        if self.pos == self.buf.len() {
            if self.left == 0 {
                return Ok(None);
            }
            let n = self.left.min(READ_RECS as u64);
            self.buf.resize(n as usize * REC, 0);
            file.read_exact_at(&mut self.buf, self.at)?;
            self.at += n * REC as u64;
            self.left -= n;
            self.pos = 0;
        }
        let rec = Rec::decode(&self.buf[self.pos..self.pos + REC]);
        self.pos += REC;
        Ok(Some(rec))
    }
}

impl<'a> Merge<'a> {
    fn new(file: &'a File, runs: &[(u64, u64)]) -> Result<Merge<'a>> {
        let mut m = Merge { file, readers: Vec::new(), heap: BinaryHeap::new(), heads: Vec::new() };
        for (i, &(at, len)) in runs.iter().enumerate() {
            let mut r = RunReader { at, left: len, buf: Vec::new(), pos: 0 };
            let head = r.next(file)?;
            if let Some(h) = &head {
                m.heap.push((h.hilbert, std::cmp::Reverse(i)));
            }
            m.readers.push(r);
            m.heads.push(head);
        }
        Ok(m)
    }

    fn pop(&mut self) -> Result<Option<Rec>> {
        let Some((_, std::cmp::Reverse(i))) = self.heap.pop() else { return Ok(None) };
        let rec = self.heads[i].take().expect("a run in the heap has a head");
        let next = self.readers[i].next(self.file)?;
        if let Some(h) = &next {
            self.heap.push((h.hilbert, std::cmp::Reverse(i)));
        }
        self.heads[i] = next;
        Ok(Some(rec))
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<Rec>;
    fn next(&mut self) -> Option<Result<Rec>> {
        self.pop().transpose()
    }
}

const HILBERT_MAX: u32 = (1 << 16) - 1;

/// The crate's `hilbert_bbox` (private there): the box's centre scaled to
/// the extent, on a 16-bit Hilbert curve.
fn hilbert_bbox(r: &NodeItem, extent: &NodeItem) -> u32 {
    let x = (HILBERT_MAX as f64 * ((r.min_x + r.max_x) / 2.0 - extent.min_x) / extent.width()).floor() as u32;
    let y = (HILBERT_MAX as f64 * ((r.min_y + r.max_y) / 2.0 - extent.min_y) / extent.height()).floor() as u32;
    hilbert(x, y)
}

/// The crate's `hilbert` (private there; from the public domain code at
/// <https://github.com/rawrunprotected/hilbert_curves>), unchanged.
fn hilbert(x: u32, y: u32) -> u32 {
    let mut a = x ^ y;
    let mut b = 0xFFFF ^ a;
    let mut c = 0xFFFF ^ (x | y);
    let mut d = x & (y ^ 0xFFFF);

    let mut aa = a | (b >> 1);
    let mut bb = (a >> 1) ^ a;
    let mut cc = ((c >> 1) ^ (b & (d >> 1))) ^ c;
    let mut dd = ((a & (c >> 1)) ^ (d >> 1)) ^ d;

    a = aa;
    b = bb;
    c = cc;
    d = dd;
    aa = (a & (a >> 2)) ^ (b & (b >> 2));
    bb = (a & (b >> 2)) ^ (b & ((a ^ b) >> 2));
    cc ^= (a & (c >> 2)) ^ (b & (d >> 2));
    dd ^= (b & (c >> 2)) ^ ((a ^ b) & (d >> 2));

    a = aa;
    b = bb;
    c = cc;
    d = dd;
    aa = (a & (a >> 4)) ^ (b & (b >> 4));
    bb = (a & (b >> 4)) ^ (b & ((a ^ b) >> 4));
    cc ^= (a & (c >> 4)) ^ (b & (d >> 4));
    dd ^= (b & (c >> 4)) ^ ((a ^ b) & (d >> 4));

    a = aa;
    b = bb;
    c = cc;
    d = dd;
    cc ^= (a & (c >> 8)) ^ (b & (d >> 8));
    dd ^= (b & (c >> 8)) ^ ((a ^ b) & (d >> 8));

    a = cc ^ (cc >> 1);
    b = dd ^ (dd >> 1);

    let mut i0 = x ^ y;
    let mut i1 = b | (0xFFFF ^ (i0 | a));

    i0 = (i0 | (i0 << 8)) & 0x00FF00FF;
    i0 = (i0 | (i0 << 4)) & 0x0F0F0F0F;
    i0 = (i0 | (i0 << 2)) & 0x33333333;
    i0 = (i0 | (i0 << 1)) & 0x55555555;

    i1 = (i1 | (i1 << 8)) & 0x00FF00FF;
    i1 = (i1 | (i1 << 4)) & 0x0F0F0F0F;
    i1 = (i1 | (i1 << 2)) & 0x33333333;
    i1 = (i1 | (i1 << 1)) & 0x55555555;

    (i1 << 1) | i0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::Footprint;
    use flatgeobuf::{FallibleStreamingIterator, FeatureProperties, FgbCrs, FgbReader};

    /// Deterministic boxes: many repeats of a few (ties in Hilbert order, also
    /// across runs), regional boxes, antimeridian-crossing boxes and points.
    fn boxes(n: usize, seed: u64) -> Vec<[f64; 4]> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..n)
            .map(|_| match (next() * 10.0) as u32 {
                0..=3 => [-180.0, -90.0, 180.0, 90.0],
                4 => [-10.0, 35.0, 40.0, 72.0],
                5 => {
                    let (w, s) = (170.0 + next() * 9.0, -50.0 + next() * 40.0);
                    [w, s, -175.0 + next() * 10.0, s + next() * 30.0]
                }
                6 => {
                    let (x, y) = (next() * 360.0 - 180.0, next() * 180.0 - 90.0);
                    [x, y, x, y]
                }
                _ => {
                    let (w, s) = (next() * 300.0 - 180.0, next() * 150.0 - 90.0);
                    [w, s, w + next() * 60.0, s + next() * 30.0]
                }
            })
            .collect()
    }

    fn props(i: usize) -> (String, String, String, String) {
        (format!("item-{i}"), format!("x/{i}.json"), format!("{}-01-01T00:00:00Z", 1850 + i % 250), "2014-12-31T00:00:00Z".to_string())
    }

    /// What the crate's FgbWriter writes (as `write.rs` used it).
    fn reference(boxes: &[[f64; 4]]) -> Vec<u8> {
        let mut w = FgbWriter::create_with_options(
            "items",
            GeometryType::MultiPolygon,
            FgbWriterOptions { write_index: true, crs: FgbCrs { code: 4326, ..Default::default() }, title: Some("fedstac item footprints"), ..Default::default() },
        )
        .unwrap();
        w.add_column("id", ColumnType::String, |_, c| c.nullable = false);
        w.add_column("href", ColumnType::String, |_, c| c.nullable = false);
        w.add_column("start_datetime", ColumnType::DateTime, |_, _| {});
        w.add_column("end_datetime", ColumnType::DateTime, |_, _| {});
        for (i, b) in boxes.iter().enumerate() {
            let (id, href, start, end) = props(i);
            w.add_feature_geom(Footprint(*b), |f| {
                f.property(0, "id", &ColumnValue::String(&id)).unwrap();
                f.property(1, "href", &ColumnValue::String(&href)).unwrap();
                f.property(2, "start_datetime", &ColumnValue::DateTime(&start)).unwrap();
                f.property(3, "end_datetime", &ColumnValue::DateTime(&end)).unwrap();
            })
            .unwrap();
        }
        let mut out = Vec::new();
        w.write(&mut out).unwrap();
        out
    }

    fn streamed(boxes: &[[f64; 4]], run: usize) -> Vec<u8> {
        let options = FgbOptions { crs_code: 4326, title: Some("fedstac item footprints".into()), description: None };
        let mut w = FgbStream::with_run("items", GeometryType::MultiPolygon, options, run).unwrap();
        w.add_column("id", ColumnType::String, false);
        w.add_column("href", ColumnType::String, false);
        w.add_column("start_datetime", ColumnType::DateTime, true);
        w.add_column("end_datetime", ColumnType::DateTime, true);
        for (i, b) in boxes.iter().enumerate() {
            let (id, href, start, end) = props(i);
            w.add_feature(Footprint(*b), &[ColumnValue::String(&id), ColumnValue::String(&href), ColumnValue::DateTime(&start), ColumnValue::DateTime(&end)]).unwrap();
        }
        assert_eq!(w.features(), boxes.len() as u64);
        let mut out = Vec::new();
        w.finish(&mut out).unwrap();
        out
    }

    fn assert_same(boxes: &[[f64; 4]], run: usize) {
        let (want, got) = (reference(boxes), streamed(boxes, run));
        assert_eq!(want.len(), got.len(), "{} features, runs of {run}: sizes differ", boxes.len());
        if let Some(at) = want.iter().zip(&got).position(|(a, b)| a != b) {
            panic!("{} features, runs of {run}: first difference at byte {at} of {}", boxes.len(), want.len());
        }
    }

    #[test]
    fn byte_identical_to_the_crates_writer_at_node_size_boundaries() {
        for n in [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 255, 256, 257, 4095, 4096, 4097] {
            let b = boxes(n, n as u64);
            assert_same(&b, RUN); // one run
            assert_same(&b, 7); // many runs of 7 merged
        }
    }

    #[test]
    fn byte_identical_with_only_ties() {
        // One box everywhere: a zero-width extent, every Hilbert value equal;
        // the order added must survive the sort and the merge.
        for n in [1, 2, 40, 300] {
            assert_same(&vec![[5.0, 5.0, 5.0, 5.0]; n], 7);
            assert_same(&vec![[-180.0, -90.0, 180.0, 90.0]; n], 3);
        }
    }

    #[test]
    fn byte_identical_over_several_full_runs() {
        let b = boxes(70_000, 42); // three runs of RUN, merged
        assert_same(&b, RUN);
    }

    fn ids(bytes: &[u8], bbox: Option<[f64; 4]>) -> Vec<String> {
        let mut cursor = std::io::Cursor::new(bytes);
        let reader = FgbReader::open(&mut cursor).unwrap();
        let mut it = match bbox {
            Some([w, s, e, n]) => reader.select_bbox(w, s, e, n).unwrap(),
            None => reader.select_all().unwrap(),
        };
        let mut out = Vec::new();
        while let Some(f) = it.next().unwrap() {
            out.push(f.property::<String>("id").unwrap());
        }
        out
    }

    #[test]
    fn the_crates_reader_opens_it_and_a_bbox_query_finds_the_same_features() {
        let b = boxes(5_000, 7);
        let got = streamed(&b, 1000);
        let all = ids(&got, None);
        assert_eq!(all.len(), 5_000);
        let query = [0.0, 40.0, 10.0, 50.0];
        let found = ids(&got, Some(query));
        assert_eq!(found, ids(&reference(&b), Some(query)));
        // Brute force over the boxes (antimeridian boxes span [-180, e] and [w, 180]).
        let hits = |b: &[f64; 4]| {
            let parts = if b[0] <= b[2] { vec![(b[0], b[2])] } else { vec![(b[0], 180.0), (-180.0, b[2])] };
            let (lo, hi) = parts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &(w, e)| (l.min(w), h.max(e)));
            lo <= query[2] && hi >= query[0] && b[1] <= query[3] && b[3] >= query[1]
        };
        let mut want: Vec<String> = b.iter().enumerate().filter(|(_, b)| hits(b)).map(|(i, _)| props(i).0).collect();
        let mut found_sorted = found.clone();
        want.sort();
        found_sorted.sort();
        assert_eq!(found_sorted, want);
        assert!(!want.is_empty() && want.len() < 5_000);
    }
}
