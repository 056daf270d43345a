//! Recipes: the declarative description of one archive layout. A recipe says
//! which files belong (include/exclude), how the path splits into facets, how
//! version directories resolve, what to read from each file, and how items,
//! properties and asset hrefs are rendered (minijinja templates). Nothing about
//! CMIP6 lives in Rust beyond what a recipe can override.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use minijinja::Environment;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::read::HeaderRequest;

/// Recipes shipped with fedstac, usable by name from a site config.
const BUILTIN: &[(&str, &str)] = &[
    ("cmip6", include_str!("../recipes/cmip6.yaml")),
    ("cordex", include_str!("../recipes/cordex.yaml")),
];

/// Names of the recipes built into fedstac.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

/// The recipe file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub collection: CollectionSpec,
    #[serde(default)]
    pub extensions: Vec<String>,
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub path: String,
    #[serde(default)]
    pub facets: BTreeMap<String, String>,
    pub version: VersionSpec,
    pub read: ReadSpec,
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Path facets that must equal the same-named global attribute (warned, not rejected).
    #[serde(default)]
    pub cross_checks: Vec<String>,
    /// Global attributes checked against a CV file as found in the files
    /// (before any template normalises them); warned, not rejected.
    #[serde(default)]
    pub attribute_cvs: BTreeMap<String, String>,
    pub item: ItemSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub id: String,
    pub title: String,
    pub description: String,
    pub license: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Properties summarised in the collection (and shown as facets on its page).
    #[serde(default)]
    pub summaries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// The path facet that holds the version directory.
    pub facet: String,
    /// A versioned directory; its `version` capture group is the version.
    pub canonical: String,
    #[serde(default)]
    pub aliases: Vec<AliasSpec>,
}

/// A directory that may duplicate a versioned one (`latest`, `files/dYYYYMMDD`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasSpec {
    pub pattern: String,
    /// Global attribute whose newest date gives the version when nothing else does.
    #[serde(default)]
    pub from_attribute: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadSpec {
    pub global_attributes: Vec<String>,
    #[serde(default)]
    pub variable: Option<String>,
    #[serde(default)]
    pub variable_attributes: Vec<String>,
    #[serde(default = "default_time")]
    pub time: Vec<String>,
    #[serde(default = "default_lat")]
    pub lat: Vec<String>,
    #[serde(default = "default_lon")]
    pub lon: Vec<String>,
}

fn default_time() -> Vec<String> {
    vec!["time".into()]
}
fn default_lat() -> Vec<String> {
    vec!["lat".into(), "latitude".into()]
}
fn default_lon() -> Vec<String> {
    vec!["lon".into(), "longitude".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub id: String,
    pub base_id: String,
    #[serde(default)]
    pub title: Option<String>,
    /// Sub-catalogue levels between the collection and its items.
    #[serde(default)]
    pub hierarchy: Vec<String>,
    #[serde(default)]
    pub cite_as: Option<String>,
    /// Regex an id must match; anything else is refused (ids become file names).
    #[serde(default = "default_id_pattern")]
    pub id_pattern: String,
    #[serde(default)]
    pub properties: indexmap::IndexMap<String, PropertySpec>,
    pub asset: AssetSpec,
}

fn default_id_pattern() -> String {
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    pub href: String,
    #[serde(default)]
    pub properties: indexmap::IndexMap<String, PropertySpec>,
}

/// A property: a template, or a template with a type and checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertySpec {
    Template(String),
    Full(FullPropertySpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullPropertySpec {
    pub value: String,
    #[serde(default, rename = "type")]
    pub kind: PropertyKind,
    /// CV file (in the site's cv_dir) whose values are allowed; warned, not rejected.
    #[serde(default)]
    pub cv: Option<String>,
    /// A value not matching is dropped with a warning (keeps items schema-valid).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Emit even when empty (with a warning), because a schema requires it.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PropertyKind {
    #[default]
    String,
    /// Whitespace-separated words become an array.
    List,
    Integer,
    Number,
    Boolean,
}

/// A compiled recipe, ready to match paths and render items.
pub struct Recipe {
    pub file: RecipeFile,
    include: GlobSet,
    exclude: GlobSet,
    path_regex: Regex,
    facet_names: Vec<String>,
    canonical: Regex,
    aliases: Vec<(Regex, Option<String>)>,
    id_pattern: Regex,
    env: Environment<'static>,
    properties: Vec<CompiledProperty>,
    asset_properties: Vec<CompiledProperty>,
    cvs: HashMap<String, CvCheck>,
}

struct CompiledProperty {
    name: String,
    template: String,
    kind: PropertyKind,
    cv: Option<String>,
    pattern: Option<Regex>,
    required: bool,
}

/// Allowed values of one controlled vocabulary.
struct CvCheck {
    file: String,
    values: std::collections::HashSet<String>,
}

/// Why a path was not taken by a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathRejection {
    NotIncluded,
    Excluded,
    NotInLayout,
}

impl std::fmt::Display for PathRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathRejection::NotIncluded => "not matched by include patterns",
            PathRejection::Excluded => "matched an exclude pattern",
            PathRejection::NotInLayout => "path does not fit the recipe's DRS layout",
        })
    }
}

/// How a version directory resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionDir {
    /// `v20190710` → "20190710".
    Canonical(String),
    /// An alias (index into the recipe's aliases) with the version it names, if any.
    Alias { alias: usize, version: Option<String> },
}

/// A rendered property value, or the warning explaining why it is absent or suspect.
pub struct RenderedProperties {
    pub values: Vec<(String, Value)>,
    pub warnings: Vec<String>,
}

impl Recipe {
    /// Loads a recipe by built-in name or from a YAML file; CVs come from `cv_dir` when given.
    pub fn load(name_or_path: &str, base: &Path, cv_dir: Option<&Path>) -> Result<Recipe> {
        let (source, origin) = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, text)) => (text.to_string(), format!("built-in recipe {name_or_path:?}")),
            None => {
                let path: PathBuf = base.join(name_or_path);
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading recipe {}", path.display()))?;
                (text, path.display().to_string())
            }
        };
        let file: RecipeFile = serde_yaml_ng::from_str(&source).with_context(|| format!("parsing {origin}"))?;
        Recipe::compile(file, cv_dir).with_context(|| format!("in {origin}"))
    }

    pub fn compile(file: RecipeFile, cv_dir: Option<&Path>) -> Result<Recipe> {
        let globs = |patterns: &[String]| -> Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(Glob::new(p).with_context(|| format!("glob {p:?}"))?);
            }
            Ok(b.build()?)
        };
        let (path_regex, facet_names) = compile_path_pattern(&file.path, &file.facets)?;
        if !facet_names.contains(&file.version.facet) {
            bail!("version facet {:?} is not in the path pattern", file.version.facet);
        }
        let anchored = |p: &str| Regex::new(&format!("^(?:{p})$")).with_context(|| format!("regex {p:?}"));
        let canonical = anchored(&file.version.canonical)?;
        let aliases = file
            .version
            .aliases
            .iter()
            .map(|a| Ok((anchored(&a.pattern)?, a.from_attribute.clone())))
            .collect::<Result<Vec<_>>>()?;

        // Every CV of cv_dir, for `cv:` checks and the `cv(file, key)` template function.
        let vocabularies: std::sync::Arc<BTreeMap<String, Value>> = std::sync::Arc::new(match cv_dir {
            Some(dir) => load_cv_dir(dir)?,
            None => BTreeMap::new(),
        });
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        let lookup = vocabularies.clone();
        env.add_function("cv", move |file: String, key: String| -> minijinja::Value {
            cv_entries(lookup.get(&file)).and_then(|mut entries| entries.remove(&key)).map(|v| minijinja::Value::from_serialize(&v)).unwrap_or(minijinja::Value::UNDEFINED)
        });
        env.add_filter("resolution_bin", resolution_bin);
        env.add_function("uuid3_url", |name: String| uuid::Uuid::new_v3(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string());
        let mut add = |name: String, source: &str| -> Result<()> {
            env.add_template_owned(name.clone(), source.to_string()).with_context(|| format!("template {name}"))
        };
        add("item.id".into(), &file.item.id)?;
        add("item.base_id".into(), &file.item.base_id)?;
        if let Some(t) = &file.item.title {
            add("item.title".into(), t)?;
        }
        if let Some(t) = &file.item.cite_as {
            add("item.cite_as".into(), t)?;
        }
        add("asset.href".into(), &file.item.asset.href)?;
        if let Some(v) = &file.read.variable {
            add("read.variable".into(), v)?;
        }
        for (i, level) in file.item.hierarchy.iter().enumerate() {
            add(format!("hierarchy.{i}"), level)?;
        }
        let mut compile_props = |prefix: &str, specs: &indexmap::IndexMap<String, PropertySpec>| -> Result<Vec<CompiledProperty>> {
            specs
                .iter()
                .map(|(name, spec)| {
                    let full = match spec {
                        PropertySpec::Template(t) => FullPropertySpec { value: t.clone(), kind: PropertyKind::String, cv: None, pattern: None, required: false },
                        PropertySpec::Full(f) => f.clone(),
                    };
                    let template = format!("{prefix}.{name}");
                    add(template.clone(), &full.value)?;
                    Ok(CompiledProperty {
                        name: name.clone(),
                        template,
                        kind: full.kind,
                        cv: full.cv,
                        pattern: full.pattern.as_deref().map(anchored).transpose()?,
                        required: full.required,
                    })
                })
                .collect()
        };
        let properties = compile_props("property", &file.item.properties)?;
        let asset_properties = compile_props("asset_property", &file.item.asset.properties)?;

        let mut cvs = HashMap::new();
        let named = properties.iter().chain(&asset_properties).filter_map(|p| p.cv.as_ref()).chain(file.attribute_cvs.values());
        for cv in named {
            if let Some(dir) = cv_dir {
                let entries = cv_entries(vocabularies.get(cv)).with_context(|| format!("CV {cv} is not in {}", dir.display()))?;
                let values = entries.keys().cloned().collect();
                cvs.insert(cv.clone(), CvCheck { file: cv.clone(), values });
            }
        }

        Ok(Recipe {
            include: globs(&file.include)?,
            exclude: globs(&file.exclude)?,
            path_regex,
            facet_names,
            canonical,
            aliases,
            id_pattern: anchored(file.item.id_pattern.trim_start_matches('^').trim_end_matches('$'))?,
            env,
            properties,
            asset_properties,
            cvs,
            file,
        })
    }

    pub fn header_request(&self, facets: &BTreeMap<String, String>) -> HeaderRequest {
        let variable = self.render("read.variable", &minijinja::context! { path => facets }).ok().filter(|v| !v.is_empty());
        HeaderRequest {
            global_attributes: self.file.read.global_attributes.clone(),
            variable,
            variable_attributes: self.file.read.variable_attributes.clone(),
            time: self.file.read.time.clone(),
            lat: self.file.read.lat.clone(),
            lon: self.file.read.lon.clone(),
        }
    }

    /// Splits a root-relative path (with `/`) into facets, or says why not.
    pub fn match_path(&self, rel_path: &str) -> Result<BTreeMap<String, String>, PathRejection> {
        if !self.include.is_match(rel_path) {
            return Err(PathRejection::NotIncluded);
        }
        if self.exclude.is_match(rel_path) {
            return Err(PathRejection::Excluded);
        }
        let caps = self.path_regex.captures(rel_path).ok_or(PathRejection::NotInLayout)?;
        let mut facets = BTreeMap::new();
        for name in &self.facet_names {
            let value = caps.name(name).map(|m| m.as_str()).unwrap_or_default();
            // A facet is a file-name component or a few of them; never a relative step.
            if value.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
                return Err(PathRejection::NotInLayout);
            }
            facets.insert(name.clone(), value.to_string());
        }
        Ok(facets)
    }

    pub fn version_facet(&self) -> &str {
        &self.file.version.facet
    }

    pub fn classify_version(&self, dir: &str) -> Option<VersionDir> {
        if let Some(c) = self.canonical.captures(dir) {
            return Some(VersionDir::Canonical(c.name("version").map_or(dir, |m| m.as_str()).to_string()));
        }
        self.aliases.iter().enumerate().find_map(|(i, (re, _))| {
            re.captures(dir).map(|c| VersionDir::Alias { alias: i, version: c.name("version").map(|m| m.as_str().to_string()) })
        })
    }

    /// Warnings for global attributes whose words are not in their CV.
    pub fn check_attribute_cvs(&self, attributes: &BTreeMap<String, Value>) -> Vec<String> {
        let mut out = Vec::new();
        for (attr, cv_file) in &self.file.attribute_cvs {
            let (Some(cv), Some(Value::String(value))) = (self.cvs.get(cv_file), attributes.get(attr)) else { continue };
            for word in value.split_whitespace() {
                if !cv.values.contains(word) && !cv.values.contains(value.as_str()) {
                    out.push(format!("attribute {attr}={value:?} is not in the controlled vocabulary {cv_file}"));
                    break;
                }
            }
        }
        out
    }

    pub fn alias_attribute(&self, alias: usize) -> Option<&str> {
        self.aliases.get(alias).and_then(|(_, a)| a.as_deref())
    }

    pub fn is_valid_id(&self, id: &str) -> bool {
        self.id_pattern.is_match(id) && is_safe_name(id)
    }

    /// Renders a named template of this recipe.
    pub fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String> {
        let template = self.env.get_template(name).map_err(|e| anyhow!("template {name}: {e}"))?;
        Ok(template.render(ctx).map_err(|e| anyhow!("rendering {name}: {e}"))?.trim().to_string())
    }

    pub fn has_template(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    pub fn hierarchy_len(&self) -> usize {
        self.file.item.hierarchy.len()
    }

    pub fn render_properties(&self, ctx: &minijinja::Value) -> Result<RenderedProperties> {
        self.render_property_list(&self.properties, ctx)
    }

    pub fn render_asset_properties(&self, ctx: &minijinja::Value) -> Result<RenderedProperties> {
        self.render_property_list(&self.asset_properties, ctx)
    }

    fn render_property_list(&self, list: &[CompiledProperty], ctx: &minijinja::Value) -> Result<RenderedProperties> {
        let mut out = RenderedProperties { values: Vec::new(), warnings: Vec::new() };
        for p in list {
            let text = self.render(&p.template, ctx)?;
            if text.is_empty() {
                if p.required {
                    out.warnings.push(format!("{}: no value (required, written empty)", p.name));
                    out.values.push((p.name.clone(), Value::String(String::new())));
                }
                continue;
            }
            if let Some(re) = &p.pattern {
                if !re.is_match(&text) {
                    out.warnings.push(format!("{}: {text:?} does not match {:?}; left out", p.name, re.as_str()));
                    continue;
                }
            }
            let words: Vec<&str> = match p.kind {
                PropertyKind::List => text.split_whitespace().collect(),
                _ => vec![text.as_str()],
            };
            if let Some(cv) = p.cv.as_ref().and_then(|c| self.cvs.get(c)) {
                for w in &words {
                    if !cv.values.contains(*w) {
                        out.warnings.push(format!("{}: {w:?} is not in the controlled vocabulary {}", p.name, cv.file));
                    }
                }
            }
            let value = match p.kind {
                PropertyKind::String => Value::String(text.clone()),
                PropertyKind::List => Value::Array(words.iter().map(|w| Value::String(w.to_string())).collect()),
                PropertyKind::Integer => match text.parse::<i64>() {
                    Ok(n) => n.into(),
                    Err(_) => {
                        out.warnings.push(format!("{}: {text:?} is not an integer; left out", p.name));
                        continue;
                    }
                },
                PropertyKind::Number => match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => {
                        out.warnings.push(format!("{}: {text:?} is not a number; left out", p.name));
                        continue;
                    }
                },
                PropertyKind::Boolean => Value::Bool(matches!(text.as_str(), "true" | "True" | "1" | "yes")),
            };
            out.values.push((p.name.clone(), value));
        }
        Ok(out)
    }
}

/// A name usable as one path component of the site: no separators, no
/// leading dot, nothing a shell or URL would need to escape.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `{name}` placeholders become named groups (regex from `facets`, default one path component).
fn compile_path_pattern(pattern: &str, facets: &BTreeMap<String, String>) -> Result<(Regex, Vec<String>)> {
    let placeholder = Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("valid regex");
    let mut regex = String::from("^");
    let mut names = Vec::new();
    let mut last = 0;
    for cap in placeholder.captures_iter(pattern) {
        let whole = cap.get(0).expect("group 0");
        let name = cap[1].to_string();
        if names.contains(&name) {
            bail!("facet {{{name}}} appears twice in path pattern {pattern:?}");
        }
        regex.push_str(&regex::escape(&pattern[last..whole.start()]));
        let sub = facets.get(&name).map(String::as_str).unwrap_or("[^/]+");
        regex.push_str(&format!("(?P<{name}>{sub})"));
        names.push(name);
        last = whole.end();
    }
    regex.push_str(&regex::escape(&pattern[last..]));
    regex.push('$');
    for name in facets.keys() {
        if !names.contains(name) {
            bail!("facet {name:?} has a regex but is not in path pattern {pattern:?}");
        }
    }
    Ok((Regex::new(&regex).with_context(|| format!("path pattern {pattern:?}"))?, names))
}

/// Reads every WCRP CV file (`*.json`) in a directory, by file name.
fn load_cv_dir(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading CV directory {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading CV {}", path.display()))?;
            let json: Value = serde_json::from_str(&text).with_context(|| format!("parsing CV {}", path.display()))?;
            out.insert(path.file_name().expect("file").to_string_lossy().into_owned(), json);
        }
    }
    Ok(out)
}

/// A CV's entries: its main (non-metadata) member, as key → description.
/// Lists (nominal_resolution, table_id) become keys with null descriptions.
fn cv_entries(cv: Option<&Value>) -> Option<BTreeMap<String, Value>> {
    let entry = cv?.as_object()?.iter().find(|(k, _)| k.as_str() != "version_metadata")?.1;
    match entry {
        Value::Object(o) => Some(o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Value::Array(a) => Some(a.iter().filter_map(|v| v.as_str()).map(|k| (k.to_string(), Value::Null)).collect()),
        _ => None,
    }
}

/// CMIP6's nominal-resolution binning (WCRP "nominal_resolution" guidance):
/// a resolution in km is reported as the bin whose range contains it, so
/// "200 km" is "250 km". Values that are not `<number> km` pass through.
fn resolution_bin(value: String) -> String {
    const BINS: &[(f64, &str)] = &[
        (0.72, "0.5 km"),
        (1.6, "1 km"),
        (3.6, "2.5 km"),
        (7.2, "5 km"),
        (16.0, "10 km"),
        (36.0, "25 km"),
        (72.0, "50 km"),
        (160.0, "100 km"),
        (360.0, "250 km"),
        (720.0, "500 km"),
        (1600.0, "1000 km"),
        (3600.0, "2500 km"),
        (7200.0, "5000 km"),
        (f64::INFINITY, "10000 km"),
    ];
    let Some(km) = value.trim().strip_suffix("km").and_then(|n| n.trim().parse::<f64>().ok()) else {
        return value;
    };
    BINS.iter().find(|(upper, _)| km < *upper).map(|(_, bin)| bin.to_string()).unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_bins_follow_cmip6_ranges() {
        assert_eq!(resolution_bin("200 km".into()), "250 km");
        assert_eq!(resolution_bin("100 km".into()), "100 km");
        assert_eq!(resolution_bin("250 km".into()), "250 km");
        assert_eq!(resolution_bin("1x1 degree".into()), "1x1 degree");
    }

    #[test]
    fn builtin_recipes_compile_and_match_cmip6_paths() {
        for (name, _) in BUILTIN {
            Recipe::load(name, Path::new("."), None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        let r = Recipe::load("cmip6", Path::new("."), None).unwrap();
        let f = r
            .match_path("CMIP6/DCPP/MOHC/HadGEM3-GC31-MM/dcppA-hindcast/s1960-r2i1p1f2/day/tasmin/gn/v20200417/tasmin_day_HadGEM3-GC31-MM_dcppA-hindcast_s1960-r2i1p1f2_gn_19601101-19601230.nc")
            .unwrap();
        assert_eq!(f["member_id"], "s1960-r2i1p1f2");
        assert_eq!(f["version"], "v20200417");
        let f = r.match_path("CMIP6/ScenarioMIP/MIROC/MIROC6/ssp119/r1i1p1f1/Amon/ta/gn/files/d20190807/ta_Amon_MIROC6_ssp119_r1i1p1f1_gn_201501-202412.nc").unwrap();
        assert_eq!(r.classify_version(&f["version"]), Some(VersionDir::Alias { alias: 0, version: Some("20190807".into()) }));
        assert_eq!(r.match_path("CMIP6/a/b/c/d/e/f/g/h/v20200101/x.nc.pid29866.ncks.tmp"), Err(PathRejection::NotIncluded));
        assert!(r.match_path("CMIP6/a/b/c/d/../f/g/h/v20200101/x.nc").is_err());
        assert_eq!(r.match_path("CMIP6/a/b/c/d/e/../g/h/v20200101/x.nc").err(), Some(PathRejection::Excluded));
        assert_eq!(r.match_path("CMIP6/too/short/x.nc"), Err(PathRejection::NotInLayout));
    }
}
