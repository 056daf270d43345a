//! Byte-level encodings of the `.bin` files: DEFLATE framing, LEB128 varints,
//! portable roaring bitmaps, and the few record layouts built from them.

use roaring::RoaringBitmap;

#[derive(Debug)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "index format error: {}", self.0)
    }
}

impl std::error::Error for FormatError {}

pub type Result<T> = std::result::Result<T, FormatError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(FormatError(msg.into()))
}

/// Compresses a `.bin` payload (raw DEFLATE, level 9: written once, read often).
pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(bytes, 9)
}

/// Decompresses a `.bin` file.
pub fn inflate(bytes: &[u8]) -> Result<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec_with_limit(bytes, 1 << 30).map_err(|e| FormatError(format!("corrupt DEFLATE stream: {e:?}")))
}

/// Appends records to a buffer.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn uint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.uint(((v << 1) ^ (v >> 63)) as u64)
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.uint(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    pub fn bitmap(&mut self, b: &RoaringBitmap) -> &mut Self {
        self.uint(b.serialized_size() as u64);
        b.serialize_into(&mut self.buf).expect("writing to a Vec");
        self
    }
    /// The DEFLATE-compressed buffer: a `.bin` file.
    pub fn finish(self) -> Vec<u8> {
        deflate(&self.buf)
    }
}

/// Reads records from a decompressed buffer.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn uint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else { return err("truncated varint") };
            self.pos += 1;
            if shift > 63 {
                return err("varint too long");
            }
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    pub fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.uint()?).map_err(|_| FormatError("value out of range".into()))
    }
    pub fn int(&mut self) -> Result<i64> {
        let u = self.uint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    pub fn f64(&mut self) -> Result<f64> {
        let bytes = self.take(8)?;
        Ok(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| FormatError("truncated record".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn str(&mut self) -> Result<&'a str> {
        let n = self.uint()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| FormatError("invalid UTF-8".into()))
    }
    pub fn bitmap(&mut self) -> Result<RoaringBitmap> {
        let n = self.uint()? as usize;
        RoaringBitmap::deserialize_from(self.take(n)?).map_err(|e| FormatError(format!("corrupt bitmap: {e}")))
    }
}

/// `f/*.bin`: one bitmap.
pub fn encode_postings(b: &RoaringBitmap) -> Vec<u8> {
    let mut e = Enc::default();
    e.bitmap(b);
    e.finish()
}

pub fn decode_postings(raw: &[u8]) -> Result<RoaringBitmap> {
    Dec::new(raw).bitmap()
}

/// A token's postings in a text chunk: whole, or split by doc range.
#[derive(Debug, Clone, PartialEq)]
pub enum TextPosting {
    Whole(RoaringBitmap),
    Segmented(Segmented),
}

/// A common token's postings, split into consecutive doc ranges: the first
/// segment sits in the chunk, the others in their own files
/// (`x/<chunk>-<entry>-<segment>.bin`, one bitmap each), so a query reads
/// only the ranges it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    /// Docs over all segments.
    pub count: u64,
    pub segments: Vec<SegmentInfo>,
    /// The docs of segment 0.
    pub first: RoaringBitmap,
}

/// Segment `s` covers docs `[segments[s - 1].end, segments[s].end)` (from 0 for the first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentInfo {
    /// Exclusive upper doc bound (the last segment's is the item count).
    pub end: u32,
    pub count: u32,
    /// Bytes of the segment's file (0 for segment 0, which is inline).
    pub bytes: u32,
}

impl Segmented {
    /// First doc of segment `s`.
    pub fn start(&self, s: usize) -> u32 {
        if s == 0 {
            0
        } else {
            self.segments[s - 1].end
        }
    }
}

/// `x/*.bin`: count, then per token in token order: the token, a kind, and
/// for kind 0 its bitmap; for kind 1 (segmented) its doc count, the number of
/// segments, per segment (end - previous end, docs, file bytes), then the
/// bitmap of segment 0.
pub fn encode_text_chunk(entries: &[(&str, &TextPosting)]) -> Vec<u8> {
    let mut e = Enc::default();
    e.uint(entries.len() as u64);
    for (t, p) in entries {
        e.str(t);
        match p {
            TextPosting::Whole(b) => {
                e.uint(0).bitmap(b);
            }
            TextPosting::Segmented(s) => {
                e.uint(1).uint(s.count).uint(s.segments.len() as u64);
                let mut last = 0u32;
                for seg in &s.segments {
                    e.uint((seg.end - last) as u64).uint(seg.count as u64).uint(seg.bytes as u64);
                    last = seg.end;
                }
                e.bitmap(&s.first);
            }
        }
    }
    e.finish()
}

pub fn decode_text_chunk(raw: &[u8]) -> Result<Vec<(String, TextPosting)>> {
    let mut d = Dec::new(raw);
    let n = d.uint()? as usize;
    (0..n)
        .map(|_| {
            let token = d.str()?.to_string();
            let posting = match d.uint()? {
                0 => TextPosting::Whole(d.bitmap()?),
                1 => {
                    let count = d.uint()?;
                    let m = d.uint()? as usize;
                    if m == 0 || m > raw.len() {
                        return err("bad segment count");
                    }
                    let mut last = 0u32;
                    let mut segments = Vec::with_capacity(m);
                    for _ in 0..m {
                        last = last.checked_add(d.u32()?).ok_or_else(|| FormatError("segment bound overflow".into()))?;
                        segments.push(SegmentInfo { end: last, count: d.u32()?, bytes: d.u32()? });
                    }
                    TextPosting::Segmented(Segmented { count, segments, first: d.bitmap()? })
                }
                k => return err(format!("unknown text posting kind {k}")),
            };
            Ok((token, posting))
        })
        .collect()
}

/// `t/s<year>.bin` and `t/e<year>.bin`: the bitmap of docs on the far side of
/// the year (started before it / ended after it), then (timestamp, bitmap)
/// for the distinct times within it, ascending.
pub struct TimeYear {
    pub beyond: RoaringBitmap,
    pub exact: Vec<(i64, RoaringBitmap)>,
}

pub fn encode_time_year(t: &TimeYear) -> Vec<u8> {
    let mut e = Enc::default();
    e.bitmap(&t.beyond).uint(t.exact.len() as u64);
    for (ts, b) in &t.exact {
        e.int(*ts).bitmap(b);
    }
    e.finish()
}

pub fn decode_time_year(raw: &[u8]) -> Result<TimeYear> {
    let mut d = Dec::new(raw);
    let beyond = d.bitmap()?;
    let n = d.uint()? as usize;
    let exact = (0..n).map(|_| Ok((d.int()?, d.bitmap()?))).collect::<Result<_>>()?;
    Ok(TimeYear { beyond, exact })
}

/// `b.bin`: count, then (west, south, east, north as f64, bitmap).
pub fn encode_boxes(boxes: &[([f64; 4], RoaringBitmap)]) -> Vec<u8> {
    let mut e = Enc::default();
    e.uint(boxes.len() as u64);
    for (b, docs) in boxes {
        for v in b {
            e.f64(*v);
        }
        e.bitmap(docs);
    }
    e.finish()
}

pub fn decode_boxes(raw: &[u8]) -> Result<Vec<([f64; 4], RoaringBitmap)>> {
    let mut d = Dec::new(raw);
    let n = d.uint()? as usize;
    (0..n).map(|_| Ok(([d.f64()?, d.f64()?, d.f64()?, d.f64()?], d.bitmap()?))).collect()
}

/// `c/*.bin`: for every facet (in index order): number of (value, count)
/// pairs, then pairs with delta-coded value numbers.
pub fn encode_cooccurrence(per_facet: &[Vec<(u32, u32)>]) -> Vec<u8> {
    let mut e = Enc::default();
    e.uint(per_facet.len() as u64);
    for pairs in per_facet {
        e.uint(pairs.len() as u64);
        let mut last = 0u32;
        for &(v, n) in pairs {
            e.uint((v - last) as u64).uint(n as u64);
            last = v;
        }
    }
    e.finish()
}

pub fn decode_cooccurrence(raw: &[u8]) -> Result<Vec<Vec<(u32, u32)>>> {
    let mut d = Dec::new(raw);
    let facets = d.uint()? as usize;
    let mut out = Vec::with_capacity(facets);
    for _ in 0..facets {
        let n = d.uint()? as usize;
        let mut last = 0u32;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            last = last.checked_add(d.u32()?).ok_or_else(|| FormatError("value number overflow".into()))?;
            pairs.push((last, d.u32()?));
        }
        out.push(pairs);
    }
    Ok(out)
}

/// `k/<block>.bin`: doc count, then per facet the codes as runs (code, length).
pub fn encode_block(columns: &[&[u32]]) -> Vec<u8> {
    let mut e = Enc::default();
    let len = columns.first().map_or(0, |c| c.len());
    e.uint(len as u64).uint(columns.len() as u64);
    for col in columns {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < col.len() {
            let mut j = i + 1;
            while j < col.len() && col[j] == col[i] {
                j += 1;
            }
            runs.push((col[i], j - i));
            i = j;
        }
        e.uint(runs.len() as u64);
        for (code, n) in runs {
            e.uint(code as u64).uint(n as u64);
        }
    }
    e.finish()
}

pub fn decode_block(raw: &[u8]) -> Result<Vec<Vec<u32>>> {
    let mut d = Dec::new(raw);
    let len = d.uint()? as usize;
    let facets = d.uint()? as usize;
    let mut out = Vec::with_capacity(facets);
    for _ in 0..facets {
        let runs = d.uint()? as usize;
        let mut col = Vec::with_capacity(len);
        for _ in 0..runs {
            let code = d.u32()?;
            let n = d.uint()? as usize;
            if col.len() + n > len {
                return err("block column longer than the block");
            }
            col.resize(col.len() + n, code);
        }
        if col.len() != len {
            return err("block column shorter than the block");
        }
        out.push(col);
    }
    Ok(out)
}

/// `d/<shard>.bin`: count, then (id, href, start, end, label).
pub fn encode_docs(docs: &[crate::Doc]) -> Vec<u8> {
    let mut e = Enc::default();
    e.uint(docs.len() as u64);
    for d in docs {
        e.str(&d.id).str(&d.href).int(d.start).int(d.end).str(&d.label);
    }
    e.finish()
}

pub fn decode_docs(raw: &[u8]) -> Result<Vec<crate::Doc>> {
    let mut d = Dec::new(raw);
    let n = d.uint()? as usize;
    (0..n)
        .map(|_| Ok(crate::Doc { id: d.str()?.to_string(), href: d.str()?.to_string(), start: d.int()?, end: d.int()?, label: d.str()?.to_string() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let b: RoaringBitmap = [1, 5, 70000, 70001].into_iter().collect();
        assert_eq!(decode_postings(&inflate(&encode_postings(&b)).unwrap()).unwrap(), b);
        let seg = TextPosting::Segmented(Segmented {
            count: 4,
            segments: vec![SegmentInfo { end: 65536, count: 2, bytes: 0 }, SegmentInfo { end: 100_000, count: 2, bytes: 31 }],
            first: [1, 5].into_iter().collect(),
        });
        let whole = TextPosting::Whole(b.clone());
        let chunk = encode_text_chunk(&[("air", &whole), ("tas", &seg)]);
        let back = decode_text_chunk(&inflate(&chunk).unwrap()).unwrap();
        assert_eq!(back[0], ("air".to_string(), whole));
        assert_eq!(back[1], ("tas".to_string(), seg));
        let t = TimeYear { beyond: b.clone(), exact: vec![(-5_000_000_000, b.clone()), (1_000, b.clone())] };
        let back = decode_time_year(&inflate(&encode_time_year(&t)).unwrap()).unwrap();
        assert_eq!(back.exact[0].0, -5_000_000_000);
        let cols: Vec<u32> = vec![1, 1, 1, 2, 0, 0];
        let block = decode_block(&inflate(&encode_block(&[&cols, &cols])).unwrap()).unwrap();
        assert_eq!(block, vec![cols.clone(), cols]);
        let co = vec![vec![(0, 3), (7, 1)], vec![]];
        assert_eq!(decode_cooccurrence(&inflate(&encode_cooccurrence(&co)).unwrap()).unwrap(), co);
        let boxes = vec![([-180.0, -90.0, 180.0, 90.0], b.clone())];
        assert_eq!(decode_boxes(&inflate(&encode_boxes(&boxes)).unwrap()).unwrap(), boxes);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        assert!(inflate(b"\xff\xff\xff").is_err());
        assert!(decode_docs(&[5, 1]).is_err());
        assert!(decode_block(&[2, 1, 1, 0, 9]).is_err());
    }
}
