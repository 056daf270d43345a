//! Rebuilding real corpus sites: determinism, incremental reads from the
//! header cache, hard-linked reuse of unchanged outputs, unreadable files
//! (reported, fatal with --strict), and atomic replacement of the tree.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use fedstac::config::SiteConfig;
use fedstac::recipe::PathRejection;
use serde_json::Value;

/// Dataset directories of the corpus (relative to the CEDA root) used below.
const TOS: &str = "CMIP6/CMIP/MPI-M/MPI-ESM1-2-LR/historical/r1i1p1f1/Omon/tos/gn/v20190710";
const O3: &str = "CMIP6/CMIP/MPI-M/MPI-ESM1-2-LR/historical/r1i1p1f1/AERmon/o3/gn/v20190710";
const O3_FIRST: &str = "o3_AERmon_MPI-ESM1-2-LR_historical_r1i1p1f1_gn_185001.nc";
const O3_ZM: &str = "o3_AERmon_MPI-ESM1-2-LR_historical_r1i1p1f1_gn_185001_zm.nc";
const TAUVO: &str = "CMIP6/CMIP/MPI-M/MPI-ESM1-2-LR/historical/r1i1p1f1/Omon/tauvo/gn/v20190710";
const EC_EARTH: &str = "CMIP6/DCPP/EC-Earth-Consortium/EC-Earth3/dcppA-hindcast/s1960-r6i2p1f1/Amon/tas/gr/v20200508";
const EC_EARTH_2ND: &str = "tas_Amon_EC-Earth3_dcppA-hindcast_s1960-r6i2p1f1_gr_196101-196112.nc";
const EC_EARTH_OTHER: &str = "CMIP6/DCPP/EC-Earth-Consortium/EC-Earth3/dcppA-hindcast/s1960-r2i1p1f1/Amon/tas/gr/v20201215/tas_Amon_EC-Earth3_dcppA-hindcast_s1960-r2i1p1f1_gr_196111-196210.nc";
const INM: &str = "CMIP6/ScenarioMIP/INM/INM-CM5-0/ssp245/r1i1p1f1/Amon/rlds/gr1/v20190619";
const FGOALS: &str = "CMIP6/CMIP/CAS/FGOALS-g3/historical/r1i1p1f1/Amon/tas/gn/v20190818";
const CESM2_CL: &str = "CMIP6/CMIP/NCAR/CESM2/amip/r1i1p1f1/Amon/cl/gn/v20190319/cl_Amon_CESM2_amip_r1i1p1f1_gn_195001-201412.nc";

/// `CMIP6/a/b/.../grid/vYYYYMMDD` → `CMIP6.a.b.....grid.vYYYYMMDD`.
fn item_id(rel_dir: &str) -> String {
    rel_dir.replace('/', ".")
}

/// A scratch site: `archive/` (a copied corpus subset), `site/`, `cache/`, `site.yaml`.
struct Scratch {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("archive")).unwrap();
        Scratch { _tmp: tmp, dir }
    }
    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    fn output(&self) -> PathBuf {
        self.dir.join("site")
    }
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("site.yaml")
    }
    fn write_config(&self, extra: &str) -> PathBuf {
        write_config(&self.config_path(), "test", &self.archive(), &self.output(), &self.cache(), extra)
    }
    fn config(&self) -> SiteConfig {
        if !self.config_path().exists() {
            self.write_config("");
        }
        SiteConfig::load(&self.config_path()).unwrap()
    }
    fn staging(&self) -> PathBuf {
        self.dir.join(".site.staging")
    }
}

fn inode_and_mtime(path: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.mtime(), m.mtime_nsec())
}

// --------------------------------------------------------------- determinism

#[test]
fn building_the_corpus_twice_gives_identical_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for run in ["a", "b"] {
        let output = tmp.path().join(run).join("site");
        let config = load_config(&repo().join("config/corpus-ceda.yaml"), &output, &tmp.path().join(run).join("cache"));
        let summary = build(config);
        assert_eq!(summary.files_cached, 0, "run {run} must not share a cache");
        assert!(summary.items > 50, "run {run}: {} items", summary.items);
        trees.push(snapshot(&output));
    }
    assert!(trees[0].len() > 100, "{} files", trees[0].len());
    assert_same_tree(&trees[0], &trees[1], "two builds of the CEDA corpus");
}

// ---------------------------------------------------------------- incremental

#[test]
fn rebuild_reads_only_changed_files_and_reuses_unchanged_outputs() {
    let s = Scratch::new();
    let archive = s.archive();
    copy_dataset(TOS, &archive);
    copy_file(&ceda_root().join(O3).join(O3_FIRST), &archive.join(O3).join(O3_FIRST));
    copy_dataset(TAUVO, &archive);
    copy_dataset(EC_EARTH, &archive);

    let first = build(s.config());
    assert_eq!((first.files_seen, first.files_read, first.files_cached), (5, 5, 0), "{first:#?}");
    assert_eq!(first.items, 4);
    let before = site_items(&s.output());
    let tos_id = item_id(TOS);
    let tos_json = before[&tos_id].path.clone();
    let tos_html = tos_json.with_extension("html");
    let tos_stamps = (inode_and_mtime(&tos_json), inode_and_mtime(&tos_html));
    let tauvo_json = before[&item_id(TAUVO)].path.clone();
    assert!(tauvo_json.with_extension("html").is_file());

    // A new file in an existing dataset, a new dataset, a replaced file, a removed dataset.
    copy_file(&ceda_root().join(O3).join(O3_ZM), &archive.join(O3).join(O3_ZM));
    copy_dataset(INM, &archive);
    let replaced = archive.join(EC_EARTH).join(EC_EARTH_2ND);
    let old_size = std::fs::metadata(&replaced).unwrap().len();
    copy_file(&ceda_root().join(EC_EARTH_OTHER), &replaced);
    let new_size = std::fs::metadata(&replaced).unwrap().len();
    assert_ne!(old_size, new_size, "the replacement must differ in size");
    std::fs::remove_dir_all(archive.join(TAUVO)).unwrap();

    let second = build(s.config());
    assert_eq!((second.files_seen, second.files_read, second.files_cached), (6, 3, 3), "only the 3 new or changed files are read: {second:#?}");
    assert!(second.skipped.is_empty(), "{:#?}", second.skipped);
    let after = site_items(&s.output());
    let ids: std::collections::BTreeSet<String> = after.keys().cloned().collect();
    assert_eq!(ids, [item_id(EC_EARTH), item_id(O3), tos_id.clone(), item_id(INM)].into());

    // The removed dataset's pages are gone, the new ones exist.
    assert!(!tauvo_json.exists() && !tauvo_json.with_extension("html").exists(), "removed dataset still published");
    assert!(second.outputs_removed >= 2, "{second:#?}");
    let inm = &after[&item_id(INM)];
    assert!(inm.path.with_extension("html").is_file());
    assert_eq!(inm.assets().len(), 1);
    // The changed datasets say so.
    assert_eq!(after[&item_id(O3)].assets().keys().collect::<Vec<_>>(), [O3_FIRST, O3_ZM]);
    let ec = &after[&item_id(EC_EARTH)];
    assert_eq!(ec.assets()[EC_EARTH_2ND]["file:size"], new_size);
    assert_eq!(ec.prop_str("end_datetime"), "1962-11-01T00:00:00Z");
    // The untouched item's files are the same inodes with the same mtimes.
    assert_eq!((inode_and_mtime(&tos_json), inode_and_mtime(&tos_html)), tos_stamps, "unchanged item was rewritten");
    assert!(second.outputs_unchanged >= 2);

    // Nothing changed: nothing read, nothing rewritten.
    let tree = snapshot(&s.output());
    let third = build(s.config());
    assert_eq!((third.files_read, third.files_cached), (0, 6), "{third:#?}");
    assert_eq!((third.outputs_written, third.outputs_removed), (0, 0), "{third:#?}");
    assert_same_tree(&tree, &snapshot(&s.output()), "a rebuild without changes");
}

// ------------------------------------------------------------ unreadable files

/// A truncated netCDF-4 file, a text file named `*.nc` and a file nobody may
/// read are reported with their reasons and skipped; with `--strict` the build
/// fails naming them and leaves the last tree as it was. Runs the binary (as
/// `nobody` when root, so that permissions apply).
#[test]
fn unreadable_files_are_reported_and_fatal_only_with_strict() {
    let s = Scratch::new();
    let archive = s.archive();
    copy_dataset(TOS, &archive);
    copy_dataset(FGOALS, &archive);
    let config = s.write_config("checksums: true\n");
    let config = config.to_str().unwrap();
    open_up(&s.dir, &[]); // `nobody` runs the builds: the scratch dir must be theirs too

    let out = run_fedstac(&["build", "-c", config]);
    assert!(out.status.success(), "clean build failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let good_tree = snapshot(&s.output());
    assert_eq!(site_items(&s.output()).len(), 2);

    // (a) the first 2000 bytes of a real netCDF-4 (HDF5) file, at its DRS path;
    let truncated = archive.join(CESM2_CL);
    std::fs::create_dir_all(truncated.parent().unwrap()).unwrap();
    let real = std::fs::read(ceda_root().join(CESM2_CL)).unwrap();
    assert_eq!(&real[1..4], b"HDF", "{CESM2_CL} is netCDF-4");
    std::fs::write(&truncated, &real[..2000]).unwrap();
    // (b) a text file with a netCDF name, beside a good file (and a hidden `.nc`, which the recipe ignores);
    let text_file = archive.join(FGOALS).join("tas_Amon_FGOALS-g3_historical_r1i1p1f1_gn_185002.nc");
    std::fs::write(&text_file, "this is a text file, not netCDF\n").unwrap();
    std::fs::write(archive.join(FGOALS).join(".nc"), "hidden\n").unwrap();
    // (c) a real file nobody may read.
    let denied = copy_dataset(INM, &archive).remove(0);
    open_up(&archive, &[]);
    std::fs::set_permissions(&denied, std::fs::Permissions::from_mode(0o000)).unwrap();
    let bad = [&truncated, &text_file, &denied].map(|p| p.display().to_string());

    // --strict: fails, names every bad file, touches nothing.
    let out = run_fedstac(&["build", "-c", config, "--strict"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "--strict succeeded despite unreadable files:\n{}", text(&out.stdout));
    for path in &bad {
        assert!(stderr.contains(path.as_str()), "--strict error does not name {path}:\n{stderr}");
    }
    assert!(!stderr.contains("/.nc"), "the hidden .nc is ignored, not an error:\n{stderr}");
    assert_same_tree(&good_tree, &snapshot(&s.output()), "output after a failed --strict build");
    let staging_left = s.staging().exists();

    // Without --strict: succeeds, reports each file with a reason, catalogues the rest.
    let out = run_fedstac(&["build", "-c", config]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "build failed:\n{stdout}\n{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(s.cache().join("last-build.json")).unwrap()).unwrap();
    let skipped: Vec<(&str, &str)> = report["skipped"].as_array().unwrap().iter().map(|e| (e[0].as_str().unwrap(), e[1].as_str().unwrap())).collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    for path in &bad {
        let reason = skipped.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("{path} not in skipped: {skipped:#?}")).1;
        assert!(reason.len() > 5, "{path}: reason {reason:?}");
        assert!(stdout.contains(&format!("{path}: ")), "stdout does not list {path}:\n{stdout}");
    }
    let denied_reason = skipped.iter().find(|(p, _)| *p == bad[2]).unwrap().1;
    assert!(denied_reason.to_lowercase().contains("permission"), "unreadable file's reason: {denied_reason}");
    assert_eq!(report["ignored"][PathRejection::Excluded.to_string()], 1, "the hidden .nc: {}", report["ignored"]);

    assert!(!s.staging().exists(), "staging directory left after a successful build (the --strict failure left one: {staging_left})");
    let items = site_items(&s.output());
    assert_eq!(items.keys().cloned().collect::<Vec<_>>(), [item_id(FGOALS), item_id(TOS)]);
    assert_eq!(items[&item_id(FGOALS)].assets().keys().collect::<Vec<_>>(), ["tas_Amon_FGOALS-g3_historical_r1i1p1f1_gn_185001.nc"]);
}

// ----------------------------------------------------------------- atomicity

/// The repository's templates in `<scratch>/templates`, with `broken` made to
/// fail when rendered (an unknown function inside its first block).
fn broken_templates(s: &Scratch, broken: &str) -> PathBuf {
    let templates = s.dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for name in ["base.html", "catalog.html", "collection.html", "item.html"] {
        std::fs::copy(repo().join("templates").join(name), templates.join(name)).unwrap();
    }
    let source = std::fs::read_to_string(templates.join(broken)).unwrap();
    let block = source.find("{% block ").unwrap_or_else(|| panic!("{broken} has no block"));
    let end = block + source[block..].find("%}").unwrap() + 2;
    let source = format!("{}{{{{ fedstac_test_no_such_function() }}}}{}", &source[..end], &source[end..]);
    std::fs::write(templates.join(broken), source).unwrap();
    templates
}

/// Builds two datasets, then makes a build with a third one fail on the
/// `broken` template; returns the error and whether a staging dir was left.
fn fail_midway(s: &Scratch, broken: &str) -> (BTreeMap<String, Vec<u8>>, String, bool) {
    copy_dataset(TOS, &s.archive());
    copy_dataset(FGOALS, &s.archive());
    assert_eq!(build(s.config()).items, 2);
    let good_tree = snapshot(&s.output());

    copy_dataset(INM, &s.archive());
    let mut config = s.config();
    config.templates = Some(broken_templates(s, broken));
    let result = try_build(config, false);
    let after = snapshot(&s.output());
    let summary = match result {
        Err(e) => {
            assert_same_tree(&good_tree, &after, "output after a failed build");
            return (good_tree, format!("{e:#}"), s.staging().exists());
        }
        Ok(summary) => summary,
    };
    panic!(
        "a build whose {broken} cannot render succeeded and published {} item(s) ({} output files removed) instead of keeping the last tree; warnings: {:#?}",
        summary.items, summary.outputs_removed, summary.warnings
    );
}

/// A build that fails while writing the catalogue (after the items were
/// staged) leaves the last tree as it was; a leftover staging directory is
/// cleared by the next successful build.
#[test]
fn failed_build_leaves_the_previous_tree_and_next_build_recovers() {
    let s = Scratch::new();
    let (_, msg, staging_left) = fail_midway(&s, "collection.html");
    assert!(msg.contains("collection.html"), "unexpected failure: {msg}");

    let summary = build(s.config());
    assert_eq!(summary.items, 3);
    assert!(!s.staging().exists(), "staging directory left after a successful build (the failed build left one: {staging_left})");
    assert_eq!(site_items(&s.output()).len(), 3);
    for entry in std::fs::read_dir(&s.dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(["archive", "site", "cache", "site.yaml", "templates"].contains(&name.as_str()), "stray {name} beside the site");
    }
}

/// An item page template that cannot render fails the build: it must not
/// publish a catalogue with every item left out.
#[test]
fn broken_item_template_fails_the_build_and_keeps_the_previous_tree() {
    let s = Scratch::new();
    let (good_tree, msg, _) = fail_midway(&s, "item.html");
    assert!(msg.contains("item.html"), "unexpected failure: {msg}");
    assert_same_tree(&good_tree, &snapshot(&s.output()), "output after a failed build");
}

// ------------------------------------------------------ one dataset, two roots

/// The same dataset under two roots of one site is written once, with the
/// first root's files (the second copy is reported, not written, not indexed).
/// The duplicate is recognised by the item's path in the new tree (the site
/// writer's staging tree), which here is the same: same recipe, same id.
#[test]
fn a_dataset_under_two_roots_is_written_once_from_the_first() {
    let s = Scratch::new();
    let (first, second) = (s.archive().join("first"), s.archive().join("second"));
    copy_dataset(TOS, &first);
    copy_dataset(TOS, &second);
    copy_dataset(O3, &second);
    let yaml = format!(
        "site:\n  name: test\n  title: test site\nroots:\n  - path: {}\n    recipe: cmip6\n    data_url: https://first.example.org/data/\n  - path: {}\n    recipe: cmip6\n    data_url: https://second.example.org/data/\noutput: {}\ncache: {}\n",
        first.display(),
        second.display(),
        s.output().display(),
        s.cache().display()
    );
    std::fs::write(s.config_path(), yaml).unwrap();
    let summary = build(SiteConfig::load(&s.config_path()).unwrap());
    assert_eq!(summary.items, 2, "warnings: {:?}", summary.warnings);
    let tos = item_id(TOS);
    assert!(summary.warnings.iter().any(|w| w.starts_with(&tos) && w.contains("found again under another root")), "warnings: {:?}", summary.warnings);
    let items = site_items(&s.output()); // also fails on an item written twice
    assert_eq!(items.keys().cloned().collect::<Vec<_>>(), { let mut v = vec![tos.clone(), item_id(O3)]; v.sort(); v });
    let hrefs: Vec<&str> = items[&tos].assets().values().filter_map(|a| a["href"].as_str()).filter(|h| h.ends_with(".nc")).collect();
    assert!(!hrefs.is_empty());
    for h in hrefs {
        assert!(h.starts_with("https://first.example.org/data/"), "{tos}: asset {h} is not the first root's");
    }
    assert!(items[&item_id(O3)].assets().values().filter_map(|a| a["href"].as_str()).any(|h| h.starts_with("https://second.example.org/data/")));
    // Indexed once: the search index counts both items, not three.
    let index: Value = serde_json::from_slice(&std::fs::read(s.output().join("index/index.json")).unwrap()).unwrap();
    assert_eq!(index["items"], 2);
}
