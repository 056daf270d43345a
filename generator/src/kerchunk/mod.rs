//! Kerchunk reference files: every netCDF file (and each multi-file dataset)
//! opens lazily as Zarr v2 over the original bytes, e.g. over HTTP with
//! `xr.open_dataset("reference://", engine="zarr", backend_kwargs={"consolidated":
//! False, "storage_options": {"fo": refs}})`.
//!
//! Output is Kerchunk version 1 (`{"version": 1, "refs": {...}}`) as Python
//! kerchunk writes it: zarr v2 metadata documents as JSON strings (`.zgroup`,
//! `.zattrs`, `<var>/.zarray`, `<var>/.zattrs` with `_ARRAY_DIMENSIONS`), and
//! each chunk as `[url, offset, length]` or inline text / `base64:` bytes.
//! [`References::to_json`] is deterministic: the same file gives the same bytes.
//!
//! # Reading netCDF-4/HDF5: the `hdf5-reader` crate, low-level modules
//!
//! Chunk addresses come from the pure-Rust `hdf5-reader` crate (0.12). Its
//! high-level `Dataset` decodes data and hides chunk addresses, but its public
//! low-level modules (`btree_v1`, `chunk_index`, `fixed_array`,
//! `extensible_array`) return each chunk's file address, stored size, filter
//! mask and grid offset for all six chunk index types, and the object header
//! gives the layout and filter pipeline messages. Measured on the corpus (169
//! HDF5 files, 1847 datasets, all v1 B-tree or contiguous): offsets, sizes and
//! masks equal h5py's `chunk_iter` for every dataset, 0.6 s for all files in a
//! debug build. Writing our own parser would repeat the crate's work
//! (superblocks v0–v3, object headers v1/v2, dense attribute storage, global
//! heaps); the C library is no option (Debian's libhdf5 1.10.8 has no
//! `H5Dchunk_iter`, and `H5Dget_chunk_info` by index is quadratic). The
//! generated-file tests cover the index types the corpus lacks.
//!
//! HDF5 → zarr rules: the filter pipeline maps in order to zarr `filters`
//! (deflate → `zlib`, shuffle → `shuffle` with the element size, zstd, bzip2,
//! blosc); a trailing fletcher32 is stripped from each chunk's length as
//! Python kerchunk does, one elsewhere in the pipeline becomes numcodecs'
//! `fletcher32` codec; szip, nbit, scale-offset and unknown filters are an
//! error naming the variable. Chunks that skipped optional filters (HDF5's
//! filter mask) drop those filters if all chunks skipped them, else are
//! re-encoded and inlined. Compact data and NC_STRING values are inlined.
//! Dimension scales that are only netCDF dimensions (no coordinate variable)
//! are not arrays; dims come from `DIMENSION_LIST`, `_Netcdf4Coordinates`
//! and `_Netcdf4Dimid`.
//!
//! # netCDF classic (CDF-1, CDF-2, CDF-5)
//!
//! The header is parsed here (the classic format is small and fixed). A
//! non-record variable is one chunk at its `begin`; record variable `v` has one
//! chunk per record at `begin + i * recsize`; dtypes are big-endian (`>f4`).
//!
//! # Common rules
//!
//! - `fill_value` in `.zarray` is the variable's `_FillValue` attribute (NaN as
//!   `"NaN"`), so xarray reports exactly the netCDF attributes. A variable
//!   without `_FillValue` gets null, unless some of its chunks were never
//!   written: then the file's fill value (what netCDF reads there), and xarray
//!   shows it as `_FillValue`.
//! - Attributes keep their types: numbers stay numbers (f32 as the exact f64),
//!   one-element arrays become scalars, NC_CHAR becomes a string.
//! - Chunks under [`INLINE_BYTES`] are inlined. An array of several chunks
//!   whose values total at most [`CONSOLIDATE_BYTES`] (a chunk-per-step time
//!   axis, its bounds, lat/lon bounds) is read, decoded and inlined as one
//!   uncompressed chunk; data along the time dimension are not, so that the
//!   files of a dataset keep one chunk grid and combine.
//! - Values that are read (time axes, small arrays) are decoded from the
//!   references themselves, as a zarr reader would, with one reused inflater
//!   (flate2 on zlib-rs); `hdf5-reader` decodes only what has other filters.
//!   Its reader built a fresh inflater per chunk, which made a daily file of
//!   3652 one-step chunks take 70 ms instead of 11.
//! - Combining along time: see [`combine_along_time`].

mod combine;
mod hdf5;
mod model;
mod netcdf3;
mod timeunits;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use model::{Array, Chunk, Kind, Tree};

pub use combine::combine_along_time;

/// Chunks stored in fewer bytes than this are inlined (Python kerchunk's
/// default for HDF5).
pub const INLINE_BYTES: u64 = 500;

/// Multi-chunk arrays whose decoded values fit in this many bytes are inlined
/// as one chunk.
pub const CONSOLIDATE_BYTES: u64 = 64 * 1024;

/// Kerchunk (version 1) references for one netCDF file or one combined dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct References {
    /// The URL of the (first) file, for messages.
    source: String,
    tree: Tree,
}

impl References {
    /// The reference JSON; the same input gives the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        self.tree.to_json()
    }

    /// The (first) file's name, for messages.
    pub(crate) fn name(&self) -> &str {
        self.source.rsplit('/').next().unwrap_or(&self.source)
    }

    /// Paths of the Zarr arrays ("var" or "group/var"), sorted.
    pub fn arrays(&self) -> Vec<String> {
        self.tree.arrays.keys().cloned().collect()
    }

    /// Variables that could not be referenced ("var" or "group/var" → why),
    /// sorted. The file's other variables are referenced.
    pub fn skipped(&self) -> &BTreeMap<String, String> {
        &self.tree.skipped
    }

    /// The same references with every chunk pointing at `url`, and Kerchunk
    /// `templates` (name → default) when `url` uses them (`{{u}}/…`). Only
    /// for the references of one file.
    pub fn with_url(mut self, url: &str, templates: &[(&str, &str)]) -> References {
        let url: Arc<str> = url.into();
        self.tree.set_url(&url);
        self.tree.templates = templates.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.source = url.to_string();
        self
    }

    /// A compact binary form for the build's sidecar cache: everything but
    /// the URL (restored with [`References::with_url`]).
    pub fn to_cache_bytes(&self) -> Vec<u8> {
        bincode::serialize(&self.tree).expect("in-memory serialisation does not fail")
    }

    /// Reads [`References::to_cache_bytes`] back; give it its URL with
    /// [`References::with_url`] before use.
    pub fn from_cache_bytes(bytes: &[u8]) -> Result<References> {
        let tree: Tree = bincode::deserialize(bytes).context("damaged cached references")?;
        Ok(References { source: String::new(), tree })
    }
}

/// Decoded values of an array, read from the file (time axes, small arrays).
pub(crate) trait ValueReader {
    /// C order, in the array dtype's byte order, fill values materialised.
    fn read_values(&self, path: &str, array: &Array) -> Result<Vec<u8>>;
}

/// Kerchunk (version 1) references for one netCDF file whose bytes are at
/// `url` (http(s) URL, site-relative path, or local path — stored verbatim as
/// the target of every chunk ref). Errors name the file and the variable.
pub fn file_references(path: &Path, url: &str) -> Result<References> {
    let context = || format!("kerchunk references for {}", path.display());
    build(path, url).with_context(context)
}

fn build(path: &Path, url: &str) -> Result<References> {
    let url: Arc<str> = url.into();
    let mut magic = [0u8; 8];
    let n = File::open(path)?.read(&mut magic)?;
    let (mut tree, reader): (Tree, Box<dyn ValueReader>) = match &magic[..n.min(8)] {
        [b'C', b'D', b'F', v @ (1 | 2 | 5), ..] => netcdf3::read(path, &url, *v)?,
        [b'C', b'D', b'F', v, ..] => bail!("unknown netCDF classic version {v}"),
        // HDF5 (the signature may also sit behind a user block).
        _ => hdf5::read(path, &url)?,
    };

    let time_axis = combine::time_axis_arrays(&tree);
    let time_dim = combine::time_coordinate(&tree).map(str::to_string);
    let mut unreadable = Vec::new();
    for (name, array) in tree.arrays.iter_mut() {
        // Data along time keep their file chunks, so that files combine.
        let along_time = time_dim.as_ref().is_some_and(|t| array.dims.contains(t)) && !time_axis.contains(name);
        let small = array.chunk_refs.len() > 1
            && array.nbytes() <= CONSOLIDATE_BYTES
            && array.dtype.kind != Kind::VlenStr
            && !along_time;
        if array.values.is_none() && (small || time_axis.contains(name)) {
            match reader.read_values(name, array) {
                Ok(values) if values.len() as u64 == array.nbytes() => array.values = Some(values),
                Ok(values) => {
                    unreadable.push((name.clone(), format!("read {} bytes of values, expected {}", values.len(), array.nbytes())));
                    continue;
                }
                Err(e) => {
                    unreadable.push((name.clone(), format!("reading values: {e:#}")));
                    continue;
                }
            }
        }
        if small {
            consolidate(array);
        }
    }
    for (name, reason) in unreadable {
        tree.arrays.remove(&name);
        tree.skipped.insert(name, reason);
    }
    inline_small_chunks(path, &url, &mut tree)?;
    Ok(References { source: url.to_string(), tree })
}

/// Replaces an array's chunks by its decoded values as one inline chunk.
pub(crate) fn consolidate(array: &mut Array) {
    let values = array.values.clone().expect("values read before consolidating");
    array.chunks = array.shape.iter().map(|&s| s.max(1)).collect();
    array.filters.clear();
    array.chunk_refs.clear();
    array.chunk_refs.insert(vec![0; array.shape.len()], Chunk::Inline(values));
}

fn inline_small_chunks(path: &Path, url: &Arc<str>, tree: &mut Tree) -> Result<()> {
    let file = File::open(path)?;
    for array in tree.arrays.values_mut() {
        for chunk in array.chunk_refs.values_mut() {
            if let Chunk::Ref { url: u, offset, length } = chunk {
                if *length < INLINE_BYTES && Arc::ptr_eq(u, url) {
                    let mut buf = vec![0u8; *length as usize];
                    file.read_exact_at(&mut buf, *offset)
                        .with_context(|| format!("reading {length} bytes at {offset}"))?;
                    *chunk = Chunk::Inline(buf);
                }
            }
        }
    }
    Ok(())
}
