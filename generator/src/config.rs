//! The site config: who this site is, which archive roots it scans with which
//! recipe, and where the output goes. Relative paths are relative to the
//! config file, so a config works from any working directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub site: SiteInfo,
    pub roots: Vec<RootConfig>,
    /// Where the static site is written (owned by fedstac: replaced as a whole).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// Where read headers and checksums are cached between runs (not published).
    #[serde(default = "default_cache")]
    pub cache: PathBuf,
    /// WCRP CV directory for controlled-vocabulary checks; checks are skipped without it.
    #[serde(default)]
    pub cv_dir: Option<PathBuf>,
    /// SHA-256 of every file; switch off for huge archives.
    #[serde(default = "yes")]
    pub checksums: bool,
    /// Templates directory; the templates built into fedstac when absent.
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// Partner sites whose catalogues `fedstac harvest` mirrors (under
    /// `<cache>/partners/<name>/`) and `fedstac build` merges in.
    #[serde(default)]
    pub partners: Vec<PartnerConfig>,
}

/// A partner site: its short name (the `alternate:name` of its copies) and
/// the URL of its root `catalog.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInfo {
    /// Short name, used as `alternate:name` on this site's assets.
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Public URL of the site's root (optional). Item pages then show
    /// absolute URLs in their Python snippets; without it a line of script
    /// fills them in from the page's own address.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub path: PathBuf,
    /// A built-in recipe name (`cmip6`, `cordex`) or a path to a recipe YAML.
    pub recipe: String,
    /// Public URL prefix under which this root's files are served.
    pub data_url: String,
    /// Kerchunk sidecars for this root's files (none when absent).
    #[serde(default)]
    pub kerchunk: Option<KerchunkConfig>,
}

/// `kerchunk: { enabled: true, urls: public | relative | local }` on a root.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KerchunkConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub urls: ReferenceUrls,
}

/// How a sidecar names the files its chunks are in.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceUrls {
    /// The data asset's absolute public URL (`data_url` + path).
    #[default]
    Public,
    /// `{{u}}/<path from the sidecar's directory to the file>`, Kerchunk
    /// template `u` being the URL of the sidecar's directory: works wherever
    /// the site and the archive are served together, as they sit on disk.
    Relative,
    /// The file's local path (readers on this machine, or the same mounts).
    Local,
}

impl RootConfig {
    /// The sidecar URL mode, when sidecars are on for this root.
    pub fn kerchunk_urls(&self) -> Option<ReferenceUrls> {
        self.kerchunk.as_ref().filter(|k| k.enabled).map(|k| k.urls)
    }
}

fn default_output() -> PathBuf {
    "site".into()
}
fn default_cache() -> PathBuf {
    ".fedstac-cache".into()
}
fn yes() -> bool {
    true
}

/// A site or partner name: used as a directory name and as `alternate:name`.
pub fn is_site_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl SiteConfig {
    pub fn load(path: &Path) -> Result<SiteConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let mut config: SiteConfig = serde_yaml_ng::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.check().with_context(|| format!("in config {}", path.display()))?;
        Ok(config)
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.output);
        fix(&mut self.cache);
        if let Some(p) = self.cv_dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.templates.as_mut() {
            fix(p);
        }
        for root in &mut self.roots {
            fix(&mut root.path);
            // Recipes named by path are relative to the config too.
            if root.recipe.ends_with(".yaml") || root.recipe.ends_with(".yml") {
                let p = PathBuf::from(&root.recipe);
                if p.is_relative() {
                    root.recipe = base.join(p).to_string_lossy().into_owned();
                }
            }
        }
    }

    fn check(&self) -> Result<()> {
        if self.roots.is_empty() {
            bail!("no roots to scan");
        }
        if !is_site_name(&self.site.name) {
            bail!("site.name {:?} must be letters, digits, '-', '_' or '.'", self.site.name);
        }
        let mut names = std::collections::BTreeSet::from([self.site.name.as_str()]);
        for p in &self.partners {
            if !is_site_name(&p.name) {
                bail!("partner name {:?} must be letters, digits, '-', '_' or '.'", p.name);
            }
            if !names.insert(p.name.as_str()) {
                bail!("partner name {:?} is used twice (or is this site's name)", p.name);
            }
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                bail!("url {:?} of partner {} must be an http(s) URL", p.url, p.name);
            }
        }
        if let Some(url) = &self.site.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("site.url {url:?} must be an http(s) URL");
            }
        }
        for root in &self.roots {
            if !(root.data_url.starts_with("http://") || root.data_url.starts_with("https://")) {
                bail!("data_url {:?} of root {} must be an http(s) URL", root.data_url, root.path.display());
            }
        }
        Ok(())
    }
}
