//! Federation end to end: two sites built from the real corpus with partial
//! overlap (a CEDA-layout subset and a DKRZ-layout subset), each served by a
//! real nginx on a loopback port, harvest each other and rebuild; then the
//! merge rules hold and `fedstac diff` finds nothing. Also: the real partner
//! items of the corpus (ESGF-West, CEDA, piddiplatsch payloads) are merged
//! or refused, a hostile partner (a tiny misbehaving HTTP server here) can
//! neither corrupt nor escape the site, and an interrupted harvest resumes.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fedstac::config::SiteConfig;
use fedstac::harvest::fetch::FetchOptions;
use fedstac::harvest::{HarvestOptions, HarvestReport};
use serde_json::{json, Value};
use sha2::Digest as _;

const CEDA_URL: &str = "https://data.ceda.ac.uk/badc/cmip6/data/";
const DKRZ_URL: &str = "https://esgf3.dkrz.de/thredds/fileServer/cmip6/";
/// The version the DKRZ site adds to one CEDA-only dataset (a newer version held elsewhere).
const NEWER: &str = "v20300101";

// ------------------------------------------------------------------ nginx

/// A real nginx serving one directory on a loopback port, with its own
/// config, pid, logs and temp paths in a private prefix; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    prefix: PathBuf,
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("nginx is not installed: run scripts/setup.sh (it installs Debian's nginx)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    /// Serves `root`; `extra` goes into the server block (e.g. `limit_rate 4k;`).
    fn start(prefix: &Path, root: &Path, extra: &str) -> Nginx {
        Nginx::start_on(prefix, root, extra, free_port())
    }

    /// As [`Nginx::start`], on a given port (the same partner URL after a restart).
    fn start_on(prefix: &Path, root: &Path, extra: &str, port: u16) -> Nginx {
        std::fs::create_dir_all(prefix).unwrap();
        let p = prefix.display();
        let conf = format!(
            "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n{user}\
             events {{ worker_connections 256; }}\n\
             http {{\n  types {{ application/json json; text/html html; }}\n  default_type application/octet-stream;\n  \
             access_log {p}/access.log;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n  \
             uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n  keepalive_requests 100000;\n  \
             server {{ listen 127.0.0.1:{port}; root {root}; {extra} }}\n}}\n",
            // As root the workers would switch to `nobody`, who cannot read a private tempdir.
            user = if is_root() { "user root;\n" } else { "" },
            root = root.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-p", &p.to_string(), "-c", &conf_path.display().to_string(), "-e", &format!("{p}/error.log"), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nginx");
        let mut nginx = Nginx { child, port, prefix: prefix.to_path_buf() };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                let mut err = String::new();
                nginx.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}): {err}\n{log}");
            }
            assert!(started.elapsed() < Duration::from_secs(20), "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(self.prefix.join("access.log")).map(|s| s.lines().count()).unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        common::stop_gracefully(&mut self.child);
    }
}

// ------------------------------------------------------------- the sites

/// Corpus CMIP6 files grouped by dataset (the 9 DRS facets), relative to the CEDA root.
fn corpus_datasets() -> BTreeMap<String, Vec<String>> {
    let root = ceda_root();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root.join("CMIP6")).sort_by_file_name() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy();
        if !entry.file_type().is_file() || !name.ends_with(".nc") || name.starts_with('.') {
            continue;
        }
        let rel = entry.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        let base: Vec<&str> = rel.split('/').take(9).collect();
        out.entry(base.join("/")).or_default().push(rel);
    }
    out
}

fn link_file(rel: &str, tree: &Path) {
    let to = tree.join(rel);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(ceda_root().join(rel), to).unwrap();
}

/// What the two archives hold, for the assertions.
struct Split {
    /// Base paths (`CMIP6/…/<grid>`) held at both, only at CEDA, only at DKRZ.
    both: Vec<String>,
    ceda_only: Vec<String>,
    dkrz_only: Vec<String>,
    /// The CEDA-only dataset DKRZ holds a newer version of (under NEWER).
    newer: String,
    /// A shared dataset where DKRZ lacks one file (conflicting metadata).
    partial: (String, String),
}

/// CEDA's layout gets the first two thirds of the corpus datasets, DKRZ's
/// layout (`pool/data/CMIP6/data/CMIP6` a symlink to the tree, as in the
/// corpus) the last two thirds: a third is held at both.
fn make_archives(dir: &Path) -> (PathBuf, PathBuf, Split) {
    let datasets = corpus_datasets();
    let bases: Vec<&String> = datasets.keys().collect();
    let n = bases.len();
    assert!(n >= 30, "expected the corpus's CMIP6 datasets, found {n}");
    let ceda_tree = dir.join("ceda/badc/cmip6/data");
    let dkrz_tree = dir.join("dkrz-tree");
    let mut split = Split { both: vec![], ceda_only: vec![], dkrz_only: vec![], newer: String::new(), partial: (String::new(), String::new()) };
    // Held at both, but DKRZ lacks its last file: the first multi-file dataset in one versioned directory.
    let partial = bases.iter().find(|b| datasets[**b].len() >= 2 && canonical_version(b).is_some()).expect("a multi-file versioned dataset");
    for (i, base) in bases.iter().enumerate() {
        let files = &datasets[*base];
        let skip = base == partial;
        let (at_ceda, at_dkrz) = (i < 2 * n / 3 || skip, i >= n / 3 || skip);
        if at_ceda {
            files.iter().for_each(|f| link_file(f, &ceda_tree));
        }
        if at_dkrz {
            for f in files {
                if skip && f == files.last().unwrap() {
                    split.partial = ((*base).clone(), f.rsplit('/').next().unwrap().to_string());
                    continue;
                }
                link_file(f, &dkrz_tree);
            }
        }
        match (at_ceda, at_dkrz) {
            (true, true) => split.both.push((*base).clone()),
            (true, false) => split.ceda_only.push((*base).clone()),
            _ => split.dkrz_only.push((*base).clone()),
        }
    }
    // A newer version, held only at DKRZ, of a CEDA-only dataset with one versioned directory.
    let newer = split
        .ceda_only
        .iter()
        .find(|b| {
            let versions: BTreeSet<&str> = datasets[*b].iter().filter_map(|f| f.split('/').nth(9)).collect();
            versions.len() == 1 && versions.iter().all(|v| v.starts_with("v20") && v.len() == 9)
        })
        .expect("a CEDA-only dataset with one versioned directory")
        .clone();
    for f in &datasets[&newer] {
        let parts: Vec<&str> = f.split('/').collect();
        let to = dkrz_tree.join(format!("{}/{NEWER}/{}", parts[..9].join("/"), parts[10]));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(ceda_root().join(f), to).unwrap();
    }
    split.newer = newer;
    assert!(!split.partial.0.is_empty(), "no shared multi-file dataset to make partial");
    let dkrz_root = dir.join("dkrz/pool/data/CMIP6/data");
    std::fs::create_dir_all(&dkrz_root).unwrap();
    std::os::unix::fs::symlink(dkrz_tree.join("CMIP6"), dkrz_root.join("CMIP6")).unwrap();
    (ceda_tree, dkrz_root, split)
}

fn site_config(dir: &Path, name: &str, root: &Path, data_url: &str, partners: &[(&str, String)]) -> SiteConfig {
    site_config_with(dir, name, root, data_url, partners, "")
}

/// `root_extra` goes inside the root's mapping (e.g. `, kerchunk: {...}`).
fn site_config_with(dir: &Path, name: &str, root: &Path, data_url: &str, partners: &[(&str, String)], root_extra: &str) -> SiteConfig {
    let partners: String = partners.iter().map(|(n, u)| format!("  - {{name: {n}, url: \"{u}\"}}\n")).collect();
    let yaml = format!(
        "site: {{name: {name}, title: {name} test site}}\nroots:\n  - {{path: \"{}\", recipe: cmip6, data_url: \"{data_url}\"{root_extra}}}\ncv_dir: \"{}\"\noutput: \"{}\"\ncache: \"{}\"\n{}",
        root.display(),
        cv_dir().display(),
        dir.join(format!("site-{name}")).display(),
        dir.join(format!("cache-{name}")).display(),
        if partners.is_empty() { String::new() } else { format!("partners:\n{partners}") },
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    SiteConfig::load(&path).unwrap()
}

fn quick_opts() -> HarvestOptions {
    HarvestOptions { fetch: FetchOptions { timeout: Duration::from_secs(10), connect_timeout: Duration::from_secs(5), retries: 2, backoff: Duration::from_millis(50) }, jobs: 8, ..HarvestOptions::default() }
}

fn harvest_all(config: &SiteConfig, opts: &HarvestOptions) -> Vec<HarvestReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(fedstac::harvest::harvest_config(config, opts)).unwrap_or_else(|e| panic!("harvest failed: {e:#}"))
}

fn fedstac(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedstac")).args(args).env_remove("RUST_LOG").env("NO_COLOR", "1").output().unwrap()
}

fn ids_of(site: &Path) -> BTreeSet<String> {
    site_items(site).into_keys().collect()
}

fn item_html(site: &Path, id: &str) -> String {
    let item = &site_items(site)[id];
    std::fs::read_to_string(item.path.with_extension("html")).unwrap()
}

fn held_at(item: &SiteItem) -> Vec<String> {
    item.prop("fedstac:held_at").as_array().unwrap_or_else(|| panic!("{} has no fedstac:held_at", item.id())).iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn dataset_id(base: &str, version: &str) -> String {
    format!("{}.{version}", base.replace('/', "."))
}

/// The version directory (`v…`) of a dataset's files, when they all sit in one.
fn canonical_version(base: &str) -> Option<String> {
    let versions: BTreeSet<String> = corpus_datasets()[base].iter().map(|f| f.split('/').nth(9).unwrap().to_string()).collect();
    let v = versions.into_iter().next()?;
    (corpus_datasets()[base].iter().all(|f| f.split('/').nth(9) == Some(v.as_str())) && v.starts_with('v') && v.len() == 9).then_some(v)
}

fn version_of(base: &str) -> String {
    canonical_version(base).unwrap_or_else(|| panic!("{base} is not in one versioned directory"))
}

/// The id of the first dataset of `bases` in one versioned directory.
fn first_versioned(bases: &[String], except: &str) -> String {
    let base = bases.iter().find(|b| b.as_str() != except && canonical_version(b).is_some()).expect("a dataset in a versioned directory");
    dataset_id(base, &version_of(base))
}

// ----------------------------------------------------------------- tests

#[test]
fn two_sites_harvest_each_other_and_answer_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ceda_root, dkrz_root, split) = make_archives(dir);
    let ceda_nginx = Nginx::start(&dir.join("nginx-ceda"), &dir.join("site-ceda"), "");
    let dkrz_nginx = Nginx::start(&dir.join("nginx-dkrz"), &dir.join("site-dkrz"), "");
    let ceda = site_config(dir, "ceda", &ceda_root, CEDA_URL, &[("dkrz", dkrz_nginx.url("catalog.json"))]);
    let dkrz = site_config(dir, "dkrz", &dkrz_root, DKRZ_URL, &[("ceda", ceda_nginx.url("catalog.json"))]);
    let (ceda_site, dkrz_site) = (ceda.output.clone(), dkrz.output.clone());

    // Before federation: each site holds only its own, and diff says so (exit 1).
    build(ceda.clone());
    build(dkrz.clone());
    let before = fedstac(&["diff", &ceda_nginx.url(""), &dkrz_nginx.url("catalog.json")]);
    assert_eq!(before.status.code(), Some(1), "{}", text(&before.stdout));
    assert!(text(&before.stdout).contains("only at A"), "{}", text(&before.stdout));
    let local_ceda = ids_of(&ceda_site);
    let local_dkrz = ids_of(&dkrz_site);

    // Harvest both ways (the CLI for one, the library for the other), rebuild.
    let out = fedstac(&["harvest", "-c", &dir.join("ceda.yaml").display().to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["outcome"], "updated");
    assert_eq!(first["items"].as_u64().unwrap() as usize, local_dkrz.len());
    assert!(first["manifest"].as_str().unwrap().starts_with("fetched"));
    // A first harvest takes the partner's bundle: two requests in all.
    assert_eq!(first["requests"], 2, "{first}");
    assert_eq!(first["bundled"].as_u64().unwrap(), first["catalogs"].as_u64().unwrap() + first["items"].as_u64().unwrap(), "{first}");
    let reports = harvest_all(&dkrz, &quick_opts());
    assert_eq!(reports[0].items, local_ceda.len());
    let summary_ceda = build(ceda.clone());
    build(dkrz.clone());

    // Same datasets at both sites, and diff agrees over HTTP and on disk.
    let ids = ids_of(&ceda_site);
    assert_eq!(ids, ids_of(&dkrz_site));
    assert_eq!(ids, local_ceda.union(&local_dkrz).cloned().collect::<BTreeSet<_>>());
    for (a, b) in [(ceda_nginx.url("catalog.json"), dkrz_nginx.url("")), (ceda_site.display().to_string(), dkrz_site.display().to_string())] {
        let out = fedstac(&["diff", &a, &b]);
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    }

    // Merge rules, checked on CEDA's side.
    let items = site_items(&ceda_site);
    let shared = first_versioned(&split.both, &split.partial.0);
    let item = &items[&shared];
    assert_eq!(held_at(item), ["ceda", "dkrz"]);
    for (name, asset) in item.assets() {
        assert_eq!(asset["alternate:name"], "ceda", "{name}");
        assert!(asset["href"].as_str().unwrap().starts_with(CEDA_URL));
        let alt = &asset["alternate"]["dkrz"];
        assert_eq!(alt["alternate:name"], "dkrz");
        assert!(alt["href"].as_str().unwrap().starts_with(DKRZ_URL), "{alt}");
    }
    let elsewhere = first_versioned(&split.dkrz_only, "");
    let item = &items[&elsewhere];
    assert_eq!(held_at(item), ["dkrz"]);
    assert!(item.assets().values().all(|a| a["href"].as_str().unwrap().starts_with(DKRZ_URL) && a["alternate:name"] == "dkrz"));
    let page = item_html(&ceda_site, &elsewhere);
    assert!(page.contains("Held elsewhere") && page.contains("its files are at dkrz"), "partner-only page does not say where");
    assert!(!item_html(&ceda_site, &shared).contains("Held elsewhere"));
    for item in items.values() {
        assert!(!held_at(item).is_empty());
    }

    // Newer versions supersede: CEDA's only version is no longer latest, DKRZ's newer one is.
    let old_id = dataset_id(&split.newer, &version_of(&split.newer));
    let new_id = dataset_id(&split.newer, NEWER);
    for site in [&ceda_site, &dkrz_site] {
        let items = site_items(site);
        assert_eq!(items[&old_id].prop("latest"), false, "{}", site.display());
        assert_eq!(items[&new_id].prop("latest"), true, "{}", site.display());
        assert_eq!(held_at(&items[&new_id]), ["dkrz"]);
        assert_eq!(held_at(&items[&old_id]), ["ceda"]);
    }
    assert!(summary_ceda.merge.superseded >= 1);

    // Conflicting metadata is reported, not silently overwritten: DKRZ lacks one file.
    let (partial_base, missing) = &split.partial;
    let partial_id = dataset_id(partial_base, &version_of(partial_base));
    assert!(
        summary_ceda.merge.conflicts.iter().any(|c| c.starts_with(&partial_id) && c.contains(&format!("file {missing} is held at ceda but not at dkrz"))),
        "{:?}",
        summary_ceda.merge.conflicts
    );
    let partial = &site_items(&ceda_site)[&partial_id];
    assert!(partial.assets()[missing].get("alternate").is_none(), "the file DKRZ lacks has no DKRZ copy");
    assert_eq!(held_at(partial), ["ceda", "dkrz"]);

    // The "held at" facet.
    let collection: Value = serde_json::from_slice(&std::fs::read(ceda_site.join("CMIP6/collection.json")).unwrap()).unwrap();
    assert_eq!(collection["summaries"]["fedstac:held_at"], json!(["ceda", "dkrz"]));
    let page = std::fs::read_to_string(ceda_site.join("CMIP6/collection.html")).unwrap();
    assert!(page.contains("title=\"fedstac:held_at\""));

    // A second round (each now republishes the other's items) changes nothing.
    harvest_all(&ceda, &quick_opts());
    harvest_all(&dkrz, &quick_opts());
    build(ceda.clone());
    build(dkrz.clone());
    assert_eq!(ids_of(&ceda_site), ids);
    let out = fedstac(&["diff", &ceda_nginx.url(""), &dkrz_nginx.url("")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // An unchanged partner costs one conditional request (the manifest: 304).
    let served = dkrz_nginx.requests();
    let again = harvest_all(&ceda, &quick_opts());
    assert_eq!(again[0].outcome, "unchanged");
    assert_eq!((again[0].requests, again[0].not_modified, again[0].fetched), (1, 1, 0));
    assert_eq!(dkrz_nginx.requests(), served + 1);
    let full = first["bytes"].as_u64().unwrap();
    assert!(again[0].bytes * 100 <= full, "unchanged re-harvest took {} bytes, the full one {full}", again[0].bytes);
}

/// GET over HTTP with curl: the body, or None unless 200.
fn http_get(url: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl").args(["-sf", "--max-time", "20", url]).output().expect("curl runs");
    out.status.success().then_some(out.stdout)
}

/// Both sites write Kerchunk sidecars: the partner's sidecar assets arrive
/// with the partner's URLs, which its server answers with the references;
/// where both hold a dataset, they are alternates of the local sidecars.
#[test]
fn sidecars_federate_with_the_partners_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ceda_root, dkrz_root, split) = make_archives(dir);
    let ceda_nginx = Nginx::start(&dir.join("nginx-ceda"), &dir.join("site-ceda"), "");
    let dkrz_nginx = Nginx::start(&dir.join("nginx-dkrz"), &dir.join("site-dkrz"), "");
    let sidecars = ", kerchunk: {enabled: true, urls: public}";
    let ceda = site_config_with(dir, "ceda", &ceda_root, CEDA_URL, &[("dkrz", dkrz_nginx.url("catalog.json"))], sidecars);
    let dkrz = site_config_with(dir, "dkrz", &dkrz_root, DKRZ_URL, &[("ceda", ceda_nginx.url("catalog.json"))], sidecars);
    build(ceda.clone());
    build(dkrz.clone());
    harvest_all(&ceda, &quick_opts());
    harvest_all(&dkrz, &quick_opts());
    build(ceda.clone());
    build(dkrz.clone());
    let out = fedstac(&["diff", &ceda_nginx.url(""), &dkrz_nginx.url("")]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));

    let is_references = |a: &Value| a["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "kerchunk"));
    let served_references = |href: &str| {
        let body = http_get(href).unwrap_or_else(|| panic!("{href} is not served"));
        let refs: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{href}: {e}"));
        assert!(refs["refs"].is_object(), "{href} holds no Kerchunk references");
    };
    let (items, dkrz_base) = (site_items(&ceda.output), dkrz_nginx.url(""));
    assert!(dkrz_base.starts_with("http://127.0.0.1:"));
    for (id, item) in &items {
        assert!(item.assets().values().any(|a| is_references(a)), "{id} has no sidecar asset");
    }

    // Held only at DKRZ: DKRZ's sidecars, at DKRZ.
    let elsewhere = &items[&first_versioned(&split.dkrz_only, "")];
    for (key, a) in elsewhere.assets().iter().filter(|(_, a)| is_references(a)) {
        let href = a["href"].as_str().unwrap();
        assert!(href.starts_with(&dkrz_base), "{key}: {href}");
        served_references(href);
    }

    // Held at both: CEDA's own sidecars (relative), with DKRZ's as alternates.
    let shared = &items[&first_versioned(&split.both, &split.partial.0)];
    let mut checked = 0;
    for (key, a) in shared.assets().iter().filter(|(_, a)| is_references(a)) {
        let href = a["href"].as_str().unwrap();
        assert!(!href.contains("://"), "{key}: the local sidecar is linked relatively: {href}");
        assert!(shared.path.parent().unwrap().join(href).is_file(), "{key}: {href}");
        let alt = a["alternate"]["dkrz"]["href"].as_str().unwrap_or_else(|| panic!("{key}: no DKRZ alternate: {a}"));
        assert!(alt.starts_with(&dkrz_base), "{key}: {alt}");
        served_references(alt);
        checked += 1;
    }
    assert!(checked >= 1);
}

/// Copies of the corpus's real partner items (piddiplatsch payloads unwrapped) as a static catalogue.
fn corpus_partner_catalogue(dir: &Path) -> Vec<(String, Value)> {
    let stac = corpus().join("stac");
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&stac)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.components().any(|c| c.as_os_str() == "schema") && !p.to_string_lossy().contains("SYNTHETIC"))
        .collect();
    files.sort();
    let items_dir = dir.join("items");
    std::fs::create_dir_all(&items_dir).unwrap();
    let mut links = vec![json!({"rel": "root", "href": "./catalog.json"}), json!({"rel": "self", "href": "./catalog.json"})];
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let doc: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let item = if doc.get("data").is_some() { doc["data"]["payload"]["item"].clone() } else { doc };
        let name = format!("{i:02}-{}", f.file_name().unwrap().to_string_lossy());
        std::fs::write(items_dir.join(&name), serde_json::to_vec_pretty(&item).unwrap()).unwrap();
        links.push(json!({"rel": "item", "href": format!("./items/{name}"), "type": "application/geo+json"}));
        out.push((f.strip_prefix(&stac).unwrap().display().to_string(), item));
    }
    let catalog = json!({"type": "Catalog", "stac_version": "1.1.0", "id": "esgf-corpus", "description": "Real partner items of the corpus", "links": links});
    std::fs::write(dir.join("catalog.json"), serde_json::to_vec_pretty(&catalog).unwrap()).unwrap();
    out
}

#[test]
fn real_partner_items_are_merged_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let partner_dir = dir.join("partner");
    let items = corpus_partner_catalogue(&partner_dir);
    assert_eq!(items.len(), 8, "ESGF-West, CEDA and 6 piddiplatsch items expected");
    let nginx = Nginx::start(&dir.join("nginx"), &partner_dir, "");
    let archive = dir.join("archive");
    let datasets = corpus_datasets();
    for f in datasets.values().next().unwrap() {
        link_file(f, &archive);
    }
    let config = site_config(dir, "ceda", &archive, CEDA_URL, &[("esgf", nginx.url("catalog.json"))]);

    let report = harvest_all(&config, &quick_opts()).remove(0);
    assert_eq!(report.outcome, "updated");
    assert!(report.manifest.starts_with("none"), "{}", report.manifest);
    // The two payloads piddiplatsch keeps as invalid are refused, with the reason.
    let refused: BTreeMap<String, String> = report.problems.iter().filter(|p| p.kind == "refused").map(|p| (p.url.rsplit('/').next().unwrap().to_string(), p.reason.clone())).collect();
    assert_eq!(refused.len(), 2, "{:#?}", report.problems);
    let reason = |needle: &str| refused.iter().find(|(k, _)| k.contains(needle)).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(reason("baresoilFrac").contains("after end_datetime"), "{refused:?}");
    assert!(reason("missing_file_size").contains("file:size"), "{refused:?}");
    assert_eq!(report.items, 6);

    let summary = build(config.clone());
    assert_eq!(summary.merge.partner_only, 6);
    let site = site_items(&config.output);
    let west = &site["CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp119.r4i1p1f1.CFmon.clcalipso.gr.v20191122"];
    assert_eq!(held_at(west), ["esgf-data.nersc.gov"]);
    assert_eq!(west.bbox(), [-180.0, -90.0, 180.0, 90.0], "0..360 longitudes are normalised");
    let file = &west.assets()["clcalipso_CFmon_IPSL-CM6A-LR_ssp119_r4i1p1f1_gr_201501-210012.nc"];
    assert_eq!(file["file:size"], 1691149215u64);
    assert!(file["href"].as_str().unwrap().starts_with("https://"));
    let ceda_item = &site["CMIP6.ScenarioMIP.UA.MCM-UA-1-0.ssp245.r1i1p1f2.Amon.psl.gn.v20190731"];
    assert_eq!(ceda_item.json["collection"], "CMIP6");
    assert_eq!(held_at(ceda_item), ["esgf"], "copies without alternate:name are named after the partner");
    assert!(site.contains_key("CMIP6.ScenarioMIP.IPSL.IPSL-CM6A-LR.ssp245.r1i1p1f1.Amon.pr.gr.v20190119"), "the valid twin of the refused payload is kept");
    assert!(!site.contains_key("CMIP6.ScenarioMIP.DKRZ.MPI-ESM1-2-HR.ssp126.r1i1p1f1.Eyr.baresoilFrac.gn.v20190710"));
    for item in site.values() {
        for (k, a) in item.assets() {
            let href = a["href"].as_str().unwrap();
            assert!(href.starts_with("https://") || href.starts_with("http://"), "{}: {k}: {href}", item.id());
        }
        assert!(item.json["links"].as_array().unwrap().iter().all(|l| l["rel"] != "self" || l["href"].as_str().unwrap().starts_with("./")));
    }

    // A plain static catalogue (no manifest): re-harvesting costs a 304 per document.
    let again = harvest_all(&config, &quick_opts()).remove(0);
    assert_eq!(again.outcome, "unchanged");
    assert_eq!(again.fetched, 2, "only the refused payloads are fetched again (they have no good copy)");
    assert_eq!(again.not_modified as usize, 1 + 6, "{again:?}");
}

// ------------------------------------------------------- a hostile partner

#[derive(Clone)]
enum Reply {
    Json(String),
    Typed(&'static str, String),
    Status(u16),
    /// Reads the request, never answers.
    Hang,
    /// Promises more bytes than it sends, then closes.
    Truncated(String),
    /// Declares a huge body.
    HugeDeclared,
    /// Streams a body without a length, past any sane limit.
    HugeStream,
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// A tiny HTTP/1.1 server that answers each path as told (one request per connection).
fn hostile_server(routes: Routes, seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (routes, seen) = (routes.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                seen.lock().unwrap().push(path.clone());
                let reply = routes.lock().unwrap().get(&path).cloned().unwrap_or(Reply::Status(404));
                let send = |stream: &mut std::net::TcpStream, status: &str, ctype: &str, body: &[u8]| {
                    let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = stream.write_all(body);
                };
                match reply {
                    Reply::Json(body) => send(&mut stream, "200 OK", "application/json", body.as_bytes()),
                    Reply::Typed(ctype, body) => send(&mut stream, "200 OK", ctype, body.as_bytes()),
                    Reply::Status(code) => send(&mut stream, &format!("{code} Nope"), "text/plain", b"nope"),
                    Reply::Hang => std::thread::sleep(Duration::from_secs(60)),
                    Reply::Truncated(body) => {
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len() * 10);
                        let _ = stream.write_all(body.as_bytes());
                    }
                    Reply::HugeDeclared => {
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n[");
                    }
                    Reply::HugeStream => {
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[");
                        let chunk = vec![b' '; 64 * 1024];
                        for _ in 0..64 {
                            if stream.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.flush();
            });
        }
    });
    port
}

fn partner_item(id: &str, title: &str, href: &str) -> Value {
    json!({
        "type": "Feature", "stac_version": "1.1.0", "id": id, "collection": "CMIP6",
        "stac_extensions": ["https://stac-extensions.github.io/file/v2.1.0/schema.json"],
        "geometry": null, "bbox": [-180.0, -90.0, 180.0, 90.0],
        "properties": {"datetime": null, "start_datetime": "2000-01-01T00:00:00Z", "end_datetime": "2000-12-31T00:00:00Z", "title": title, "latest": true, "retracted": false},
        "links": [], "assets": {"data": {"href": href, "type": "application/netcdf", "roles": ["data"], "file:size": 10, "alternate:name": "evil"}}
    })
}

fn hid(n: &str) -> String {
    format!("CMIP6.CMIP.EVIL.EVIL-1.historical.r1i1p1f1.Amon.{n}.gn.v20200101")
}

/// Every document of the hostile catalogue, well-behaved.
fn good_routes() -> HashMap<String, Reply> {
    let names = ["good", "e500", "hang", "trunc", "badjson", "html", "huge", "stream", "js", "file", "dotdot", "mixed", "xss"];
    let mut links: Vec<Value> = names.iter().map(|n| json!({"rel": "item", "href": format!("./{n}.json")})).collect();
    links.push(json!({"rel": "child", "href": "./sub/catalog.json"}));
    let mut routes = HashMap::new();
    routes.insert("/site/catalog.json".to_string(), Reply::Json(json!({"type": "Catalog", "stac_version": "1.1.0", "id": "evil", "description": "x", "links": links}).to_string()));
    let sub_links = json!([
        {"rel": "child", "href": "../catalog.json"}, {"rel": "child", "href": "./catalog.json"},
        {"rel": "item", "href": "../good.json"}, {"rel": "child", "href": "../../elsewhere/catalog.json"}
    ]);
    routes.insert("/site/sub/catalog.json".to_string(), Reply::Json(json!({"type": "Catalog", "stac_version": "1.1.0", "id": "sub", "description": "x", "links": sub_links}).to_string()));
    for n in names {
        let mut item = partner_item(&hid(n), n, &format!("https://data.evil.example/{n}.nc"));
        if n == "xss" {
            item["properties"]["title"] = json!("<script>alert('title')</script>");
            item["properties"]["cmip6:source"] = json!("<img src=x onerror=alert(1)>");
        }
        routes.insert(format!("/site/{n}.json"), Reply::Json(item.to_string()));
    }
    routes
}

fn faulty_routes() -> HashMap<String, Reply> {
    let mut routes = good_routes();
    let item = |id: &str, href: &str| partner_item(id, "x", href).to_string();
    routes.insert("/site/e500.json".into(), Reply::Status(500));
    routes.insert("/site/hang.json".into(), Reply::Hang);
    routes.insert("/site/trunc.json".into(), Reply::Truncated(item(&hid("trunc"), "https://d/t.nc")));
    routes.insert("/site/badjson.json".into(), Reply::Json(item(&hid("badjson"), "https://d/b.nc")[..60].to_string()));
    routes.insert("/site/html.json".into(), Reply::Typed("text/html", item(&hid("html"), "https://d/h.nc")));
    routes.insert("/site/huge.json".into(), Reply::HugeDeclared);
    routes.insert("/site/stream.json".into(), Reply::HugeStream);
    routes.insert("/site/js.json".into(), Reply::Json(item(&hid("js"), "javascript:alert(document.cookie)")));
    routes.insert("/site/file.json".into(), Reply::Json(item(&hid("file"), "file:///etc/passwd")));
    routes.insert("/site/dotdot.json".into(), Reply::Json(item("../../../../tmp/fedstac-evil", "https://d/x.nc")));
    let mut mixed = partner_item(&hid("mixed"), "mixed", "https://data.evil.example/mixed.nc");
    mixed["assets"]["escape"] = json!({"href": "../../../../../etc/passwd", "type": "application/netcdf", "file:size": 1});
    mixed["assets"]["js"] = json!({"href": " JavaScript:alert(1)", "type": "application/netcdf", "file:size": 1});
    mixed["assets"]["data"]["alternate"] = json!({"x": {"href": "file:///etc/shadow"}});
    routes.insert("/site/mixed.json".into(), Reply::Json(mixed.to_string()));
    routes
}

#[test]
fn a_hostile_partner_neither_corrupts_nor_escapes_the_site() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let routes: Routes = Arc::new(Mutex::new(good_routes()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = hostile_server(routes.clone(), seen.clone());
    let archive = dir.join("archive");
    for f in corpus_datasets().values().next().unwrap() {
        link_file(f, &archive);
    }
    let config = site_config(dir, "ceda", &archive, CEDA_URL, &[("evil", format!("http://127.0.0.1:{port}/site/catalog.json"))]);
    let opts = HarvestOptions {
        fetch: FetchOptions { timeout: Duration::from_millis(1500), connect_timeout: Duration::from_secs(2), retries: 1, backoff: Duration::from_millis(20) },
        max_document_bytes: 1 << 20,
        ..quick_opts()
    };

    // 1. Well-behaved: everything is mirrored and merged.
    let first = harvest_all(&config, &opts).remove(0);
    assert_eq!((first.outcome.as_str(), first.items, first.refused + first.failed), ("updated", 13, 0), "{first:#?}");
    build(config.clone());
    let site_before = snapshot(&config.output);
    let mirror = fedstac::harvest::mirror::mirror_file(&config.cache, "evil");
    let mirror_before = std::fs::read(&mirror).unwrap();

    // 2. Every fault at once: the harvest ends with a report, keeps the last good copies, and the site rebuilds unchanged.
    *routes.lock().unwrap() = faulty_routes();
    let started = Instant::now();
    let report = harvest_all(&config, &opts).remove(0);
    assert!(started.elapsed() < Duration::from_secs(30), "hung: {:?}", started.elapsed());
    let kinds: BTreeMap<String, (String, String)> = report.problems.iter().map(|p| (p.url.rsplit('/').next().unwrap().to_string(), (p.kind.clone(), p.reason.clone()))).collect();
    let expect = |doc: &str, kind: &str, needle: &str| {
        let (k, why) = kinds.get(doc).unwrap_or_else(|| panic!("{doc} not reported: {kinds:#?}"));
        assert_eq!(k, kind, "{doc}: {why}");
        assert!(why.contains(needle), "{doc}: {why:?} lacks {needle:?}");
    };
    expect("e500.json", "failed", "HTTP 500");
    expect("hang.json", "failed", "timed out");
    expect("trunc.json", "failed", "");
    expect("badjson.json", "refused", "not valid JSON");
    expect("html.json", "refused", "text/html");
    expect("huge.json", "refused", "size limit");
    expect("stream.json", "refused", "size limit");
    expect("js.json", "refused", "no asset");
    expect("file.json", "refused", "no asset");
    expect("dotdot.json", "refused", "safe file name");
    assert!(report.problems.iter().filter(|p| p.kind != "skipped").all(|p| p.kept_previous), "every faulty document had a good copy to keep");
    assert!(report.notes.iter().any(|n| n.contains("mixed.json") && n.contains("escape") && n.contains("outside")), "{:#?}", report.notes);
    assert!(report.notes.iter().any(|n| n.contains("elsewhere/catalog.json") && n.contains("not followed")), "{:#?}", report.notes);
    assert_eq!(report.items, 13);
    let requested = seen.lock().unwrap().clone();
    assert!(!requested.iter().any(|p| p.contains("elsewhere")), "followed a link out of the partner's catalogue");
    assert_eq!(requested.iter().filter(|p| *p == "/site/sub/catalog.json").count(), 2, "the link cycle is visited once per harvest");
    assert_eq!(report.exit_code(), 2);
    build(config.clone());
    let mirror_after = std::fs::read(&mirror).unwrap();
    let mirrored = fedstac::harvest::mirrored_items(&config.cache, "evil").unwrap();
    let mixed = &mirrored[&hid("mixed")];
    assert_eq!(mixed["assets"].as_object().unwrap().keys().collect::<Vec<_>>(), ["mixed.nc"], "unsafe assets are dropped");
    assert!(mixed["assets"]["mixed.nc"].get("alternate").is_none());
    assert_same_tree(&site_before, &snapshot(&config.output), "the site after a harvest full of faults");

    // Nothing was written outside the site and the cache.
    let outside: Vec<String> = files_below(dir).into_iter().filter(|f| !f.starts_with("site-ceda") && !f.starts_with("cache-ceda") && !f.starts_with("archive") && !f.starts_with(".site-ceda") && f != "ceda.yaml").collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(!Path::new("/tmp/fedstac-evil").exists() && !Path::new("/tmp/fedstac-evil.json").exists());
    assert!(files_below(&config.output).iter().all(|f| !f.contains("..") && !f.contains("fedstac-evil")));

    // Metadata is escaped on every page.
    let page = item_html(&config.output, &hid("xss"));
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x"), "unescaped partner text");
    assert!(page.contains("&lt;script&gt;"));

    // 3. The partner is down (500 everywhere), then gone (404 at its root): the mirror stays exactly as it was.
    *routes.lock().unwrap() = good_routes().into_keys().map(|k| (k, Reply::Status(500))).collect();
    let down = harvest_all(&config, &opts).remove(0);
    assert_eq!((down.outcome.as_str(), down.failed, down.kept_previous), ("unchanged", 15, 15), "{down:#?}");
    assert_eq!(std::fs::read(&mirror).unwrap(), mirror_after);
    *routes.lock().unwrap() = HashMap::new();
    let gone = harvest_all(&config, &opts).remove(0);
    assert_eq!((gone.outcome.as_str(), gone.exit_code()), ("failed", 1), "{gone:#?}");
    assert_eq!(std::fs::read(&mirror).unwrap(), mirror_after);
    assert_ne!(mirror_before, mirror_after, "the faulty round re-recorded what it was served");

    // 4. Back to good with one changed item: correctly updated.
    let mut routes_now = good_routes();
    routes_now.insert("/site/good.json".into(), Reply::Json(partner_item(&hid("good"), "good, revised", "https://data.evil.example/good-v2.nc").to_string()));
    *routes.lock().unwrap() = routes_now;
    let back = harvest_all(&config, &opts).remove(0);
    assert_eq!((back.outcome.as_str(), back.refused + back.failed), ("updated", 0), "{back:#?}");
    build(config.clone());
    let good = &site_items(&config.output)[&hid("good")];
    assert_eq!(good.assets()["good-v2.nc"]["href"], "https://data.evil.example/good-v2.nc");
    assert_eq!(good.prop("title"), "good, revised");
}

/// Harvests with `--jobs 1` from a rate-limited nginx until a few items are journaled, then SIGKILL.
fn interrupted_harvest(url: &str, cache: &Path) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedstac"))
        .args(["--quiet", "harvest", url, "--name", "dkrz", "--cache", &cache.display().to_string(), "--jobs", "1", "--no-bundle"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = cache.join("partners/dkrz/journal.jsonl");
    let journaled = || std::fs::read_to_string(&journal).map(|s| s.lines().filter(|l| l.contains("\"item\":")).count()).unwrap_or(0);
    let started = Instant::now();
    while journaled() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the slow harvest finished before it could be interrupted");
        assert!(started.elapsed() < Duration::from_secs(120), "nothing journaled");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no chance to tidy up
    child.wait().unwrap();
    journaled()
}

#[test]
fn an_interrupted_harvest_resumes_from_its_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, dkrz_root, _) = make_archives(dir);
    let partner = site_config(dir, "dkrz", &dkrz_root, DKRZ_URL, &[]);
    build(partner.clone());
    let total_items = site_items(&partner.output).len();
    let cache = dir.join("cache-ceda");

    // A slow partner (about a second per item), interrupted after a few items.
    let slow = Nginx::start(&dir.join("nginx-slow"), &partner.output, "limit_rate 3k;");
    let url = slow.url("catalog.json");
    let journaled = interrupted_harvest(&url, &cache);
    assert!(!fedstac::harvest::mirror::mirror_file(&cache, "dkrz").exists(), "no mirror before a harvest completes");
    let port = slow.port;
    drop(slow);

    // The same partner URL again, now fast: the journaled documents are not fetched again.
    let fast = Nginx::start_on(&dir.join("nginx-fast"), &partner.output, "", port);
    let served_before = fast.requests();
    let out = fedstac(&["harvest", &url, "--name", "dkrz", "--cache", &cache.display().to_string(), "--json", "--no-bundle"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["resumed"].as_u64().unwrap() as usize >= journaled, "{report}");
    assert_eq!(report["items"].as_u64().unwrap() as usize, total_items);
    let documents = (report["catalogs"].as_u64().unwrap() + report["items"].as_u64().unwrap()) as usize;
    assert_eq!(report["fetched"].as_u64().unwrap() as usize + report["resumed"].as_u64().unwrap() as usize, documents, "{report}");
    assert_eq!(fast.requests() - served_before, documents - report["resumed"].as_u64().unwrap() as usize + 1, "one request per document not journaled, plus the manifest");
    assert!(!cache.join("partners/dkrz/journal.jsonl").exists(), "the journal is folded into the mirror");
    assert_eq!(fedstac::harvest::mirrored_items(&cache, "dkrz").unwrap().len(), total_items);
}

#[test]
fn a_bundle_is_checked_record_by_record_and_the_crawl_fills_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, dkrz_root, _) = make_archives(dir);
    let partner = site_config(dir, "dkrz", &dkrz_root, DKRZ_URL, &[]);
    build(partner.clone());
    let site = partner.output.clone();
    let nginx = Nginx::start(&dir.join("nginx"), &site, "");
    let url = nginx.url("catalog.json");
    let harvest = |cache: &str| -> (Value, BTreeMap<String, Value>) {
        let cache = dir.join(cache);
        let out = fedstac(&["harvest", &url, "--name", "dkrz", "--cache", &cache.display().to_string(), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
        (serde_json::from_slice(&out.stdout).unwrap(), fedstac::harvest::mirrored_items(&cache, "dkrz").unwrap())
    };
    let count = |r: &Value, k: &str| r[k].as_u64().unwrap();

    // The bundle as built: the manifest and the bundle are the only requests.
    let (good, expected) = harvest("cache-good");
    let documents = count(&good, "catalogs") + count(&good, "items");
    assert_eq!((count(&good, "requests"), count(&good, "bundled")), (2, documents), "{good}");
    assert_eq!(expected.len(), site_items(&site).len());

    // One record altered (its own digest is right, the manifest's is not): that one document is fetched.
    let bundle_path = site.join(fedstac::output::BUNDLE);
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&bundle_path).unwrap());
    let mut records: Vec<_> = fedstac::harvest::bundle::BundleReader::new(std::io::BufReader::new(gz), 1 << 24).map(Result::unwrap).collect();
    let altered = records.iter_mut().find(|r| r.path.ends_with(".json") && r.path.matches('/').count() > 3).unwrap();
    altered.bytes = serde_json::to_vec(&serde_json::from_slice::<Value>(&altered.bytes).unwrap()).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for r in &records {
        let sha = hex::encode(sha2::Sha256::digest(&r.bytes));
        write!(enc, "{}\t{sha}\t{}\n", r.path, r.bytes.len()).unwrap();
        enc.write_all(&r.bytes).unwrap();
        enc.write_all(b"\n").unwrap();
    }
    let bundle = enc.finish().unwrap();
    std::fs::write(&bundle_path, &bundle).unwrap();
    let manifest_path = site.join(fedstac::output::MANIFEST);
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["files"][fedstac::output::BUNDLE]["sha256"] = json!(hex::encode(sha2::Sha256::digest(&bundle)));
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (mixed, items) = harvest("cache-mixed");
    assert_eq!((count(&mixed, "requests"), count(&mixed, "bundled"), count(&mixed, "fetched")), (3, documents - 1, 1), "{mixed}");
    assert_eq!(items, expected);

    // A bundle cut short fails the manifest's digest: every document is crawled instead.
    std::fs::write(&bundle_path, &bundle[..bundle.len() / 2]).unwrap();
    let (cut, items) = harvest("cache-cut");
    assert!(cut["bundle"].as_str().unwrap().contains("is not the manifest's"), "{cut}");
    assert_eq!((count(&cut, "bundled"), count(&cut, "fetched")), (0, documents), "{cut}");
    assert_eq!(items, expected);
}

/// A static catalogue of hand-made partner items, for version rules.
fn write_static_catalogue(dir: &Path, items: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut links = vec![json!({"rel": "root", "href": "./catalog.json"})];
    for item in items {
        let name = format!("{}.json", item["id"].as_str().unwrap());
        std::fs::write(dir.join(&name), item.to_string()).unwrap();
        links.push(json!({"rel": "item", "href": format!("./{name}")}));
    }
    std::fs::write(dir.join("catalog.json"), json!({"type": "Catalog", "stac_version": "1.1.0", "id": "p", "description": "p", "links": links}).to_string()).unwrap();
}

#[test]
fn retracted_stays_retracted_and_latest_spans_the_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let datasets = corpus_datasets();
    let (base, files) = datasets.iter().find(|(b, _)| canonical_version(b).is_some()).unwrap();
    let archive = dir.join("archive");
    files.iter().for_each(|f| link_file(f, &archive));
    let x = base.replace('/', ".");
    let local = format!("{x}.{}", version_of(base));
    let y = "CMIP6.CMIP.PART.PART-1.historical.r1i1p1f1.Amon.tas.gn";
    let item = |id: &str, retracted: bool| {
        let mut i = partner_item(id, id, &format!("https://p.example/{id}.nc"));
        i["properties"]["retracted"] = json!(retracted);
        i["properties"]["latest"] = json!(!retracted);
        i["assets"]["data"]["alternate:name"] = json!("p");
        i
    };
    // The partner retracted our version and a newer one of X; of Y it retracted only the newer.
    let items = [item(&local, true), item(&format!("{x}.v20991231"), true), item(&format!("{y}.v20190101"), false), item(&format!("{y}.v20200101"), true)];
    write_static_catalogue(&dir.join("partner"), &items);
    let nginx = Nginx::start(&dir.join("nginx"), &dir.join("partner"), "");
    let config = site_config(dir, "ceda", &archive, CEDA_URL, &[("p", nginx.url("catalog.json"))]);
    let report = harvest_all(&config, &quick_opts()).remove(0);
    assert_eq!((report.items, report.refused), (4, 0), "{report:#?}");
    build(config.clone());
    let site = site_items(&config.output);
    let status = |id: &str| (site[id].prop("retracted").as_bool().unwrap(), site[id].prop("latest").as_bool().unwrap());
    assert_eq!(status(&local), (true, false), "a version retracted anywhere is retracted here");
    assert_eq!(held_at(&site[&local]), ["ceda", "p"]);
    assert_eq!(status(&format!("{x}.v20991231")), (true, false));
    assert_eq!(status(&format!("{y}.v20190101")), (false, true), "a retracted newer version does not supersede");
    assert_eq!(status(&format!("{y}.v20200101")), (true, false));
    assert!(item_html(&config.output, &local).contains("This dataset version has been retracted."));
}
