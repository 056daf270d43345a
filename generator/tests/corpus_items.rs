//! The real CMIP6 corpus (../shared/corpus) built into STAC items, checked
//! against FACTS.json (values read independently with netCDF4-python) and
//! against the files on disk: ids, facets, assets, sizes, time spans in 7
//! calendars, bounding boxes, versions, PIDs, and every documented quirk.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use fedstac::build::BuildSummary;
use fedstac::recipe::PathRejection;
use serde_json::Value;

const CEDA_DATA_URL: &str = "https://data.ceda.ac.uk/badc/cmip6/data/";
const DKRZ_DATA_URL: &str = "https://esgf3.dkrz.de/thredds/fileServer/cmip6/";
const DKRZ_CORDEX_URL: &str = "https://esgf3.dkrz.de/thredds/fileServer/cordex/";
/// DRS facets of a CMIP6 dataset id, in order.
const DRS: [&str; 9] = ["mip_era", "activity_id", "institution_id", "source_id", "experiment_id", "member_id", "table_id", "variable_id", "grid_label"];
const FX_START: &str = "0001-01-01T00:00:00Z";
const FX_END: &str = "9999-12-31T23:59:59Z";

// ---------------------------------------------------------------- the builds

/// A site built once per test binary and shared by the tests that read it.
struct Site {
    output: PathBuf,
    summary: BuildSummary,
    items: BTreeMap<String, SiteItem>,
}

/// Scratch space for the shared builds. Statics are never dropped, so it
/// lives under cargo's target tmp dir, and leftovers older than ten minutes
/// (from earlier runs) are removed.
fn scratch(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let prefix = format!("corpus_items-{name}-");
    for entry in std::fs::read_dir(base).unwrap().flatten() {
        let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age.as_secs() > 600);
        if entry.file_name().to_string_lossy().starts_with(&prefix) && stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tempfile::Builder::new().prefix(&prefix).tempdir_in(base).unwrap().keep()
}

/// Builds a shared site once; a failed build fails every test that uses it
/// (with its message) instead of being retried by each.
fn once(cell: &'static OnceLock<Result<Site, String>>, make: fn() -> Site) -> &'static Site {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(make).map_err(|e| e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
    });
    match result {
        Ok(site) => site,
        Err(msg) => panic!("building the shared site failed: {msg}"),
    }
}

/// config/corpus-ceda.yaml, output and cache in scratch space.
fn ceda() -> &'static Site {
    static SITE: OnceLock<Result<Site, String>> = OnceLock::new();
    once(&SITE, || {
        let dir = scratch("ceda");
        let output = dir.join("site");
        let config = load_config(&repo().join("config/corpus-ceda.yaml"), &output, &dir.join("cache"));
        assert_eq!(config.roots.len(), 1);
        assert_eq!(config.roots[0].path, ceda_root(), "corpus-ceda.yaml should scan the CEDA tree");
        assert_eq!(config.roots[0].data_url, CEDA_DATA_URL);
        let summary = build(config);
        let items = site_items(&output);
        Site { output, summary, items }
    })
}

/// The DKRZ layout: `pool/data/CMIP6/data` (CMIP6 via a symlink into the
/// CEDA tree) and `pool/data/CORDEX/data`, with the CMIP6 and CORDEX recipes.
fn dkrz() -> &'static Site {
    static SITE: OnceLock<Result<Site, String>> = OnceLock::new();
    once(&SITE, || {
        let dir = scratch("dkrz");
        let output = dir.join("site");
        let cmip6_root = dkrz_cmip6_root(&dir);
        let cordex_root = test_data().join("pool/data/CORDEX/data");
        assert!(cordex_root.is_dir(), "{} is missing", cordex_root.display());
        let yaml = format!(
            "site:\n  name: dkrz\n  title: DKRZ CMIP6 and CORDEX archive (corpus)\nroots:\n  \
             - path: {}\n    recipe: cmip6\n    data_url: {DKRZ_DATA_URL}\n  \
             - path: {}\n    recipe: cordex\n    data_url: {DKRZ_CORDEX_URL}\ncv_dir: {}\noutput: {}\ncache: {}\n",
            cmip6_root.display(),
            cordex_root.display(),
            cv_dir().display(),
            output.display(),
            dir.join("cache").display()
        );
        let config_path = dir.join("corpus-dkrz.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let config = fedstac::config::SiteConfig::load(&config_path).unwrap();
        let summary = build(config);
        let items = site_items(&output);
        Site { output, summary, items }
    })
}

/// DKRZ's CMIP6 root. In the corpus `pool/data/CMIP6/data/CMIP6` is a symlink
/// to the CEDA tree (SYMLINKS.tsv); snapshots that stored it as a plain file
/// get the link recreated in `dir`.
fn dkrz_cmip6_root(dir: &Path) -> PathBuf {
    let corpus_root = test_data().join("pool/data/CMIP6/data");
    let link = corpus_root.join("CMIP6");
    if link.is_dir() {
        return corpus_root;
    }
    let listed = std::fs::read_to_string(corpus().join("SYMLINKS.tsv")).unwrap();
    let target = listed
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(path, _)| path.ends_with("test_data/pool/data/CMIP6/data/CMIP6"))
        .map(|(_, t)| t.trim_start_matches("->").trim().to_string())
        .expect("SYMLINKS.tsv lists pool/data/CMIP6/data/CMIP6");
    let target = corpus_root.join(target).canonicalize().unwrap();
    assert_eq!(target, ceda_root().join("CMIP6").canonicalize().unwrap());
    let root = dir.join("pool/data/CMIP6/data");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&target, root.join("CMIP6")).unwrap();
    root
}

// ----------------------------------------------------- expectations from FACTS

/// One CMIP6 dataset directory of the CEDA tree, as FACTS describes it.
struct Dataset {
    /// Relative to the CEDA root: `CMIP6/<8 facets>/<version dir>`.
    rel_dir: String,
    /// The 9 DRS facet values (mip_era … grid_label).
    drs: Vec<String>,
    /// `v20190710`, `latest` or `files/d20190807`.
    version_dir: String,
    files: Vec<Value>,
}

impl Dataset {
    fn dir(&self) -> PathBuf {
        ceda_root().join(&self.rel_dir)
    }
    fn base_id(&self) -> String {
        self.drs.join(".")
    }
    fn facet(&self, name: &str) -> &str {
        &self.drs[DRS.iter().position(|d| *d == name).unwrap()]
    }
    fn id(&self) -> String {
        format!("{}.v{}", self.base_id(), self.version())
    }
    /// The documented rule (recipes/cmip6.yaml): `v<date>` and `files/d<date>`
    /// name the version; `latest` is its symlink target, else the newest
    /// `creation_date` (YYYYMMDD) of its files.
    fn version(&self) -> String {
        if let Some(v) = self.version_dir.strip_prefix("files/d") {
            return v.to_string();
        }
        if self.version_dir == "latest" {
            let dir = self.dir();
            if std::fs::symlink_metadata(&dir).unwrap().file_type().is_symlink() {
                let target = std::fs::read_link(&dir).unwrap();
                return target.file_name().unwrap().to_string_lossy().trim_start_matches('v').to_string();
            }
            return self
                .files
                .iter()
                .filter_map(|f| f["global_attrs"]["creation_date"].as_str())
                .filter_map(|d| chrono::NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok())
                .max()
                .unwrap_or_else(|| panic!("{}: no file has a creation_date", self.rel_dir))
                .format("%Y%m%d")
                .to_string();
        }
        self.version_dir.strip_prefix('v').unwrap_or_else(|| panic!("unexpected version dir {}", self.version_dir)).to_string()
    }
    fn fact(&self, name: &str) -> Option<&Value> {
        self.files.iter().find(|f| file_name(f) == name)
    }
    /// The `.nc` files present in the directory.
    fn files_on_disk(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".nc") && !n.starts_with('.'))
            .collect()
    }
}

fn file_name(fact: &Value) -> &str {
    fact["path"].as_str().unwrap().rsplit('/').next().unwrap()
}

/// CMIP6 files of the CEDA tree in FACTS, grouped by directory.
fn datasets() -> Vec<Dataset> {
    let mut by_dir: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for fact in facts() {
        let path = fact["path"].as_str().unwrap();
        if !path.contains("/badc/cmip6/") {
            continue;
        }
        let rel = path.split_once("/badc/cmip6/data/").unwrap().1;
        by_dir.entry(rel.rsplit_once('/').unwrap().0.to_string()).or_default().push(fact);
    }
    by_dir
        .into_iter()
        .map(|(rel_dir, files)| {
            let parts: Vec<&str> = rel_dir.split('/').collect();
            let facets = &files[0]["drs_path_facets"];
            let drs: Vec<String> = DRS.iter().map(|k| facets[*k].as_str().unwrap_or_else(|| panic!("{rel_dir}: no {k}")).to_string()).collect();
            assert_eq!(parts[..9], drs.iter().map(String::as_str).collect::<Vec<_>>()[..], "FACTS facets of {rel_dir} disagree with its path");
            Dataset { version_dir: parts[9..].join("/"), rel_dir, drs, files }
        })
        .collect()
}

/// A FACTS time (`YYYY-MM-DDThh:mm:ss[.ffffff]`) as the generator must write
/// it: rounded to the second, day clamped to the Gregorian month (360_day's
/// 30 February), RFC 3339 with `Z`.
fn rfc3339(cf: &str) -> String {
    let (date, time) = cf.split_once('T').unwrap_or_else(|| panic!("bad FACTS time {cf}"));
    let mut d = date.split('-').map(|x| x.parse::<u32>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let mut t = time.split(':');
    let (h, mi): (u32, u32) = (t.next().unwrap().parse().unwrap(), t.next().unwrap().parse().unwrap());
    let s: f64 = t.next().unwrap().parse().unwrap();
    let secs = h * 3600 + mi * 60 + s.round() as u32;
    assert!(secs < 86400, "rounding {cf} crosses midnight");
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
    format!("{y:04}-{m:02}-{:02}T{:02}:{:02}:{:02}Z", day.min(month_len), secs / 3600, secs / 60 % 60, secs % 60)
}

/// (start, end) over the files: bounds when present, else the coordinate.
fn expected_span(files: &[Value]) -> Option<(String, String)> {
    let times: Vec<&Value> = files.iter().map(|f| &f["time"]).filter(|t| t.is_object()).collect();
    let pick = |t: &Value, bound: &str, value: &str| rfc3339(t[bound].as_str().or(t[value].as_str()).unwrap());
    let start = times.iter().map(|t| pick(t, "bounds_first", "first")).min()?;
    let end = times.iter().map(|t| pick(t, "bounds_last", "last")).max()?;
    Some((start, end))
}

/// Latitude extent over the files. FACTS keeps values netCDF4-python did not
/// mask (SAM0-UNICON's latitude holds 1e30 beside its 1e20 _FillValue); for
/// such files the valid latitudes (|lat| ≤ 90) are read from the file itself.
fn expected_lat_range(ds: &Dataset) -> Option<[f64; 2]> {
    let mut range: Option<[f64; 2]> = None;
    for f in &ds.files {
        let Some(r) = f["lat_range"].as_array() else { continue };
        let (mut lo, mut hi) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        if lo.abs() > 90.0 || hi.abs() > 90.0 {
            [lo, hi] = valid_latitudes(&ds.dir().join(file_name(f)));
        }
        range = Some(match range {
            None => [lo, hi],
            Some([a, b]) => [a.min(lo), b.max(hi)],
        });
    }
    range
}

fn valid_latitudes(path: &Path) -> [f64; 2] {
    let file = open_netcdf(path);
    let var = ["lat", "latitude", "nav_lat"].iter().find_map(|n| file.variable(n)).unwrap_or_else(|| panic!("{}: no latitude", path.display()));
    let values: Vec<f64> = var.get_values::<f64, _>(..).unwrap().into_iter().filter(|v| v.abs() <= 90.0).collect();
    [values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(f64::NEG_INFINITY, f64::max)]
}

/// ICON's grid: lat and lon both on one cell dimension.
fn is_unstructured(path: &Path) -> bool {
    let file = open_netcdf(path);
    let find = |names: &[&str]| names.iter().find_map(|n| file.variable(n));
    let (Some(lat), Some(lon)) = (find(&["lat", "latitude", "nav_lat"]), find(&["lon", "longitude", "nav_lon"])) else { return false };
    let (ld, nd) = (lat.dimensions(), lon.dimensions());
    ld.len() == 1 && nd.len() == 1 && ld[0].name() == nd[0].name() && ld[0].name() != lat.name()
}

fn pid(base_id: &str, version: &str) -> String {
    format!("hdl:21.14100/{}", uuid::Uuid::new_v3(&uuid::Uuid::NAMESPACE_URL, format!("{base_id}.v{version}").as_bytes()))
}

fn cmip6_items(site: &Site) -> BTreeMap<&str, &SiteItem> {
    site.items.iter().filter(|(_, i)| i.json["collection"] == "CMIP6").map(|(id, i)| (id.as_str(), i)).collect()
}

/// Collects mismatches so one run reports all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, id: &str, what: &str, found: T, expected: T) {
        self.check(found == expected, || format!("{id}: {what} is {found:?}, expected {expected:?}"));
    }
    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} problem(s):\n  {}", self.0.len(), self.0.join("\n  "));
    }
}

// --------------------------------------------------------------------- tests

/// Every CMIP6 dataset directory of FACTS is one item with the right id,
/// facets, assets, sizes, time span, bbox, latest flag and PID; nothing else.
#[test]
fn every_cmip6_dataset_is_an_item_matching_facts() {
    let site = ceda();
    let datasets = datasets();
    assert_eq!(datasets.iter().map(|d| d.files.len()).sum::<usize>(), 132, "FACTS lists 132 CMIP6 files");
    let items = cmip6_items(site);
    let mut p = Problems::default();

    let expected_ids: BTreeSet<String> = datasets.iter().map(Dataset::id).collect();
    assert_eq!(expected_ids.len(), datasets.len(), "two dataset directories resolve to one id");
    let found_ids: BTreeSet<String> = items.keys().map(|s| s.to_string()).collect();
    p.eq("site", "missing items", expected_ids.difference(&found_ids).collect::<Vec<_>>(), vec![]);
    p.eq("site", "unexpected items", found_ids.difference(&expected_ids).collect::<Vec<_>>(), vec![]);
    p.eq("site", "summary.items", site.summary.items, datasets.len());
    p.eq("site", "summary.files_used", site.summary.files_used, 132);
    p.eq("site", "summary.skipped", site.summary.skipped.clone(), vec![]);

    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for ds in &datasets {
        let v = newest.entry(ds.base_id()).or_default();
        *v = v.clone().max(ds.version());
    }

    for ds in &datasets {
        let id = ds.id();
        let Some(item) = items.get(id.as_str()) else { continue };
        let version = ds.version();

        // DRS facets: the path is the dataset's identity.
        for facet in &DRS[1..] {
            let key = format!("cmip6:{facet}");
            let value = item.prop(&key);
            if *facet == "activity_id" {
                // A list: the activities the files name, including the path's.
                p.check(value.as_array().is_some_and(|a| a.iter().any(|v| v == ds.facet(facet))), || format!("{id}: {key} = {value} lacks {:?}", ds.facet(facet)));
            } else {
                p.eq(&id, &key, value.as_str(), Some(ds.facet(facet)));
            }
        }
        p.eq(&id, "version", item.prop("version").as_str(), Some(version.as_str()));
        p.eq(&id, "base_id", item.prop("base_id").as_str(), Some(ds.base_id().as_str()));
        p.eq(&id, "cmip6:pid", item.prop("cmip6:pid").as_str(), Some(pid(&ds.base_id(), &version).as_str()));
        p.eq(&id, "latest", item.prop("latest").as_bool(), Some(newest[&ds.base_id()] == version));

        // Assets: the .nc files on disk, nothing else, with FACTS sizes.
        let on_disk = ds.files_on_disk();
        let assets: BTreeSet<String> = item.assets().keys().cloned().collect();
        p.eq(&id, "assets", &assets, &on_disk);
        for (name, asset) in item.assets() {
            let expected_size = match ds.fact(name) {
                Some(f) => f["bytes"].as_u64().unwrap(),
                None => std::fs::metadata(ds.dir().join(name)).map(|m| m.len()).unwrap_or(0),
            };
            p.eq(&id, &format!("{name} file:size"), asset["file:size"].as_u64(), Some(expected_size));
            let href = format!("{CEDA_DATA_URL}{}/{name}", ds.rel_dir);
            p.eq(&id, &format!("{name} href"), asset["href"].as_str(), Some(href.as_str()));
        }
        let total: u64 = ds.files.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
        p.eq(&id, "size", item.prop("size").as_u64(), Some(total));

        // Time span, or all of time for time-invariant (fx) datasets.
        let start = item.prop("start_datetime").as_str();
        let end = item.prop("end_datetime").as_str();
        match expected_span(&ds.files) {
            Some((s, e)) => {
                p.eq(&id, "start_datetime", start, Some(s.as_str()));
                p.eq(&id, "end_datetime", end, Some(e.as_str()));
                p.eq(&id, "fedstac:time_invariant", item.prop("fedstac:time_invariant"), &Value::Null);
            }
            None => {
                p.eq(&id, "start_datetime (fx)", start, Some(FX_START));
                p.eq(&id, "end_datetime (fx)", end, Some(FX_END));
                p.eq(&id, "fedstac:time_invariant", item.prop("fedstac:time_invariant"), &Value::Bool(true));
            }
        }
        p.eq(&id, "datetime", item.prop("datetime"), &Value::Null);

        // Latitude extent (unstructured grids are global: checked separately).
        let bbox = item.bbox();
        p.eq(&id, "bbox length", bbox.len(), 4);
        let unstructured = ds.files.iter().any(|f| is_unstructured(&ds.dir().join(file_name(f))));
        if let (Some([south, north]), false, 4) = (expected_lat_range(ds), unstructured, bbox.len()) {
            p.check((bbox[1] - south).abs() < 1e-9 && (bbox[3] - north).abs() < 1e-9, || format!("{id}: bbox south/north {}/{} but the files span latitudes {south}/{north}", bbox[1], bbox[3]));
        }
    }
    p.assert_none();
}

/// Stray partial writes and `.md5` sidecars are no assets; every file seen is
/// either used or ignored by the recipe's include/exclude.
#[test]
fn stray_tmp_and_md5_files_are_not_assets() {
    let site = ceda();
    let on_disk = files_below(&ceda_root());
    let tmp: Vec<&String> = on_disk.iter().filter(|f| f.contains(".ncks.tmp")).collect();
    let md5 = on_disk.iter().filter(|f| f.ends_with(".md5")).count();
    assert_eq!(tmp.len(), 1, "the corpus has one stray .ncks.tmp: {tmp:?}");
    assert!(md5 > 100, "the corpus has .md5 sidecars ({md5})");

    for item in site.items.values() {
        for (name, asset) in item.assets() {
            let href = asset["href"].as_str().unwrap();
            assert!(name.ends_with(".nc") && href.ends_with(".nc"), "{}: asset {name} ({href}) is not a .nc file", item.id());
            assert!(!href.contains(".ncks.tmp") && !href.contains(".md5"), "{}: {href}", item.id());
        }
    }
    // The stray file's directory holds nothing else: no item for it.
    let tmp_dir = tmp[0].rsplit_once('/').unwrap().0;
    assert!(!site.items.values().any(|i| i.assets().values().any(|a| a["href"].as_str().unwrap().contains(tmp_dir))), "an item was made from {tmp_dir}");

    let nc = on_disk.iter().filter(|f| f.ends_with(".nc")).count();
    assert_eq!(site.summary.files_seen, on_disk.len());
    assert_eq!(site.summary.files_used, nc);
    assert_eq!(site.summary.ignored.get(&PathRejection::NotIncluded).copied().unwrap_or(0), on_disk.len() - nc, "{:?}", site.summary.ignored);
}

#[test]
fn zm_file_is_an_asset_of_its_o3_dataset() {
    let item = &ceda().items["CMIP6.CMIP.MPI-M.MPI-ESM1-2-LR.historical.r1i1p1f1.AERmon.o3.gn.v20190710"];
    let names: Vec<&String> = item.assets().keys().collect();
    assert_eq!(names, ["o3_AERmon_MPI-ESM1-2-LR_historical_r1i1p1f1_gn_185001.nc", "o3_AERmon_MPI-ESM1-2-LR_historical_r1i1p1f1_gn_185001_zm.nc"]);
}

/// The DWD DCPP tasmax files say table_id "Amon" and "200 km" though they sit
/// under `day/`: the path wins (with a warning) and the resolution is binned.
#[test]
fn dwd_dcpp_tasmax_uses_path_table_and_binned_resolution() {
    let site = ceda();
    let dwd: Vec<&SiteItem> = site.items.values().filter(|i| i.id().starts_with("CMIP6.DCPP.DWD.MPI-ESM1-2-LR.dcppA-hindcast.") && i.id().contains(".day.tasmax.")).collect();
    assert_eq!(dwd.len(), 10, "10 DWD tasmax datasets");
    // The quirk is really in the files.
    let facts: Vec<Value> = facts().into_iter().filter(|f| f["path"].as_str().unwrap().contains("/DWD/MPI-ESM1-2-LR/") && f["path"].as_str().unwrap().contains("/tasmax/")).collect();
    assert_eq!(facts.len(), 10);
    for f in &facts {
        assert_eq!(f["global_attrs"]["table_id"], "Amon");
        assert_eq!(f["global_attrs"]["nominal_resolution"], "200 km");
    }
    for item in dwd {
        let id = item.id();
        assert_eq!(item.prop_str("cmip6:table_id"), "day", "{id}");
        assert_eq!(item.prop_str("cmip6:nominal_resolution"), "250 km", "{id}");
        assert!(
            site.summary.warnings.iter().any(|w| w.starts_with(id) && w.contains("table_id")),
            "no table_id warning for {id}; warnings: {:#?}",
            site.summary.warnings
        );
    }
}

#[test]
fn hyphenated_dcpp_members_keep_their_start_year() {
    let site = ceda();
    let item = &site.items["CMIP6.DCPP.EC-Earth-Consortium.EC-Earth3.dcppA-hindcast.s1960-r2i1p1f1.Amon.tas.gr.v20201215"];
    assert_eq!(item.prop_str("cmip6:member_id"), "s1960-r2i1p1f1");
    assert_eq!(item.prop_str("cmip6:variant_label"), "r2i1p1f1");
    assert_eq!(item.prop_str("cmip6:sub_experiment_id"), "s1960");
    let member = regex::Regex::new(r"^CMIP6\.DCPP\.[^.]+\.[^.]+\.[^.]+\.s[0-9]{4}-r[0-9]+i[0-9]+p[0-9]+f[0-9]+\.").unwrap();
    let dcpp: Vec<&String> = site.items.keys().filter(|id| id.starts_with("CMIP6.DCPP.")).collect();
    assert_eq!(dcpp.len(), datasets().iter().filter(|d| d.facet("activity_id") == "DCPP").count(), "{dcpp:?}");
    for id in dcpp {
        assert!(member.is_match(id), "{id} has no sYYYY- member");
    }
}

#[test]
fn unstructured_icon_grid_has_global_bbox() {
    let site = ceda();
    let icon: Vec<&SiteItem> = site.items.values().filter(|i| i.id().contains(".ICON-ESM-LR.")).collect();
    assert_eq!(icon.len(), 1, "one ICON-ESM-LR dataset");
    let item = icon[0];
    let file = ceda_root().join(item.assets().values().next().unwrap()["href"].as_str().unwrap().strip_prefix(CEDA_DATA_URL).unwrap());
    assert!(is_unstructured(&file), "{} should be on an unstructured grid", file.display());
    assert_eq!(item.bbox(), [-180.0, -90.0, 180.0, 90.0]);
}

/// The corpus uses 7 calendar names; a 360_day and a julian dataset spot-checked.
#[test]
fn seven_calendars_decode() {
    let calendars: BTreeSet<String> = datasets().iter().flat_map(|d| d.files.iter().filter_map(|f| f["time"]["calendar"].as_str().map(String::from))).collect();
    assert_eq!(calendars, ["360_day", "365_day", "gregorian", "julian", "noleap", "proleptic_gregorian", "standard"].map(String::from).into());

    let site = ceda();
    for (id, start, end, calendar) in [
        ("CMIP6.DCPP.MOHC.HadGEM3-GC31-MM.dcppA-hindcast.s1960-r2i1p1f2.day.tasmin.gn.v20200417", "1960-11-01T00:00:00Z", "1962-01-01T00:00:00Z", "360_day"),
        ("CMIP6.DCPP.MOHC.HadGEM3-GC31-MM.dcppA-hindcast.s2004-r3i1p1f2.Amon.pr.gn.v20200417", "2004-11-01T00:00:00Z", "2015-04-01T00:00:00Z", "360_day"),
        ("CMIP6.CMIP.CCCR-IITM.IITM-ESM.1pctCO2.r1i1p1f1.Omon.tos.gn.v20191204", "1930-01-16T00:00:00Z", "1934-12-17T00:00:00Z", "julian"),
    ] {
        let ds = datasets().into_iter().find(|d| d.id() == id).unwrap_or_else(|| panic!("{id} not in FACTS"));
        assert!(ds.files.iter().all(|f| f["time"]["calendar"] == calendar), "{id} is {calendar}");
        assert_eq!(expected_span(&ds.files), Some((start.to_string(), end.to_string())), "FACTS for {id}");
        let item = &site.items[id];
        assert_eq!((item.prop_str("start_datetime"), item.prop_str("end_datetime")), (start, end), "{id}");
    }
}

#[test]
fn fx_datasets_are_time_invariant() {
    let site = ceda();
    let fx: Vec<Dataset> = datasets().into_iter().filter(|d| d.files.iter().all(|f| f["time"].is_null())).collect();
    assert_eq!(fx.len(), 5, "5 fx/Ofx datasets in the corpus");
    for ds in fx {
        assert!(["fx", "Ofx"].contains(&ds.facet("table_id")), "{}", ds.rel_dir);
        let item = &site.items[&ds.id()];
        assert_eq!((item.prop_str("start_datetime"), item.prop_str("end_datetime")), (FX_START, FX_END));
        assert_eq!(item.prop("fedstac:time_invariant"), &Value::Bool(true));
    }
}

/// The same recipe over DKRZ's layout gives the same CMIP6 items with DKRZ
/// hrefs; the CORDEX root gives a CORDEX collection without the cmip6 extension.
#[test]
fn dkrz_layout_gives_the_same_cmip6_items_and_a_cordex_collection() {
    let (ceda, dkrz) = (ceda(), dkrz());
    assert!(dkrz.summary.skipped.is_empty(), "{:#?}", dkrz.summary.skipped);
    assert_eq!(dkrz.summary.collections, 2);

    let ceda_items = cmip6_items(ceda);
    let dkrz_items = cmip6_items(dkrz);
    assert_eq!(dkrz_items.keys().collect::<Vec<_>>(), ceda_items.keys().collect::<Vec<_>>(), "CMIP6 item ids differ between the layouts");
    for (id, item) in &dkrz_items {
        let twin = ceda_items[id];
        // Where a dataset is held names the site; everything else is the same.
        assert_eq!(item.prop("fedstac:held_at"), &serde_json::json!(["dkrz"]), "{id}");
        assert_eq!(twin.prop("fedstac:held_at"), &serde_json::json!(["ceda"]), "{id}");
        let without_site = |p: &Value| {
            let mut p = p.clone();
            p.as_object_mut().unwrap().remove("fedstac:held_at");
            p
        };
        assert_eq!(without_site(&item.json["properties"]), without_site(&twin.json["properties"]), "{id}: properties differ between the layouts");
        assert_eq!(item.json["bbox"], twin.json["bbox"], "{id}");
        assert_eq!(item.assets().keys().collect::<Vec<_>>(), twin.assets().keys().collect::<Vec<_>>(), "{id}");
        for (name, asset) in item.assets() {
            let href = asset["href"].as_str().unwrap();
            let ceda_href = twin.assets()[name]["href"].as_str().unwrap();
            assert_eq!(href.strip_prefix(DKRZ_DATA_URL), ceda_href.strip_prefix(CEDA_DATA_URL), "{id}: {href}");
            assert!(href.starts_with(&format!("{DKRZ_DATA_URL}CMIP6/")), "{href}");
            assert_eq!(asset["alternate:name"], "dkrz");
            assert_eq!(asset["file:checksum"], twin.assets()[name]["file:checksum"]);
        }
    }

    // CORDEX: one item per dataset directory under pool/data/CORDEX/data.
    let cordex_root = test_data().join("pool/data/CORDEX/data");
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rel in files_below(&cordex_root).into_iter().filter(|f| f.ends_with(".nc")) {
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!((parts.len(), parts[1]), (13, "output"), "{rel}");
        let id = format!("cordex.output.{}.v{}", parts[2..11].join("."), parts[11].trim_start_matches('v'));
        expected.entry(id).or_default().insert(parts[12].to_string());
    }
    assert!(expected.len() >= 5, "{expected:?}");
    let cordex: BTreeMap<&String, &SiteItem> = dkrz.items.iter().filter(|(_, i)| i.json["collection"] == "CORDEX").collect();
    assert_eq!(cordex.keys().map(|k| k.as_str()).collect::<BTreeSet<_>>(), expected.keys().map(String::as_str).collect::<BTreeSet<_>>());
    for (id, item) in cordex {
        assert!(id.starts_with("cordex.output."), "{id}");
        let extensions = item.json["stac_extensions"].as_array().unwrap();
        assert!(!extensions.iter().any(|e| e.as_str().unwrap().contains("cmip6")), "{id}: {extensions:?}");
        let props = item.json["properties"].as_object().unwrap();
        assert!(!props.keys().any(|k| k.starts_with("cmip6:")), "{id} has cmip6 properties");
        assert_eq!(item.assets().keys().cloned().collect::<BTreeSet<_>>(), expected[id], "{id}");
        for asset in item.assets().values() {
            assert!(asset["href"].as_str().unwrap().starts_with(&format!("{DKRZ_CORDEX_URL}cordex/output/")), "{id}: {}", asset["href"]);
        }
    }
    let collection: Value = serde_json::from_slice(&std::fs::read(dkrz.output.join("CORDEX/collection.json")).unwrap()).unwrap();
    assert_eq!(collection["id"], "CORDEX");
    assert!(!collection["stac_extensions"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("cmip6")));
}
