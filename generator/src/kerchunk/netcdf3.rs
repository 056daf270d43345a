//! netCDF classic (CDF-1, CDF-2 64-bit offset, CDF-5 64-bit data) → Zarr view.
//!
//! Follows the NetCDF Classic Format Specification: the header lists
//! dimensions, global attributes and variables with their `begin` offsets.
//! A non-record variable is one contiguous chunk; a record variable's record
//! `i` starts at `begin + i * recsize`, one chunk per record, as Python
//! kerchunk's NetCDF3ToZarr does.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use super::model::{Array, Attrs, Chunk, Dtype, Kind, Tree, Value};
use super::ValueReader;

const NC_DIMENSION: u32 = 0x0A;
const NC_VARIABLE: u32 = 0x0B;
const NC_ATTRIBUTE: u32 = 0x0C;
const STREAMING: u64 = 0xFFFF_FFFF;

/// Reads the header bytes on demand (headers are small; the read grows).
struct Header {
    buf: Vec<u8>,
    pos: usize,
    version: u8,
}

impl Header {
    fn need(&self, n: usize) -> Result<()> {
        if self.pos + n > self.buf.len() {
            bail!("header truncated at byte {} (file is {} bytes)", self.pos, self.buf.len());
        }
        Ok(())
    }
    fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        let v = u32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        Ok(v)
    }
    fn u64(&mut self) -> Result<u64> {
        self.need(8)?;
        let v = u64::from_be_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        Ok(v)
    }
    /// NON_NEG: 32 bits, 64 bits in CDF-5.
    fn non_neg(&mut self) -> Result<u64> {
        if self.version == 5 { self.u64() } else { self.u32().map(u64::from) }
    }
    /// OFFSET: 32 bits in CDF-1, 64 bits in CDF-2 and CDF-5.
    fn offset(&mut self) -> Result<u64> {
        if self.version == 1 { self.u32().map(u64::from) } else { self.u64() }
    }
    fn bytes(&mut self, n: u64) -> Result<&[u8]> {
        let n = usize::try_from(n)?;
        self.need(n)?;
        let start = self.pos;
        self.pos += n + (4 - n % 4) % 4; // padded to 4 bytes
        self.pos = self.pos.min(self.buf.len());
        Ok(&self.buf[start..start + n])
    }
    fn name(&mut self) -> Result<String> {
        let n = self.non_neg()?;
        Ok(String::from_utf8_lossy(self.bytes(n)?).into_owned())
    }
    /// A list's tag and count; ABSENT is two zeros.
    fn list(&mut self, tag: u32) -> Result<u64> {
        let t = self.u32()?;
        let n = self.non_neg()?;
        match t {
            0 if n == 0 => Ok(0),
            t if t == tag => Ok(n),
            t => bail!("expected list tag {tag:#x}, found {t:#x} at byte {}", self.pos),
        }
    }
    /// Attributes, and the raw bytes of `_FillValue` (the zarr fill value) apart.
    fn attrs(&mut self) -> Result<(Attrs, Option<Vec<u8>>)> {
        let n = self.list(NC_ATTRIBUTE)?;
        let mut out = Vec::new();
        let mut fill = None;
        for _ in 0..n {
            let name = self.name()?;
            let nc_type = self.u32()?;
            let count = self.non_neg()?;
            let dtype = dtype_of(nc_type).with_context(|| format!("attribute {name}"))?;
            let raw = self.bytes(count * dtype.size as u64)?;
            if name == "_FillValue" {
                fill = Some(raw.to_vec());
                continue;
            }
            let value = if dtype.kind == Kind::Bytes {
                // netCDF4-python shows NC_CHAR attributes with NULs removed.
                Value::Str(String::from_utf8_lossy(raw).replace('\0', ""))
            } else {
                let mut items: Vec<Value> = raw.chunks_exact(dtype.size).map(|b| dtype.decode(b).unwrap()).collect();
                if items.len() == 1 { items.pop().unwrap() } else { Value::List(items) }
            };
            out.push((name, value));
        }
        Ok((out, fill))
    }
}

fn dtype_of(nc_type: u32) -> Result<Dtype> {
    let (kind, size) = match nc_type {
        1 => (Kind::Int, 1),   // NC_BYTE
        2 => (Kind::Bytes, 1), // NC_CHAR
        3 => (Kind::Int, 2),   // NC_SHORT
        4 => (Kind::Int, 4),   // NC_INT
        5 => (Kind::Float, 4), // NC_FLOAT
        6 => (Kind::Float, 8), // NC_DOUBLE
        7 => (Kind::UInt, 1),  // NC_UBYTE (CDF-5)
        8 => (Kind::UInt, 2),  // NC_USHORT
        9 => (Kind::UInt, 4),  // NC_UINT
        10 => (Kind::Int, 8),  // NC_INT64
        11 => (Kind::UInt, 8), // NC_UINT64
        t => bail!("unknown netCDF type {t}"),
    };
    Ok(Dtype { kind, size, big_endian: true })
}

struct Var {
    name: String,
    dimids: Vec<usize>,
    attrs: Attrs,
    fill: Option<Vec<u8>>,
    dtype: Dtype,
    begin: u64,
}

/// Values are the chunks in C order: records or one whole-array chunk.
struct ClassicValues {
    file: File,
}

impl ValueReader for ClassicValues {
    fn read_values(&self, path: &str, array: &Array) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(array.nbytes() as usize);
        for chunk in array.chunk_refs.values() {
            match chunk {
                Chunk::Ref { offset, length, .. } => {
                    let start = out.len();
                    out.resize(start + *length as usize, 0);
                    self.file.read_exact_at(&mut out[start..], *offset).with_context(|| format!("{path}: chunk at {offset}"))?;
                }
                Chunk::Inline(bytes) => out.extend_from_slice(bytes),
            }
        }
        Ok(out)
    }
}

pub(crate) fn read(path: &Path, url: &Arc<str>, version: u8) -> Result<(Tree, Box<dyn ValueReader>)> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut buf = Vec::new();
    // Headers are at most a few hundred KiB; parse errors past the read say "truncated".
    file.by_ref().take(8 << 20).read_to_end(&mut buf)?;
    let mut h = Header { buf, pos: 4, version };

    let mut numrecs = h.non_neg()?;
    let ndims = h.list(NC_DIMENSION)?;
    let mut dims: Vec<(String, u64)> = Vec::new();
    for _ in 0..ndims {
        let name = h.name()?;
        let len = h.non_neg()?;
        dims.push((name, len));
    }
    let record_dim = dims.iter().position(|(_, len)| *len == 0);
    let (global, _) = h.attrs().context("global attributes")?;

    let nvars = h.list(NC_VARIABLE)?;
    let mut vars = Vec::new();
    for _ in 0..nvars {
        let name = h.name()?;
        let ndims = h.non_neg()?;
        let dimids = (0..ndims)
            .map(|_| {
                let id = h.non_neg()? as usize;
                if id >= dims.len() {
                    bail!("variable {name}: dimension id {id} out of range");
                }
                Ok(id)
            })
            .collect::<Result<Vec<_>>>()?;
        let (attrs, fill) = h.attrs().with_context(|| format!("variable {name}"))?;
        let dtype = dtype_of(h.u32()?).with_context(|| format!("variable {name}"))?;
        let _vsize = h.non_neg()?; // recomputed: CDF-1/2 cap it for large variables
        let begin = h.offset()?;
        vars.push(Var { name, dimids, attrs, fill, dtype, begin });
    }

    let is_record = |v: &Var| record_dim.is_some() && v.dimids.first() == record_dim.as_ref();
    // Bytes of one record of a variable (or of all of a fixed variable), unpadded.
    let slab = |v: &Var| -> u64 {
        let skip = usize::from(is_record(v));
        v.dimids[skip..].iter().map(|&d| dims[d].1).product::<u64>() * v.dtype.size as u64
    };
    let record_vars: Vec<&Var> = vars.iter().filter(|v| is_record(v)).collect();
    // Each record variable's slab is padded to 4 bytes, except when it is the only one.
    let recsize: u64 = match record_vars.as_slice() {
        [only] => slab(only),
        many => many.iter().map(|v| slab(v).div_ceil(4) * 4).sum(),
    };
    if numrecs == STREAMING || (version == 5 && numrecs == u64::MAX) {
        let first = record_vars.iter().map(|v| v.begin).min().unwrap_or(file_len);
        numrecs = file_len.saturating_sub(first).checked_div(recsize).unwrap_or(0);
    }

    let mut tree = Tree::default();
    tree.groups.insert(String::new(), global);
    for v in &vars {
        let record = is_record(v);
        let shape: Vec<u64> = v.dimids.iter().map(|&d| if Some(d) == record_dim { numrecs } else { dims[d].1 }).collect();
        let fill_value = match &v.fill {
            None => None,
            Some(raw) if v.dtype.kind == Kind::Bytes => {
                use base64::Engine as _;
                Some(Value::Str(base64::engine::general_purpose::STANDARD.encode(raw)))
            }
            Some(raw) => Some(v.dtype.decode(raw).ok_or_else(|| anyhow!("variable {}: _FillValue is not one {}", v.name, v.dtype.zarr()))?),
        };
        let mut array = Array {
            chunks: shape.iter().map(|&s| s.max(1)).collect(),
            shape: shape.clone(),
            dtype: v.dtype,
            fill_value,
            filters: Vec::new(),
            dims: v.dimids.iter().map(|&d| dims[d].0.clone()).collect(),
            attrs: v.attrs.clone(),
            chunk_refs: BTreeMap::new(),
            values: None,
        };
        let size = slab(v);
        if record {
            array.chunks[0] = 1;
            if size > 0 {
                let rest = vec![0u64; shape.len() - 1];
                for i in 0..numrecs {
                    let mut index = vec![i];
                    index.extend(&rest);
                    let chunk = Chunk::Ref { url: url.clone(), offset: v.begin + i * recsize, length: size };
                    array.chunk_refs.insert(index, chunk);
                }
            }
        } else if size > 0 {
            array.chunk_refs.insert(vec![0; shape.len()], Chunk::Ref { url: url.clone(), offset: v.begin, length: size });
        }
        if let Some(Chunk::Ref { offset, length, .. }) = array.chunk_refs.values().next_back() {
            if offset + length > file_len {
                // A file cut short: netCDF reads fill values there, we cannot point at them.
                tree.skipped.insert(v.name.clone(), format!("data ends at byte {} but the file has {file_len}", offset + length));
                continue;
            }
        }
        tree.arrays.insert(v.name.clone(), array);
    }
    Ok((tree, Box::new(ClassicValues { file: File::open(path).map_err(|e| anyhow!("reopening: {e}"))? })))
}
