//! Federation merge rules: how the items mirrored from partners (by
//! [`crate::harvest`]) join this site's own items in `fedstac build`.
//!
//! - **Identity** is the item id, which includes the version
//!   (`CMIP6.<…>.v20190710`). The base id and version come from the id,
//!   read back through the recipe's id template.
//! - **Copies.** Every asset copy is named by its `alternate:name` (a copy
//!   without one is named after the partner it came from). A partner speaks
//!   for its own copies and for sites we do not harvest ourselves; copies it
//!   names after this site, or after another configured partner, are ignored
//!   (this site knows its own holdings, and each partner is heard first-hand).
//! - **Same id here and there:** one item; this site's asset is the primary
//!   one and each partner copy is an alternate
//!   (`alternate: {<name>: {href, alternate:name}}`), as ESGF's next
//!   generation lists replicas. Metadata that disagrees (properties, time
//!   span, a file's size or checksum, the list of files) is reported as a
//!   conflict and this site's values are kept.
//! - **Only at partners:** the partner's item (first partner in config order
//!   is primary, others become alternates), with the partner's hrefs.
//! - **Every item** says where it is held: `fedstac:held_at` (sorted names).
//! - **Versions:** `latest` is recomputed across this site and every partner:
//!   the newest version that nobody retracted. A version retracted anywhere
//!   is retracted here (`retracted` is the OR of all copies) and is never latest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use regex::Regex;
use serde::Serialize;
use serde_json::{json, Map, Value};
use stac::{Asset, Item};

use crate::config::SiteConfig;
use crate::harvest::mirror::{self, MirrorReader};
use crate::items::DatasetItem;
use crate::recipe::{self, Recipe};

/// The property listing the sites that hold a dataset.
pub const HELD_AT: &str = "fedstac:held_at";
pub const ALTERNATE_EXTENSION: &str = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json";

// ------------------------------------------------------------------ placement

/// Path facets read back from an id.
type Facets = BTreeMap<String, String>;

/// Where a partner item belongs in this site: which recipe's collection,
/// which sub-catalogue, and its dataset identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into [`Placer::recipe`].
    pub recipe: usize,
    pub hierarchy: Vec<String>,
    pub base_id: String,
    pub version: Option<String>,
}

/// Places items by id: an id must satisfy a recipe's id rules (`id_pattern`
/// and safe-file-name rules) and read back through its id template into facets.
pub struct Placer {
    recipes: Vec<Arc<Recipe>>,
    /// The id template as a regex with a named group per facet (and `version`).
    id_regexes: Vec<Option<Regex>>,
}

impl Placer {
    /// The given recipes first, then the built-in ones they do not cover, so
    /// a partner's collection this site lacks (CORDEX at a CMIP6-only site) still has a home.
    pub fn new(mut recipes: Vec<Arc<Recipe>>) -> Result<Placer> {
        for name in recipe::builtin_names() {
            let builtin = Recipe::load(name, Path::new("."), None)?;
            let covered = recipes.iter().any(|r| r.file.name == builtin.file.name || r.file.collection.id == builtin.file.collection.id);
            if !covered {
                recipes.push(Arc::new(builtin));
            }
        }
        let id_regexes = recipes.iter().map(|r| id_template_regex(&r.file.item.id)).collect();
        Ok(Placer { recipes, id_regexes })
    }

    /// The recipes a site config names (CVs are not needed to place items).
    pub fn for_config(config: &SiteConfig) -> Result<Placer> {
        let mut recipes: Vec<Arc<Recipe>> = Vec::new();
        for root in &config.roots {
            if !recipes.iter().any(|r| r.file.name == root.recipe || Some(r.file.name.as_str()) == Path::new(&root.recipe).file_stem().and_then(|s| s.to_str())) {
                recipes.push(Arc::new(Recipe::load(&root.recipe, Path::new("."), None)?));
            }
        }
        Placer::new(recipes)
    }

    /// Every recipe that can place an item (configured first, then built-ins).
    pub fn recipes(&self) -> &[Arc<Recipe>] {
        &self.recipes
    }

    pub fn recipe(&self, index: usize) -> &Arc<Recipe> {
        &self.recipes[index]
    }

    /// Places an item id; `collection` (the partner's, untrusted) only breaks ties.
    pub fn place(&self, id: &str, collection: Option<&str>) -> Result<Placement, String> {
        let (index, facets, version) = self.read_id(id, collection)?;
        let recipe = &self.recipes[index];
        let ctx = minijinja::context! { path => &facets };
        let base_id = recipe.render("item.base_id", &ctx).map_err(|e| format!("{e:#}"))?;
        let hierarchy = (0..recipe.hierarchy_len()).map(|i| recipe.render(&format!("hierarchy.{i}"), &ctx).map_err(|e| format!("{e:#}"))).collect::<Result<Vec<_>, _>>()?;
        if let Some(bad) = hierarchy.iter().find(|h| !recipe::is_safe_name(h)) {
            return Err(format!("catalogue level {bad:?} of {id} is not a safe directory name"));
        }
        Ok(Placement { recipe: index, hierarchy, base_id, version })
    }

    /// The checks of [`Placer::place`] without rendering anything (the
    /// harvest's test): which recipe takes the id, and its version.
    pub fn check(&self, id: &str, collection: Option<&str>) -> Result<(usize, Option<String>), String> {
        self.read_id(id, collection).map(|(index, _, version)| (index, version))
    }

    /// Reads an id back through the id template of the first recipe whose rules it satisfies.
    fn read_id(&self, id: &str, collection: Option<&str>) -> Result<(usize, Facets, Option<String>), String> {
        if !recipe::is_safe_name(id) {
            return Err(format!("id {id:?} is not a safe file name"));
        }
        let mut candidates: Vec<usize> = (0..self.recipes.len()).filter(|&i| self.recipes[i].is_valid_id(id)).collect();
        if candidates.is_empty() {
            return Err(format!("id {id:?} matches no collection's id rules"));
        }
        if let Some(c) = collection {
            candidates.sort_by_key(|&i| !self.recipes[i].file.collection.id.eq_ignore_ascii_case(c));
        }
        let mut last_error = String::new();
        for i in candidates {
            match self.captures(i, id) {
                Ok((facets, version)) => return Ok((i, facets, version)),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn captures(&self, index: usize, id: &str) -> Result<(Facets, Option<String>), String> {
        let recipe = &self.recipes[index];
        let name = &recipe.file.collection.id;
        let regex = self.id_regexes[index].as_ref().ok_or_else(|| format!("collection {name} cannot take partner items (its id template is not a plain pattern)"))?;
        let caps = regex.captures(id).ok_or_else(|| format!("id {id:?} does not read back through collection {name}'s id template"))?;
        let mut facets = BTreeMap::new();
        let mut version = None;
        for group in regex.capture_names().flatten() {
            let value = caps.name(group).map(|m| m.as_str().to_string()).unwrap_or_default();
            if group == "version" {
                version = Some(value);
            } else {
                facets.insert(group.trim_start_matches("f_").to_string(), value);
            }
        }
        Ok((facets, version))
    }
}

/// `{{ path.x }}.{{ path.y }}.v{{ version }}` → `^(?P<f_x>[^./]+)\.(?P<f_y>[^./]+)\.v(?P<version>[^./]+)$`;
/// None for templates with anything else in them (filters, logic).
fn id_template_regex(template: &str) -> Option<Regex> {
    let placeholder = Regex::new(r"\{\{\s*(?:path\.([A-Za-z_][A-Za-z0-9_]*)|(version))\s*\}\}").expect("valid regex");
    let mut out = String::from("^");
    let mut last = 0;
    let mut names = HashSet::new();
    for cap in placeholder.captures_iter(template) {
        let whole = cap.get(0)?;
        let literal = &template[last..whole.start()];
        if literal.contains("{{") || literal.contains("{%") || literal.contains("}}") {
            return None;
        }
        out.push_str(&regex::escape(literal));
        let group = match (cap.get(1), cap.get(2)) {
            (Some(f), _) => format!("f_{}", f.as_str()),
            _ => "version".to_string(),
        };
        if !names.insert(group.clone()) {
            return None;
        }
        out.push_str(&format!("(?P<{group}>[^./]+)"));
        last = whole.end();
    }
    let tail = &template[last..];
    if tail.contains("{{") || tail.contains("{%") {
        return None;
    }
    out.push_str(&regex::escape(tail));
    out.push('$');
    Regex::new(&out).ok()
}

/// `X.v20190710` → (`X`, `20190710`) when the id ends in a dated version.
pub fn split_version(id: &str) -> Option<(&str, &str)> {
    let (base, v) = id.rsplit_once(".v")?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then_some((base, v))
}

// ------------------------------------------------------------------- copies

/// One holder's copy of one asset.
#[derive(Debug, Clone)]
struct Copy {
    name: String,
    href: String,
}

/// The copies an asset lists: itself (primary) and its alternates.
fn asset_copies(asset: &Asset, default_name: &str) -> Vec<Copy> {
    let mut out = vec![Copy { name: alternate_name(&asset.additional_fields).unwrap_or(default_name).to_string(), href: asset.href.clone() }];
    if let Some(Value::Object(alts)) = asset.additional_fields.get("alternate") {
        for (key, alt) in alts {
            let Some(href) = alt.get("href").and_then(Value::as_str) else { continue };
            let name = alt.get("alternate:name").and_then(Value::as_str).unwrap_or(key);
            out.push(Copy { name: name.to_string(), href: href.to_string() });
        }
    }
    out
}

fn alternate_name(fields: &Map<String, Value>) -> Option<&str> {
    fields.get("alternate:name").and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Keeps only the copies `partner` may speak for (see the module rules) and
/// names every copy; returns the holders left. Assets left without a copy are removed.
fn filter_copies(item: &mut Item, partner: &str, site: &str, partners: &[String]) -> BTreeSet<String> {
    let allowed = |n: &str| n != site && (n == partner || !partners.iter().any(|p| p == n));
    let mut holders = BTreeSet::new();
    let keys: Vec<String> = item.assets.keys().cloned().collect();
    for key in keys {
        let asset = item.assets.get_mut(&key).expect("key");
        let copies: Vec<Copy> = asset_copies(asset, partner).into_iter().filter(|c| allowed(&c.name)).collect();
        let Some(primary) = copies.first().cloned() else {
            item.assets.shift_remove(&key);
            continue;
        };
        asset.href = primary.href.clone();
        asset.additional_fields.insert("alternate:name".into(), json!(primary.name));
        asset.additional_fields.remove("alternate");
        let mut alts = Map::new();
        for c in &copies[1..] {
            if c.name != primary.name && !alts.contains_key(&c.name) {
                alts.insert(c.name.clone(), json!({"href": c.href, "alternate:name": c.name}));
            }
        }
        if !alts.is_empty() {
            asset.additional_fields.insert("alternate".into(), Value::Object(alts));
        }
        holders.extend(copies.into_iter().map(|c| c.name));
    }
    holders
}

/// Adds `other`'s copies to `base` (same dataset): alternates on matching
/// assets, whole assets for files `base` lacks. Returns the disagreements.
fn absorb_copies(base: &mut Item, base_name: &str, other: &Item, other_name: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for (key, theirs) in &other.assets {
        match base.assets.get_mut(key) {
            Some(ours) => {
                for field in ["file:size", "file:checksum"] {
                    let (a, b) = (ours.additional_fields.get(field), theirs.additional_fields.get(field));
                    if let (Some(a), Some(b)) = (a, b) {
                        let comparable = field != "file:checksum" || same_multihash_kind(a, b);
                        if comparable && a != b {
                            notes.push(format!("file {key}: {field} {a} at {base_name}, {b} at {other_name}"));
                        }
                    }
                }
                let ours_name = alternate_name(&ours.additional_fields).unwrap_or(base_name).to_string();
                let alts = ours.additional_fields.entry("alternate").or_insert_with(|| Value::Object(Map::new()));
                if !alts.is_object() {
                    *alts = Value::Object(Map::new());
                }
                let alts = alts.as_object_mut().expect("object");
                for c in asset_copies(theirs, other_name) {
                    if c.name != ours_name && !alts.contains_key(&c.name) {
                        alts.insert(c.name.clone(), json!({"href": c.href, "alternate:name": c.name}));
                    }
                }
                if alts.is_empty() {
                    ours.additional_fields.remove("alternate");
                }
            }
            None => {
                if is_file_asset(theirs) {
                    notes.push(format!("file {key} is held at {other_name} but not at {base_name}"));
                }
                base.assets.insert(key.clone(), theirs.clone());
            }
        }
    }
    for (key, ours) in &base.assets {
        if is_file_asset(ours) && !other.assets.contains_key(key) && !notes.iter().any(|n| n.starts_with(&format!("file {key} "))) {
            notes.push(format!("file {key} is held at {base_name} but not at {other_name}"));
        }
    }
    notes
}

/// Multihashes of the same function (`1220…` is SHA-256) can be compared; others cannot.
fn same_multihash_kind(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => a.len() == b.len() && a.get(..4) == b.get(..4),
        _ => false,
    }
}

pub fn is_file_asset(asset: &Asset) -> bool {
    let t = asset.r#type.as_deref().unwrap_or("").to_ascii_lowercase();
    t.contains("netcdf") || asset.additional_fields.contains_key("file:size") || href_file_name(&asset.href).is_some_and(|n| n.to_ascii_lowercase().ends_with(".nc"))
}

/// The last path segment of an http(s) href, if it looks like a file name.
pub fn href_file_name(href: &str) -> Option<String> {
    let url = url::Url::parse(href).ok()?;
    let last = url.path_segments()?.next_back()?;
    let name = percent_decode(last);
    (recipe::is_safe_name(&name) && name.contains('.')).then_some(name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Properties whose values may legitimately differ between two sites' copies.
const SITE_SPECIFIC: &[&str] = &["latest", "retracted", "created", "updated", "access", "size", "datetime", "title", "description"];

/// Properties both items give with different values (this site's are kept).
fn property_conflicts(ours: &Item, theirs: &Item) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&ours.properties, &theirs.properties);
    if let (Some(x), Some(y)) = (a.start_datetime, b.start_datetime) {
        if x != y {
            out.push(format!("start_datetime {} vs {}", x.to_rfc3339(), y.to_rfc3339()));
        }
    }
    if let (Some(x), Some(y)) = (a.end_datetime, b.end_datetime) {
        if x != y {
            out.push(format!("end_datetime {} vs {}", x.to_rfc3339(), y.to_rfc3339()));
        }
    }
    for (key, x) in &a.additional_fields {
        if SITE_SPECIFIC.contains(&key.as_str()) || key.starts_with("fedstac:") {
            continue;
        }
        if let Some(y) = b.additional_fields.get(key) {
            if x != y {
                out.push(format!("{key} {x} vs {y}"));
            }
        }
    }
    out
}

fn is_retracted(item: &Item) -> bool {
    item.properties.additional_fields.get("retracted").and_then(Value::as_bool).unwrap_or(false)
}

// --------------------------------------------------------------------- merge

/// What the merge did, for the build summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MergeSummary {
    pub partners: Vec<PartnerStats>,
    /// Items of this site that list partner copies too.
    pub merged: usize,
    /// Items held only at partners.
    pub partner_only: usize,
    /// This site's items that a partner's newer version superseded.
    pub superseded: usize,
    /// Datasets whose copies disagree, one line each.
    pub conflicts: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PartnerStats {
    pub name: String,
    /// False when the partner has no mirror yet (never harvested).
    pub harvested: bool,
    pub items: usize,
    /// Items that name no copy this partner may speak for (our own data reflected back).
    pub reflections: usize,
    /// Mirrored items this build could not place (the recipes changed since the harvest).
    pub unplaced: usize,
}

/// A partner's mirrored item, by position in its mirror file.
#[derive(Debug, Clone)]
struct PartnerRef {
    partner: usize,
    offset: u64,
    len: usize,
    recipe: usize,
}

struct PartnerMirror {
    name: String,
    file: std::fs::File,
}

/// Merges partner items into a build. Partner items stay on disk (in their
/// mirrors) and are read when their dataset is written; only a small index is in memory.
pub struct Merger {
    site: String,
    partner_names: Vec<String>,
    mirrors: Vec<PartnerMirror>,
    placer: Placer,
    by_id: HashMap<String, Vec<PartnerRef>>,
    /// base id → (version, retracted) of the partners' items.
    partner_versions: HashMap<String, Vec<(String, bool)>>,
    /// base id → this site's versions, for bases partners also hold.
    local_versions: HashMap<String, Vec<(String, bool)>>,
    consumed: HashSet<String>,
    summary: MergeSummary,
    /// Partner-only ids still to write, in order.
    pending: Option<std::vec::IntoIter<String>>,
}

impl Merger {
    /// Indexes the mirrors of the config's partners. `local` are the recipes
    /// this build uses (partner items of their collections join them).
    pub fn open(config: &SiteConfig, local: &[Arc<Recipe>]) -> Result<Merger> {
        let mut recipes: Vec<Arc<Recipe>> = Vec::new();
        for r in local {
            if !recipes.iter().any(|x| Arc::ptr_eq(x, r)) {
                recipes.push(r.clone());
            }
        }
        let placer = Placer::new(recipes)?;
        let partner_names: Vec<String> = config.partners.iter().map(|p| p.name.clone()).collect();
        let mut merger = Merger {
            site: config.site.name.clone(),
            partner_names: partner_names.clone(),
            mirrors: Vec::new(),
            placer,
            by_id: HashMap::new(),
            partner_versions: HashMap::new(),
            local_versions: HashMap::new(),
            consumed: HashSet::new(),
            summary: MergeSummary::default(),
            pending: None,
        };
        for partner in &config.partners {
            let path = mirror::mirror_file(&config.cache, &partner.name);
            let mut stats = PartnerStats { name: partner.name.clone(), ..Default::default() };
            let Some(reader) = MirrorReader::open(&path)? else {
                tracing::warn!("partner {} has not been harvested yet (no {})", partner.name, path.display());
                merger.summary.partners.push(stats);
                continue;
            };
            stats.harvested = true;
            let index = merger.mirrors.len();
            for entry in reader.items() {
                let (offset, len, item) = entry?;
                stats.items += 1;
                let mut item: Item = match serde_json::from_value(item) {
                    Ok(i) => i,
                    Err(_) => {
                        stats.unplaced += 1;
                        continue;
                    }
                };
                let placement = match merger.placer.place(&item.id, item.collection.as_deref()) {
                    Ok(p) => p,
                    Err(why) => {
                        tracing::warn!("{}: mirrored item of {} cannot be placed: {why}", item.id, partner.name);
                        stats.unplaced += 1;
                        continue;
                    }
                };
                if filter_copies(&mut item, &partner.name, &merger.site, &partner_names).is_empty() {
                    stats.reflections += 1;
                    continue;
                }
                if let Some(v) = &placement.version {
                    merger.partner_versions.entry(placement.base_id.clone()).or_default().push((v.clone(), is_retracted(&item)));
                }
                merger.by_id.entry(item.id.clone()).or_default().push(PartnerRef { partner: index, offset, len, recipe: placement.recipe });
            }
            merger.mirrors.push(PartnerMirror { name: partner.name.clone(), file: reader.into_file() });
            merger.summary.partners.push(stats);
        }
        Ok(merger)
    }

    pub fn has_partners(&self) -> bool {
        !self.by_id.is_empty()
    }

    /// Reads one partner item back and keeps the copies that partner may speak for.
    fn load(&mut self, r: &PartnerRef) -> Result<Item> {
        let m = &mut self.mirrors[r.partner];
        m.file.seek(SeekFrom::Start(r.offset))?;
        let mut buf = vec![0u8; r.len];
        m.file.read_exact(&mut buf)?;
        let value = mirror::item_of_line(&buf).with_context(|| format!("re-reading the mirror of {}", m.name))?;
        let mut item: Item = serde_json::from_value(value)?;
        let name = m.name.clone();
        filter_copies(&mut item, &name, &self.site, &self.partner_names);
        Ok(item)
    }

    /// `latest` for a version of `base`: the newest version nobody retracted, here or at a partner.
    fn is_latest(&self, base: &str, version: &str, retracted: bool, local: &[(String, bool)]) -> bool {
        if retracted {
            return false;
        }
        let all: Vec<&(String, bool)> = local.iter().chain(self.partner_versions.get(base).into_iter().flatten()).collect();
        let withdrawn: HashSet<&str> = all.iter().filter(|(_, r)| *r).map(|(v, _)| v.as_str()).collect();
        let newest = all.iter().map(|(v, _)| v.as_str()).filter(|v| !withdrawn.contains(v)).max();
        newest.is_none_or(|n| version >= n)
    }

    /// Applies the rules to this site's items of one dataset (all its local
    /// versions), before they are written: partner copies, held_at, latest, retracted.
    pub fn merge_local(&mut self, items: &mut [DatasetItem], warnings: &mut Vec<String>) -> Result<()> {
        let site = self.site.clone();
        let mut local: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for d in items.iter() {
            if let Some((base, v)) = split_version(&d.item.id) {
                local.entry(base.to_string()).or_default().push((v.to_string(), is_retracted(&d.item)));
            }
        }
        for (base, versions) in &local {
            if self.partner_versions.contains_key(base) {
                self.local_versions.entry(base.clone()).or_default().extend(versions.iter().cloned());
            }
        }
        for d in items.iter_mut() {
            let item = &mut d.item;
            let mut held: BTreeSet<String> = BTreeSet::from([site.clone()]);
            for asset in item.assets.values_mut() {
                asset.additional_fields.entry("alternate:name").or_insert_with(|| json!(site));
            }
            let refs = self.by_id.get(&item.id).cloned().unwrap_or_default();
            let mut retracted = is_retracted(item);
            let mut notes = Vec::new();
            for r in &refs {
                let theirs = self.load(r)?;
                let name = self.mirrors[r.partner].name.clone();
                notes.extend(property_conflicts(item, &theirs).into_iter().map(|c| format!("{name} disagrees on {c}")));
                notes.extend(absorb_copies(item, &site, &theirs, &name));
                retracted |= is_retracted(&theirs);
                held.extend(theirs.assets.values().flat_map(|a| asset_copies(a, &name)).map(|c| c.name));
            }
            if !refs.is_empty() {
                self.consumed.insert(item.id.clone());
                self.summary.merged += 1;
            }
            if !notes.is_empty() {
                let line = format!("{}: {}; this site's values are kept", item.id, notes.join("; "));
                warnings.push(format!("conflict: {line}"));
                self.summary.conflicts.push(line);
            }
            if let Some((base, version)) = split_version(&item.id) {
                let versions = local.get(base).map(Vec::as_slice).unwrap_or(&[]);
                let was_latest = item.properties.additional_fields.get("latest") == Some(&Value::Bool(true));
                let latest = self.is_latest(base, version, retracted, versions);
                if was_latest && !latest && !retracted {
                    self.summary.superseded += 1;
                }
                item.properties.additional_fields.insert("latest".into(), json!(latest));
            }
            item.properties.additional_fields.insert("retracted".into(), json!(retracted));
            item.properties.additional_fields.insert(HELD_AT.into(), json!(held));
            if item.assets.values().any(|a| a.additional_fields.contains_key("alternate")) && !item.extensions.iter().any(|e| e == ALTERNATE_EXTENSION) {
                item.extensions.push(ALTERNATE_EXTENSION.into());
            }
        }
        Ok(())
    }

    /// The next dataset held only at partners (in id order), with the recipe
    /// whose collection takes it. Call after every local item went through [`Merger::merge_local`].
    pub fn next_partner_only(&mut self, warnings: &mut Vec<String>) -> Option<Result<(Arc<Recipe>, DatasetItem)>> {
        if self.pending.is_none() {
            let mut ids: Vec<String> = self.by_id.keys().filter(|id| !self.consumed.contains(*id)).cloned().collect();
            ids.sort();
            self.pending = Some(ids.into_iter());
        }
        let id = self.pending.as_mut().expect("set").next()?;
        Some(self.partner_only(&id, warnings))
    }

    fn partner_only(&mut self, id: &str, warnings: &mut Vec<String>) -> Result<(Arc<Recipe>, DatasetItem)> {
        let refs = self.by_id.get(id).cloned().ok_or_else(|| anyhow!("{id} vanished from the index"))?;
        let first = &refs[0];
        let first_name = self.mirrors[first.partner].name.clone();
        let mut item = self.load(first)?;
        let mut held: BTreeSet<String> = item.assets.values().flat_map(|a| asset_copies(a, &first_name)).map(|c| c.name).collect();
        let mut retracted = is_retracted(&item);
        let mut notes = Vec::new();
        for r in &refs[1..] {
            let theirs = self.load(r)?;
            let name = self.mirrors[r.partner].name.clone();
            notes.extend(property_conflicts(&item, &theirs).into_iter().map(|c| format!("{name} disagrees with {first_name} on {c}")));
            notes.extend(absorb_copies(&mut item, &first_name, &theirs, &name));
            retracted |= is_retracted(&theirs);
            held.extend(theirs.assets.values().flat_map(|a| asset_copies(a, &name)).map(|c| c.name));
        }
        if !notes.is_empty() {
            let line = format!("{id}: {}; {first_name}'s values are kept", notes.join("; "));
            warnings.push(format!("conflict: {line}"));
            self.summary.conflicts.push(line);
        }
        let recipe = self.placer.recipe(first.recipe).clone();
        let placement = self.placer.place(id, Some(&recipe.file.collection.id)).map_err(|e| anyhow!(e))?;
        if let Some((base, version)) = split_version(id) {
            let local = self.local_versions.get(base).cloned().unwrap_or_default();
            let latest = self.is_latest(base, version, retracted, &local);
            item.properties.additional_fields.insert("latest".into(), json!(latest));
        }
        item.properties.additional_fields.insert("retracted".into(), json!(retracted));
        item.properties.additional_fields.insert(HELD_AT.into(), json!(held));
        item.collection = Some(recipe.file.collection.id.clone());
        if item.assets.values().any(|a| a.additional_fields.contains_key("alternate")) && !item.extensions.iter().any(|e| e == ALTERNATE_EXTENSION) {
            item.extensions.push(ALTERNATE_EXTENSION.into());
        }
        self.summary.partner_only += 1;
        Ok((recipe, DatasetItem { item, hierarchy: placement.hierarchy, files: Vec::new() }))
    }

    pub fn summary(&self) -> MergeSummary {
        self.summary.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_templates_read_back() {
        let placer = Placer::new(Vec::new()).unwrap();
        let p = placer.place("CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr.v20191122", Some("cmip6")).unwrap();
        assert_eq!(p.base_id, "CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr");
        assert_eq!(p.version.as_deref(), Some("20191122"));
        assert_eq!(p.hierarchy[..3], ["ScenarioMIP", "IPSL", "IPSL-CM6A-LR"]);
        let p = placer.place("cordex.output.EUR-11.IPSL.MOHC-HadGEM2-ES.rcp85.r1i1p1.IPSL-WRF381P.v1.day.psl.v20190212", None).unwrap();
        assert_eq!(placer.recipe(p.recipe).file.collection.id, "CORDEX");
        assert_eq!(p.version.as_deref(), Some("20190212"));
        for bad in ["../CMIP6.a.b.c.d.e.f.g.h.v20190101", "CMIP6.a.b.c.d.e.f.g.h.v2019", "CMIP6/a.b.c.d.e.f.g.h.v20190101", "x", ""] {
            assert!(placer.place(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_split_off_ids() {
        assert_eq!(split_version("CMIP6.a.v20190101"), Some(("CMIP6.a", "20190101")));
        assert_eq!(split_version("cordex.x.v1.day.psl.v20190212"), Some(("cordex.x.v1.day.psl", "20190212")));
        assert_eq!(split_version("CMIP6.a.vx"), None);
    }

    #[test]
    fn file_names_come_from_hrefs() {
        assert_eq!(href_file_name("https://a.b/c/tas_x.nc").as_deref(), Some("tas_x.nc"));
        assert_eq!(href_file_name("https://a.b/c/tas%5Fx.nc").as_deref(), Some("tas_x.nc"));
        assert_eq!(href_file_name("https://a.b/file-manager?x=1"), None);
        assert_eq!(href_file_name("https://a.b/c/..%2F..%2Fx.nc"), None);
    }

    fn item_with(assets: Value) -> Item {
        serde_json::from_value(json!({"type": "Feature", "stac_version": "1.1.0", "id": "CMIP6.a.b.c.d.e.f.g.h.v20190101", "geometry": null, "properties": {"datetime": "2020-01-01T00:00:00Z"}, "links": [], "assets": assets})).unwrap()
    }

    #[test]
    fn partners_speak_only_for_copies_they_may() {
        let mut item = item_with(json!({
            "a.nc": {"href": "https://b/a.nc", "alternate:name": "dkrz", "alternate": {"ceda": {"href": "https://c/a.nc", "alternate:name": "ceda"}, "esgf": {"href": "https://e/a.nc"}}},
            "b.nc": {"href": "https://c/b.nc", "alternate:name": "ceda"},
            "c.nc": {"href": "https://x/c.nc", "alternate:name": "other-partner"},
            "d.nc": {"href": "https://b/d.nc"}
        }));
        let held = filter_copies(&mut item, "dkrz", "ceda", &["dkrz".into(), "other-partner".into()]);
        assert_eq!(held, BTreeSet::from(["dkrz".to_string(), "esgf".to_string()]));
        assert_eq!(item.assets.keys().collect::<Vec<_>>(), ["a.nc", "d.nc"]);
        assert_eq!(item.assets["a.nc"].additional_fields["alternate"], json!({"esgf": {"href": "https://e/a.nc", "alternate:name": "esgf"}}));
        assert_eq!(item.assets["d.nc"].additional_fields["alternate:name"], "dkrz");
    }

    #[test]
    fn copies_join_and_disagreements_are_reported() {
        let mut ours = item_with(json!({"a.nc": {"href": "https://c/a.nc", "alternate:name": "ceda", "file:size": 1}, "b.nc": {"href": "https://c/b.nc", "file:size": 2}}));
        let theirs = item_with(json!({"a.nc": {"href": "https://d/a.nc", "alternate:name": "dkrz", "file:size": 5}, "c.nc": {"href": "https://d/c.nc", "file:size": 3}}));
        let notes = absorb_copies(&mut ours, "ceda", &theirs, "dkrz");
        assert_eq!(ours.assets["a.nc"].href, "https://c/a.nc");
        assert_eq!(ours.assets["a.nc"].additional_fields["alternate"]["dkrz"]["href"], "https://d/a.nc");
        assert!(ours.assets.contains_key("c.nc"));
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("file:size 1 at ceda, 5 at dkrz"), "{notes:?}");
    }
}
