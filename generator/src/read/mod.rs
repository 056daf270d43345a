//! Stage 2: read what the catalogue needs from one netCDF file's header:
//! attributes, the time axis (decoded in its CF calendar), the lat/lon extent,
//! and optionally the file's SHA-256.

pub mod cftime;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use cftime::{Calendar, CfDateTime, TimeUnits};

/// What to read from each file; built from a recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct HeaderRequest {
    /// Global attributes to read; `*` reads all of them.
    pub global_attributes: Vec<String>,
    /// The data variable whose attributes are read (after facet substitution).
    pub variable: Option<String>,
    pub variable_attributes: Vec<String>,
    /// Candidate names of the time, latitude and longitude coordinates.
    pub time: Vec<String>,
    pub lat: Vec<String>,
    pub lon: Vec<String>,
}

/// Everything the catalogue uses from one file's header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileHeader {
    pub global_attributes: BTreeMap<String, Value>,
    pub variable_attributes: BTreeMap<String, Value>,
    pub time: Option<TimeExtent>,
    pub lat_range: Option<[f64; 2]>,
    pub lon_range: Option<[f64; 2]>,
    /// lat and lon are both indexed by one non-lat/lon dimension (cells).
    pub unstructured: bool,
}

/// The span of a file's time axis; `start`/`end` use the bounds when present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimeExtent {
    pub calendar: String,
    pub units: String,
    pub steps: usize,
    pub first: CfDateTime,
    pub last: CfDateTime,
    pub start: CfDateTime,
    pub end: CfDateTime,
}

/// Reads one file's header. Errors name the file and what could not be read.
pub fn read_header(path: &Path, request: &HeaderRequest) -> Result<FileHeader> {
    silence_hdf5_error_stack();
    limit_chunk_cache();
    let file = netcdf::open(path).map_err(|e| anyhow!("not a readable netCDF file: {e}"))?;

    let mut global_attributes = BTreeMap::new();
    let all = request.global_attributes.iter().any(|a| a == "*");
    for attr in file.attributes() {
        if all || request.global_attributes.iter().any(|a| a == attr.name()) {
            let value = attr.value().with_context(|| format!("global attribute {:?}", attr.name()))?;
            global_attributes.insert(attr.name().to_string(), attribute_json(value));
        }
    }

    let mut variable_attributes = BTreeMap::new();
    if let Some(var) = request.variable.as_deref().and_then(|name| file.variable(name)) {
        for attr in var.attributes() {
            if request.variable_attributes.iter().any(|a| a == "*" || a == attr.name()) {
                let value = attr.value().with_context(|| format!("attribute {:?} of {:?}", attr.name(), var.name()))?;
                variable_attributes.insert(attr.name().to_string(), attribute_json(value));
            }
        }
    }

    let time = match find_variable(&file, &request.time, "time", &["days since", "hours since", "seconds since", "minutes since"]) {
        Some(var) => read_time(&file, &var).with_context(|| format!("time coordinate {:?}", var.name()))?,
        None => None,
    };
    let lat = find_variable(&file, &request.lat, "latitude", &["degrees_north", "degree_north", "degrees_n"]);
    let lon = find_variable(&file, &request.lon, "longitude", &["degrees_east", "degree_east", "degrees_e"]);
    let lat_range = lat.as_ref().map(coordinate_range).transpose().context("latitude")?.flatten();
    let lon_range = lon.as_ref().map(coordinate_range).transpose().context("longitude")?.flatten();
    let unstructured = match (&lat, &lon) {
        (Some(lat), Some(lon)) => {
            let (ld, nd) = (lat.dimensions(), lon.dimensions());
            ld.len() == 1 && nd.len() == 1 && ld[0].name() == nd[0].name() && ld[0].name() != lat.name()
        }
        _ => false,
    };

    Ok(FileHeader { global_attributes, variable_attributes, time, lat_range, lon_range, unstructured })
}

/// netCDF's default chunk cache (64 MiB per variable) is sized for reading
/// data; we read a few values per file, so a small cache keeps memory flat.
fn limit_chunk_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sets a library-wide default for files opened afterwards.
        unsafe { netcdf_sys::nc_set_chunk_cache(1 << 20, 521, 0.75) };
    });
}

/// HDF5 prints its error stack to stderr for every failed probe (netCDF 4.9
/// looks for optional attributes that way), per thread; netCDF only silences
/// the thread that initialised it. Our errors carry the reason instead.
fn silence_hdf5_error_stack() {
    thread_local!(static SILENCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    SILENCED.with(|done| {
        if done.replace(true) {
            return;
        }
        // Looked up at run time: libhdf5 is loaded by libnetcdf, not linked by us.
        // SAFETY: H5Eset_auto2(hid_t estack, H5E_auto2_t func, void *data) with
        // H5E_DEFAULT (0) and no handler is HDF5's documented way to turn printing off.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"H5Eset_auto2".as_ptr());
            if !symbol.is_null() {
                let set_auto: extern "C" fn(i64, *const libc::c_void, *mut libc::c_void) -> i32 = std::mem::transmute(symbol);
                set_auto(0, std::ptr::null(), std::ptr::null_mut());
            }
        }
    });
}

/// The first variable with one of `names`, else one whose `standard_name` or
/// `units` marks it as that coordinate (real files name them lat, latitude, nav_lat…).
fn find_variable<'f>(file: &'f netcdf::File, names: &[String], standard_name: &str, unit_prefixes: &[&str]) -> Option<netcdf::Variable<'f>> {
    if let Some(v) = names.iter().find_map(|n| file.variable(n)) {
        return Some(v);
    }
    let text = |v: &netcdf::Variable, a: &str| match v.attribute_value(a) {
        Some(Ok(netcdf::AttributeValue::Str(s))) => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    file.variables().find(|v| text(v, "standard_name").as_deref() == Some(standard_name))
        .or_else(|| {
            // Only 1-D variables qualify by units alone, so a time-bounds variable is never picked.
            file.variables().find(|v| {
                v.dimensions().len() <= 2
                    && text(v, "units").is_some_and(|u| unit_prefixes.iter().any(|p| u.starts_with(p)))
                    && !v.name().ends_with("bnds")
                    && !v.name().ends_with("bounds")
            })
        })
}

fn read_time(file: &netcdf::File, var: &netcdf::Variable) -> Result<Option<TimeExtent>> {
    let units = match var.attribute_value("units") {
        Some(Ok(netcdf::AttributeValue::Str(s))) => s,
        _ => bail!("has no units attribute"),
    };
    let calendar_name = match var.attribute_value("calendar") {
        Some(Ok(netcdf::AttributeValue::Str(s))) => Some(s),
        _ => None,
    };
    let calendar = Calendar::parse(calendar_name.as_deref()).map_err(|e| anyhow!(e))?;
    let decoder = TimeUnits::parse(&units, calendar).map_err(|e| anyhow!(e))?;
    let steps = var.len();
    let fill = var.fill_value::<f64>().ok().flatten();
    let valid = |v: &f64| v.is_finite() && Some(*v) != fill && v.abs() < 1e30;
    let values: Vec<f64> = endpoint_values(var)?.into_iter().filter(valid).collect();
    let (Some(min), Some(max)) = (values.iter().copied().reduce(f64::min), values.iter().copied().reduce(f64::max)) else {
        return Ok(None);
    };
    let mut start = min;
    let mut end = max;
    let bounds_name = match var.attribute_value("bounds") {
        Some(Ok(netcdf::AttributeValue::Str(s))) => Some(s),
        _ => None,
    };
    if let Some(bounds) = bounds_name.as_deref().and_then(|b| file.variable(b)) {
        let b: Vec<f64> = endpoint_values(&bounds).with_context(|| format!("reading bounds {bounds_name:?}"))?;
        let b: Vec<f64> = b.into_iter().filter(|v| v.is_finite() && v.abs() < 1e30).collect();
        if let (Some(lo), Some(hi)) = (b.iter().copied().reduce(f64::min), b.iter().copied().reduce(f64::max)) {
            start = lo;
            end = hi;
        }
    }
    let decode = |v: f64| decoder.decode(v).map_err(|e| anyhow!(e));
    Ok(Some(TimeExtent {
        calendar: calendar_name.unwrap_or_else(|| "standard".into()),
        units,
        steps,
        first: decode(min)?,
        last: decode(max)?,
        start: decode(start)?,
        end: decode(end)?,
    }))
}

/// The first and last entries along the first dimension (whole rows for
/// 2-D bounds). CF coordinate variables are monotonic, so their extremes are
/// there: a daily axis stored one value per chunk costs two chunk reads, not
/// thousands.
fn endpoint_values(var: &netcdf::Variable) -> Result<Vec<f64>> {
    let dims: Vec<usize> = var.dimensions().iter().map(|d| d.len()).collect();
    let Some(&n) = dims.first() else { return Ok(var.get_values::<f64, _>(..)?) };
    if n <= 2 {
        return Ok(var.get_values::<f64, _>(..)?);
    }
    let row = |i: usize| -> Vec<netcdf::Extent> { std::iter::once(netcdf::Extent::from(i..i + 1)).chain(dims[1..].iter().map(|&d| netcdf::Extent::from(0..d))).collect() };
    let mut values = var.get_values::<f64, _>(row(0))?;
    values.extend(var.get_values::<f64, _>(row(n - 1))?);
    Ok(values)
}

/// Min and max of a coordinate, ignoring fill values. A 1-D coordinate
/// variable (named like its dimension) is monotonic: its ends suffice.
fn coordinate_range(var: &netcdf::Variable) -> Result<Option<[f64; 2]>> {
    let dims = var.dimensions();
    let monotonic = dims.len() == 1 && dims[0].name() == var.name();
    let values: Vec<f64> = if monotonic { endpoint_values(var) } else { var.get_values::<f64, _>(..).map_err(Into::into) }
        .with_context(|| format!("reading {:?}", var.name()))?;
    let fill = var.fill_value::<f64>().ok().flatten();
    let mut range: Option<[f64; 2]> = None;
    for v in values {
        if !v.is_finite() || Some(v) == fill || v.abs() > 1e10 {
            continue;
        }
        range = Some(match range {
            None => [v, v],
            Some([lo, hi]) => [lo.min(v), hi.max(v)],
        });
    }
    Ok(range)
}

fn attribute_json(value: netcdf::AttributeValue) -> Value {
    use netcdf::AttributeValue as A;
    fn list<T: Into<Value>>(v: Vec<T>) -> Value {
        if v.len() == 1 {
            v.into_iter().next().map(Into::into).unwrap_or(Value::Null)
        } else {
            Value::Array(v.into_iter().map(Into::into).collect())
        }
    }
    // Non-finite floats have no JSON form; keep them as strings rather than drop them.
    let float = |f: f64| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or_else(|| Value::String(f.to_string()));
    match value {
        A::Str(s) => Value::String(s),
        A::Strs(v) => list(v),
        A::Uchar(x) => x.into(),
        A::Uchars(v) => list(v),
        A::Schar(x) => x.into(),
        A::Schars(v) => list(v),
        A::Ushort(x) => x.into(),
        A::Ushorts(v) => list(v),
        A::Short(x) => x.into(),
        A::Shorts(v) => list(v),
        A::Uint(x) => x.into(),
        A::Uints(v) => list(v),
        A::Int(x) => x.into(),
        A::Ints(v) => list(v),
        A::Ulonglong(x) => x.into(),
        A::Ulonglongs(v) => list(v),
        A::Longlong(x) => x.into(),
        A::Longlongs(v) => list(v),
        A::Float(x) => float(x as f64),
        A::Floats(v) => list(v.into_iter().map(|x| float(x as f64)).collect::<Vec<_>>()),
        A::Double(x) => float(x),
        A::Doubles(v) => list(v.into_iter().map(float).collect::<Vec<_>>()),
    }
}

/// SHA-256 of the file as a multihash (`1220` + hex), as the file extension wants.
pub fn file_checksum(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("1220{}", hex::encode(hasher.finalize())))
}
