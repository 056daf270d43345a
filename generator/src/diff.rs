//! `fedstac diff <site A> <site B>`: do two sites give the same answers?
//! Each site (a URL of its root catalogue or site directory, or a directory
//! on disk) is walked from `catalog.json` through its child and item links,
//! and every dataset is compared: presence, `latest` and `retracted`, where
//! it is held (`fedstac:held_at`) and which copies each file has.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::Path;

use anyhow::{bail, Context, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::harvest::fetch::{FetchOptions, Fetched, Fetcher};
use crate::harvest::sanitize::Scope;
use crate::merge::{href_file_name, HELD_AT};

/// What a site says about one dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetFacts {
    pub latest: Option<bool>,
    pub retracted: bool,
    pub held_at: BTreeSet<String>,
    /// File → the sites holding a copy.
    pub files: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Default, Serialize)]
pub struct SiteFacts {
    pub location: String,
    pub datasets: BTreeMap<String, DatasetFacts>,
    /// Documents that could not be read (the comparison is incomplete).
    pub problems: Vec<String>,
}

/// Reads a site: an http(s) URL (of `catalog.json` or the site's directory) or a directory.
pub async fn load_site(location: &str, opts: &FetchOptions, jobs: usize) -> Result<SiteFacts> {
    let (fetcher, root) = if location.starts_with("http://") || location.starts_with("https://") {
        let mut url = Url::parse(location).with_context(|| format!("URL {location:?}"))?;
        if !url.path().ends_with(".json") {
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            url = url.join("catalog.json")?;
        }
        (Fetcher::http(opts.clone())?, url)
    } else {
        let path = Path::new(location);
        let (dir, file) = if path.is_dir() { (path.to_path_buf(), "catalog.json".to_string()) } else { (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()) };
        let dir = dir.canonicalize().with_context(|| format!("site directory {}", dir.display()))?;
        let base = Url::from_directory_path(&dir).map_err(|_| anyhow::anyhow!("{} is not an absolute directory", dir.display()))?;
        (Fetcher::dir(dir, opts.clone()), base.join(&file)?)
    };
    let scope = Scope::of_root(&root);
    let mut facts = SiteFacts { location: location.to_string(), ..Default::default() };
    let mut visited: HashSet<String> = HashSet::from([root.to_string()]);
    let mut queue = VecDeque::from([root.clone()]);
    let mut inflight = FuturesUnordered::new();
    const LIMIT: u64 = 64 << 20;
    loop {
        while inflight.len() < jobs.max(1) {
            let Some(url) = queue.pop_front() else { break };
            let fetcher = fetcher.clone();
            inflight.push(tokio::spawn(async move {
                let got = fetcher.get(&url, None, LIMIT).await;
                (url, got)
            }));
        }
        let Some(done) = inflight.next().await else { break };
        let (url, got) = done?;
        let bytes = match got {
            Ok(Fetched::Body { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) => continue,
            Err(e) => {
                if url == root {
                    bail!("cannot read {url}: {e}");
                }
                facts.problems.push(format!("{url}: {e}"));
                continue;
            }
        };
        let doc: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                facts.problems.push(format!("{url}: not valid JSON: {e}"));
                continue;
            }
        };
        match doc.get("type").and_then(Value::as_str) {
            Some("Catalog") | Some("Collection") => {
                for link in doc.get("links").and_then(Value::as_array).into_iter().flatten() {
                    let rel = link.get("rel").and_then(Value::as_str).unwrap_or("");
                    let Some(href) = link.get("href").and_then(Value::as_str) else { continue };
                    if rel != "child" && rel != "item" {
                        continue;
                    }
                    match url.join(href) {
                        Ok(mut next) if scope.contains(&next) => {
                            next.set_fragment(None);
                            if visited.insert(next.to_string()) {
                                queue.push_back(next);
                            }
                        }
                        _ => facts.problems.push(format!("{url}: {rel} link {href:?} leaves the site; not followed")),
                    }
                }
            }
            Some("Feature") => {
                let Some(id) = doc.get("id").and_then(Value::as_str) else {
                    facts.problems.push(format!("{url}: item without id"));
                    continue;
                };
                if facts.datasets.insert(id.to_string(), dataset_facts(&doc)).is_some() {
                    facts.problems.push(format!("{url}: item {id} is listed twice"));
                }
            }
            _ => facts.problems.push(format!("{url}: not a STAC document")),
        }
    }
    Ok(facts)
}

fn dataset_facts(item: &Value) -> DatasetFacts {
    let props = &item["properties"];
    let mut files = BTreeMap::new();
    for (key, asset) in item.get("assets").and_then(Value::as_object).into_iter().flatten() {
        // Kerchunk sidecars are per-site views of the files, not copies of them (sidecars.rs).
        if asset.get("roles").and_then(Value::as_array).is_some_and(|r| r.iter().any(|x| x == "kerchunk")) {
            continue;
        }
        let href = asset.get("href").and_then(Value::as_str).unwrap_or("");
        let name = href_file_name(href).unwrap_or_else(|| key.clone());
        let holders = crate::harvest::holders(&serde_json::json!({"assets": {"x": asset}}));
        files.insert(name, holders);
    }
    let held_at = match props.get(HELD_AT).and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        None => crate::harvest::holders(item),
    };
    DatasetFacts { latest: props.get("latest").and_then(Value::as_bool), retracted: props.get("retracted").and_then(Value::as_bool).unwrap_or(false), held_at, files }
}

/// How two sites differ.
#[derive(Debug, Default, Serialize)]
pub struct SiteDiff {
    pub a: String,
    pub b: String,
    pub datasets_a: usize,
    pub datasets_b: usize,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    /// Datasets both list with another `latest` or `retracted`: (id, A's, B's).
    pub versions: Vec<(String, String, String)>,
    /// Datasets both list with other holders or file copies: (id, A's, B's).
    pub copies: Vec<(String, String, String)>,
    pub problems: Vec<String>,
}

impl SiteDiff {
    pub fn is_empty(&self) -> bool {
        self.only_a.is_empty() && self.only_b.is_empty() && self.versions.is_empty() && self.copies.is_empty() && self.problems.is_empty()
    }

    pub fn print(&self, listed: usize) {
        println!("fedstac diff: A = {} ({} datasets), B = {} ({} datasets)", self.a, self.datasets_a, self.b, self.datasets_b);
        let section = |title: &str, lines: Vec<String>| {
            if lines.is_empty() {
                return;
            }
            println!("  {title}: {}", lines.len());
            for l in lines.iter().take(listed) {
                println!("    {l}");
            }
            if lines.len() > listed {
                println!("    … {} more (--json lists them all)", lines.len() - listed);
            }
        };
        section("only at A", self.only_a.clone());
        section("only at B", self.only_b.clone());
        section("version status differs", self.versions.iter().map(|(id, a, b)| format!("{id}: A {a}, B {b}")).collect());
        section("copies differ", self.copies.iter().map(|(id, a, b)| format!("{id}: A {a}; B {b}")).collect());
        section("unreadable documents", self.problems.clone());
        if self.is_empty() {
            println!("  same datasets, versions and copies");
        }
    }
}

fn version_status(f: &DatasetFacts) -> String {
    let latest = match f.latest {
        Some(true) => "latest",
        Some(false) => "not latest",
        None => "latest unknown",
    };
    if f.retracted {
        format!("{latest}, retracted")
    } else {
        latest.to_string()
    }
}

fn copies_status(f: &DatasetFacts) -> String {
    let held: Vec<&str> = f.held_at.iter().map(String::as_str).collect();
    let files: Vec<String> = f.files.iter().map(|(name, at)| format!("{name} @ {}", at.iter().cloned().collect::<Vec<_>>().join("+"))).collect();
    format!("held at [{}], files {}", held.join(", "), files.join(", "))
}

pub fn diff(a: &SiteFacts, b: &SiteFacts) -> SiteDiff {
    let mut d = SiteDiff { a: a.location.clone(), b: b.location.clone(), datasets_a: a.datasets.len(), datasets_b: b.datasets.len(), ..Default::default() };
    for (id, fa) in &a.datasets {
        let Some(fb) = b.datasets.get(id) else {
            d.only_a.push(id.clone());
            continue;
        };
        if fa.latest != fb.latest || fa.retracted != fb.retracted {
            d.versions.push((id.clone(), version_status(fa), version_status(fb)));
        }
        if fa.held_at != fb.held_at || fa.files != fb.files {
            d.copies.push((id.clone(), copies_status(fa), copies_status(fb)));
        }
    }
    d.only_b = b.datasets.keys().filter(|id| !a.datasets.contains_key(*id)).cloned().collect();
    d.problems = a.problems.iter().map(|p| format!("A: {p}")).chain(b.problems.iter().map(|p| format!("B: {p}"))).collect();
    d
}
