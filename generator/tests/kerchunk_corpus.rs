//! Kerchunk references over the real corpus, checked without Python: every
//! chunk of every variable is fetched as a zarr reader would (inline text,
//! base64 or a byte range of the file), decoded with the listed filters, and
//! the assembled array must equal, byte for byte, what libnetcdf reads.
//! Combined datasets must equal the files' values one after the other.
//! (tests/python/test_kerchunk.py does the same through xarray + zarr, plus
//! attributes, h5py chunk offsets and generated edge cases.)

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use fedstac::kerchunk::{combine_along_time, file_references, References};
use serde_json::Value;

fn test_data() -> PathBuf {
    let shared = std::env::var_os("FEDSTAC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("corpus/netcdf/mini-esgf-data/test_data");
    assert!(dir.is_dir(), "the shared corpus is missing at {} (set FEDSTAC_SHARED)", dir.display());
    dir
}

/// Every .nc file, sorted; the pool/…/CMIP6 symlink repeats a tree and is not followed.
fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(test_data())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "nc"))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// The parsed reference JSON: key → value.
struct Refs(serde_json::Map<String, Value>);

impl Refs {
    fn of(refs: &References) -> Refs {
        let json: Value = serde_json::from_slice(&refs.to_json()).expect("reference JSON parses");
        assert_eq!(json["version"], 1);
        Refs(json["refs"].as_object().expect("refs object").clone())
    }

    fn meta(&self, key: &str) -> Option<Value> {
        // .zattrs may hold NaN tokens (as Python writes them); .zarray never does.
        self.0.get(key).map(|v| serde_json::from_str(v.as_str().expect("metadata is a JSON string")).expect(key))
    }

    fn dims(&self, var: &str) -> Vec<String> {
        let text = self.0[&format!("{var}/.zattrs")].as_str().unwrap();
        let start = text.find("\"_ARRAY_DIMENSIONS\":").expect("_ARRAY_DIMENSIONS") + 20;
        let end = start + text[start..].find(']').unwrap() + 1;
        serde_json::from_str(&text[start..end]).unwrap()
    }

    /// A chunk's stored bytes, or None if the chunk is missing.
    fn chunk(&self, var: &str, key: &str, files: &mut HashMap<String, std::fs::File>) -> Option<Vec<u8>> {
        match self.0.get(&format!("{var}/{key}"))? {
            Value::String(s) => Some(match s.strip_prefix("base64:") {
                Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).expect("base64"),
                None => s.as_bytes().to_vec(),
            }),
            Value::Array(r) => {
                let url = r[0].as_str().unwrap().to_string();
                let (offset, length) = (r[1].as_u64().unwrap(), r[2].as_u64().unwrap());
                let file = files.entry(url.clone()).or_insert_with(|| std::fs::File::open(&url).expect("chunk target"));
                let mut buf = vec![0; length as usize];
                file.read_exact_at(&mut buf, offset).expect("chunk bytes");
                Some(buf)
            }
            other => panic!("{var}/{key}: unexpected reference {other}"),
        }
    }

    /// The whole array as a zarr v2 reader assembles it: C order, native byte order.
    fn read(&self, var: &str) -> (String, Vec<u8>) {
        let meta = self.meta(&format!("{var}/.zarray")).unwrap_or_else(|| panic!("{var}: no .zarray"));
        let u64s = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect::<Vec<u64>>();
        let (shape, chunks) = (u64s(&meta["shape"]), u64s(&meta["chunks"]));
        let dtype = meta["dtype"].as_str().unwrap().to_string();
        let size: usize = dtype[2..].parse().unwrap_or(0);
        let filters: Vec<Value> = meta["filters"].as_array().cloned().unwrap_or_default();
        assert!(meta["compressor"].is_null());
        let chunk_bytes = chunks.iter().product::<u64>() as usize * size;
        let fill = fill_bytes(&meta["fill_value"], &dtype, size);
        let mut out = vec![0u8; shape.iter().product::<u64>() as usize * size];
        let grid: Vec<u64> = shape.iter().zip(&chunks).map(|(s, c)| s.div_ceil(*c)).collect();
        let mut files = HashMap::new();
        for index in grid_indices(&grid) {
            let key = if index.is_empty() { "0".to_string() } else { index.iter().map(u64::to_string).collect::<Vec<_>>().join(".") };
            let data = match self.chunk(var, &key, &mut files) {
                Some(raw) => decode(raw, &filters, var, &key),
                None => fill.repeat(chunk_bytes / size),
            };
            assert_eq!(data.len(), chunk_bytes, "{var}/{key}: decoded chunk size");
            copy_chunk(&mut out, &data, &shape, &chunks, &index, size);
        }
        if dtype.starts_with('>') {
            for element in out.chunks_exact_mut(size) {
                element.reverse();
            }
        }
        (dtype, out)
    }

    /// NC_STRING arrays: one inline vlen-utf8 chunk.
    fn strings(&self, var: &str) -> Vec<String> {
        let mut files = HashMap::new();
        let zeros = vec!["0"; self.dims(var).len().max(1)].join(".");
        let Some(raw) = self.chunk(var, &zeros, &mut files) else { return Vec::new() };
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        let (count, mut pos) = (u32_at(&raw, 0), 4);
        (0..count)
            .map(|_| {
                let len = u32_at(&raw, pos);
                pos += 4 + len;
                String::from_utf8(raw[pos - len..pos].to_vec()).unwrap()
            })
            .collect()
    }
}

fn fill_bytes(fill: &Value, dtype: &str, size: usize) -> Vec<u8> {
    let le = |mut b: Vec<u8>| {
        if dtype.starts_with('>') {
            b.reverse();
        }
        b
    };
    match (fill, &dtype[1..2]) {
        (Value::Null, _) => vec![0; size],
        (Value::String(s), "S") => base64::engine::general_purpose::STANDARD.decode(s).unwrap(),
        (Value::String(s), "f") => {
            let f = match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => panic!("fill {other}"),
            };
            le(if size == 4 { (f as f32).to_le_bytes().to_vec() } else { f.to_le_bytes().to_vec() })
        }
        (Value::Number(n), "f") => {
            let f = n.as_f64().unwrap();
            le(if size == 4 { (f as f32).to_le_bytes().to_vec() } else { f.to_le_bytes().to_vec() })
        }
        (Value::Number(n), _) => {
            let v = n.as_i64().map(|i| i as u64).or(n.as_u64()).unwrap();
            le(v.to_le_bytes()[..size].to_vec())
        }
        other => panic!("fill value {other:?}"),
    }
}

fn decode(mut data: Vec<u8>, filters: &[Value], var: &str, key: &str) -> Vec<u8> {
    for f in filters.iter().rev() {
        data = match f["id"].as_str().unwrap() {
            "zlib" => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(&data[..]).read_to_end(&mut out).unwrap_or_else(|e| panic!("{var}/{key}: zlib: {e}"));
                out
            }
            "shuffle" => {
                let size = f["elementsize"].as_u64().unwrap() as usize;
                let n = data.len() / size;
                let mut out = data.clone();
                for i in 0..n {
                    for b in 0..size {
                        out[i * size + b] = data[b * n + i];
                    }
                }
                out
            }
            "fletcher32" => data[..data.len() - 4].to_vec(),
            other => panic!("{var}: unexpected codec {other}"),
        };
    }
    data
}

fn grid_indices(grid: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new()];
    for &n in grid {
        out = out.into_iter().flat_map(|p| (0..n).map(move |i| [p.clone(), vec![i]].concat())).collect();
    }
    out
}

/// Copies one decoded chunk into the C-order array, clipping edge chunks.
fn copy_chunk(out: &mut [u8], chunk: &[u8], shape: &[u64], chunks: &[u64], index: &[u64], size: usize) {
    if shape.is_empty() {
        out.copy_from_slice(&chunk[..size]);
        return;
    }
    let rank = shape.len();
    let origin: Vec<u64> = index.iter().zip(chunks).map(|(i, c)| i * c).collect();
    let run = chunks[rank - 1].min(shape[rank - 1] - origin[rank - 1]) as usize;
    // Every row of the chunk (all coordinates but the last).
    for row in grid_indices(&chunks[..rank - 1]) {
        let global: Vec<u64> = row.iter().zip(&origin).map(|(r, o)| r + o).collect();
        if global.iter().zip(shape).any(|(g, s)| g >= s) {
            continue;
        }
        let (mut src, mut dst) = (0u64, 0u64);
        for d in 0..rank - 1 {
            src = src * chunks[d] + row[d];
            dst = dst * shape[d] + global[d];
        }
        let src = (src * chunks[rank - 1]) as usize * size;
        let dst = (dst * shape[rank - 1] + origin[rank - 1]) as usize * size;
        out[dst..dst + run * size].copy_from_slice(&chunk[src..src + run * size]);
    }
}

/// Checks one file's references against libnetcdf; returns the number of variables.
fn check_file(path: &Path) -> usize {
    let url = path.to_str().unwrap();
    let refs = file_references(path, url).unwrap_or_else(|e| panic!("{e:#}"));
    let again = file_references(path, url).unwrap();
    assert_eq!(refs.to_json(), again.to_json(), "{}: not deterministic", path.display());
    let zr = Refs::of(&refs);
    let nc = netcdf::open(path).unwrap();
    let mut n = 0;
    for var in nc.variables() {
        let name = var.name();
        let ctx = format!("{}: {name}", path.display());
        let dims: Vec<String> = var.dimensions().iter().map(|d| d.name()).collect();
        assert_eq!(zr.dims(&name), dims, "{ctx}: dims");
        if let netcdf::types::NcVariableType::String = var.vartype() {
            let expected: Vec<String> = (0..var.len()).map(|i| var.get_string([i]).unwrap()).collect();
            assert_eq!(zr.strings(&name), expected, "{ctx}: strings");
        } else {
            let (dtype, got) = zr.read(&name);
            let expected = var.get_raw_values(..).unwrap();
            assert_eq!(got.len(), expected.len(), "{ctx}: {dtype} size");
            assert!(got == expected, "{ctx}: values differ");
        }
        n += 1;
    }
    assert_eq!(zr.0.keys().filter(|k| k.ends_with("/.zarray")).count(), n, "{}: arrays beyond the variables", path.display());
    n
}

#[test]
fn every_corpus_file_reads_as_libnetcdf_does() {
    let files = corpus_files();
    assert_eq!(files.len(), 274);
    let variables: usize = files.iter().map(|f| check_file(f)).sum();
    assert!(variables > 1500, "{variables} variables checked");
}

fn dataset(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(test_data().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nc"))
        .collect();
    files.sort();
    files
}

fn combined(files: &[PathBuf]) -> anyhow::Result<References> {
    let parts = files.iter().map(|f| file_references(f, f.to_str().unwrap())).collect::<anyhow::Result<Vec<_>>>()?;
    combine_along_time(&parts)
}

/// Combined values equal the files' values one after the other.
fn check_combined(files: &[PathBuf], var: &str) {
    let refs = combined(files).unwrap_or_else(|e| panic!("{e:#}"));
    let zr = Refs::of(&refs);
    let (_, got) = zr.read(var);
    let mut expected = Vec::new();
    for f in files {
        expected.extend(netcdf::open(f).unwrap().variable(var).unwrap().get_raw_values(..).unwrap());
    }
    assert!(got == expected, "{var}: combined values differ");
    let (_, time) = zr.read("time");
    let time: Vec<f64> = time.chunks_exact(8).map(|b| f64::from_ne_bytes(b.try_into().unwrap())).collect();
    assert!(time.windows(2).all(|w| w[0] < w[1]), "time increases");
    // Deterministic whatever the order of the parts.
    let mut reversed = files.to_vec();
    reversed.reverse();
    assert_eq!(combined(&reversed).unwrap().to_json(), refs.to_json());
}

#[test]
fn multi_file_datasets_combine_along_time() {
    // netCDF-4, six-file CMIP6 sea ice series (chunk 1 along time).
    check_combined(&dataset("badc/cmip6/data/CMIP6/CMIP/SNU/SAM0-UNICON/historical/r1i1p1f1/SImon/siconc/gn/latest"), "siconc");
    // netCDF3 record variables, the same units in every file.
    check_combined(&dataset("badc/cmip5/data/cmip5/output1/MOHC/HadGEM2-ES/historical/mon/atmos/Amon/r1i1p1/latest/tas"), "tas");
    // netCDF3, every file with its own time units: time is re-expressed in the first file's.
    let ec_earth = dataset("badc/cmip5/data/cmip5/output1/ICHEC/EC-EARTH/historical/mon/atmos/Amon/r1i1p1/latest/tas");
    check_combined(&ec_earth, "tas");
    let zr = Refs::of(&combined(&ec_earth).unwrap());
    let units = zr.0["time/.zattrs"].as_str().unwrap().to_string();
    assert!(units.contains("days since 1850-01-01"), "{units}");
}

#[test]
fn overlapping_files_are_refused() {
    let files = dataset("badc/cmip5/data/cmip5/output1/MOHC/HadGEM2-ES/rcp85/mon/atmos/Amon/r1i1p1/latest/tas");
    let error = format!("{:#}", combined(&files).unwrap_err());
    assert!(error.contains("overlap in time") && error.contains("208012-209912"), "{error}");
}
