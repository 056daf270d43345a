//! netCDF-4 / HDF5 → Zarr view, with chunk addresses from `hdf5-reader`'s
//! low-level index walkers (see the module doc of `kerchunk` for why).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use hdf5_reader::group::Group;
use hdf5_reader::messages::dataspace::DataspaceType;
use hdf5_reader::messages::filter_pipeline::FilterDescription;
use hdf5_reader::messages::layout::{ChunkIndexing, DataLayout};
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::{Attribute, ByteOrder, Dataset, Datatype, Hdf5File, StringPadding, StringSize, VarLenKind};

use super::model::{encode_vlen_utf8, Array, Attrs, Chunk, Codec, Dtype, Kind, Tree, Value};
use super::ValueReader;

/// Attributes that are HDF5 or netCDF-4 bookkeeping, not netCDF attributes
/// (the set h5netcdf and Python kerchunk hide), plus `_FillValue`, which
/// becomes the zarr `fill_value`.
const HIDDEN_ATTRS: &[&str] = &[
    "REFERENCE_LIST",
    "CLASS",
    "DIMENSION_LIST",
    "NAME",
    "_Netcdf4Dimid",
    "_Netcdf4Coordinates",
    "_nc3_strict",
    "_NCProperties",
    "_FillValue",
];

/// netCDF-C's NAME for a dimension scale that is not a variable.
const PURE_DIMENSION: &str = "This is a netCDF dimension but not a netCDF variable";
/// netCDF-C's dataset name prefix for a variable named like a dimension it
/// is not the coordinate of.
const NON_COORD_PREFIX: &str = "_nc4_non_coord_";

const FILTER_DEFLATE: u16 = 1;
const FILTER_SHUFFLE: u16 = 2;
const FILTER_FLETCHER32: u16 = 3;

struct Hdf5Values {
    datasets: HashMap<String, Dataset>,
    file: std::fs::File,
    /// One inflater for every chunk: `hdf5-reader` builds a new one (~40 KB
    /// zeroed) per chunk, which dominated files with thousands of tiny
    /// time chunks (70 ms → see bench/README.md).
    inflater: std::sync::Mutex<flate2::Decompress>,
}

impl ValueReader for Hdf5Values {
    fn read_values(&self, path: &str, array: &Array) -> Result<Vec<u8>> {
        if let Some(values) = self.assemble(array)? {
            return Ok(values);
        }
        let ds = self.datasets.get(path).ok_or_else(|| anyhow!("no dataset {path}"))?;
        Ok(ds.read_raw_bytes()?)
    }
}

impl Hdf5Values {
    /// Values decoded from the array's own chunk references (zlib and shuffle
    /// only), as a zarr reader would; None for anything else (the library reads those).
    fn assemble(&self, array: &Array) -> Result<Option<Vec<u8>>> {
        let size = array.dtype.size;
        if size == 0 || matches!(array.dtype.kind, Kind::Bytes | Kind::VlenStr) || array.filters.iter().any(|f| f.id != "zlib" && f.id != "shuffle") {
            return Ok(None);
        }
        let Some(fill) = fill_bytes(array.fill_value.as_ref(), array.dtype) else { return Ok(None) };
        let chunk_bytes = array.chunks.iter().product::<u64>() as usize * size;
        let mut out = fill.repeat(array.nbytes() as usize / size);
        let mut inflater = self.inflater.lock().expect("not poisoned");
        for (index, chunk) in &array.chunk_refs {
            let mut data = match chunk {
                Chunk::Ref { offset, length, .. } => {
                    let mut buf = vec![0u8; *length as usize];
                    std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf, *offset).with_context(|| format!("reading {length} bytes at {offset}"))?;
                    buf
                }
                Chunk::Inline(bytes) => bytes.clone(),
            };
            for f in array.filters.iter().rev() {
                data = match f.id.as_ref() {
                    "zlib" => {
                        inflater.reset(true);
                        let mut buf = Vec::with_capacity(chunk_bytes);
                        let status = inflater.decompress_vec(&data, &mut buf, flate2::FlushDecompress::Finish);
                        if !matches!(status, Ok(flate2::Status::StreamEnd)) {
                            return Ok(None);
                        }
                        buf
                    }
                    _ => unshuffle(&data, size),
                };
            }
            if data.len() != chunk_bytes {
                return Ok(None);
            }
            copy_chunk(&mut out, &data, &array.shape, &array.chunks, index, size);
        }
        Ok(Some(out))
    }
}

/// A fill value as one element of `dtype` (None when it cannot be written).
fn fill_bytes(fill: Option<&Value>, dtype: Dtype) -> Option<Vec<u8>> {
    let mut le = match (fill, dtype.kind, dtype.size) {
        (None, _, n) => vec![0; n],
        (Some(Value::Float(f)), Kind::Float, 4) => (*f as f32).to_le_bytes().to_vec(),
        (Some(Value::Float(f)), Kind::Float, 8) => f.to_le_bytes().to_vec(),
        (Some(Value::Int(i)), Kind::Int | Kind::UInt, n) => i.to_le_bytes()[..n].to_vec(),
        (Some(Value::UInt(u)), Kind::Int | Kind::UInt, n) => u.to_le_bytes()[..n].to_vec(),
        _ => return None,
    };
    if dtype.big_endian {
        le.reverse();
    }
    Some(le)
}

fn unshuffle(data: &[u8], size: usize) -> Vec<u8> {
    if size <= 1 {
        return data.to_vec();
    }
    let n = data.len() / size;
    let mut out = data.to_vec();
    for i in 0..n {
        for b in 0..size {
            out[i * size + b] = data[b * n + i];
        }
    }
    out
}

/// Copies one decoded chunk (C order, full chunk shape) into the C-order
/// array, clipping edge chunks.
fn copy_chunk(out: &mut [u8], chunk: &[u8], shape: &[u64], chunks: &[u64], index: &[u64], size: usize) {
    let rank = shape.len();
    if rank == 0 {
        out[..size].copy_from_slice(&chunk[..size]);
        return;
    }
    let origin: Vec<u64> = index.iter().zip(chunks).map(|(i, c)| i * c).collect();
    let last = rank - 1;
    if origin[last] >= shape[last] {
        return;
    }
    let run = (chunks[last].min(shape[last] - origin[last]) as usize) * size;
    let rows: u64 = chunks[..last].iter().product();
    let mut row = vec![0u64; last];
    for r in 0..rows {
        if r > 0 {
            // Odometer over the chunk's rows, last axis fastest.
            for d in (0..last).rev() {
                row[d] += 1;
                if row[d] < chunks[d] {
                    break;
                }
                row[d] = 0;
            }
        }
        if (0..last).any(|d| origin[d] + row[d] >= shape[d]) {
            continue;
        }
        let mut dst = 0u64;
        for d in 0..last {
            dst = dst * shape[d] + origin[d] + row[d];
        }
        let dst = (dst * shape[last] + origin[last]) as usize * size;
        let src = r as usize * chunks[last] as usize * size;
        out[dst..dst + run].copy_from_slice(&chunk[src..src + run]);
    }
}

pub(crate) fn read(path: &Path, url: &Arc<str>) -> Result<(Tree, Box<dyn ValueReader>)> {
    let file = Hdf5File::open(path).map_err(|e| anyhow!("neither netCDF classic nor a readable netCDF-4/HDF5 file: {e}"))?;

    // Every group and dataset first: dimension names are looked up across groups.
    let mut groups: Vec<(String, Group)> = Vec::new();
    let mut datasets: Vec<(String, Dataset)> = Vec::new();
    let mut pending = vec![(String::new(), file.root_group()?)];
    while let Some((gpath, group)) = pending.pop() {
        let (subgroups, dsets) = group.members().with_context(|| format!("listing group /{gpath}"))?;
        for ds in dsets {
            let name = ds.name().strip_prefix(NON_COORD_PREFIX).unwrap_or(ds.name()).to_string();
            datasets.push((join(&gpath, &name), ds));
        }
        for sub in subgroups {
            pending.push((join(&gpath, sub.name()), sub));
        }
        groups.push((gpath, group));
    }

    let mut dims = DimNames::default();
    for (dpath, ds) in &datasets {
        let attrs = ds.attributes();
        if string_attr(&attrs, "CLASS").as_deref() == Some("DIMENSION_SCALE") {
            let name = base_name(dpath).to_string();
            dims.by_address.insert(ds.address(), name.clone());
            if let Some(id) = find(&attrs, "_Netcdf4Dimid").and_then(int_attr) {
                dims.by_id.insert(id, name);
            }
        }
    }

    let mut tree = Tree::default();
    for (gpath, group) in &groups {
        let attrs = group.attributes().with_context(|| format!("attributes of group /{gpath}"))?;
        tree.groups.insert(gpath.clone(), convert_attrs(&attrs).with_context(|| format!("group /{gpath}"))?);
    }
    let ctx = FileCtx { file: &file, url };
    // netCDF's length of an unlimited dimension is the longest extent along it;
    // shorter variables read fill values past their own extent.
    let mut unlimited: HashMap<String, u64> = HashMap::new();
    let mut built = Vec::new();
    for (dpath, ds) in datasets {
        let attrs = ds.attributes();
        // A variable that cannot be referenced is reported, and the others still are.
        let names = match ctx.dim_names(&ds, &attrs, &dims) {
            Ok(names) => names,
            Err(e) => {
                tree.skipped.insert(dpath, format!("{e:#}"));
                continue;
            }
        };
        for (axis, name) in names.iter().enumerate() {
            if ds.max_dims().and_then(|m| m.get(axis)) == Some(&u64::MAX) {
                let len = unlimited.entry(name.clone()).or_default();
                *len = (*len).max(ds.shape()[axis]);
            }
        }
        let is_pure_dimension = string_attr(&attrs, "NAME").is_some_and(|n| n.starts_with(PURE_DIMENSION));
        if is_pure_dimension {
            continue;
        }
        match ctx.array(&ds, &attrs, names) {
            Ok((array, fill)) => built.push((dpath, ds, array, fill)),
            Err(e) => {
                tree.skipped.insert(dpath, format!("{e:#}"));
            }
        }
    }
    let mut by_path = HashMap::new();
    for (dpath, mut ds, mut array, fill) in built {
        for (axis, name) in array.dims.iter().enumerate() {
            if ds.max_dims().and_then(|m| m.get(axis)) == Some(&u64::MAX) {
                array.shape[axis] = unlimited[name];
            }
        }
        if array.shape != ds.shape() {
            match ds.with_padded_shape(&array.shape) {
                Ok(padded) => ds = padded,
                Err(e) => {
                    tree.skipped.insert(dpath, format!("padding to {:?}: {e}", array.shape));
                    continue;
                }
            }
        }
        let complete = array.chunk_refs.len() as u64 == array.grid_len();
        array.fill_value = match fill {
            FillInfo { attr: Some(v), .. } => Some(v),
            // What netCDF reads where nothing was written: the dataset's fill value.
            FillInfo { file, .. } if !complete && array.dtype.kind != Kind::VlenStr => Some(file),
            _ => None,
        };
        tree.arrays.insert(dpath.clone(), array);
        by_path.insert(dpath, ds);
    }
    let values = Hdf5Values { datasets: by_path, file: std::fs::File::open(path)?, inflater: std::sync::Mutex::new(flate2::Decompress::new(true)) };
    Ok((tree, Box::new(values)))
}

/// `_FillValue` if set, and the value unwritten data read as.
struct FillInfo {
    attr: Option<Value>,
    file: Value,
}

fn join(group: &str, name: &str) -> String {
    if group.is_empty() { name.to_string() } else { format!("{group}/{name}") }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[derive(Default)]
struct DimNames {
    by_address: HashMap<u64, String>,
    by_id: HashMap<i64, String>,
}

struct FileCtx<'a> {
    file: &'a Hdf5File,
    url: &'a Arc<str>,
}

impl FileCtx<'_> {
    fn offset_size(&self) -> u8 {
        self.file.superblock().offset_size
    }

    fn array(&self, ds: &Dataset, attrs: &[Attribute], dims: Vec<String>) -> Result<(Array, FillInfo)> {
        let header = self.file.get_or_parse_header(ds.address())?;
        let (mut layout, mut pipeline, mut null_space, mut fill_message) = (None, Vec::new(), false, None);
        for message in &header.messages {
            match message {
                HdfMessage::DataLayout(l) => layout = Some(l.layout.clone()),
                HdfMessage::FilterPipeline(p) => pipeline = p.filters.clone(),
                HdfMessage::Dataspace(s) => null_space = s.dataspace_type == DataspaceType::Null,
                HdfMessage::FillValue(f) => fill_message = f.value.clone(),
                HdfMessage::ExternalFiles(_) => bail!("data in external files is not supported"),
                _ => {}
            }
        }
        if null_space {
            bail!("empty (null) dataspace is not supported");
        }
        let layout = layout.ok_or_else(|| anyhow!("no data layout message"))?;
        let dtype = dtype_of(ds.dtype())?;
        let shape = ds.shape().to_vec();
        let mut array = Array {
            chunks: whole(&shape),
            shape,
            dtype,
            fill_value: None,
            filters: Vec::new(),
            dims,
            attrs: convert_attrs(attrs)?,
            chunk_refs: BTreeMap::new(),
            values: None,
        };
        let zeros = vec![0u64; array.shape.len()];
        let fill = FillInfo {
            attr: find(attrs, "_FillValue").map(|f| fill_value(dtype, &f.raw_data)).transpose()?,
            file: match fill_message {
                Some(bytes) if bytes.len() == dtype.size => fill_value(dtype, &bytes)?,
                _ if dtype.kind == Kind::VlenStr => Value::Str(String::new()),
                _ => fill_value(dtype, &vec![0; dtype.size])?,
            },
        };

        if dtype.kind == Kind::VlenStr {
            // The stored bytes are global-heap ids: inline the strings themselves.
            let strings = ds.read_strings()?;
            array.filters = vec![Codec::new("vlen-utf8")];
            if !strings.is_empty() {
                array.chunk_refs.insert(zeros, Chunk::Inline(encode_vlen_utf8(&strings)));
            }
            return Ok((array, fill));
        }

        let nbytes = array.nbytes();
        let base = self.file.superblock().base_address;
        match layout {
            DataLayout::Compact { data } => {
                let data = data.get(..nbytes as usize).ok_or_else(|| anyhow!("compact data shorter than the dataset"))?;
                array.chunk_refs.insert(zeros, Chunk::Inline(data.to_vec()));
            }
            DataLayout::Contiguous { address, .. } => {
                if !undefined(address, self.offset_size()) && nbytes > 0 {
                    let chunk = Chunk::Ref { url: self.url.clone(), offset: base + address, length: nbytes };
                    array.chunk_refs.insert(zeros, chunk);
                }
            }
            DataLayout::Chunked { address, dims: mut chunk_dims, chunk_indexing, .. } => {
                // Layout versions 1-3 list the element size as one more dimension.
                if chunk_dims.len() == array.shape.len() + 1 {
                    chunk_dims.pop();
                }
                array.chunks = chunk_dims.iter().map(|&c| c as u64).collect();
                let entries = if undefined(address, self.offset_size()) {
                    Vec::new()
                } else {
                    self.chunk_entries(ds, address, &chunk_dims, chunk_indexing.as_ref(), &array)?
                };
                self.add_chunks(ds, &mut array, &pipeline, entries)?;
            }
        }

        Ok((array, fill))
    }

    fn chunk_entries(
        &self,
        ds: &Dataset,
        address: u64,
        chunk_dims: &[u32],
        indexing: Option<&ChunkIndexing>,
        array: &Array,
    ) -> Result<Vec<Entry>> {
        let storage = self.file.storage();
        let (os, ls) = (self.offset_size(), self.file.superblock().length_size);
        let shape = &array.shape;
        let rank = shape.len();
        let from = |v: Vec<hdf5_reader::chunk_index::ChunkEntry>| -> Vec<Entry> {
            v.into_iter().map(|e| Entry { offsets: e.offsets, address: e.address, size: e.size, mask: e.filter_mask }).collect()
        };
        let entries = match indexing {
            None => {
                let leaves = hdf5_reader::btree_v1::collect_btree_v1_leaves_storage(
                    storage, address, os, ls, Some(rank as u32), chunk_dims, None,
                )?;
                let mut out = Vec::with_capacity(leaves.len());
                for (key, chunk_address) in leaves {
                    match key {
                        hdf5_reader::btree_v1::BTreeV1Key::RawData { chunk_size, filter_mask, offsets } => out.push(Entry {
                            offsets: offsets.get(..rank).ok_or_else(|| anyhow!("short chunk key"))?.to_vec(),
                            address: chunk_address,
                            size: chunk_size as u64,
                            mask: filter_mask,
                        }),
                        _ => bail!("chunk B-tree holds a non-chunk key"),
                    }
                }
                out
            }
            Some(ChunkIndexing::SingleChunk { filtered_size, filters }) => {
                vec![Entry { offsets: vec![0; rank], address, size: *filtered_size, mask: *filters }]
            }
            Some(ChunkIndexing::Implicit) => from(hdf5_reader::chunk_index::collect_implicit_chunk_entries(
                address,
                shape,
                chunk_dims,
                array.dtype.size,
                None,
                storage.len(),
            )?),
            Some(ChunkIndexing::BTreeV2) => from(hdf5_reader::chunk_index::collect_v2_chunk_entries_storage(
                storage, address, os, ls, rank as u32, chunk_dims, None,
            )?),
            Some(ChunkIndexing::FixedArray { .. }) => from(hdf5_reader::fixed_array::collect_fixed_array_chunk_entries_storage(
                storage, address, os, ls, shape, chunk_dims, None,
            )?),
            Some(ChunkIndexing::ExtensibleArray { .. }) => {
                from(hdf5_reader::extensible_array::collect_extensible_array_chunk_entries_storage(
                    storage,
                    address,
                    os,
                    ls,
                    shape,
                    ds.max_dims(),
                    chunk_dims,
                    None,
                )?)
            }
        };
        // Indexes of unfiltered chunks record no size (it is the chunk's).
        let full = array.chunks.iter().product::<u64>() * array.dtype.size as u64;
        // HDF5 keeps chunks that a shrunk extent no longer covers: not data.
        Ok(entries
            .into_iter()
            .filter(|e| e.offsets.iter().zip(shape).all(|(o, s)| o < s) && !undefined(e.address, os))
            .map(|e| Entry { size: if e.size == 0 { full } else { e.size }, ..e })
            .collect())
    }

    fn add_chunks(&self, ds: &Dataset, array: &mut Array, pipeline: &[FilterDescription], entries: Vec<Entry>) -> Result<()> {
        // Filters every chunk skipped are left out of the zarr pipeline; a
        // chunk that skipped more is re-encoded (below).
        let common_mask = entries.iter().fold(u32::MAX, |m, e| m & e.mask);
        let common_mask = if entries.is_empty() { 0 } else { common_mask };
        let active: Vec<&FilterDescription> =
            pipeline.iter().enumerate().filter(|(i, _)| common_mask & (1 << i) == 0).map(|(_, f)| f).collect();
        let strip_checksum = active.last().is_some_and(|f| f.id == FILTER_FLETCHER32);
        let codec_filters = if strip_checksum { &active[..active.len() - 1] } else { &active[..] };
        array.filters = codec_filters.iter().map(|f| codec(f, array.dtype)).collect::<Result<_>>()?;

        let chunk_lens: Vec<u64> = array.chunks.clone();
        let mut odd = Vec::new();
        for e in entries {
            let index: Vec<u64> = e.offsets.iter().zip(&chunk_lens).map(|(o, c)| o / c).collect();
            if e.mask != common_mask {
                odd.push(index);
                continue;
            }
            let length = if strip_checksum {
                e.size.checked_sub(4).ok_or_else(|| anyhow!("chunk too short for its fletcher32 checksum"))?
            } else {
                e.size
            };
            let offset = self.file.superblock().base_address + e.address;
            array.chunk_refs.insert(index, Chunk::Ref { url: self.url.clone(), offset, length });
        }
        if !odd.is_empty() {
            self.reencode(ds, array, &odd)?;
        }
        Ok(())
    }

    /// Chunks whose stored filters differ from the array's (an optional
    /// filter failed for them): decode with the library, encode with the
    /// array's zarr filters, inline.
    fn reencode(&self, ds: &Dataset, array: &mut Array, odd: &[Vec<u64>]) -> Result<()> {
        let wanted: std::collections::HashSet<&Vec<u64>> = odd.iter().collect();
        for chunk in ds.iter_chunks()? {
            let chunk = chunk?;
            let index: Vec<u64> = chunk.offsets().iter().zip(&array.chunks).map(|(o, c)| o / c).collect();
            if wanted.contains(&index) {
                let encoded = encode(chunk.bytes(), &array.filters)?;
                array.chunk_refs.insert(index, Chunk::Inline(encoded));
            }
        }
        Ok(())
    }

    fn dim_names(&self, ds: &Dataset, attrs: &[Attribute], dims: &DimNames) -> Result<Vec<String>> {
        let rank = ds.shape().len();
        let phony = |i: usize| format!("phony_dim_{i}");
        if let Some(list) = find(attrs, "DIMENSION_LIST") {
            // One variable-length list of object references per dimension.
            let esize = 4 + self.offset_size() as usize + 4;
            let mut names = Vec::with_capacity(rank);
            for i in 0..rank {
                let element = list.raw_data.get(i * esize..(i + 1) * esize).ok_or_else(|| anyhow!("short DIMENSION_LIST"))?;
                let refs = ds.resolve_vlen_reference_bytes(element, self.offset_size() as usize)?;
                let address = hdf5_reader::reference::read_object_references(&refs, self.offset_size())?.first().copied();
                names.push(address.and_then(|a| dims.by_address.get(&a).cloned()).unwrap_or_else(|| phony(i)));
            }
            return Ok(names);
        }
        let coordinates = find(attrs, "_Netcdf4Coordinates").and_then(int_list);
        let is_scale = string_attr(attrs, "CLASS").as_deref() == Some("DIMENSION_SCALE");
        let own = base_name(ds.name().strip_prefix(NON_COORD_PREFIX).unwrap_or(ds.name())).to_string();
        Ok((0..rank)
            .map(|i| {
                let by_id = coordinates.as_ref().and_then(|ids| ids.get(i)).and_then(|id| dims.by_id.get(id).cloned());
                match (i, is_scale, by_id) {
                    (0, true, _) => own.clone(),
                    (_, _, Some(name)) => name,
                    _ => phony(i),
                }
            })
            .collect())
    }
}

struct Entry {
    offsets: Vec<u64>,
    address: u64,
    size: u64,
    mask: u32,
}

fn undefined(address: u64, offset_size: u8) -> bool {
    address == u64::MAX || (offset_size < 8 && address == (1u64 << (8 * offset_size as u32)) - 1)
}

/// One chunk covering the whole array (zarr needs non-zero chunk lengths).
fn whole(shape: &[u64]) -> Vec<u64> {
    shape.iter().map(|&s| s.max(1)).collect()
}

fn codec(filter: &FilterDescription, dtype: Dtype) -> Result<Codec> {
    let cd = |i: usize| filter.client_data.get(i).copied();
    Ok(match filter.id {
        FILTER_DEFLATE => Codec::new("zlib").with("level", Value::Int(cd(0).unwrap_or(6) as i64)),
        FILTER_SHUFFLE => Codec::new("shuffle").with("elementsize", Value::Int(dtype.size as i64)),
        FILTER_FLETCHER32 => Codec::new("fletcher32"),
        32015 => Codec::new("zstd").with("level", Value::Int(cd(0).unwrap_or(3) as i32 as i64)),
        307 => Codec::new("bz2").with("level", Value::Int(cd(0).unwrap_or(9) as i64)),
        32001 => {
            // HDF5 blosc filter: cd[4] level, cd[5] shuffle, cd[6] compressor.
            const NAMES: [&str; 6] = ["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"];
            let cname = cd(6).and_then(|c| NAMES.get(c as usize)).ok_or_else(|| anyhow!("blosc filter without a known compressor"))?;
            Codec::new("blosc")
                .with("cname", Value::Str(cname.to_string()))
                .with("clevel", Value::Int(cd(4).unwrap_or(5) as i64))
                .with("shuffle", Value::Int(cd(5).unwrap_or(1) as i64))
                .with("blocksize", Value::Int(0))
        }
        id => {
            let name = match id {
                4 => "szip".to_string(),
                5 => "nbit".to_string(),
                6 => "scale-offset".to_string(),
                _ => filter.name.clone().unwrap_or_else(|| "unnamed".into()),
            };
            bail!("HDF5 filter {id} ({name}) has no zarr codec: this variable cannot be referenced")
        }
    })
}

/// Encodes decoded chunk bytes with the zarr filters we can write.
fn encode(bytes: &[u8], filters: &[Codec]) -> Result<Vec<u8>> {
    let mut data = bytes.to_vec();
    for f in filters {
        data = match (f.id.as_ref(), f.params.first()) {
            ("shuffle", Some((_, Value::Int(n)))) => shuffle(&data, *n as usize),
            ("zlib", Some((_, Value::Int(level)))) => {
                use std::io::Write;
                let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(*level as u32));
                enc.write_all(&data)?;
                enc.finish()?
            }
            (id, _) => bail!("a chunk skipped filters and would need re-encoding with {id}, which is not supported"),
        };
    }
    Ok(data)
}

fn shuffle(data: &[u8], size: usize) -> Vec<u8> {
    if size <= 1 {
        return data.to_vec();
    }
    let n = data.len() / size;
    let mut out = vec![0u8; data.len()];
    for i in 0..n {
        for b in 0..size {
            out[b * n + i] = data[i * size + b];
        }
    }
    // HDF5 and numcodecs leave a trailing partial element as it is.
    out[n * size..].copy_from_slice(&data[n * size..]);
    out
}

fn dtype_of(dt: &Datatype) -> Result<Dtype> {
    let big = |o: &ByteOrder| matches!(o, ByteOrder::BigEndian);
    Ok(match dt {
        Datatype::FixedPoint { size, signed, byte_order } if matches!(size, 1 | 2 | 4 | 8) => Dtype {
            kind: if *signed { Kind::Int } else { Kind::UInt },
            size: *size as usize,
            big_endian: big(byte_order),
        },
        Datatype::FloatingPoint { size, byte_order } if matches!(size, 2 | 4 | 8) => {
            Dtype { kind: Kind::Float, size: *size as usize, big_endian: big(byte_order) }
        }
        Datatype::String { size: StringSize::Fixed(n), .. } => Dtype { kind: Kind::Bytes, size: *n as usize, big_endian: false },
        Datatype::String { size: StringSize::Variable, .. } | Datatype::VarLen { kind: VarLenKind::String, .. } => {
            Dtype { kind: Kind::VlenStr, size: 0, big_endian: false }
        }
        // netCDF enums read as their base integers.
        Datatype::Enum { base, .. } => dtype_of(base)?,
        other => bail!("HDF5 datatype {other:?} has no zarr v2 equivalent here (compound, opaque, vlen sequence, reference, array, bitfield)"),
    })
}

fn fill_value(dtype: Dtype, bytes: &[u8]) -> Result<Value> {
    use base64::Engine as _;
    match dtype.kind {
        // zarr v2: fixed-length bytes fill values are base64.
        Kind::Bytes => Ok(Value::Str(base64::engine::general_purpose::STANDARD.encode(bytes))),
        _ => dtype.decode(bytes).ok_or_else(|| anyhow!("fill value of {} bytes for dtype {}", bytes.len(), dtype.zarr())),
    }
}

fn find<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attrs.iter().find(|a| a.name == name)
}

fn string_attr(attrs: &[Attribute], name: &str) -> Option<String> {
    find(attrs, name).and_then(|a| attr_value(a).ok()).and_then(|v| v.as_str().map(str::to_string))
}

fn int_attr(a: &Attribute) -> Option<i64> {
    int_list(a)?.first().copied()
}

fn int_list(a: &Attribute) -> Option<Vec<i64>> {
    match attr_value(a).ok()? {
        Value::Int(i) => Some(vec![i]),
        Value::UInt(u) => Some(vec![u as i64]),
        Value::List(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Int(i) => Some(i),
                Value::UInt(u) => Some(u as i64),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn convert_attrs(attrs: &[Attribute]) -> Result<Attrs> {
    attrs
        .iter()
        .filter(|a| !HIDDEN_ATTRS.contains(&a.name.as_str()))
        .map(|a| Ok((a.name.clone(), attr_value(a).with_context(|| format!("attribute {}", a.name))?)))
        .collect()
}

/// An attribute as netCDF4-python shows it: one element as a scalar, text as
/// a string with NULs removed.
fn attr_value(a: &Attribute) -> Result<Value> {
    let count: u64 = if a.shape == [0] { 0 } else { a.shape.iter().product() };
    let one_or_list = |mut items: Vec<Value>| if items.len() == 1 { items.pop().unwrap() } else { Value::List(items) };
    let text = |b: &[u8]| Value::Str(String::from_utf8_lossy(b).replace('\0', ""));
    match &a.datatype {
        Datatype::String { size: StringSize::Fixed(n), padding, .. } => {
            let n = *n as usize;
            if count == 0 || n == 0 {
                return Ok(Value::Str(String::new()));
            }
            let items: Vec<Value> = a
                .raw_data
                .chunks(n)
                .take(count as usize)
                .map(|b| match padding {
                    StringPadding::SpacePad => Value::Str(String::from_utf8_lossy(b).trim_end_matches(' ').to_string()),
                    _ => text(b),
                })
                .collect();
            Ok(one_or_list(items))
        }
        Datatype::String { size: StringSize::Variable, .. } | Datatype::VarLen { kind: VarLenKind::String, .. } => {
            let strings = a.decoded_strings.clone().ok_or_else(|| anyhow!("unreadable variable-length string"))?;
            Ok(one_or_list(strings.into_iter().map(|s| Value::Str(s.replace('\0', ""))).collect()))
        }
        dt => {
            let dtype = dtype_of(dt)?;
            if dtype.kind == Kind::Bytes || dtype.kind == Kind::VlenStr || dtype.size == 0 {
                bail!("unsupported attribute type {dt:?}");
            }
            let items: Vec<Value> = a
                .raw_data
                .chunks_exact(dtype.size)
                .take(count as usize)
                .map(|b| dtype.decode(b).ok_or_else(|| anyhow!("undecodable {}", dtype.zarr())))
                .collect::<Result<_>>()?;
            if count == 0 {
                return Ok(Value::List(Vec::new()));
            }
            Ok(one_or_list(items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_matches_numcodecs_layout() {
        assert_eq!(shuffle(&[1, 2, 3, 4, 5, 6, 7], 2), vec![1, 3, 5, 2, 4, 6, 7]);
        assert_eq!(unshuffle(&shuffle(&[1, 2, 3, 4, 5, 6], 2), 2), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn chunks_are_placed_and_clipped() {
        // A 3x3 array of u8 in 2x2 chunks: the edge chunk (1, 1) holds one value.
        let mut out = vec![0u8; 9];
        copy_chunk(&mut out, &[1, 2, 3, 4], &[3, 3], &[2, 2], &[0, 0], 1);
        copy_chunk(&mut out, &[5, 6, 7, 8], &[3, 3], &[2, 2], &[1, 1], 1);
        copy_chunk(&mut out, &[9, 10, 11, 12], &[3, 3], &[2, 2], &[0, 1], 1);
        assert_eq!(out, vec![1, 2, 9, 3, 4, 11, 0, 0, 5]);
    }
}
