//! The embedded sample archive: layout, overlap between sites, CMIP6
//! metadata read back through libnetcdf, on-disk formats, determinism.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fedstac::sample::{write_sample_archive, SampleReport, SampleSpec, SITE_ROOTS};
use netcdf::AttributeValue;

const CEDA: &str = "ceda/badc/cmip6/data/CMIP6";
const DKRZ: &str = "dkrz/pool/data/CMIP6/data/CMIP6";

/// All `.nc` files below `dir`, relative to it, sorted.
fn nc_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn text(file: &netcdf::File, name: &str) -> String {
    match file
        .attribute(name)
        .unwrap_or_else(|| panic!("missing global {name}"))
        .value()
        .unwrap()
    {
        AttributeValue::Str(s) => s,
        other => panic!("{name} is not text: {other:?}"),
    }
}

fn var_text(var: &netcdf::Variable, name: &str) -> String {
    match var
        .attribute_value(name)
        .unwrap_or_else(|| panic!("missing {name} on {}", var.name()))
        .unwrap()
    {
        AttributeValue::Str(s) => s,
        other => panic!("{name} is not text: {other:?}"),
    }
}

fn ncdump_kind(path: &Path) -> String {
    let out = Command::new("ncdump")
        .arg("-k")
        .arg(path)
        .output()
        .expect("ncdump on PATH");
    assert!(out.status.success(), "ncdump -k {}", path.display());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write(dir: &Path, extra: usize) -> SampleReport {
    write_sample_archive(
        dir,
        &SampleSpec {
            extra_datasets: extra,
        },
    )
    .unwrap()
}

#[test]
fn demo_archive_layout_metadata_formats_and_determinism() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let report = write(&a, 0);

    assert_eq!(SITE_ROOTS[0].1, CEDA.trim_end_matches("/CMIP6"));
    assert_eq!(SITE_ROOTS[1].1, DKRZ.trim_end_matches("/CMIP6"));

    let ceda = nc_files(&a.join(CEDA));
    let dkrz = nc_files(&a.join(DKRZ));
    let all = nc_files(&a);
    assert_eq!(
        all.len(),
        ceda.len() + dkrz.len(),
        "no stray or temporary files: {all:?}"
    );
    assert_eq!(report.files, all.len());
    assert_eq!(report.datasets, 15);
    assert!(
        report.bytes < 5_000_000,
        "archive is {} bytes",
        report.bytes
    );
    let on_disk: u64 = all
        .iter()
        .map(|p| std::fs::metadata(a.join(p)).unwrap().len())
        .sum();
    assert_eq!(report.bytes, on_disk);

    // Partial overlap: some files at both sites, some at only one of each.
    let ceda_set: BTreeSet<_> = ceda.iter().cloned().collect();
    let dkrz_set: BTreeSet<_> = dkrz.iter().cloned().collect();
    let both: Vec<_> = ceda_set.intersection(&dkrz_set).collect();
    assert!(both.len() >= 5, "shared files: {both:?}");
    assert!(ceda_set.difference(&dkrz_set).count() >= 3);
    assert!(dkrz_set.difference(&ceda_set).count() >= 3);
    for rel in &both {
        let x = std::fs::read(a.join(CEDA).join(rel)).unwrap();
        let y = std::fs::read(a.join(DKRZ).join(rel)).unwrap();
        assert!(x == y, "{} differs between sites", rel.display());
    }

    // Group files into dataset versions (the directory holding them).
    let mut datasets: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for rel in ceda_set.union(&dkrz_set) {
        datasets
            .entry(rel.parent().unwrap().to_path_buf())
            .or_default()
            .push(rel.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(datasets.len(), 15);
    let unversioned: BTreeSet<_> = datasets
        .keys()
        .map(|d| d.parent().unwrap().to_path_buf())
        .collect();
    assert_eq!(unversioned.len(), 14, "one dataset has two versions");
    assert!(
        datasets.values().any(|files| files.len() == 3),
        "one multi-file dataset"
    );
    assert!(
        datasets
            .keys()
            .any(|d| d.to_string_lossy().contains("/s1960-r1i1p1f1/")),
        "DCPP member"
    );

    // The two versions of the ssp245 dataset: CEDA has both, DKRZ the older.
    let ssp245 = "ScenarioMIP/MOHC/HadGEM3-GC31-LL/ssp245/r1i1p1f3/Amon/tas/gn";
    let versions = |root: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(a.join(root).join(ssp245))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(versions(CEDA), ["v20190908", "v20200114"]);
    assert_eq!(versions(DKRZ), ["v20190908"]);

    // Every file reads back with consistent CMIP6 metadata.
    let mut calendars = BTreeSet::new();
    let mut tracking_ids = BTreeSet::new();
    for (root, files) in [(CEDA, &ceda), (DKRZ, &dkrz)] {
        for rel in files {
            let path = a.join(root).join(rel);
            let f = netcdf::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // DRS path: activity/institution/source/experiment/member/table/variable/grid/version/file
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            assert_eq!(parts.len(), 10, "{}", rel.display());
            let [activity, institution, source, experiment, member, table, variable, grid, version, name] =
                <[String; 10]>::try_from(parts).unwrap();
            assert!(version.starts_with('v') && version.len() == 9);

            assert_eq!(text(&f, "Conventions"), "CF-1.7 CMIP-6.2");
            assert_eq!(text(&f, "mip_era"), "CMIP6");
            assert_eq!(text(&f, "product"), "model-output");
            assert_eq!(text(&f, "data_specs_version"), "01.00.29");
            assert_eq!(text(&f, "activity_id"), activity);
            assert_eq!(text(&f, "institution_id"), institution);
            assert_eq!(text(&f, "source_id"), source);
            assert_eq!(text(&f, "experiment_id"), experiment);
            assert_eq!(text(&f, "table_id"), table);
            assert_eq!(text(&f, "variable_id"), variable);
            assert_eq!(text(&f, "grid_label"), grid);
            let variant = text(&f, "variant_label");
            let sub = text(&f, "sub_experiment_id");
            let expected_member = if sub == "none" {
                variant.clone()
            } else {
                format!("{sub}-{variant}")
            };
            assert_eq!(expected_member, member);
            for key in [
                "experiment",
                "institution",
                "source",
                "license",
                "grid",
                "further_info_url",
                "creation_date",
            ] {
                assert!(!text(&f, key).is_empty(), "{key}");
            }
            assert!(["100 km", "250 km"].contains(&text(&f, "nominal_resolution").as_str()));
            assert!(["AOGCM", "AOGCM BGC", "AOGCM AER"].contains(&text(&f, "source_type").as_str()));
            let tracking = text(&f, "tracking_id");
            assert!(
                tracking.starts_with("hdl:21.14100/") && tracking.len() == 13 + 36,
                "{tracking}"
            );
            if root == CEDA {
                assert!(
                    tracking_ids.insert(tracking),
                    "tracking ids are unique per file"
                );
            }

            let stem = format!("{variable}_{table}_{source}_{experiment}_{member}_{grid}");
            let data = f.variable(&variable).expect("data variable");
            assert!(!var_text(&data, "units").is_empty());
            assert!(!var_text(&data, "standard_name").is_empty());
            assert!(!var_text(&data, "cell_methods").is_empty());
            assert_eq!(data.fill_value::<f32>().unwrap(), Some(1.0e20));
            let values: Vec<f32> = data.get_values(..).unwrap();
            assert!(values.iter().any(|v| *v < 1.0e19), "{name} has data");

            if table == "fx" {
                assert_eq!(name, format!("{stem}.nc"));
                assert!(f.variable("time").is_none());
                assert_eq!(data.dimensions().len(), 2);
                continue;
            }
            assert!(
                name.starts_with(&format!("{stem}_")) && name.ends_with(".nc"),
                "{name}"
            );
            let time = f.variable("time").expect("time variable");
            assert_eq!(var_text(&time, "units"), "days since 1850-01-01");
            assert_eq!(var_text(&time, "bounds"), "time_bnds");
            let calendar = var_text(&time, "calendar");
            calendars.insert(calendar);
            let t: Vec<f64> = time.get_values(..).unwrap();
            assert!((12..=36).contains(&t.len()), "{name}: {} steps", t.len());
            assert!(t.windows(2).all(|w| w[0] < w[1]));
            let bnds: Vec<f64> = f.variable("time_bnds").unwrap().get_values(..).unwrap();
            for (k, tk) in t.iter().enumerate() {
                assert!(bnds[2 * k] < *tk && *tk < bnds[2 * k + 1]);
            }
            assert!(f.dimension("time").unwrap().is_unlimited());
        }
    }
    assert_eq!(
        calendars.into_iter().collect::<Vec<_>>(),
        ["360_day", "gregorian", "noleap", "proleptic_gregorian"]
    );

    // Storage formats.
    let mut kinds = BTreeSet::new();
    for rel in &ceda {
        kinds.insert(ncdump_kind(&a.join(CEDA).join(rel)));
    }
    for rel in &dkrz {
        kinds.insert(ncdump_kind(&a.join(DKRZ).join(rel)));
    }
    let kinds: Vec<_> = kinds.into_iter().collect();
    assert_eq!(
        kinds,
        [
            "64-bit offset",
            "cdf5",
            "classic",
            "netCDF-4",
            "netCDF-4 classic model"
        ]
    );

    // A regional dataset, so not every bounding box is global.
    let regional = ceda
        .iter()
        .find(|p| p.to_string_lossy().contains("/day/tasmax/"))
        .expect("regional tasmax");
    let f = netcdf::open(a.join(CEDA).join(regional)).unwrap();
    let lon: Vec<f64> = f.variable("lon").unwrap().get_values(..).unwrap();
    let lat: Vec<f64> = f.variable("lat").unwrap().get_values(..).unwrap();
    assert!(lon[0] < 0.0 && *lon.last().unwrap() < 60.0 && lat[0] > 30.0);

    // Determinism: a second run gives byte-identical files. The pause makes
    // any whole-second timestamp (HDF5 object times) show up as a difference.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = tmp.path().join("b");
    assert_eq!(write(&b, 0), report);
    assert_eq!(nc_files(&b), all);
    for rel in &all {
        let x = std::fs::read(a.join(rel)).unwrap();
        let y = std::fs::read(b.join(rel)).unwrap();
        assert!(x == y, "{} differs between runs", rel.display());
    }

    // Rewriting into the same directory replaces files in place.
    assert_eq!(write(&a, 0), report);
    assert_eq!(nc_files(&a), all);
}

#[test]
fn extra_datasets_are_tiny_ceda_only_and_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write(&tmp.path().join("base"), 0);
    let dir = tmp.path().join("scaled");
    let n = 700;
    let report = write(&dir, n);
    assert_eq!(report.datasets, base.datasets + n);
    assert_eq!(report.files, base.files + n);
    assert_eq!(
        nc_files(&dir.join(DKRZ)).len(),
        nc_files(&tmp.path().join("base").join(DKRZ)).len()
    );
    let ceda = nc_files(&dir.join(CEDA));
    assert_eq!(ceda.len() + nc_files(&dir.join(DKRZ)).len(), report.files);

    let extra: Vec<_> = ceda
        .iter()
        .filter(|p| !p.to_string_lossy().contains("r1i1p1"))
        .collect();
    assert_eq!(extra.len(), n);
    for rel in extra.iter().step_by(97) {
        let path = dir.join(CEDA).join(rel);
        assert_eq!(ncdump_kind(&path), "classic");
        assert!(std::fs::metadata(&path).unwrap().len() < 20_000);
        let f = netcdf::open(&path).unwrap();
        let variable = text(&f, "variable_id");
        assert!(rel
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{variable}_Amon_")));
        assert_eq!(f.variable("time").unwrap().len(), 2);
    }
}

/// Timing for the benchmark tree: `FEDSTAC_SAMPLE_EXTRA=5000 cargo test
/// -p fedstac --test sample_archive -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_extra_datasets() {
    let n: usize = std::env::var("FEDSTAC_SAMPLE_EXTRA")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let tmp = tempfile::tempdir().unwrap();
    // FEDSTAC_SAMPLE_KEEP=<dir> writes there instead, and keeps it.
    let keep = std::env::var_os("FEDSTAC_SAMPLE_KEEP").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let start = std::time::Instant::now();
    let report = fedstac::sample::write_sample_archive_with_progress(
        dir,
        &SampleSpec { extra_datasets: n },
        &mut |done, total| {
            if done % 10_000 == 0 || done == total {
                eprintln!("{done}/{total} after {:.1?}", start.elapsed());
            }
        },
    )
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{n} extra datasets: {report:?} in {secs:.1} s ({:.0} files/s)",
        report.files as f64 / secs
    );
}
