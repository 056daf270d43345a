//! One Zarr view of a multi-file dataset, concatenated along time.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};

use super::model::{Array, Chunk, Tree, Value};
use super::timeunits::{Calendar, Units};
use super::References;

/// The time coordinate of a tree: a root 1-D array named like its dimension,
/// with CF `units` "<unit> since <date>" that is called `time`, has `axis: T`
/// or `standard_name: time`.
pub(crate) fn time_coordinate(tree: &Tree) -> Option<&str> {
    let is_time = |name: &str, a: &Array| {
        let attr = |k: &str| a.attr(k).and_then(Value::as_str);
        !name.contains('/')
            && a.dims.len() == 1
            && a.dims[0] == name
            && attr("units").is_some_and(|u| u.to_ascii_lowercase().contains(" since "))
            && (name == "time" || attr("axis") == Some("T") || attr("standard_name") == Some("time"))
    };
    let mut candidates = tree.arrays.iter().filter(|(n, a)| is_time(n, a)).map(|(n, _)| n.as_str());
    let first = candidates.next()?;
    Some(if tree.arrays.contains_key("time") && first != "time" { "time" } else { first })
}

/// The time coordinate and its `bounds` / `climatology` variable: the arrays
/// whose values are read (and, combined, rewritten and inlined).
pub(crate) fn time_axis_arrays(tree: &Tree) -> Vec<String> {
    let Some(time) = time_coordinate(tree) else { return Vec::new() };
    let mut out = vec![time.to_string()];
    for key in ["bounds", "climatology"] {
        if let Some(Value::Str(b)) = tree.arrays[time].attr(key) {
            if tree.arrays.get(b).is_some_and(|a| a.dims.first().map(String::as_str) == Some(time)) && !out.contains(b) {
                out.push(b.clone());
            }
        }
    }
    out
}

/// Combine per-file references along the time dimension into one Zarr view.
///
/// Rules (each refusal is an error naming the file and variable):
/// - Every part has the same time coordinate (see `time_coordinate`), the
///   same arrays and the same calendar. Parts are ordered by their first time
///   value; overlapping or repeated times are refused, nothing is overwritten.
/// - The time coordinate and its bounds are rebuilt from the values read from
///   each file and inlined as one chunk, in the first file's `units`: values
///   of files with other units are re-expressed (the first file is the
///   earliest one) (integer time that would need
///   fractions is refused; months/years units are refused).
/// - Arrays without the time dimension (lat_bnds, a scalar height) are taken
///   from the first part; their shape and dtype must agree in every part.
/// - Arrays with the time dimension keep referring to the files: chunk
///   indices along time are shifted. dtype, filters, fill value, dimensions,
///   non-time shape and the whole chunk grid must agree, and every part but
///   the last must hold a whole number of time chunks (zarr v2 allows only
///   the last chunk to be partial): 12 + 12 + 3 steps in chunks of 12 or 1
///   combine; 3 + 12 in chunks of 12 is refused.
/// - Attributes (global and per array) are the earliest part's.
pub fn combine_along_time(parts: &[References]) -> Result<References> {
    let first = parts.first().ok_or_else(|| anyhow!("nothing to combine"))?;
    if parts.len() == 1 {
        return Ok(first.clone());
    }
    let time = time_coordinate(&first.tree)
        .ok_or_else(|| anyhow!("{}: no time coordinate to combine along", first.name()))?
        .to_string();

    // Each part's time values in the first part's units, for ordering.
    let ref_units = units_of(first, &time)?;
    let mut ordered: Vec<(f64, &References)> = Vec::new();
    for part in parts {
        let ctx = || part.name().to_string();
        if time_coordinate(&part.tree) != Some(time.as_str()) {
            bail!("{}: the time coordinate is not {time:?}", part.name());
        }
        let names: Vec<&String> = part.tree.arrays.keys().collect();
        let first_names: Vec<&String> = first.tree.arrays.keys().collect();
        if names != first_names {
            let differing = names.iter().chain(&first_names).find(|n| !part.tree.arrays.contains_key(**n) || !first.tree.arrays.contains_key(**n));
            let example = differing.map(|n| format!(" (e.g. {n})")).unwrap_or_default();
            bail!("{}: its variables differ from {}'s{example}", part.name(), first.name());
        }
        let units = units_of(part, &time).with_context(ctx)?;
        if units.1 != ref_units.1 {
            bail!("{}: calendar {:?} differs from {:?} in {}", part.name(), units.1, ref_units.1, first.name());
        }
        let values = time_values(&part.tree.arrays[&time]).with_context(ctx)?;
        let start = *values.first().ok_or_else(|| anyhow!("{}: the time axis is empty", part.name()))?;
        ordered.push((units.0.convert(start, &ref_units.0), part));
    }
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in ordered.windows(2) {
        let (prev, next) = (pair[0].1, pair[1].1);
        let prev_units = units_of(prev, &time)?.0;
        let prev_last = *time_values(&prev.tree.arrays[&time])?.last().unwrap();
        if prev_units.convert(prev_last, &ref_units.0) >= pair[1].0 {
            bail!("{} and {} overlap in time (or repeat a step): refusing to combine", prev.name(), next.name());
        }
    }
    let parts: Vec<&References> = ordered.into_iter().map(|(_, p)| p).collect();
    // From here on "first" is the earliest file: its units, attributes, arrays.
    let first = parts[0];
    let ref_units = units_of(first, &time)?;
    let axis_arrays = time_axis_arrays(&first.tree);

    for part in &parts {
        if part.tree.templates != first.tree.templates {
            bail!("{}: its URL templates differ from {}'s", part.name(), first.name());
        }
    }
    let skipped = parts.iter().flat_map(|p| p.tree.skipped.iter().map(|(k, v)| (k.clone(), v.clone()))).collect();
    let mut tree = Tree { groups: first.tree.groups.clone(), arrays: BTreeMap::new(), skipped, templates: first.tree.templates.clone() };
    for (name, base) in &first.tree.arrays {
        let ctx = || format!("variable {name}");
        let array = if axis_arrays.contains(name) {
            concat_values(&parts, name, &time, &ref_units.0).with_context(ctx)?
        } else if !base.dims.contains(&time) {
            for part in &parts {
                let other = &part.tree.arrays[name];
                if other.shape != base.shape || other.dtype != base.dtype {
                    bail!("{}: variable {name} has no time dimension but differs from {}'s", part.name(), first.name());
                }
            }
            base.clone()
        } else {
            concat_chunks(&parts, name, &time).with_context(ctx)?
        };
        tree.arrays.insert(name.clone(), array);
    }
    Ok(References { source: first.source.clone(), tree })
}

fn units_of(part: &References, time: &str) -> Result<(Units, Calendar)> {
    let array = &part.tree.arrays[time];
    let units = array.attr("units").and_then(Value::as_str).ok_or_else(|| anyhow!("{}: time has no units", part.name()))?;
    let calendar = Calendar::parse(array.attr("calendar").and_then(Value::as_str))?;
    Ok((Units::parse(units, calendar)?, calendar))
}

fn time_values(array: &Array) -> Result<Vec<f64>> {
    let bytes = array.values.as_ref().ok_or_else(|| anyhow!("time values were not read (references not made by file_references)"))?;
    array.dtype.decode_f64s(bytes).ok_or_else(|| anyhow!("time has non-numeric dtype {}", array.dtype.zarr()))
}

/// Time coordinate or bounds: values of every part, in the first part's
/// units, as one inline chunk.
fn concat_values(parts: &[&References], name: &str, time: &str, target: &Units) -> Result<Array> {
    let base = &parts[0].tree.arrays[name];
    let mut out = base.clone();
    let mut bytes = Vec::new();
    for part in parts {
        let array = &part.tree.arrays[name];
        if array.dtype != base.dtype || array.shape[1..] != base.shape[1..] || array.dims != base.dims {
            bail!("{}: dtype or shape differs from {}'s", part.name(), parts[0].name());
        }
        let raw = array.values.as_ref().ok_or_else(|| anyhow!("{}: values were not read", part.name()))?;
        let units = units_of(part, time)?.0;
        if units == *target {
            bytes.extend_from_slice(raw);
        } else {
            let values: Vec<f64> = time_values(array)?.into_iter().map(|v| units.convert(v, target)).collect();
            let encoded = array.dtype.encode_f64s(&values).ok_or_else(|| {
                anyhow!("{}: its times in {}'s units are not whole numbers of dtype {}", part.name(), parts[0].name(), array.dtype.zarr())
            })?;
            bytes.extend_from_slice(&encoded);
        }
    }
    out.shape[0] = parts.iter().map(|p| p.tree.arrays[name].shape[0]).sum();
    out.chunks = out.shape.iter().map(|&s| s.max(1)).collect();
    out.filters.clear();
    out.chunk_refs = BTreeMap::from([(vec![0; out.shape.len()], Chunk::Inline(bytes.clone()))]);
    out.values = Some(bytes);
    Ok(out)
}

/// A data variable: the parts' chunk references, shifted along time.
fn concat_chunks(parts: &[&References], name: &str, time: &str) -> Result<Array> {
    let base = &parts[0].tree.arrays[name];
    let t = base.dims.iter().position(|d| d == time).expect("has the time dimension");
    let step = base.chunks[t];
    let mut out = base.clone();
    out.chunk_refs.clear();
    out.values = None;
    let mut offset = 0u64;
    for (i, part) in parts.iter().enumerate() {
        let array = &part.tree.arrays[name];
        let same_but_time = |a: &[u64], b: &[u64]| a.len() == b.len() && a.iter().zip(b).enumerate().all(|(k, (x, y))| k == t || x == y);
        if array.dims != base.dims || array.dtype != base.dtype || array.filters != base.filters || !fill_eq(&array.fill_value, &base.fill_value) {
            bail!("{}: dimensions, dtype, filters or fill value differ from {}'s", part.name(), parts[0].name());
        }
        if !same_but_time(&array.shape, &base.shape) {
            bail!("{}: shape {:?} differs from {:?} in {} beyond the time axis", part.name(), array.shape, base.shape, parts[0].name());
        }
        if array.chunks != base.chunks {
            bail!("{}: chunks {:?} differ from {:?} in {}: zarr needs one chunk grid", part.name(), array.chunks, base.chunks, parts[0].name());
        }
        let n = array.shape[t];
        if i + 1 < parts.len() && n % step != 0 {
            bail!(
                "{}: {n} time steps are not a whole number of time chunks of {step}: zarr v2 allows only the last chunk to be partial",
                part.name()
            );
        }
        for (index, chunk) in &array.chunk_refs {
            let mut shifted = index.clone();
            shifted[t] += offset / step;
            if out.chunk_refs.insert(shifted, chunk.clone()).is_some() {
                bail!("{}: chunk {index:?} would overwrite another file's", part.name());
            }
        }
        offset += n;
    }
    out.shape[t] = offset;
    Ok(out)
}

fn fill_eq(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Float(x)), Some(Value::Float(y))) => x == y || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}
