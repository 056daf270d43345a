//! Stage 4: group read files into datasets and make one STAC item per dataset
//! version (one asset per file), shaped like ESGF's next-generation items.
//! Everything archive-specific comes from the recipe.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use stac::{Asset, Bbox, Item, Link};

use crate::read::{CfDateTime, FileHeader};
use crate::recipe::{Recipe, VersionDir};
use crate::scan::ScannedFile;

/// A scanned file with what was read from it.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub file: ScannedFile,
    pub header: FileHeader,
    pub checksum: Option<String>,
}

/// What the items stage needs to know about one root.
pub struct RootContext<'a> {
    pub recipe: &'a Recipe,
    pub data_url: &'a str,
}

/// One dataset version, ready for the catalogue.
#[derive(Debug, Clone)]
pub struct DatasetItem {
    pub item: Item,
    /// Sub-catalogue path between the collection and the item (e.g. activity/institution/source).
    pub hierarchy: Vec<String>,
    /// This site's files of the item: asset key → the scanned file (empty for partner items).
    pub files: Vec<(String, ScannedFile)>,
}

/// Findings the build summary reports.
#[derive(Debug, Default)]
pub struct ItemsReport {
    /// Files not used, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Per-dataset warnings (CV, cross-checks, missing values), prefixed by the item id.
    pub warnings: Vec<String>,
}

/// Builds the items of one collection (all roots sharing a recipe).
pub fn build_items(site_name: &str, roots: &[RootContext], records: &[FileRecord], report: &mut ItemsReport) -> Result<Vec<DatasetItem>> {
    // base_id → version directory → files, in path order (records come sorted).
    let mut datasets: BTreeMap<String, BTreeMap<String, Vec<&FileRecord>>> = BTreeMap::new();
    for record in records {
        let recipe = roots[record.file.root].recipe;
        let ctx = minijinja::context! { path => &record.file.facets };
        let base_id = recipe.render("item.base_id", &ctx).with_context(|| format!("{}", record.file.path.display()))?;
        let version_dir = record.file.facets.get(recipe.version_facet()).cloned().unwrap_or_default();
        datasets.entry(base_id).or_default().entry(version_dir).or_default().push(record);
    }

    let mut items = Vec::new();
    for (base_id, dirs) in &datasets {
        let recipe = roots[dirs.values().next().expect("non-empty")[0].file.root].recipe;
        let versions = resolve_versions(recipe, dirs, report);
        let newest = versions.keys().next_back().cloned();
        for (version, files) in versions {
            match build_item(site_name, roots, base_id, &version, newest.as_deref() == Some(&version), &files, report) {
                Ok(item) => items.push(item),
                Err(e) => {
                    for f in &files {
                        report.skipped.push((f.file.path.display().to_string(), format!("dataset {base_id} v{version}: {e:#}")));
                    }
                }
            }
        }
    }
    Ok(items)
}

/// Applies the recipe's version rules: versioned directories are versions;
/// aliases (`latest`, `files/dN`) add items only when they name a version no
/// versioned directory holds. Returns version → files.
fn resolve_versions<'r>(recipe: &Recipe, dirs: &BTreeMap<String, Vec<&'r FileRecord>>, report: &mut ItemsReport) -> BTreeMap<String, Vec<&'r FileRecord>> {
    let mut versions: BTreeMap<String, Vec<&FileRecord>> = BTreeMap::new();
    let mut aliases = Vec::new();
    for (dir, files) in dirs {
        match recipe.classify_version(dir) {
            Some(VersionDir::Canonical(v)) => versions.entry(v).or_default().extend(files),
            Some(VersionDir::Alias { alias, version }) => aliases.push((dir, alias, version, files)),
            None => {
                for f in files {
                    report.skipped.push((f.file.path.display().to_string(), format!("unrecognised version directory {dir:?}")));
                }
            }
        }
    }
    let canonical: BTreeSet<String> = versions.keys().cloned().collect();
    for (dir, alias, named, files) in aliases {
        let resolved = match named {
            Some(v) if canonical.contains(&v) => Err(format!("duplicates version directory v{v}")),
            Some(v) => Ok(v),
            None if !canonical.is_empty() => Err(format!("{dir:?} duplicates the newest versioned directory")),
            None => {
                let linked = files[0].file.version_link.as_deref().and_then(|t| match recipe.classify_version(t) {
                    Some(VersionDir::Canonical(v)) => Some(v),
                    _ => None,
                });
                match linked {
                    Some(v) => Ok(v),
                    None => match recipe.alias_attribute(alias) {
                        Some(attr) => newest_date(files, attr).ok_or_else(|| format!("{dir:?} has no version: no file has a readable {attr:?}")),
                        None => Err(format!("{dir:?} has no version")),
                    },
                }
            }
        };
        match resolved {
            Ok(v) => {
                let slot = versions.entry(v).or_default();
                let known: BTreeSet<String> = slot.iter().map(|f| file_name(&f.file.rel_path).to_string()).collect();
                slot.extend(files.iter().filter(|f| !known.contains(file_name(&f.file.rel_path))));
            }
            Err(why) => {
                for f in files {
                    report.skipped.push((f.file.path.display().to_string(), why.clone()));
                }
            }
        }
    }
    versions
}

/// Newest date (YYYYMMDD) found at the start of a global attribute; garbled values are ignored.
fn newest_date(files: &[&FileRecord], attr: &str) -> Option<String> {
    files
        .iter()
        .filter_map(|f| f.header.global_attributes.get(attr)?.as_str().map(str::to_string))
        .filter_map(|s| {
            let d = s.get(..10)?;
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().map(|d| d.format("%Y%m%d").to_string())
        })
        .max()
}

fn file_name(rel_path: &str) -> &str {
    rel_path.rsplit('/').next().unwrap_or(rel_path)
}

fn build_item(site_name: &str, roots: &[RootContext], base_id: &str, version: &str, latest: bool, files: &[&FileRecord], report: &mut ItemsReport) -> Result<DatasetItem> {
    let first = files.first().ok_or_else(|| anyhow!("no files"))?;
    let recipe = roots[first.file.root].recipe;
    let facets = &first.file.facets;

    let mut attrs: Map<String, Value> = recipe.file.defaults.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    attrs.extend(first.header.global_attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    let version_date = chrono::NaiveDate::parse_from_str(version, "%Y%m%d").with_context(|| format!("version {version:?} is not YYYYMMDD"))?;
    let created = format!("{}T00:00:00Z", version_date.format("%Y-%m-%d"));

    let mut ctx = json!({
        "path": facets, "attrs": attrs, "var": first.header.variable_attributes,
        "version": version, "base_id": base_id, "site": site_name,
    });
    let id = recipe.render("item.id", &minijinja::Value::from_serialize(&ctx))?;
    if !recipe.is_valid_id(&id) {
        bail!("item id {id:?} does not match the recipe's id_pattern");
    }
    ctx["id"] = json!(id);
    let ctx_value = minijinja::Value::from_serialize(&ctx);
    let warn = |report: &mut ItemsReport, msg: String| report.warnings.push(format!("{id}: {msg}"));

    for facet in &recipe.file.cross_checks {
        let Some(expected) = facets.get(facet) else { continue };
        for f in files {
            if let Some(found) = f.header.global_attributes.get(facet).and_then(Value::as_str) {
                // Multi-valued attributes ("ScenarioMIP AerChemMIP") agree if they name the path's value.
                if found != expected && !found.split_whitespace().any(|w| w == expected) {
                    warn(report, format!("{} says {facet}={found:?} but its path says {expected:?}; the path is used", file_name(&f.file.rel_path)));
                }
            }
        }
    }

    let mut cv_findings = BTreeSet::new();
    for f in files {
        cv_findings.extend(recipe.check_attribute_cvs(&f.header.global_attributes));
    }
    for w in cv_findings {
        warn(report, w);
    }

    let mut item = Item::new(&id);
    item.collection = Some(recipe.file.collection.id.clone());
    item.extensions = recipe.file.extensions.clone();

    let rendered = recipe.render_properties(&ctx_value)?;
    for w in rendered.warnings {
        warn(report, w);
    }
    let props = &mut item.properties;
    if recipe.has_template("item.title") {
        props.title = Some(recipe.render("item.title", &ctx_value)?).filter(|t| !t.is_empty());
    }
    props.created = Some(created.clone());
    props.updated = Some(created.clone());
    props.datetime = None;
    let (start, end) = time_span(files)?;
    props.start_datetime = Some(start);
    props.end_datetime = Some(end);
    let extra = &mut props.additional_fields;
    extra.insert("size".into(), json!(files.iter().map(|f| f.file.size).sum::<u64>()));
    extra.insert("latest".into(), json!(latest));
    extra.insert("retracted".into(), json!(false));
    if files.iter().all(|f| f.header.time.is_none()) {
        extra.insert("fedstac:time_invariant".into(), json!(true));
    }
    for (k, v) in rendered.values {
        extra.insert(k, v);
    }

    let bbox = bounding_box(files);
    item.geometry = Some(geometry(&bbox));
    item.bbox = Some(Bbox::TwoDimensional(bbox));

    if recipe.has_template("item.cite_as") {
        let href = recipe.render("item.cite_as", &ctx_value)?;
        item.links.push(Link::new(href, "cite-as").r#type("application/json".to_string()));
    }

    let mut sources = Vec::with_capacity(files.len());
    for f in files {
        let name = file_name(&f.file.rel_path).to_string();
        sources.push((name.clone(), f.file.clone()));
        let data_url = roots[f.file.root].data_url;
        let mut actx = ctx.clone();
        actx["attrs"] = json!(f.header.global_attributes);
        actx["rel_path"] = json!(f.file.rel_path);
        actx["data_url"] = json!(data_url);
        actx["file_name"] = json!(name);
        let actx = minijinja::Value::from_serialize(&actx);
        let href = recipe.render("asset.href", &actx)?;
        let protocol = href.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        if protocol != "http" && protocol != "https" {
            bail!("asset href {href:?} of {name} is not http(s)");
        }
        let mut asset = Asset::new(href).role("data");
        asset.r#type = Some("application/netcdf".into());
        asset.created = Some(created.clone());
        let extra = &mut asset.additional_fields;
        extra.insert("file:size".into(), json!(f.file.size));
        if let Some(sum) = &f.checksum {
            extra.insert("file:checksum".into(), json!(sum));
        }
        extra.insert("alternate:name".into(), json!(site_name));
        extra.insert("protocol".into(), json!(protocol));
        let rendered = recipe.render_asset_properties(&actx)?;
        for w in rendered.warnings {
            warn(report, format!("{name}: {w}"));
        }
        for (k, v) in rendered.values {
            extra.insert(k, v);
        }
        item.assets.insert(name, asset);
    }

    let hierarchy = (0..recipe.hierarchy_len())
        .map(|i| recipe.render(&format!("hierarchy.{i}"), &ctx_value))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bad) = hierarchy.iter().find(|h| !crate::recipe::is_safe_name(h)) {
        bail!("catalogue level {bad:?} is not a safe directory name");
    }
    Ok(DatasetItem { item, hierarchy, files: sources })
}

/// Start and end over all files (bounds when present). Time-invariant
/// datasets (fx) are valid at every time, so they span all representable time
/// and every time filter finds them.
fn time_span(files: &[&FileRecord]) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let times: Vec<_> = files.iter().filter_map(|f| f.header.time.as_ref()).collect();
    let parse = |t: &CfDateTime| -> Result<chrono::DateTime<chrono::Utc>> {
        let text = t.to_rfc3339().map_err(|e| anyhow!("time {t}: {e}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(&text)?.with_timezone(&chrono::Utc))
    };
    match (times.iter().map(|t| t.start).min(), times.iter().map(|t| t.end).max()) {
        (Some(start), Some(end)) => Ok((parse(&start)?, parse(&end)?)),
        _ => Ok((
            chrono::DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")?.with_timezone(&chrono::Utc),
            chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")?.with_timezone(&chrono::Utc),
        )),
    }
}

/// `[west, south, east, north]` in -180..180 over all files. Longitudes in
/// 0..360 are shifted; a span crossing the antimeridian keeps west > east
/// (RFC 7946 §5.2). Global when no file has latitudes or the grid is unstructured;
/// all longitudes when files have latitudes only (zonal means).
pub fn bounding_box(files: &[&FileRecord]) -> [f64; 4] {
    const GLOBAL: [f64; 4] = [-180.0, -90.0, 180.0, 90.0];
    if files.iter().any(|f| f.header.unstructured) {
        return GLOBAL;
    }
    let lats: Vec<[f64; 2]> = files.iter().filter_map(|f| f.header.lat_range).collect();
    let lons: Vec<[f64; 2]> = files.iter().filter_map(|f| f.header.lon_range).collect();
    if lats.is_empty() {
        return GLOBAL;
    }
    let south = lats.iter().map(|r| r[0]).fold(f64::INFINITY, f64::min).max(-90.0);
    let north = lats.iter().map(|r| r[1]).fold(f64::NEG_INFINITY, f64::max).min(90.0);
    if lons.is_empty() {
        // Zonal fields (msftmz: latitude only) span every longitude of their latitude band.
        return [-180.0, south, 180.0, north];
    }
    let lo = lons.iter().map(|r| r[0]).fold(f64::INFINITY, f64::min);
    let hi = lons.iter().map(|r| r[1]).fold(f64::NEG_INFINITY, f64::max);
    let wrap = |x: f64| if x > 180.0 { x - 360.0 } else if x < -180.0 { x + 360.0 } else { x };
    let (west, east) = if hi - lo >= 180.0 || hi - lo < 0.0 {
        // Wider than a hemisphere: call it every longitude rather than guess the gap.
        (-180.0, 180.0)
    } else {
        (wrap(lo), wrap(hi))
    };
    [west, south, east, north]
}

fn geometry(b: &[f64; 4]) -> stac::Geometry {
    let ring = |w: f64, e: f64| vec![vec![w, b[1]], vec![e, b[1]], vec![e, b[3]], vec![w, b[3]], vec![w, b[1]]];
    let value = if b[0] <= b[2] {
        json!({ "type": "Polygon", "coordinates": [ring(b[0], b[2])] })
    } else {
        json!({ "type": "MultiPolygon", "coordinates": [[ring(b[0], 180.0)], [ring(-180.0, b[2])]] })
    };
    serde_json::from_value(value).expect("valid GeoJSON geometry")
}
