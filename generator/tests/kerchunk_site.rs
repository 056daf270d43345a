//! Kerchunk sidecars in built sites (generator/src/sidecars.rs): every
//! catalogued file gets a reference file and the item an asset for it,
//! multi-file datasets a combined one; the three URL modes; determinism;
//! incremental rebuilds that read only changed files; an unsupported codec
//! (szip, written through libnetcdf) reported per variable while the file's
//! other variables stay referenced. Reference contents are checked against
//! libnetcdf in kerchunk_corpus.rs and, through xarray over HTTP, in
//! tests/python/test_kerchunk.py.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::*;
use fedstac::build::BuildSummary;
use fedstac::config::SiteConfig;
use serde_json::Value;

/// Two files, combined along time.
const EC_EARTH: &str = "CMIP6/DCPP/EC-Earth-Consortium/EC-Earth3/dcppA-hindcast/s1960-r6i2p1f1/Amon/tas/gr/v20200508";
/// Two files that overlap in time: not combined (a warning), each file still referenced.
const IPSL: &str = "CMIP6/CMIP/IPSL/IPSL-CM6A-LR/historical/r1i1p1f1/Amon/rlds/gr/v20180803";
/// One netCDF-4 file.
const TOS: &str = "CMIP6/CMIP/MPI-M/MPI-ESM1-2-LR/historical/r1i1p1f1/Omon/tos/gn/v20190710";
/// One netCDF classic file.
const FGOALS: &str = "CMIP6/CMIP/CAS/FGOALS-g3/historical/r1i1p1f1/Amon/tas/gn/v20190818";

/// Tests here share libnetcdf (not thread-safe outside the netcdf crate's lock) and take a while: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn item_id(rel_dir: &str) -> String {
    rel_dir.replace('/', ".")
}

struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Scratch {
    fn new(datasets: &[&str]) -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for d in datasets {
            copy_dataset(d, &dir.join("archive"));
        }
        Scratch { _tmp: tmp, dir }
    }
    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    fn output(&self) -> PathBuf {
        self.dir.join("site")
    }
    fn config(&self, urls: &str) -> SiteConfig {
        let path = self.dir.join("site.yaml");
        write_config(&path, "test", &self.archive(), &self.output(), &self.dir.join("cache"), "");
        // kerchunk is per root: append it to the (only) root.
        let yaml = std::fs::read_to_string(&path).unwrap().replace(
            "    data_url: https://example.org/data/\n",
            &format!("    data_url: https://example.org/data/\n    kerchunk: {{ enabled: true, urls: {urls} }}\n"),
        );
        std::fs::write(&path, yaml).unwrap();
        SiteConfig::load(&path).unwrap()
    }
}

fn kerchunk(summary: &BuildSummary) -> &fedstac::sidecars::SidecarSummary {
    summary.kerchunk.as_ref().expect("sidecars are enabled")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file an asset href (relative to the item) points at in the site.
fn resolve(item: &SiteItem, href: &str) -> PathBuf {
    let mut p = item.path.parent().unwrap().to_path_buf();
    for part in href.split('/') {
        match part {
            ".." => {
                p.pop();
            }
            "." => {}
            other => p.push(other),
        }
    }
    p
}

fn sidecar_assets(item: &SiteItem) -> BTreeMap<String, Value> {
    item.assets()
        .iter()
        .filter(|(_, a)| a["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "kerchunk")))
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect()
}

/// Every chunk URL of a reference file.
fn chunk_urls(refs: &Value) -> Vec<String> {
    let mut urls: Vec<String> = refs["refs"].as_object().unwrap().values().filter_map(|v| v.as_array()).map(|r| r[0].as_str().unwrap().to_string()).collect();
    urls.sort();
    urls.dedup();
    urls
}

#[test]
fn sidecars_and_assets_for_every_file_and_dataset() {
    let _guard = serial();
    let s = Scratch::new(&[EC_EARTH, IPSL, TOS, FGOALS]);
    let summary = build(s.config("public"));
    let k = kerchunk(&summary);
    assert_eq!((k.files, k.read, k.cached, k.combined, k.failed, k.not_combined), (6, 6, 0, 1, 0, 1), "{k:#?}");
    assert!(summary.warnings.iter().any(|w| w.starts_with(&item_id(IPSL)) && w.contains("not combined") && w.contains("overlap in time")), "{:#?}", summary.warnings);

    let items = site_items(&s.output());
    let mut urls_seen = 0;
    for (dir, files) in [(EC_EARTH, 2), (IPSL, 2), (TOS, 1), (FGOALS, 1)] {
        let item = &items[&item_id(dir)];
        let sidecars = sidecar_assets(item);
        let data: Vec<(&String, &Value)> = item.assets().iter().filter(|(k, _)| !sidecars.contains_key(*k)).collect();
        assert_eq!(data.len(), files, "{dir}");
        // A dataset view for every dataset that has one; each file's own sidecar where there are several.
        let expected: usize = match (dir, files) {
            (IPSL, _) => 2,
            (_, 1) => 1,
            (_, n) => n + 1,
        };
        assert_eq!(sidecars.len(), expected, "{dir}: {:?}", sidecars.keys());
        for (key, a) in &sidecars {
            assert_eq!(a["type"], "application/json", "{key}");
            assert_eq!(a["roles"], serde_json::json!(["references", "kerchunk"]), "{key}");
            assert_eq!(a["protocol"], "kerchunk", "{key}");
            assert_eq!(&a["created"], item.prop("created"), "{key}");
            assert!(a.get("file:size").is_none() && a.get("file:checksum").is_none(), "{key}: sidecars differ per site");
            let href = a["href"].as_str().unwrap();
            assert!(href.starts_with("../") && href.contains(&format!("kerchunk/{}/", item.id())), "{key}: {href}");
            let path = resolve(item, href);
            assert!(path.starts_with(s.output().join("kerchunk")), "{key}: {}", path.display());
            let refs = read_json(&path);
            assert_eq!(refs["version"], 1);
            // public: every chunk points at a data asset's public href.
            let hrefs: Vec<&str> = data.iter().map(|(_, a)| a["href"].as_str().unwrap()).collect();
            urls_seen += chunk_urls(&refs).len();
            for url in chunk_urls(&refs) {
                assert!(hrefs.contains(&url.as_str()), "{key}: {url} is not a data asset's href");
            }
        }
        if dir != IPSL {
            assert!(sidecars.contains_key("kerchunk"), "{dir}");
        }
        // The item page shows a runnable snippet for the dataset view.
        let html = std::fs::read_to_string(item.path.with_extension("html")).unwrap();
        if sidecars.contains_key("kerchunk") {
            assert!(html.contains("Open with Python") && html.contains("reference:") && html.contains("xr.open_dataset("), "{dir}: no snippet");
        }
    }
    assert!(urls_seen >= 3, "chunks that are not inline point at the files");
    // The combined view spans both files' time steps.
    let ec = &items[&item_id(EC_EARTH)];
    let combined = read_json(&resolve(ec, ec.assets()["kerchunk"]["href"].as_str().unwrap()));
    assert!(ec.assets()["kerchunk"]["href"].as_str().unwrap().ends_with("/dataset.json"));
    let zarray: Value = serde_json::from_str(combined["refs"]["tas/.zarray"].as_str().unwrap()).unwrap();
    assert_eq!(zarray["shape"][0], 14, "2 + 12 months");
    assert!(chunk_urls(&combined).len() <= 2, "small chunks are inline");
}

#[test]
fn relative_and_local_urls() {
    let _guard = serial();
    let s = Scratch::new(&[EC_EARTH, FGOALS]);
    build(s.config("relative"));
    let items = site_items(&s.output());
    for item in items.values() {
        for (key, a) in sidecar_assets(item) {
            assert_eq!(a["fedstac:dir_template"], "u", "{key}");
            let path = resolve(item, a["href"].as_str().unwrap());
            let refs = read_json(&path);
            assert_eq!(refs["templates"], serde_json::json!({"u": "."}), "{key}");
            for url in chunk_urls(&refs) {
                // {{u}} is the sidecar's directory: the rest leads to the file, as served beside the site.
                let rest = url.strip_prefix("{{u}}/").unwrap_or_else(|| panic!("{key}: {url}"));
                let target = resolve(&SiteItem { path: path.clone(), json: Value::Null }, rest);
                assert!(target.starts_with(s.archive()) && target.is_file(), "{key}: {url} → {}", target.display());
            }
        }
    }

    build(s.config("local"));
    for item in site_items(&s.output()).values() {
        for (key, a) in sidecar_assets(item) {
            assert!(a.get("fedstac:dir_template").is_none());
            let refs = read_json(&resolve(item, a["href"].as_str().unwrap()));
            assert!(refs.get("templates").is_none());
            for url in chunk_urls(&refs) {
                assert!(Path::new(&url).is_absolute() && Path::new(&url).is_file() && Path::new(&url).starts_with(s.archive()), "{key}: {url}");
            }
        }
    }
}

#[test]
fn deterministic_and_incremental() {
    let _guard = serial();
    let s = Scratch::new(&[EC_EARTH, TOS, FGOALS]);
    let first = build(s.config("relative"));
    assert_eq!((kerchunk(&first).read, kerchunk(&first).cached), (4, 0));
    let tree = snapshot(&s.output());
    assert!(tree.keys().filter(|k| k.starts_with("kerchunk/")).count() == 5, "4 files + 1 combined: {:?}", tree.keys().filter(|k| k.starts_with("kerchunk/")).collect::<Vec<_>>());

    // Nothing changed: every reference from the cache, byte-identical site.
    let again = build(s.config("relative"));
    assert_eq!((kerchunk(&again).read, kerchunk(&again).cached), (0, 4), "{:#?}", again.kerchunk);
    assert_same_tree(&tree, &snapshot(&s.output()), "rebuild with nothing changed");

    // A cold build (no cache, no previous site) gives the same bytes.
    std::fs::remove_dir_all(s.output()).unwrap();
    std::fs::remove_dir_all(s.dir.join("cache")).unwrap();
    let cold = build(s.config("relative"));
    assert_eq!(kerchunk(&cold).read, 4);
    assert_same_tree(&tree, &snapshot(&s.output()), "a cold rebuild");

    // Another URL mode reads nothing again (the cache holds references without URLs).
    let public = build(s.config("public"));
    assert_eq!(kerchunk(&public).read, 0);

    // One file changed: only it is read again; the dataset's combined view is redone.
    let changed = s.archive().join(EC_EARTH).join("tas_Amon_EC-Earth3_dcppA-hindcast_s1960-r6i2p1f1_gr_196101-196112.nc");
    let bytes = std::fs::read(&changed).unwrap();
    std::fs::write(&changed, &bytes).unwrap(); // same bytes, new mtime
    let filetime = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&changed).unwrap().set_modified(filetime).unwrap();
    let third = build(s.config("public"));
    assert_eq!((kerchunk(&third).read, kerchunk(&third).cached, kerchunk(&third).combined), (1, 3, 1), "{:#?}", third.kerchunk);

    // A dataset removed: its sidecars leave the site and its cache entries the cache.
    let cache_entries = || std::fs::read_dir(s.dir.join("cache/kerchunk")).unwrap().count();
    assert_eq!(cache_entries(), 4);
    std::fs::remove_dir_all(s.archive().join(TOS)).unwrap();
    let fourth = build(s.config("public"));
    assert_eq!(kerchunk(&fourth).files, 3);
    assert!(!s.output().join("kerchunk").join(item_id(TOS)).exists());
    assert_eq!(cache_entries(), 3);
}

/// Adds a variable compressed with szip (no zarr codec) to a netCDF-4 file, through libnetcdf.
fn add_szip_variable(path: &Path) {
    let c = |s: &str| CString::new(s).unwrap();
    let check = |rc: i32, what: &str| assert_eq!(rc, 0, "{what}: netCDF error {rc}");
    let path_c = c(path.to_str().unwrap());
    // SAFETY: plain libnetcdf calls on a file this test owns; pointers outlive each call.
    unsafe {
        let (mut ncid, mut dimid, mut varid) = (0, 0, 0);
        check(netcdf_sys::nc_open(path_c.as_ptr(), netcdf_sys::NC_WRITE, &mut ncid), "open");
        check(netcdf_sys::nc_redef(ncid), "redef");
        check(netcdf_sys::nc_def_dim(ncid, c("packed_x").as_ptr(), 64, &mut dimid), "def_dim");
        check(netcdf_sys::nc_def_var(ncid, c("packed").as_ptr(), netcdf_sys::NC_FLOAT, 1, &dimid, &mut varid), "def_var");
        check(netcdf_sys::nc_def_var_chunking(ncid, varid, netcdf_sys::NC_CHUNKED, [64usize].as_ptr()), "chunking");
        // options mask 32 = nearest neighbour, 8 pixels per block.
        check(netcdf_sys::nc_def_var_szip(ncid, varid, 32, 8), "szip");
        check(netcdf_sys::nc_enddef(ncid), "enddef");
        let values: Vec<f32> = (0..64).map(|i| i as f32).collect();
        check(netcdf_sys::nc_put_var_float(ncid, varid, values.as_ptr()), "put");
        check(netcdf_sys::nc_close(ncid), "close");
    }
}

#[test]
fn unsupported_codec_is_reported_per_variable() {
    let _guard = serial();
    let s = Scratch::new(&[TOS]);
    let file = std::fs::read_dir(s.archive().join(TOS)).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "nc")).unwrap();
    add_szip_variable(&file);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();

    let summary = build(s.config("local"));
    assert!(summary.skipped.is_empty(), "the catalogue still takes the file: {:?}", summary.skipped);
    assert_eq!(kerchunk(&summary).unreferenced_variables, 1, "{:#?}", summary.kerchunk);
    let warning = summary.warnings.iter().find(|w| w.contains("kerchunk")).unwrap_or_else(|| panic!("{:#?}", summary.warnings));
    assert!(warning.contains(&name) && warning.contains("variable packed") && warning.contains("szip"), "{warning}");

    let items = site_items(&s.output());
    let item = &items[&item_id(TOS)];
    let asset = &item.assets()["kerchunk"];
    assert!(asset["fedstac:unreferenced"]["packed"].as_str().unwrap().contains("szip"), "{asset}");
    let refs = read_json(&resolve(item, asset["href"].as_str().unwrap()));
    let arrays: Vec<&str> = refs["refs"].as_object().unwrap().keys().filter_map(|k| k.strip_suffix("/.zarray")).collect();
    assert!(!arrays.contains(&"packed"));
    for var in ["tos", "time", "time_bnds"] {
        assert!(arrays.contains(&var), "{var} must still be referenced: {arrays:?}");
    }
    let html = std::fs::read_to_string(item.path.with_extension("html")).unwrap();
    assert!(html.contains("Not in the references") && html.contains("packed"), "the page says what is missing");
}
