//! Helpers shared by the corpus integration tests: locating the shared
//! corpus, building sites through the library or the binary, and reading
//! the output tree back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use fedstac::build::{BuildOptions, BuildSummary};
use fedstac::config::SiteConfig;
use serde_json::Value;

/// `../shared` beside the repository (or `$FEDSTAC_SHARED`).
pub fn shared_dir() -> PathBuf {
    let dir = match std::env::var_os("FEDSTAC_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    let corpus = dir.join("corpus");
    assert!(
        corpus.join("FACTS.json").is_file() && corpus.join("netcdf/mini-esgf-data/test_data").is_dir(),
        "the shared test corpus is missing: expected {}/FACTS.json and {}/netcdf/mini-esgf-data/test_data \
         (set FEDSTAC_SHARED=/path/to/shared to point elsewhere)",
        corpus.display(),
        corpus.display()
    );
    dir
}

pub fn corpus() -> PathBuf {
    shared_dir().join("corpus")
}

/// The mini-esgf-data tree (FACTS paths are relative to `corpus/netcdf`).
pub fn test_data() -> PathBuf {
    corpus().join("netcdf/mini-esgf-data/test_data")
}

/// CEDA's CMIP6 root: holds `CMIP6/<activity>/...`.
pub fn ceda_root() -> PathBuf {
    test_data().join("badc/cmip6/data")
}

pub fn cv_dir() -> PathBuf {
    corpus().join("cv/CMIP6_CVs")
}

/// The repository root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every FACTS.json entry.
pub fn facts() -> Vec<Value> {
    let path = corpus().join("FACTS.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display())) {
        Value::Array(a) => a,
        other => panic!("FACTS.json is not a list: {other}"),
    }
}

/// A path under `.../shared/corpus/...` re-rooted at [`shared_dir`], so a
/// repository config works with `$FEDSTAC_SHARED` too.
fn reroot_shared(path: &Path) -> PathBuf {
    let parts: Vec<Component> = path.components().collect();
    match parts.windows(2).position(|w| w[0].as_os_str() == "shared" && w[1].as_os_str() == "corpus") {
        Some(i) => parts[i + 1..].iter().fold(shared_dir(), |p, c| p.join(c)),
        None => path.to_path_buf(),
    }
}

/// Loads a repository config, points its corpus paths at the shared dir and
/// its output and cache at the given directories.
pub fn load_config(path: &Path, output: &Path, cache: &Path) -> SiteConfig {
    assert!(path.is_file(), "config {} is missing", path.display());
    let mut config = SiteConfig::load(path).unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));
    for root in &mut config.roots {
        root.path = reroot_shared(&root.path);
    }
    config.cv_dir = config.cv_dir.as_deref().map(reroot_shared);
    config.output = output.to_path_buf();
    config.cache = cache.to_path_buf();
    config
}

/// Writes a one-root CMIP6 site config and returns its path.
pub fn write_config(path: &Path, name: &str, root: &Path, output: &Path, cache: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "site:\n  name: {name}\n  title: {name} test site\nroots:\n  - path: {}\n    recipe: cmip6\n    data_url: https://example.org/data/\noutput: {}\ncache: {}\n{extra}",
        root.display(),
        output.display(),
        cache.display()
    );
    std::fs::write(path, yaml).unwrap();
    path.to_path_buf()
}

/// Runs a build through the library.
pub fn try_build(config: SiteConfig, strict: bool) -> anyhow::Result<BuildSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(fedstac::build::build(BuildOptions { config, strict, jobs: 2, progress: false }))
}

pub fn build(config: SiteConfig) -> BuildSummary {
    try_build(config, false).unwrap_or_else(|e| panic!("build failed: {e:#}"))
}

/// Every file below `dir`, relative (with `/`), sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap_or_else(|e| panic!("walking {}: {e}", dir.display())))
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Relative path → bytes of every file below `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_below(dir).into_iter().map(|rel| (rel.clone(), std::fs::read(dir.join(&rel)).unwrap())).collect()
}

/// Fails with the first difference between two snapshots.
pub fn assert_same_tree(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>, what: &str) {
    let a: Vec<&String> = before.keys().collect();
    let b: Vec<&String> = after.keys().collect();
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|k| !after.contains_key(**k)).collect();
        let only_b: Vec<_> = b.iter().filter(|k| !before.contains_key(**k)).collect();
        panic!("{what}: file sets differ; only before: {only_a:?}; only after: {only_b:?}");
    }
    for (rel, bytes) in before {
        assert!(after[rel] == *bytes, "{what}: {rel} differs");
    }
}

/// A STAC item of the output tree.
pub struct SiteItem {
    pub path: PathBuf,
    pub json: Value,
}

impl SiteItem {
    pub fn prop(&self, key: &str) -> &Value {
        &self.json["properties"][key]
    }
    pub fn prop_str(&self, key: &str) -> &str {
        self.prop(key).as_str().unwrap_or_else(|| panic!("{}: property {key} is not a string: {}", self.id(), self.prop(key)))
    }
    pub fn id(&self) -> &str {
        self.json["id"].as_str().unwrap()
    }
    pub fn assets(&self) -> &serde_json::Map<String, Value> {
        self.json["assets"].as_object().unwrap_or_else(|| panic!("{} has no assets object", self.id()))
    }
    pub fn bbox(&self) -> Vec<f64> {
        self.json["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    }
}

/// Every STAC item (`"type": "Feature"`) below `output`, by id.
pub fn site_items(output: &Path) -> BTreeMap<String, SiteItem> {
    let mut items = BTreeMap::new();
    for rel in files_below(output) {
        if !rel.ends_with(".json") {
            continue;
        }
        let path = output.join(&rel);
        let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        if json["type"] == "Feature" {
            let id = json["id"].as_str().unwrap_or_else(|| panic!("{rel} has no id")).to_string();
            assert!(rel.ends_with(&format!("/{id}.json")), "item {id} is written as {rel}");
            let old = items.insert(id.clone(), SiteItem { path, json });
            assert!(old.is_none(), "item {id} is written twice");
        }
    }
    items
}

/// Copies the `.nc` files of a corpus dataset directory (relative to the
/// CEDA root, `CMIP6/...`) to the same relative place under `archive`.
pub fn copy_dataset(rel_dir: &str, archive: &Path) -> Vec<PathBuf> {
    let from = ceda_root().join(rel_dir);
    let to = archive.join(rel_dir);
    std::fs::create_dir_all(&to).unwrap();
    let mut copied = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nc"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{} has no .nc files", from.display());
    for name in names {
        copied.push(copy_file(&from.join(&name), &to.join(&name)));
    }
    copied
}

/// Copies one file, creating directories; the copy is writable by its owner.
pub fn copy_file(from: &Path, to: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if to.exists() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).unwrap();
    to.to_path_buf()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the fedstac binary; as root, as user `nobody` (so file permissions
/// apply), otherwise as the current user.
pub fn run_fedstac(args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_fedstac");
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).env_remove("RUST_LOG").env("NO_COLOR", "1");
    let out = cmd.output().unwrap_or_else(|e| panic!("running {bin} (setpriv needed as root): {e}"));
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Makes a directory tree usable by another user: dirs 0777, files 0644
/// (files listed in `keep` keep their mode).
pub fn open_up(dir: &Path, keep: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if keep.iter().any(|k| *k == entry.path()) || entry.path_is_symlink() {
            continue;
        }
        let mode = if entry.file_type().is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Opens a netCDF file from a test thread. HDF5 prints its error stack per
/// thread unless told not to (netCDF silences only the thread that
/// initialised it), which would bury test output in HDF5-DIAG noise.
pub fn open_netcdf(path: &Path) -> netcdf::File {
    thread_local!(static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    QUIET.with(|done| {
        if !done.replace(true) {
            // SAFETY: H5Eset_auto2(H5E_DEFAULT = 0, no handler, no data) turns printing off.
            unsafe {
                let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"H5Eset_auto2".as_ptr());
                if !symbol.is_null() {
                    let set_auto: extern "C" fn(i64, *const libc::c_void, *mut libc::c_void) -> i32 = std::mem::transmute(symbol);
                    set_auto(0, std::ptr::null(), std::ptr::null_mut());
                }
            }
        }
    });
    netcdf::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Stops a server the test started (nginx, the receiver): SIGQUIT for a
/// graceful stop of master and workers, then SIGKILL after 5 s.
pub fn stop_gracefully(child: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
    let started = std::time::Instant::now();
    while child.try_wait().ok().flatten().is_none() && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
