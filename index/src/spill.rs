//! What the index writer would otherwise hold per item until
//! [`crate::write::IndexWriter::finish`], kept in temp files instead, so
//! writing an index takes the same memory at 100k items as at 10M:
//!
//! - [`PostingSpill`]: the bitmaps (facet values, words, start and end times,
//!   footprint boxes). Only the current range of docs is in memory; when the
//!   docs pass into the next range, each bitmap's part for the range is
//!   appended to a temp file. `finish` merges the parts of every bitmap into
//!   a second file ([`Postings`]), read back one bitmap at a time.
//! - [`Codes`]: one facet's code per doc, bit-packed per block of
//!   [`crate::BLOCK`] docs, each full block written to a temp file.
//!
//! What stays in memory grows with the vocabulary (distinct values, words,
//! times, boxes: a key each), not with the items. Reads use positioned I/O
//! (`read_exact_at`): the generator runs on Unix.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use roaring::RoaringBitmap;

use crate::BLOCK;

/// Docs per spilled range, as a power of two: 2^17 = two roaring containers.
/// The open range costs a few MB at most (a few bytes per doc and posting).
pub const RANGE_BITS: u32 = 17;

/// Bitmaps keyed by small numbers, filled in doc order and kept on disk.
pub struct PostingSpill {
    range_bits: u32,
    /// The range the open bitmaps hold (`doc >> range_bits`).
    range: u32,
    /// By key: its docs in the open range.
    open: Vec<RoaringBitmap>,
    /// Closed ranges' parts: per part, key (u32 LE), length (u32 LE), the
    /// part serialized by roaring; one range after the other, keys ascending.
    file: Option<BufWriter<File>>,
    written: u64,
    /// Byte region of each closed range in `file`.
    regions: Vec<(u64, u64)>,
    scratch: Vec<u8>,
}

impl PostingSpill {
    pub fn new(range_bits: u32) -> PostingSpill {
        PostingSpill {
            range_bits: range_bits.min(31),
            range: 0,
            open: Vec::new(),
            file: None,
            written: 0,
            regions: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// A new, empty bitmap's key.
    pub fn key(&mut self) -> u32 {
        self.open.push(RoaringBitmap::new());
        (self.open.len() - 1) as u32
    }

    /// Adds `doc` to `key`'s bitmap. Docs come in ascending order.
    pub fn insert(&mut self, key: u32, doc: u32) -> io::Result<()> {
        let range = doc >> self.range_bits;
        if range != self.range {
            self.close_range()?;
            self.range = range;
        }
        self.open[key as usize].insert(doc);
        Ok(())
    }

    /// Appends the open range's parts to the file and empties them.
    fn close_range(&mut self) -> io::Result<()> {
        let start = self.written;
        for (key, b) in self.open.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            let file = match &mut self.file {
                Some(f) => f,
                None => self
                    .file
                    .insert(BufWriter::with_capacity(1 << 16, tempfile::tempfile()?)),
            };
            self.scratch.clear();
            b.serialize_into(&mut self.scratch)?;
            file.write_all(&(key as u32).to_le_bytes())?;
            file.write_all(&(self.scratch.len() as u32).to_le_bytes())?;
            file.write_all(&self.scratch)?;
            self.written += 8 + self.scratch.len() as u64;
            // A new bitmap, not clear(): its containers' memory goes back.
            *b = RoaringBitmap::new();
        }
        if self.written > start {
            self.regions.push((start, self.written));
        }
        Ok(())
    }

    /// Every bitmap whole, in a file of their own.
    pub fn finish(mut self) -> io::Result<Postings> {
        self.close_range()?;
        let keys = self.open.len();
        self.open = Vec::new();
        let mut out = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
        let mut at = Vec::with_capacity(keys);
        let Some(file) = self.file.take() else {
            // Nothing was inserted.
            return Ok(Postings {
                file: out.into_inner().map_err(|e| e.into_error())?,
                at: vec![(0, 0); keys],
            });
        };
        let file = file.into_inner().map_err(|e| e.into_error())?;
        let mut cursors: Vec<Cursor> = self
            .regions
            .iter()
            .map(|&(start, end)| Cursor {
                next: start,
                end,
                buf: Vec::new(),
                pos: 0,
            })
            .collect();
        let mut written = 0u64;
        for key in 0..keys as u32 {
            let mut b = RoaringBitmap::new();
            for c in cursors.iter_mut() {
                if c.key(&file)? == Some(key) {
                    // Parts of later ranges hold later docs: their containers are appended.
                    b |= c.take(&file)?;
                }
            }
            self.scratch.clear();
            b.serialize_into(&mut self.scratch)?;
            out.write_all(&self.scratch)?;
            at.push((written, self.scratch.len() as u32));
            written += self.scratch.len() as u64;
        }
        if let Some(c) = cursors.iter_mut().find_map(|c| c.key(&file).transpose()) {
            return Err(io::Error::other(format!(
                "posting spill: a part for key {} beyond the {keys} keys",
                c?
            )));
        }
        Ok(Postings {
            file: out.into_inner().map_err(|e| e.into_error())?,
            at,
        })
    }
}

/// Reads one range's parts in order, through a small buffer.
struct Cursor {
    next: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

/// Bytes a cursor reads at a time (one per range: 77 ranges at 10M items).
const CURSOR_BYTES: usize = 16 * 1024;

impl Cursor {
    /// Makes `n` bytes available at `pos`; false if the range ends first.
    fn fill(&mut self, file: &File, n: usize) -> io::Result<bool> {
        if self.buf.len() - self.pos >= n {
            return Ok(true);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let take =
            ((n.max(CURSOR_BYTES) - self.buf.len()) as u64).min(self.end - self.next) as usize;
        let old = self.buf.len();
        self.buf.resize(old + take, 0);
        file.read_exact_at(&mut self.buf[old..], self.next)?;
        self.next += take as u64;
        Ok(self.buf.len() >= n)
    }

    /// The next part's key, if any.
    fn key(&mut self, file: &File) -> io::Result<Option<u32>> {
        if !self.fill(file, 8)? {
            if self.buf.len() > self.pos {
                return Err(io::Error::other("posting spill: a truncated part"));
            }
            return Ok(None);
        }
        Ok(Some(u32::from_le_bytes(
            self.buf[self.pos..self.pos + 4]
                .try_into()
                .expect("4 bytes"),
        )))
    }

    /// The next part (after [`Cursor::key`] said there is one).
    fn take(&mut self, file: &File) -> io::Result<RoaringBitmap> {
        let len = u32::from_le_bytes(
            self.buf[self.pos + 4..self.pos + 8]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        if !self.fill(file, 8 + len)? {
            return Err(io::Error::other("posting spill: a truncated part"));
        }
        let b =
            RoaringBitmap::deserialize_unchecked_from(&self.buf[self.pos + 8..self.pos + 8 + len])?;
        self.pos += 8 + len;
        Ok(b)
    }
}

/// The merged bitmaps of a [`PostingSpill`], by key.
pub struct Postings {
    file: File,
    /// By key: offset and length in `file`.
    at: Vec<(u64, u32)>,
}

impl Postings {
    pub fn get(&self, key: u32) -> io::Result<RoaringBitmap> {
        let (offset, len) = self.at[key as usize];
        if len == 0 {
            return Ok(RoaringBitmap::new());
        }
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        RoaringBitmap::deserialize_unchecked_from(&buf[..])
    }
}

/// One facet's code per doc, bit-packed per block of [`BLOCK`] docs at the
/// width of the block's largest code; full blocks go to a temp file.
#[derive(Default)]
pub struct Codes {
    /// Full blocks: bits per code and where the packed words start in `file`.
    packed: Vec<(u32, u64)>,
    file: Option<File>,
    written: u64,
    open: Vec<u32>,
}

impl Codes {
    pub fn push(&mut self, code: u32) -> io::Result<()> {
        if self.open.capacity() == 0 {
            self.open.reserve_exact(BLOCK as usize);
        }
        self.open.push(code);
        if self.open.len() == BLOCK as usize {
            let width = 32 - self.open.iter().max().copied().unwrap_or(0).leading_zeros();
            let mut words = vec![0u64; (self.open.len() * width as usize).div_ceil(64)];
            if width > 0 {
                for (i, &c) in self.open.iter().enumerate() {
                    let (at, off) = ((i * width as usize) / 64, (i * width as usize) % 64);
                    words[at] |= (c as u64) << off;
                    if off + width as usize > 64 {
                        words[at + 1] |= (c as u64) >> (64 - off);
                    }
                }
            }
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(tempfile::tempfile()?),
            };
            file.write_all_at(&bytes, self.written)?;
            self.packed.push((width, self.written));
            self.written += bytes.len() as u64;
            self.open.clear();
        }
        Ok(())
    }

    pub fn blocks(&self) -> usize {
        self.packed.len() + !self.open.is_empty() as usize
    }

    /// The codes of block `b`.
    pub fn block(&self, b: usize) -> io::Result<Vec<u32>> {
        let Some(&(width, offset)) = self.packed.get(b) else {
            return Ok(self.open.clone());
        };
        if width == 0 {
            return Ok(vec![0; BLOCK as usize]);
        }
        let (width, mask) = (width as usize, (1u64 << width) - 1);
        let mut bytes = vec![0u8; (BLOCK as usize * width).div_ceil(64) * 8];
        self.file
            .as_ref()
            .expect("a full block was written")
            .read_exact_at(&mut bytes, offset)?;
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok((0..BLOCK as usize)
            .map(|i| {
                let (at, off) = ((i * width) / 64, (i * width) % 64);
                let mut v = words[at] >> off;
                if off + width > 64 {
                    v |= words[at + 1] << (64 - off);
                }
                (v & mask) as u32
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_codes_read_back_exactly() {
        let n = BLOCK as usize * 3 + 123;
        let code = |i: usize| match i / BLOCK as usize {
            0 => 0,                                   // width 0
            1 => (i % 5) as u32,                      // width 3
            2 => (i as u32).wrapping_mul(2654435761), // up to 32 bits
            _ => (i % 70_000) as u32,
        };
        let mut c = Codes::default();
        for i in 0..n {
            c.push(code(i)).unwrap();
        }
        assert_eq!(c.blocks(), 4);
        let back: Vec<u32> = (0..c.blocks()).flat_map(|b| c.block(b).unwrap()).collect();
        assert!(back.into_iter().eq((0..n).map(code)));
        assert_eq!(c.block(1).unwrap().len(), BLOCK as usize);
        assert_eq!(c.block(3).unwrap().len(), 123);
    }

    /// Bitmaps spilled in ranges of 2^k docs come back equal to the ones built
    /// in memory, with the same containers (so their bytes are the same).
    #[test]
    fn spilled_bitmaps_equal_bitmaps_built_in_memory() {
        let n = 300_000u32;
        // Keys: dense, sparse, runs, one doc, late-born, every doc.
        let members = |doc: u32| -> Vec<usize> {
            let mut k = vec![0];
            if doc % 7 == 0 {
                k.push(1);
            }
            if (doc / 1000) % 3 == 1 {
                k.push(2);
            }
            if doc == 4242 {
                k.push(3);
            }
            if doc >= 200_000 && doc % 2 == 0 {
                k.push(4);
            }
            if doc % 13 < 2 {
                k.push(5);
            }
            k
        };
        let mut expected = vec![RoaringBitmap::new(); 6];
        for doc in 0..n {
            for k in members(doc) {
                expected[k].insert(doc);
            }
        }
        for bits in [5, 12, 16, 17, 31] {
            let mut spill = PostingSpill::new(bits);
            let mut keys: Vec<Option<u32>> = vec![None; 6];
            for doc in 0..n {
                for k in members(doc) {
                    let key = *keys[k].get_or_insert_with(|| spill.key());
                    spill.insert(key, doc).unwrap();
                }
            }
            let postings = spill.finish().unwrap();
            for (k, want) in expected.iter().enumerate() {
                let got = postings.get(keys[k].unwrap()).unwrap();
                assert_eq!(&got, want, "key {k}, ranges of 2^{bits}");
                let (mut a, mut b) = (Vec::new(), Vec::new());
                got.serialize_into(&mut a).unwrap();
                want.serialize_into(&mut b).unwrap();
                assert_eq!(a, b, "serialized key {k}, ranges of 2^{bits}");
            }
        }
    }

    #[test]
    fn an_empty_spill_finishes() {
        let mut spill = PostingSpill::new(RANGE_BITS);
        let k = spill.key();
        let postings = spill.finish().unwrap();
        assert!(postings.get(k).unwrap().is_empty());
    }
}
