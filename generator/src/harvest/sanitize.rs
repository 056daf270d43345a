//! The trust boundary: a partner document becomes a catalogue (links to
//! follow) or an item fit to publish, or it is refused with a reason.
//!
//! Items are validated and rewritten, never trusted:
//! - a JSON object of `type: Feature`, STAC 1.x, that parses as a STAC item;
//! - its id is a safe file name and satisfies a collection's id rules (the
//!   recipe's `id_pattern`), reading back through its id template;
//! - a time (`datetime`, or `start_datetime` ≤ `end_datetime`), a valid bbox
//!   (longitudes 0..360 are shifted; the geometry is rebuilt from the bbox);
//!   `version`, when given, agrees with the id; `latest`/`retracted` are booleans;
//! - hrefs are absolute http(s), or relative ones that stay inside the
//!   partner's catalogue; anything else (`javascript:`, `file:`, `data:`,
//!   `//host`, `../../..`) is dropped with its asset or link;
//! - `file:size` is a non-negative integer, and an item that declares the
//!   file extension gives it for every data file (ESGF's publication rule);
//! - nulls are dropped (STAC fields are absent, not null), only a few link
//!   relations are kept (`cite-as`, `describedby`, `license`, `related`),
//!   declared extensions are kept only where this site's collection uses
//!   them, and `fedstac:*` claims other than `time_invariant` are removed;
//! - file assets are keyed by file name, as this site's own items are.

use serde_json::{json, Map, Value};
use url::Url;

use crate::merge::{href_file_name, Placer};

/// A partner document, classified and checked.
#[derive(Debug)]
pub enum Doc {
    /// A catalogue or collection: its child and item links (absolute, in scope).
    Catalog { links: Vec<(String, String)>, notes: Vec<String> },
    Item { item: Value, id: String, notes: Vec<String> },
}

/// Documents and relative hrefs must stay below the partner's root directory.
#[derive(Debug, Clone)]
pub struct Scope {
    base: Url,
}

impl Scope {
    /// The directory of the root catalogue.
    pub fn of_root(root: &Url) -> Scope {
        let mut base = root.clone();
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = base.path();
            let dir = match &path[..path.rfind('/').map_or(0, |i| i + 1)] {
                "" => "/".to_string(),
                d => d.to_string(),
            };
            base.set_path(&dir);
        }
        Scope { base }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn contains(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme() && url.host_str() == self.base.host_str() && url.port_or_known_default() == self.base.port_or_known_default() && url.path().starts_with(self.base.path())
    }

    /// [`Scope::relative`] of a URL as `Url` writes it, without parsing it again.
    pub fn relative_str<'u>(&self, url: &'u str) -> Option<&'u str> {
        let rest = url.strip_prefix(self.base.as_str())?;
        Some(&rest[..rest.find(['?', '#']).unwrap_or(rest.len())])
    }

    /// Path below the base (the key of the partner's manifest).
    pub fn relative<'u>(&self, url: &'u Url) -> Option<&'u str> {
        if !self.contains(url) {
            return None;
        }
        url.path().strip_prefix(self.base.path())
    }
}

/// Classifies and checks one document fetched from `doc_url`.
pub fn classify(bytes: &[u8], doc_url: &Url, scope: &Scope, placer: &Placer) -> Result<Doc, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = value else { return Err("not a JSON object".into()) };
    match obj.get("type").and_then(Value::as_str) {
        Some("Catalog") | Some("Collection") => Ok(catalog_links(&obj, doc_url, scope)),
        Some("Feature") => {
            let (item, id, notes) = sanitize_item(obj, doc_url, scope, placer, false)?;
            Ok(Doc::Item { item, id, notes })
        }
        Some(other) => Err(format!("type {other:?} is not a STAC catalog, collection or item")),
        None => Err("no type: not a STAC document".into()),
    }
}

fn catalog_links(obj: &Map<String, Value>, doc_url: &Url, scope: &Scope) -> Doc {
    let mut links = Vec::new();
    let mut notes = Vec::new();
    for link in obj.get("links").and_then(Value::as_array).into_iter().flatten() {
        let rel = link.get("rel").and_then(Value::as_str).unwrap_or("").to_string();
        if rel != "child" && rel != "item" {
            continue;
        }
        let Some(href) = link.get("href").and_then(Value::as_str) else { continue };
        match doc_url.join(href.trim()) {
            Ok(mut url) if scope.contains(&url) => {
                url.set_fragment(None);
                links.push((rel.to_string(), url.to_string()));
            }
            Ok(url) => notes.push(format!("{rel} link {url} is outside the partner's catalogue; not followed")),
            Err(e) => notes.push(format!("{rel} link {href:?}: {e}; not followed")),
        }
    }
    Doc::Catalog { links, notes }
}

/// Resolves an asset or link href: absolute http(s), or relative within scope.
fn resolve_href(href: &str, doc_url: &Url, scope: &Scope) -> Result<String, String> {
    let href = href.trim();
    match Url::parse(href) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(u.to_string()),
        Ok(u) => Err(format!("href scheme {:?} is not http(s)", u.scheme())),
        Err(url::ParseError::RelativeUrlWithoutBase) => match doc_url.join(href) {
            Ok(u) if scope.contains(&u) && (u.scheme() == "http" || u.scheme() == "https") => Ok(u.to_string()),
            Ok(_) => Err(format!("relative href {href:?} leads outside the partner's catalogue")),
            Err(e) => Err(format!("href {href:?}: {e}")),
        },
        Err(e) => Err(format!("href {href:?}: {e}")),
    }
}

const KEPT_LINK_RELS: &[&str] = &["cite-as", "describedby", "license", "related"];

/// Removes null members (STAC fields are absent, never null), recursively in objects.
fn strip_nulls(map: &mut Map<String, Value>, keep: &[&str]) {
    map.retain(|k, v| !v.is_null() || keep.contains(&k.as_str()));
    for v in map.values_mut() {
        if let Value::Object(inner) = v {
            strip_nulls(inner, &[]);
        }
    }
}

fn rfc3339(props: &Map<String, Value>, key: &str) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>, String> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).map(Some).map_err(|e| format!("{key} {s:?} is not an RFC 3339 time: {e}")),
        Some(other) => Err(format!("{key} {other} is not a string")),
    }
}

/// `[w, s, e, n]` in -180..180 (west > east when crossing the antimeridian).
fn normalize_bbox(value: Option<&Value>) -> Result<[f64; 4], String> {
    let nums: Vec<f64> = value.and_then(Value::as_array).ok_or("no bbox")?.iter().map(|v| v.as_f64().filter(|x| x.is_finite())).collect::<Option<_>>().ok_or("bbox holds a non-number")?;
    let [w, s, e, n] = match nums.as_slice() {
        [w, s, e, n] => [*w, *s, *e, *n],
        [w, s, _, e, n, _] => [*w, *s, *e, *n],
        _ => return Err(format!("bbox has {} numbers (4 or 6 expected)", nums.len())),
    };
    if !(-90.0..=90.0).contains(&s) || !(-90.0..=90.0).contains(&n) || s > n {
        return Err(format!("bbox latitudes {s}..{n} are not within -90..90 in order"));
    }
    if !(-180.0..=360.0).contains(&w) || !(-180.0..=360.0).contains(&e) {
        return Err(format!("bbox longitudes {w}..{e} are out of range"));
    }
    if w > 180.0 || e > 180.0 {
        // 0..360 convention: a span of a hemisphere or more is every longitude.
        if e >= w && e - w >= 180.0 {
            return Ok([-180.0, s, 180.0, n]);
        }
        let wrap = |x: f64| if x > 180.0 { x - 360.0 } else { x };
        return Ok([wrap(w), s, wrap(e), n]);
    }
    Ok([w, s, e, n])
}

fn geometry_of(b: &[f64; 4]) -> Value {
    let ring = |w: f64, e: f64| json!([[w, b[1]], [e, b[1]], [e, b[3]], [w, b[3]], [w, b[1]]]);
    if b[0] <= b[2] {
        json!({"type": "Polygon", "coordinates": [ring(b[0], b[2])]})
    } else {
        json!({"type": "MultiPolygon", "coordinates": [[ring(b[0], 180.0)], [ring(-180.0, b[2])]]})
    }
}

fn is_file_asset(a: &Map<String, Value>) -> bool {
    let t = a.get("type").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    let href = a.get("href").and_then(Value::as_str).unwrap_or("");
    t.contains("netcdf") || a.contains_key("file:size") || href_file_name(href).is_some_and(|n| n.to_ascii_lowercase().ends_with(".nc"))
}

/// An item written through the receiver (publish): the same checks, stricter
/// on hrefs (every asset and alternate href absolute http(s), else refused
/// rather than dropped), and a retracted item may have no assets (ESGF's
/// retraction empties them).
pub fn sanitize_write(value: Value, placer: &Placer) -> Result<(Value, String, Vec<String>), String> {
    let Value::Object(obj) = value else { return Err("not a JSON object".into()) };
    if obj.get("type").and_then(Value::as_str) != Some("Feature") {
        return Err("type is not \"Feature\": not a STAC item".into());
    }
    let absolute = |h: &Value| h.as_str().and_then(|h| Url::parse(h.trim()).ok()).is_some_and(|u| u.scheme() == "http" || u.scheme() == "https");
    for (key, asset) in obj.get("assets").and_then(Value::as_object).into_iter().flatten() {
        if !asset.get("href").is_some_and(absolute) {
            return Err(format!("asset {key}: href {} is not an absolute http(s) URL", asset.get("href").unwrap_or(&Value::Null)));
        }
        for (name, alt) in asset.get("alternate").and_then(Value::as_object).into_iter().flatten() {
            if !alt.get("href").is_some_and(absolute) {
                return Err(format!("asset {key}, alternate {name}: href is not an absolute http(s) URL"));
            }
        }
    }
    let base = Url::parse("https://receiver.invalid/").expect("valid");
    sanitize_item(obj, &base, &Scope::of_root(&base), placer, true)
}

fn sanitize_item(mut obj: Map<String, Value>, doc_url: &Url, scope: &Scope, placer: &Placer, allow_retracted_empty: bool) -> Result<(Value, String, Vec<String>), String> {
    let mut notes = Vec::new();
    let version = obj.get("stac_version").and_then(Value::as_str).ok_or("no stac_version")?;
    if !version.starts_with("1.") {
        return Err(format!("stac_version {version:?} is not 1.x"));
    }
    let id = obj.get("id").and_then(Value::as_str).ok_or("no string id")?.to_string();
    let collection = obj.get("collection").and_then(Value::as_str).map(str::to_string);
    let (recipe_index, id_version) = placer.check(&id, collection.as_deref())?;
    let recipe = placer.recipe(recipe_index);

    // Properties.
    let mut props = match obj.remove("properties") {
        Some(Value::Object(p)) => p,
        _ => return Err("properties is not an object".into()),
    };
    strip_nulls(&mut props, &["datetime"]);
    let datetime = rfc3339(&props, "datetime")?;
    let start = rfc3339(&props, "start_datetime")?;
    let end = rfc3339(&props, "end_datetime")?;
    if datetime.is_none() && (start.is_none() || end.is_none()) {
        return Err("no time: needs datetime, or start_datetime and end_datetime".into());
    }
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(format!("start_datetime {} is after end_datetime {}", s.to_rfc3339(), e.to_rfc3339()));
        }
    }
    props.entry("datetime").or_insert(Value::Null);
    for key in ["created", "updated"] {
        if let Err(why) = rfc3339(&props, key) {
            notes.push(format!("{why}; dropped"));
            props.remove(key);
        }
    }
    for key in ["title", "description"] {
        if props.get(key).is_some_and(|v| !v.is_string()) {
            notes.push(format!("{key} is not a string; dropped"));
            props.remove(key);
        }
    }
    if let (Some(v), Some(given)) = (&id_version, props.get("version")) {
        if given.as_str() != Some(v.as_str()) {
            return Err(format!("version property {given} contradicts the id's version {v:?}"));
        }
    }
    for key in ["latest", "retracted"] {
        if let Some(x) = props.get(key) {
            if !x.is_boolean() {
                return Err(format!("{key} {x} is not a boolean"));
            }
        }
    }
    if props.get("size").is_some_and(|v| v.as_u64().is_none()) {
        notes.push(format!("size {} is not a non-negative integer; dropped", props["size"]));
        props.remove("size");
    }
    if props.get("fedstac:time_invariant").is_some_and(|v| !v.is_boolean()) {
        props.remove("fedstac:time_invariant");
    }
    props.retain(|k, _| !k.starts_with("fedstac:") || k == "fedstac:time_invariant");

    let bbox = normalize_bbox(obj.get("bbox"))?;

    // Extensions: kept where this site's collection uses the same schema.
    let declared: Vec<String> = obj.get("stac_extensions").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    let declares_file = declared.iter().any(|e| e.contains("/file/"));
    let (kept, dropped): (Vec<String>, Vec<String>) = declared.into_iter().partition(|e| recipe.file.extensions.contains(e));
    if !dropped.is_empty() {
        notes.push(format!("extension schemas not used by collection {}: {}; not declared here", recipe.file.collection.id, dropped.join(", ")));
    }

    // Assets.
    let assets = match obj.remove("assets") {
        Some(Value::Object(a)) => a,
        _ => return Err("assets is not an object".into()),
    };
    let mut out_assets = Map::new();
    for (key, asset) in assets {
        let Value::Object(mut a) = asset else {
            notes.push(format!("asset {key} is not an object; dropped"));
            continue;
        };
        strip_nulls(&mut a, &[]);
        let Some(href) = a.get("href").and_then(Value::as_str).map(str::to_string) else {
            notes.push(format!("asset {key} has no href; dropped"));
            continue;
        };
        match resolve_href(&href, doc_url, scope) {
            Ok(h) => {
                a.insert("href".into(), Value::String(h));
            }
            Err(why) => {
                notes.push(format!("asset {key}: {why}; dropped"));
                continue;
            }
        }
        if let Some(alternates) = a.remove("alternate") {
            let mut kept_alts = Map::new();
            for (name, alt) in alternates.as_object().into_iter().flatten() {
                let Some(mut alt) = alt.as_object().cloned() else { continue };
                strip_nulls(&mut alt, &[]);
                match alt.get("href").and_then(Value::as_str).map(|h| resolve_href(h, doc_url, scope)) {
                    Some(Ok(h)) => {
                        alt.insert("href".into(), Value::String(h));
                        if alt.get("alternate:name").is_some_and(|n| !n.as_str().is_some_and(crate::config::is_site_name)) {
                            alt.remove("alternate:name");
                        }
                        if crate::config::is_site_name(name) || alt.contains_key("alternate:name") {
                            kept_alts.insert(name.clone(), Value::Object(alt));
                        }
                    }
                    Some(Err(why)) => notes.push(format!("asset {key}, alternate {name}: {why}; dropped")),
                    None => notes.push(format!("asset {key}, alternate {name} has no href; dropped")),
                }
            }
            if !kept_alts.is_empty() {
                a.insert("alternate".into(), Value::Object(kept_alts));
            }
        }
        if let Some(size) = a.get("file:size") {
            if size.as_u64().is_none() {
                return Err(format!("asset {key}: file:size {size} is not a non-negative integer"));
            }
        }
        if let Some(sum) = a.get("file:checksum") {
            let ok = sum.as_str().is_some_and(|s| s.len() >= 4 && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            if !ok {
                notes.push(format!("asset {key}: file:checksum {sum} is not a lower-case hex multihash; dropped"));
                a.remove("file:checksum");
            }
        }
        if a.get("alternate:name").is_some_and(|n| !n.as_str().is_some_and(crate::config::is_site_name)) {
            notes.push(format!("asset {key}: alternate:name {} is not a site name; dropped", a["alternate:name"]));
            a.remove("alternate:name");
        }
        let is_file = is_file_asset(&a);
        if is_file && declares_file && !a.contains_key("file:size") {
            return Err(format!("asset {key}: data file without file:size (the item declares the file extension)"));
        }
        let name = if is_file { href_file_name(a["href"].as_str().unwrap_or("")).filter(|n| !out_assets.contains_key(n)).unwrap_or(key.clone()) } else { key.clone() };
        if out_assets.contains_key(&name) {
            notes.push(format!("asset {key}: a second asset for {name}; dropped"));
            continue;
        }
        out_assets.insert(name, Value::Object(a));
    }
    let retracted = props.get("retracted") == Some(&Value::Bool(true));
    if out_assets.is_empty() && !(allow_retracted_empty && retracted) {
        return Err("no asset with a usable http(s) href".into());
    }

    // Links: a few relations, absolute http(s) only.
    let mut links = Vec::new();
    for link in obj.get("links").and_then(Value::as_array).into_iter().flatten() {
        let Some(mut link) = link.as_object().cloned() else { continue };
        let rel = link.get("rel").and_then(Value::as_str).unwrap_or("").to_string();
        if !KEPT_LINK_RELS.contains(&rel.as_str()) {
            continue;
        }
        strip_nulls(&mut link, &[]);
        match link.get("href").and_then(Value::as_str).map(|h| (h.to_string(), Url::parse(h.trim()))) {
            Some((_, Ok(u))) if u.scheme() == "http" || u.scheme() == "https" => {
                link.insert("href".into(), Value::String(u.to_string()));
                links.push(Value::Object(link));
            }
            Some((h, _)) => notes.push(format!("{rel} link {h:?} is not an absolute http(s) URL; dropped")),
            None => {}
        }
    }

    // What stac-rs would refuse in the parts not checked by hand above (the
    // properties' typed fields, bbox and geometry are): assets and links.
    // Checked part by part: reading the whole item again costs a tenth of a harvest.
    for (key, asset) in &out_assets {
        <stac::Asset as serde::Deserialize>::deserialize(asset).map_err(|e| format!("not a STAC item: asset {key}: {e}"))?;
    }
    for link in &links {
        <stac::Link as serde::Deserialize>::deserialize(link).map_err(|e| format!("not a STAC item: link: {e}"))?;
    }
    let item = json!({
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": kept,
        "id": id,
        "collection": recipe.file.collection.id,
        "geometry": geometry_of(&bbox),
        "bbox": bbox,
        "properties": props,
        "links": links,
        "assets": out_assets,
    });
    debug_assert!(<stac::Item as serde::Deserialize>::deserialize(&item).is_ok(), "a sanitized item is a STAC item");
    Ok((item, id, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placer() -> Placer {
        Placer::new(Vec::new()).unwrap()
    }

    fn item(id: &str, assets: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "Feature", "stac_version": "1.0.0", "id": id, "collection": "CMIP6",
            "stac_extensions": ["https://stac-extensions.github.io/file/v2.1.0/schema.json", "http://host.docker.internal/x.json"],
            "geometry": null, "bbox": [0.0, -90.0, 357.5, 90.0],
            "properties": {"datetime": null, "start_datetime": "2015-01-16T12:00:00Z", "end_datetime": "2015-02-16T12:00:00Z", "description": null, "fedstac:held_at": ["x"]},
            "links": [{"rel": "self", "href": "https://p/x"}, {"rel": "cite-as", "href": "https://c/x", "title": null}],
            "assets": assets
        }))
        .unwrap()
    }

    const ID: &str = "CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr.v20191122";

    #[test]
    fn relative_paths_of_normalized_urls() {
        let scope = Scope::of_root(&Url::parse("https://p.example:8443/stac/catalog.json").unwrap());
        for href in ["https://p.example:8443/stac/a/b.json", "https://p.example:8443/stac/a/b.json?x=1", "https://p.example:8443/stacked/b.json", "http://p.example:8443/stac/a.json", "https://p.example/stac/a.json", "https://p.example:8443/stac/", "https://p.example:8443/stac/a%20b.json#f"] {
            let url = Url::parse(href).unwrap();
            assert_eq!(scope.relative_str(url.as_str()), scope.relative(&url), "{href}");
        }
    }

    #[test]
    fn items_are_cleaned() {
        let root = Url::parse("https://p.org/stac/catalog.json").unwrap();
        let scope = Scope::of_root(&root);
        let doc = root.join("CMIP6/a/item.json").unwrap();
        let bytes = item(
            ID,
            json!({
                "data0000": {"href": "https://d.org/x/clcalipso_a.nc", "type": "application/netcdf", "file:size": 3, "title": null},
                "rel": {"href": "./b.nc", "type": "application/netcdf", "file:size": 4},
                "js": {"href": "javascript:alert(1)", "type": "application/netcdf", "file:size": 1},
                "file": {"href": "file:///etc/passwd", "file:size": 1},
                "up": {"href": "../../../../etc/passwd.nc", "file:size": 1},
                "proto": {"href": "//evil.org/x.nc", "file:size": 1}
            }),
        );
        let Doc::Item { item, notes, .. } = classify(&bytes, &doc, &scope, &placer()).unwrap() else { panic!("not an item") };
        let assets = item["assets"].as_object().unwrap();
        assert_eq!(assets.keys().collect::<Vec<_>>(), ["clcalipso_a.nc", "b.nc"], "{notes:?}");
        assert_eq!(assets["b.nc"]["href"], "https://p.org/stac/CMIP6/a/b.nc");
        assert!(assets["clcalipso_a.nc"].get("title").is_none());
        assert_eq!(notes.iter().filter(|n| n.starts_with("asset") && n.ends_with("dropped")).count(), 4, "{notes:?}");
        assert_eq!(item["bbox"], json!([-180.0, -90.0, 180.0, 90.0]));
        assert_eq!(item["stac_version"], "1.1.0");
        assert_eq!(item["stac_extensions"], json!(["https://stac-extensions.github.io/file/v2.1.0/schema.json"]));
        assert_eq!(item["links"], json!([{"rel": "cite-as", "href": "https://c/x"}]));
        assert!(item["properties"].get("fedstac:held_at").is_none());
        assert!(item["properties"].get("description").is_none());
    }

    #[test]
    fn bad_items_are_refused() {
        let root = Url::parse("http://127.0.0.1:1/catalog.json").unwrap();
        let scope = Scope::of_root(&root);
        let ok = json!({"a": {"href": "https://d/a.nc", "file:size": 1}});
        let refuse = |bytes: Vec<u8>| classify(&bytes, &root, &scope, &placer()).unwrap_err();
        assert!(refuse(item("../../etc/passwd", ok.clone())).contains("safe file name"));
        assert!(refuse(item("CMIP6.a/b.c.d.e.f.g.h.i.v20190101", ok.clone())).contains("safe file name"));
        assert!(refuse(item("not-cmip6", ok.clone())).contains("id template"));
        assert!(refuse(item("CMIP6.a.b.c.d.e.f.g.h.v2019", ok.clone())).contains("id"));
        assert!(refuse(item(ID, json!({"a": {"href": "https://d/a.nc", "type": "application/netcdf"}}))).contains("file:size"));
        assert!(refuse(item(ID, json!({"a": {"href": "javascript:x"}}))).contains("no asset"));
        assert!(refuse(b"{\"type\": \"Feature\", \"stac_ver".to_vec()).contains("not valid JSON"));
        let mut v: Value = serde_json::from_slice(&item(ID, ok.clone())).unwrap();
        v["properties"]["end_datetime"] = json!("2000-01-01T00:00:00Z");
        assert!(refuse(serde_json::to_vec(&v).unwrap()).contains("after end_datetime"));
        v["properties"]["end_datetime"] = json!("2020-01-01T00:00:00Z");
        v["properties"]["version"] = json!("20200101");
        assert!(refuse(serde_json::to_vec(&v).unwrap()).contains("contradicts"));
    }

    #[test]
    fn catalogue_links_stay_in_scope() {
        let root = Url::parse("http://h:8/site/catalog.json").unwrap();
        let scope = Scope::of_root(&root);
        assert_eq!(scope.base().as_str(), "http://h:8/site/");
        let doc = json!({"type": "Catalog", "links": [
            {"rel": "child", "href": "./a/catalog.json"}, {"rel": "item", "href": "b.json#x"},
            {"rel": "child", "href": "../other/catalog.json"}, {"rel": "child", "href": "http://evil/catalog.json"},
            {"rel": "parent", "href": "../catalog.json"}
        ]});
        let Doc::Catalog { links, notes } = classify(&serde_json::to_vec(&doc).unwrap(), &root, &scope, &placer()).unwrap() else { panic!() };
        assert_eq!(links, [("child".to_string(), "http://h:8/site/a/catalog.json".to_string()), ("item".to_string(), "http://h:8/site/b.json".to_string())]);
        assert_eq!(notes.len(), 2);
        assert_eq!(scope.relative(&Url::parse("http://h:8/site/a/b.json").unwrap()), Some("a/b.json"));
    }
}
