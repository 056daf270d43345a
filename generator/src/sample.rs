//! Embedded sample archive: writes a small synthetic CMIP6 archive of real
//! netCDF files, laid out as two data centres (CEDA and DKRZ) that partly
//! mirror each other, so the demo runs with nothing but this repository.
//!
//! Everything here is deterministic: file contents depend only on the
//! dataset table below (no clocks, no randomness), so two runs on the same
//! machine give byte-identical files and a dataset held at both sites is the
//! same bytes at both. netCDF-4 files carry no HDF5 object timestamps
//! (libnetcdf turns time tracking off), but they record the libnetcdf/HDF5
//! versions in `_NCProperties`, and the data come from libm's sin/cos: the
//! bytes are reproducible on one machine, not promised across library
//! versions or platforms.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use netcdf::{AttributeValue, Options};

/// What to write. `extra_datasets: 0` is the demo archive.
#[derive(Debug, Clone, Default)]
pub struct SampleSpec {
    /// Additional tiny single-file datasets (CEDA layout only), for
    /// benchmarks that need a large tree (e.g. 100_000 files).
    pub extra_datasets: usize,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleReport {
    /// Files on disk, counting a file held at both sites twice.
    pub files: usize,
    /// Distinct dataset versions (a dataset version held at both sites counts once).
    pub datasets: usize,
    /// Total size of the files on disk.
    pub bytes: u64,
}

/// The two simulated data centres: (site name, directory below the sample
/// root that holds the `CMIP6/` mip_era directory where the DRS starts).
pub const SITE_ROOTS: [(&str, &str); 2] = [
    ("ceda", "ceda/badc/cmip6/data"),
    ("dkrz", "dkrz/pool/data/CMIP6/data"),
];

/// Write the sample archive under `dir` (created if missing; existing sample
/// files are replaced).
pub fn write_sample_archive(dir: &Path, spec: &SampleSpec) -> Result<SampleReport> {
    write_sample_archive_with_progress(dir, spec, &mut |_, _| {})
}

/// As [`write_sample_archive`], calling `progress(done, total)` now and then
/// while the extra (benchmark) datasets are written.
pub fn write_sample_archive_with_progress(
    dir: &Path,
    spec: &SampleSpec,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SampleReport> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = SampleReport::default();
    for ds in demo_datasets() {
        write_dataset(dir, &ds, &mut report)?;
    }
    let total = spec.extra_datasets;
    for i in 0..total {
        write_dataset(dir, &scale_dataset(i), &mut report)?;
        if (i + 1) % 1000 == 0 || i + 1 == total {
            progress(i + 1, total);
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Tables: sources, experiments, variables

struct Source {
    id: &'static str,
    institution_id: &'static str,
    institution: &'static str,
    description: &'static str,
    source_type: &'static str,
    calendar: Calendar,
    /// (nominal_resolution, nlat, nlon) of the atmosphere grid.
    atmos: (&'static str, usize, usize),
    ocean_resolution: &'static str,
    license: &'static str,
}

const SOURCES: [Source; 4] = [
    Source {
        id: "HadGEM3-GC31-LL",
        institution_id: "MOHC",
        institution: "Met Office Hadley Centre, Fitzroy Road, Exeter, Devon, EX1 3PB, UK",
        description: "HadGEM3-GC31-LL (2016): \naerosol: UKCA-GLOMAP-mode\natmos: MetUM-HadGEM3-GA7.1 (N96; 192 x 144 longitude/latitude; 85 levels; top level 85 km)\nland: JULES-HadGEM3-GL7.1\nocean: NEMO-HadGEM3-GO6.0 (eORCA1 tripolar primarily 1 deg with meridional refinement down to 1/3 degree in the tropics; 360 x 330 longitude/latitude; 75 levels; top grid cell 0-1 m)\nseaIce: CICE-HadGEM3-GSI8 (eORCA1 tripolar primarily 1 deg; 360 x 330 longitude/latitude)",
        source_type: "AOGCM AER",
        calendar: Calendar::Day360,
        atmos: ("250 km", 18, 36),
        ocean_resolution: "100 km",
        license: "CC BY 4.0",
    },
    Source {
        id: "MPI-ESM1-2-LR",
        institution_id: "MPI-M",
        institution: "Max Planck Institute for Meteorology, Hamburg 20146, Germany",
        description: "MPI-ESM1.2-LR (2017): \natmos: ECHAM6.3 (spectral T63; 192 x 96 longitude/latitude; 47 levels; top level 0.01 hPa)\nland: JSBACH3.20\nocean: MPIOM1.63 (bipolar GR1.5, approximately 1.5deg; 256 x 220 longitude/latitude; 40 levels; top grid cell 0-12 m)\nocnBgchem: HAMOCC6\nseaIce: unnamed (thermodynamic (Semtner zero-layer) dynamic (Hibler 79) sea ice model)",
        source_type: "AOGCM",
        calendar: Calendar::ProlepticGregorian,
        atmos: ("250 km", 24, 48),
        ocean_resolution: "250 km",
        license: "CC BY-SA 4.0",
    },
    Source {
        id: "IPSL-CM6A-LR",
        institution_id: "IPSL",
        institution: "Institut Pierre Simon Laplace, Paris 75252, France",
        description: "IPSL-CM6A-LR (2017): \natmos: LMDZ (NPv6, N96; 144 x 143 longitude/latitude; 79 levels; top level 40000 m)\nland: ORCHIDEE (v2.0, Water/Carbon/Energy mode)\nocean: NEMO-OPA (eORCA1.3, tripolar primarily 1deg; 362 x 332 longitude/latitude; 75 levels; top grid cell 0-2 m)\nocnBgchem: NEMO-PISCES\nseaIce: NEMO-LIM3",
        source_type: "AOGCM BGC",
        calendar: Calendar::Gregorian,
        atmos: ("250 km", 18, 36),
        ocean_resolution: "100 km",
        license: "CC BY 4.0",
    },
    Source {
        id: "CESM2",
        institution_id: "NCAR",
        institution: "National Center for Atmospheric Research, Climate and Global Dynamics Laboratory, 1850 Table Mesa Drive, Boulder, CO 80305, USA",
        description: "CESM2 (2017): atmosphere: CAM6 (0.9x1.25 finite volume grid; 288 x 192 longitude/latitude; 32 levels; top level 2.25 mb); ocean: POP2 (320x384 longitude/latitude; 60 levels; top grid cell 0-10 m); sea_ice: CICE5.1 (same grid as ocean); land: CLM5 0.9x1.25 finite volume grid; 288 x 192 longitude/latitude; 32 levels; top level 2.25 mb); aerosol: MAM4 (0.9x1.25 finite volume grid; 288 x 192 longitude/latitude; 32 levels; top level 2.25 mb); atmoschem: MAM4 (0.9x1.25 finite volume grid; 288 x 192 longitude/latitude; 32 levels; top level 2.25 mb); landIce: CISM2.1; ocnBgchem: MARBL (320x384 longitude/latitude; 60 levels; top grid cell 0-10 m)",
        source_type: "AOGCM BGC",
        calendar: Calendar::NoLeap,
        atmos: ("100 km", 36, 72),
        ocean_resolution: "100 km",
        license: "CC BY 4.0",
    },
];

fn source(id: &str) -> &'static Source {
    SOURCES
        .iter()
        .find(|s| s.id == id)
        .expect("source in table")
}

fn experiment_title(id: &str) -> &'static str {
    match id {
        "historical" => "all-forcing simulation of the recent past",
        "piControl" => "pre-industrial control",
        "ssp126" => "update of RCP2.6 based on SSP1",
        "ssp245" => "update of RCP4.5 based on SSP2",
        "ssp370" => "gap-filling scenario reaching 7.0 based on SSP3",
        "ssp585" => "update of RCP8.5 based on SSP5",
        "dcppA-hindcast" => {
            "hindcast initialized based on observations and using historical forcing"
        }
        other => panic!("experiment {other} not in table"),
    }
}

#[derive(Clone, Copy)]
enum Field {
    Tas,
    TasMax,
    Pr,
    Tos,
    Sftlf,
    /// base + amp * cos(lat) with small zonal and seasonal waves.
    Smooth {
        base: f64,
        amp: f64,
    },
}

struct VarMeta {
    id: &'static str,
    standard_name: &'static str,
    long_name: &'static str,
    units: &'static str,
    realm: &'static str,
    /// Scalar `height` coordinate (m) of near-surface variables.
    height: Option<f64>,
    field: Field,
}

const fn var(
    id: &'static str,
    standard_name: &'static str,
    long_name: &'static str,
    units: &'static str,
    height: Option<f64>,
    field: Field,
) -> VarMeta {
    VarMeta {
        id,
        standard_name,
        long_name,
        units,
        realm: "atmos",
        height,
        field,
    }
}

const fn smooth(base: f64, amp: f64) -> Field {
    Field::Smooth { base, amp }
}

#[rustfmt::skip]
const DEMO_VARS: [VarMeta; 5] = [
    var("tas", "air_temperature", "Near-Surface Air Temperature", "K", Some(2.0), Field::Tas),
    var("tasmax", "air_temperature", "Daily Maximum Near-Surface Air Temperature", "K", Some(2.0), Field::TasMax),
    var("pr", "precipitation_flux", "Precipitation", "kg m-2 s-1", None, Field::Pr),
    VarMeta {
        id: "tos",
        standard_name: "sea_surface_temperature",
        long_name: "Sea Surface Temperature",
        units: "degC",
        realm: "ocean",
        height: None,
        field: Field::Tos,
    },
    VarMeta {
        id: "sftlf",
        standard_name: "land_area_fraction",
        long_name: "Percentage of the grid  cell occupied by land (including lakes)",
        units: "%",
        realm: "atmos land",
        height: None,
        field: Field::Sftlf,
    },
];

/// Amon variables the benchmark datasets cycle through.
#[rustfmt::skip]
const SCALE_VARS: [VarMeta; 12] = [
    var("tas", "air_temperature", "Near-Surface Air Temperature", "K", Some(2.0), smooth(250.0, 50.0)),
    var("pr", "precipitation_flux", "Precipitation", "kg m-2 s-1", None, smooth(1e-5, 3e-5)),
    var("psl", "air_pressure_at_mean_sea_level", "Sea Level Pressure", "Pa", None, smooth(100500.0, 1200.0)),
    var("huss", "specific_humidity", "Near-Surface Specific Humidity", "1", Some(2.0), smooth(0.001, 0.015)),
    var("uas", "eastward_wind", "Eastward Near-Surface Wind", "m s-1", Some(10.0), smooth(-4.0, 8.0)),
    var("vas", "northward_wind", "Northward Near-Surface Wind", "m s-1", Some(10.0), smooth(-1.0, 2.0)),
    var("ts", "surface_temperature", "Surface Temperature", "K", None, smooth(248.0, 54.0)),
    var("clt", "cloud_area_fraction", "Total Cloud Cover Percentage", "%", None, smooth(75.0, -20.0)),
    var("hurs", "relative_humidity", "Near-Surface Relative Humidity", "%", Some(2.0), smooth(70.0, 10.0)),
    var("sfcWind", "wind_speed", "Near-Surface Wind Speed", "m s-1", Some(10.0), smooth(8.0, -3.0)),
    var("rsds", "surface_downwelling_shortwave_flux_in_air", "Surface Downwelling Shortwave Radiation", "W m-2", None, smooth(60.0, 180.0)),
    var("rlds", "surface_downwelling_longwave_flux_in_air", "Surface Downwelling Longwave Radiation", "W m-2", None, smooth(200.0, 200.0)),
];

fn demo_var(id: &str) -> &'static VarMeta {
    DEMO_VARS
        .iter()
        .find(|v| v.id == id)
        .expect("variable in table")
}

fn cell_methods(table: &str, var: &VarMeta) -> &'static str {
    match (table, var.id) {
        ("fx", _) => "area: mean",
        ("Omon", _) => "area: mean where sea time: mean",
        ("day", "tasmax") => "area: mean time: maximum",
        ("day", _) => "area: mean time: mean",
        _ => "area: time: mean",
    }
}

fn frequency(table: &str) -> &'static str {
    match table {
        "Amon" | "Omon" => "mon",
        "day" => "day",
        "fx" => "fx",
        other => panic!("table {other} not in table"),
    }
}

// ---------------------------------------------------------------------------
// Dataset table

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// netCDF-4 classic model, chunked, deflate 4 + shuffle: what CMOR writes.
    Nc4Classic,
    /// netCDF-4 (enhanced model).
    Nc4,
    /// netCDF-3 classic (CDF-1).
    Cdf1,
    /// netCDF-3 64-bit offset (CDF-2).
    Cdf2,
    /// netCDF-3 64-bit data (CDF-5).
    Cdf5,
}

impl Format {
    fn options(self) -> Options {
        match self {
            Format::Nc4Classic => Options::NETCDF4 | Options::CLASSIC,
            Format::Nc4 => Options::NETCDF4,
            Format::Cdf1 => Options::empty(),
            Format::Cdf2 => Options::_64BIT_OFFSET,
            Format::Cdf5 => Options::_64BIT_DATA,
        }
    }
    fn is_hdf5(self) -> bool {
        matches!(self, Format::Nc4Classic | Format::Nc4)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sites {
    Ceda,
    Dkrz,
    Both,
}

#[derive(Clone, Copy)]
enum Grid {
    /// Global regular grid with `nlat` x `nlon` cells.
    Global(usize, usize),
    /// Regular 2-degree grid over Europe (so a bounding box is not global).
    Europe,
}

#[derive(Clone, Copy)]
enum Time {
    /// No time axis (fx).
    Fixed,
    /// `files` files of `months` months each, from (year, month).
    Monthly {
        year: i32,
        month: u32,
        months: usize,
        files: usize,
    },
    /// `days` days from 1 January of `year` (<= 30 so all calendars agree on the end date).
    Daily { year: i32, days: usize },
}

struct Dataset {
    activity: &'static str,
    source: &'static Source,
    experiment: &'static str,
    /// `None` or a DCPP start such as "s1960".
    sub_experiment: Option<&'static str>,
    variant: String,
    table: &'static str,
    var: &'static VarMeta,
    grid_label: &'static str,
    grid: Grid,
    version: &'static str,
    sites: Sites,
    format: Format,
    time: Time,
    /// Added to the data: lets a newer version differ from the older one.
    offset: f64,
}

impl Dataset {
    fn member(&self) -> String {
        match self.sub_experiment {
            Some(s) => format!("{s}-{}", self.variant),
            None => self.variant.clone(),
        }
    }
    /// DRS directory below a site root, `CMIP6/<activity>/.../<version>`.
    fn drs_dir(&self) -> PathBuf {
        [
            "CMIP6",
            self.activity,
            self.source.institution_id,
            self.source.id,
            self.experiment,
            &self.member(),
            self.table,
            self.var.id,
            self.grid_label,
            self.version,
        ]
        .iter()
        .collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn ds(
    activity: &'static str,
    source_id: &str,
    experiment: &'static str,
    variant: &str,
    table: &'static str,
    var_id: &str,
    grid_label: &'static str,
    version: &'static str,
    sites: Sites,
    format: Format,
    time: Time,
) -> Dataset {
    let source = source(source_id);
    let var = demo_var(var_id);
    let (_, nlat, nlon) = source.atmos;
    Dataset {
        activity,
        source,
        experiment,
        sub_experiment: None,
        variant: variant.to_owned(),
        table,
        var,
        grid_label,
        grid: Grid::Global(nlat, nlon),
        version,
        sites,
        format,
        time,
        offset: 0.0,
    }
}

const fn monthly(year: i32, month: u32, months: usize) -> Time {
    Time::Monthly {
        year,
        month,
        months,
        files: 1,
    }
}

/// The demo archive: 14 datasets (15 dataset versions), 4 sources.
#[rustfmt::skip] // one dataset per row reads better as a table
fn demo_datasets() -> Vec<Dataset> {
    use Format::*;
    use Sites::*;
    let mut v = vec![
        // Multi-file dataset (3 files of 12 months), mirrored at both sites.
        ds("CMIP", "HadGEM3-GC31-LL", "historical", "r1i1p1f3", "Amon", "tas", "gn", "v20190624", Both, Nc4Classic,
            Time::Monthly { year: 2012, month: 1, months: 12, files: 3 }),
        ds("CMIP", "HadGEM3-GC31-LL", "historical", "r1i1p1f3", "Amon", "pr", "gn", "v20190624", Ceda, Nc4Classic,
            monthly(2013, 1, 24)),
        ds("CMIP", "HadGEM3-GC31-LL", "piControl", "r1i1p1f1", "fx", "sftlf", "gn", "v20190709", Both, Cdf1, Time::Fixed),
        // Two versions: CEDA holds both, DKRZ only the older one (a stale replica).
        ds("ScenarioMIP", "HadGEM3-GC31-LL", "ssp245", "r1i1p1f3", "Amon", "tas", "gn", "v20190908", Both, Nc4Classic,
            monthly(2015, 1, 24)),
        ds("ScenarioMIP", "HadGEM3-GC31-LL", "ssp245", "r1i1p1f3", "Amon", "tas", "gn", "v20200114", Ceda, Nc4Classic,
            monthly(2015, 1, 24)),
        ds("CMIP", "MPI-ESM1-2-LR", "historical", "r1i1p1f1", "Amon", "tas", "gn", "v20190710", Dkrz, Nc4Classic,
            monthly(2013, 1, 24)),
        ds("CMIP", "MPI-ESM1-2-LR", "historical", "r1i1p1f1", "Omon", "tos", "gn", "v20190710", Both, Nc4Classic,
            monthly(2014, 1, 12)),
        ds("DCPP", "MPI-ESM1-2-LR", "dcppA-hindcast", "r1i1p1f1", "Amon", "tas", "gn", "v20200101", Dkrz, Nc4Classic,
            monthly(1960, 11, 14)),
        ds("ScenarioMIP", "MPI-ESM1-2-LR", "ssp585", "r1i1p1f1", "day", "pr", "gn", "v20190710", Dkrz, Cdf2,
            Time::Daily { year: 2015, days: 30 }),
        ds("CMIP", "IPSL-CM6A-LR", "piControl", "r1i1p1f1", "Amon", "tas", "gr", "v20180802", Ceda, Nc4,
            monthly(1850, 1, 12)),
        ds("CMIP", "IPSL-CM6A-LR", "historical", "r1i1p1f1", "day", "tasmax", "gr", "v20180803", Both, Nc4Classic,
            Time::Daily { year: 2014, days: 30 }),
        ds("ScenarioMIP", "IPSL-CM6A-LR", "ssp245", "r1i1p1f1", "Omon", "tos", "gn", "v20190119", Ceda, Nc4Classic,
            monthly(2015, 1, 12)),
        ds("CMIP", "CESM2", "historical", "r1i1p1f1", "Amon", "pr", "gn", "v20190308", Both, Nc4Classic,
            monthly(2012, 1, 36)),
        ds("CMIP", "CESM2", "historical", "r1i1p1f1", "fx", "sftlf", "gn", "v20190308", Dkrz, Cdf5, Time::Fixed),
        ds("ScenarioMIP", "CESM2", "ssp585", "r1i1p1f1", "Amon", "tas", "gn", "v20200528", Ceda, Nc4Classic,
            monthly(2015, 1, 12)),
    ];
    v[4].offset = 0.25; // the corrected, newer ssp245 version
    v[7].sub_experiment = Some("s1960");
    v[10].grid = Grid::Europe;
    v
}

/// Benchmark dataset `i`: tiny netCDF-3, CEDA only, never colliding with the
/// demo datasets (realisation >= 2).
fn scale_dataset(i: usize) -> Dataset {
    const EXPERIMENTS: [(&str, &str, i32); 6] = [
        ("CMIP", "historical", 2014),
        ("CMIP", "piControl", 1850),
        ("ScenarioMIP", "ssp126", 2015),
        ("ScenarioMIP", "ssp245", 2015),
        ("ScenarioMIP", "ssp370", 2015),
        ("ScenarioMIP", "ssp585", 2015),
    ];
    const VERSIONS: [&str; 4] = ["v20210101", "v20210202", "v20210303", "v20210404"];
    let s = i % SOURCES.len();
    let rest = i / SOURCES.len();
    let v = rest % SCALE_VARS.len();
    let rest = rest / SCALE_VARS.len();
    let e = rest % EXPERIMENTS.len();
    let realisation = rest / EXPERIMENTS.len() + 2;
    let (activity, experiment, year) = EXPERIMENTS[e];
    Dataset {
        activity,
        source: &SOURCES[s],
        experiment,
        sub_experiment: None,
        variant: format!("r{realisation}i1p1f1"),
        table: "Amon",
        var: &SCALE_VARS[v],
        grid_label: "gn",
        grid: Grid::Global(4, 8),
        version: VERSIONS[s],
        sites: Sites::Ceda,
        format: Format::Cdf1,
        time: monthly(year, 1, 2),
        offset: 0.0,
    }
}

// ---------------------------------------------------------------------------
// Writing

fn write_dataset(root: &Path, ds: &Dataset, report: &mut SampleReport) -> Result<()> {
    let drs = ds.drs_dir();
    let site_dirs: Vec<PathBuf> = SITE_ROOTS
        .iter()
        .filter(|(name, _)| match ds.sites {
            Sites::Both => true,
            Sites::Ceda => *name == "ceda",
            Sites::Dkrz => *name == "dkrz",
        })
        .map(|(_, sub)| root.join(sub).join(&drs))
        .collect();
    for d in &site_dirs {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let grid = GridAxes::new(ds.grid);
    for file in file_specs(ds) {
        let name = file_name(ds, &file);
        let first = site_dirs[0].join(&name);
        let key = format!("{}/{}", drs.display(), name);
        write_nc(&first, ds, &grid, &file, &key)
            .with_context(|| format!("writing {}", first.display()))?;
        // Mirrors are copies so both sites hold byte-identical files.
        for d in &site_dirs[1..] {
            let dst = d.join(&name);
            let tmp = temp_path(&dst);
            fs::copy(&first, &tmp)
                .and_then(|_| fs::rename(&tmp, &dst))
                .with_context(|| format!("writing {}", dst.display()))?;
        }
        let len = fs::metadata(&first)
            .with_context(|| format!("reading size of {}", first.display()))?
            .len();
        report.files += site_dirs.len();
        report.bytes += len * site_dirs.len() as u64;
    }
    report.datasets += 1;
    Ok(())
}

/// Hidden sibling name, so a half-written file never carries a `.nc` name.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// One file's slice of the time axis.
struct FileTime {
    cal: Calendar,
    /// (time, lower bound, upper bound) in days since 1850-01-01.
    steps: Vec<(f64, f64, f64)>,
    /// Fraction of the year at each step, for the seasonal cycle.
    phase: Vec<f64>,
    /// "YYYYMM-YYYYMM" or "YYYYMMDD-YYYYMMDD".
    range: String,
}

fn file_specs(ds: &Dataset) -> Vec<Option<FileTime>> {
    let cal = ds.source.calendar;
    match ds.time {
        Time::Fixed => vec![None],
        Time::Monthly {
            year,
            month,
            months,
            files,
        } => (0..files)
            .map(|f| {
                let first = (year * 12 + month as i32 - 1) + (f * months) as i32;
                let ym = |k: i32| (k.div_euclid(12), k.rem_euclid(12) as u32 + 1);
                let steps = (0..months as i32)
                    .map(|k| {
                        let (y, m) = ym(first + k);
                        let (y1, m1) = ym(first + k + 1);
                        let lo = cal.days_since_1850(y, m, 1) as f64;
                        let hi = cal.days_since_1850(y1, m1, 1) as f64;
                        ((lo + hi) / 2.0, lo, hi)
                    })
                    .collect();
                let phase = (0..months as i32)
                    .map(|k| (ym(first + k).1 as f64 - 0.5) / 12.0)
                    .collect();
                let (y0, m0) = ym(first);
                let (y1, m1) = ym(first + months as i32 - 1);
                Some(FileTime {
                    cal,
                    steps,
                    phase,
                    range: format!("{y0:04}{m0:02}-{y1:04}{m1:02}"),
                })
            })
            .collect(),
        Time::Daily { year, days } => {
            assert!(
                (1..=30).contains(&days),
                "daily sample must stay in January"
            );
            let start = cal.days_since_1850(year, 1, 1) as f64;
            let steps = (0..days)
                .map(|d| {
                    (
                        start + d as f64 + 0.5,
                        start + d as f64,
                        start + d as f64 + 1.0,
                    )
                })
                .collect();
            let phase = (0..days).map(|d| (d as f64 + 0.5) / 365.0).collect();
            vec![Some(FileTime {
                cal,
                steps,
                phase,
                range: format!("{year:04}0101-{year:04}01{days:02}"),
            })]
        }
    }
}

fn file_name(ds: &Dataset, time: &Option<FileTime>) -> String {
    let base = format!(
        "{}_{}_{}_{}_{}_{}",
        ds.var.id,
        ds.table,
        ds.source.id,
        ds.experiment,
        ds.member(),
        ds.grid_label
    );
    match time {
        Some(t) => format!("{base}_{}.nc", t.range),
        None => format!("{base}.nc"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Calendar {
    Day360,
    NoLeap,
    Gregorian,
    ProlepticGregorian,
}

impl Calendar {
    fn name(self) -> &'static str {
        match self {
            Calendar::Day360 => "360_day",
            Calendar::NoLeap => "noleap",
            Calendar::Gregorian => "gregorian",
            Calendar::ProlepticGregorian => "proleptic_gregorian",
        }
    }

    /// Days from 1850-01-01 to the given date in this calendar (all our dates
    /// are after 1582, so gregorian and proleptic_gregorian agree).
    fn days_since_1850(self, y: i32, m: u32, d: u32) -> i64 {
        const CUM_NOLEAP: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let (y, m, d) = (y as i64, m as i64, d as i64);
        match self {
            Calendar::Day360 => (y - 1850) * 360 + (m - 1) * 30 + d - 1,
            Calendar::NoLeap => (y - 1850) * 365 + CUM_NOLEAP[(m - 1) as usize] + d - 1,
            Calendar::Gregorian | Calendar::ProlepticGregorian => {
                days_from_civil(y, m, d) - days_from_civil(1850, 1, 1)
            }
        }
    }
}

/// Proleptic Gregorian day number (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct GridAxes {
    lat: Vec<f64>,
    lon: Vec<f64>,
    lat_bnds: Vec<f64>,
    lon_bnds: Vec<f64>,
    description: String,
}

impl GridAxes {
    fn new(grid: Grid) -> Self {
        let (lat0, dlat, nlat, lon0, dlon, nlon) = match grid {
            Grid::Global(nlat, nlon) => (
                -90.0,
                180.0 / nlat as f64,
                nlat,
                0.0,
                360.0 / nlon as f64,
                nlon,
            ),
            Grid::Europe => (34.0, 2.0, 19, -12.0, 2.0, 27),
        };
        let axis = |start: f64, step: f64, n: usize| -> (Vec<f64>, Vec<f64>) {
            let centres = (0..n).map(|i| start + (i as f64 + 0.5) * step).collect();
            let bnds = (0..n)
                .flat_map(|i| [start + i as f64 * step, start + (i + 1) as f64 * step])
                .collect();
            (centres, bnds)
        };
        let (lat, lat_bnds) = axis(lat0, dlat, nlat);
        let (lon, lon_bnds) = axis(lon0, dlon, nlon);
        let description = match grid {
            Grid::Global(..) => format!(
                "regular {dlat} x {dlon} degree latitude-longitude grid; {nlon} x {nlat} longitude/latitude (synthetic sample)"
            ),
            Grid::Europe => format!(
                "data regridded to a regular 2 x 2 degree latitude-longitude grid over Europe; {nlon} x {nlat} longitude/latitude (synthetic sample)"
            ),
        };
        GridAxes {
            lat,
            lon,
            lat_bnds,
            lon_bnds,
            description,
        }
    }
}

const FILL: f32 = 1.0e20;

/// Smooth, plausible synthetic land fraction (0..1): a few Gaussian continents.
fn land_fraction(lat: f64, lon: f64) -> f64 {
    const BLOBS: [(f64, f64, f64); 7] = [
        (52.0, 80.0, 38.0),   // Eurasia
        (48.0, 10.0, 16.0),   // Europe
        (5.0, 20.0, 26.0),    // Africa
        (45.0, -100.0, 26.0), // North America
        (-15.0, -60.0, 20.0), // South America
        (-25.0, 135.0, 14.0), // Australia
        (-90.0, 0.0, 22.0),   // Antarctica (lon-independent below)
    ];
    let mut g: f64 = 0.0;
    for (i, &(la, lo, r)) in BLOBS.iter().enumerate() {
        let dlon = if i == 6 {
            0.0
        } else {
            ((lon - lo + 540.0).rem_euclid(360.0) - 180.0) * la.to_radians().cos().max(0.3)
        };
        let d2 = (lat - la).powi(2) + dlon.powi(2);
        g = g.max((-d2 / (r * r)).exp());
    }
    ((g - 0.35) / 0.3).clamp(0.0, 1.0)
}

/// Value of the field at a point; `phase` is the fraction of the year.
fn value(field: Field, lat: f64, lon: f64, phase: f64, offset: f64) -> f32 {
    let (s, c) = lat.to_radians().sin_cos();
    let season = (2.0 * std::f64::consts::PI * (phase - 0.04)).cos(); // peaks mid-January
    let wave = (3.0 * lon.to_radians()).sin();
    let v = match field {
        Field::Tas | Field::TasMax => {
            let land = land_fraction(lat, lon);
            let max_bonus = if matches!(field, Field::TasMax) {
                6.0
            } else {
                0.0
            };
            302.0 - 48.0 * s * s - (8.0 + 10.0 * land) * s * season + 1.5 * wave - 4.0 * land * c
                + max_bonus
        }
        Field::Pr => {
            let itcz = 5.0 - 8.0 * season;
            let band = (-((lat - itcz) / 12.0).powi(2)).exp();
            1.0e-6 + 9.0e-5 * band + 2.5e-5 * c * c * (1.0 + 0.3 * wave)
        }
        Field::Tos => {
            if land_fraction(lat, lon) > 0.5 {
                return FILL;
            }
            (29.0 * c * c - 1.8 - 3.0 * s * season + 0.5 * wave).max(-1.8)
        }
        Field::Sftlf => 100.0 * land_fraction(lat, lon),
        Field::Smooth { base, amp } => base + amp * c * (1.0 + 0.05 * wave - 0.05 * s * season),
    };
    (v + offset) as f32
}

fn variant_indices(variant: &str) -> [i32; 4] {
    // "r1i1p1f3" -> [1, 1, 1, 3]
    let mut out = [0; 4];
    let mut rest = variant;
    for (slot, tag) in out.iter_mut().zip(['r', 'i', 'p', 'f']) {
        rest = rest.strip_prefix(tag).expect("variant label shape");
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        *slot = rest[..end].parse().expect("variant index");
        rest = &rest[end..];
    }
    out
}

fn global_attributes(
    ds: &Dataset,
    grid: &GridAxes,
    key: &str,
) -> Vec<(&'static str, AttributeValue)> {
    let src = ds.source;
    let [r, i, p, f] = variant_indices(&ds.variant);
    let sub = ds.sub_experiment.unwrap_or("none");
    let sub_title = match ds.sub_experiment {
        Some(s) => format!("initialized near end of year {}", &s[1..]),
        None => "none".to_owned(),
    };
    let v = &ds.version[1..];
    let creation_date = format!("{}-{}-{}T12:00:00Z", &v[..4], &v[4..6], &v[6..8]);
    let nominal = if ds.var.realm == "ocean" {
        src.ocean_resolution
    } else {
        src.atmos.0
    };
    // Deterministic stand-in for CMOR's random tracking id.
    let tracking = uuid::Uuid::new_v3(
        &uuid::Uuid::NAMESPACE_URL,
        format!("fedstac-sample:{key}").as_bytes(),
    );
    let license_name = match src.license {
        "CC BY-SA 4.0" => "Creative Commons Attribution-ShareAlike 4.0 International License",
        _ => "Creative Commons Attribution 4.0 International License",
    };
    let s = |x: &str| AttributeValue::from(x);
    vec![
        ("Conventions", s("CF-1.7 CMIP-6.2")),
        ("activity_id", s(ds.activity)),
        ("creation_date", s(&creation_date)),
        ("data_specs_version", s("01.00.29")),
        ("experiment", s(experiment_title(ds.experiment))),
        ("experiment_id", s(ds.experiment)),
        ("forcing_index", f.into()),
        ("frequency", s(frequency(ds.table))),
        (
            "further_info_url",
            s(&format!(
                "https://furtherinfo.es-doc.org/CMIP6.{}.{}.{}.{}.{}",
                src.institution_id, src.id, ds.experiment, sub, ds.variant
            )),
        ),
        ("grid", s(&grid.description)),
        ("grid_label", s(ds.grid_label)),
        ("initialization_index", i.into()),
        ("institution", s(src.institution)),
        ("institution_id", s(src.institution_id)),
        ("mip_era", s("CMIP6")),
        ("nominal_resolution", s(nominal)),
        ("physics_index", p.into()),
        ("product", s("model-output")),
        ("realization_index", r.into()),
        ("realm", s(ds.var.realm)),
        ("source", s(src.description)),
        ("source_id", s(src.id)),
        ("source_type", s(src.source_type)),
        ("sub_experiment", s(&sub_title)),
        ("sub_experiment_id", s(sub)),
        ("table_id", s(ds.table)),
        ("title", s(&format!("{} output prepared for CMIP6", src.id))),
        ("tracking_id", s(&format!("hdl:21.14100/{tracking}"))),
        ("variable_id", s(ds.var.id)),
        ("variant_label", s(&ds.variant)),
        (
            "license",
            s(&format!(
                "CMIP6 model data produced by {} is licensed under a {license_name} \
                 (https://creativecommons.org/licenses). Consult https://pcmdi.llnl.gov/CMIP6/TermsOfUse \
                 for terms of use governing CMIP6 output, including citation requirements and proper \
                 acknowledgment. Further information about this data, including some limitations, can be \
                 found via the further_info_url (recorded as a global attribute in this file). The data \
                 producers and data providers make no warranty, either express or implied, including, but \
                 not limited to, warranties of merchantability and fitness for a particular purpose. All \
                 liabilities arising from the supply of the information (including any liability arising in \
                 negligence) are excluded to the fullest extent permitted by law.",
                src.institution_id
            )),
        ),
        ("cmor_version", s("3.4.0")),
        (
            "history",
            s(&format!(
                "{creation_date} ; CMOR rewrote data to be consistent with CMIP6, CF-1.7 CMIP-6.2 and CF standards."
            )),
        ),
        ("comment", s("Synthetic sample data written by fedstac; not real model output.")),
    ]
}

fn write_nc(
    path: &Path,
    ds: &Dataset,
    grid: &GridAxes,
    time: &Option<FileTime>,
    key: &str,
) -> Result<()> {
    let tmp = temp_path(path);
    write_nc_contents(&tmp, ds, grid, time, key)?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

fn write_nc_contents(
    path: &Path,
    ds: &Dataset,
    grid: &GridAxes,
    time: &Option<FileTime>,
    key: &str,
) -> Result<()> {
    let (nlat, nlon) = (grid.lat.len(), grid.lon.len());
    let mut nc = netcdf::create_with(path, ds.format.options())?;

    for (name, value) in global_attributes(ds, grid, key) {
        nc.add_attribute(name, value)
            .with_context(|| format!("global attribute {name}"))?;
    }

    if time.is_some() {
        nc.add_unlimited_dimension("time")?;
    }
    nc.add_dimension("lat", nlat)?;
    nc.add_dimension("lon", nlon)?;
    nc.add_dimension("bnds", 2)?;

    if let Some(t) = time {
        let mut v = nc.add_variable::<f64>("time", &["time"])?;
        v.put_attribute("bounds", "time_bnds")?;
        v.put_attribute("units", "days since 1850-01-01")?;
        v.put_attribute("calendar", t.cal.name())?;
        v.put_attribute("axis", "T")?;
        v.put_attribute("long_name", "time")?;
        v.put_attribute("standard_name", "time")?;
        nc.add_variable::<f64>("time_bnds", &["time", "bnds"])?;
    }
    for (name, axis, units, long, std_name) in [
        ("lat", "Y", "degrees_north", "Latitude", "latitude"),
        ("lon", "X", "degrees_east", "Longitude", "longitude"),
    ] {
        let mut v = nc.add_variable::<f64>(name, &[name])?;
        v.put_attribute("bounds", format!("{name}_bnds"))?;
        v.put_attribute("units", units)?;
        v.put_attribute("axis", axis)?;
        v.put_attribute("long_name", long)?;
        v.put_attribute("standard_name", std_name)?;
        nc.add_variable::<f64>(&format!("{name}_bnds"), &[name, "bnds"])?;
    }
    if ds.var.height.is_some() {
        let mut v = nc.add_variable::<f64>("height", &[])?;
        v.put_attribute("units", "m")?;
        v.put_attribute("axis", "Z")?;
        v.put_attribute("positive", "up")?;
        v.put_attribute("long_name", "height")?;
        v.put_attribute("standard_name", "height")?;
    }

    let dims: &[&str] = if time.is_some() {
        &["time", "lat", "lon"]
    } else {
        &["lat", "lon"]
    };
    {
        let meta = ds.var;
        let mut v = nc.add_variable::<f32>(meta.id, dims)?;
        if ds.format.is_hdf5() {
            // One chunk per time step, as CMOR writes them.
            let chunk: Vec<usize> = if time.is_some() {
                vec![1, nlat, nlon]
            } else {
                vec![nlat, nlon]
            };
            v.set_chunking(&chunk)?;
            v.set_compression(4, true)?;
        }
        v.put_attribute("standard_name", meta.standard_name)?;
        v.put_attribute("long_name", meta.long_name)?;
        v.put_attribute("units", meta.units)?;
        v.put_attribute("cell_methods", cell_methods(ds.table, meta))?;
        let measures = if meta.realm == "ocean" {
            "area: areacello"
        } else {
            "area: areacella"
        };
        v.put_attribute("cell_measures", measures)?;
        if meta.height.is_some() {
            v.put_attribute("coordinates", "height")?;
        }
        v.set_fill_value(FILL).context("setting _FillValue")?;
        v.put_attribute("missing_value", FILL)?;
    }
    nc.enddef()?;

    put(&mut nc, "lat", &grid.lat, &[0], &[nlat])?;
    put(&mut nc, "lat_bnds", &grid.lat_bnds, &[0, 0], &[nlat, 2])?;
    put(&mut nc, "lon", &grid.lon, &[0], &[nlon])?;
    put(&mut nc, "lon_bnds", &grid.lon_bnds, &[0, 0], &[nlon, 2])?;
    if let Some(h) = ds.var.height {
        put(&mut nc, "height", &[h], &[], &[])?;
    }

    let nt = time.as_ref().map_or(1, |t| t.steps.len());
    let phases: Vec<f64> = time.as_ref().map_or_else(|| vec![0.0], |t| t.phase.clone());
    let mut data = Vec::with_capacity(nt * nlat * nlon);
    for &ph in &phases {
        for &la in &grid.lat {
            for &lo in &grid.lon {
                data.push(value(ds.var.field, la, lo, ph, ds.offset));
            }
        }
    }
    if let Some(t) = time {
        let times: Vec<f64> = t.steps.iter().map(|s| s.0).collect();
        let bnds: Vec<f64> = t.steps.iter().flat_map(|s| [s.1, s.2]).collect();
        put(&mut nc, "time", &times, &[0], &[nt])?;
        put(&mut nc, "time_bnds", &bnds, &[0, 0], &[nt, 2])?;
        put(&mut nc, ds.var.id, &data, &[0, 0, 0], &[nt, nlat, nlon])?;
    } else {
        put(&mut nc, ds.var.id, &data, &[0, 0], &[nlat, nlon])?;
    }
    nc.close()?;
    Ok(())
}

fn put<T: netcdf::NcTypeDescriptor>(
    nc: &mut netcdf::FileMut,
    name: &str,
    values: &[T],
    start: &[usize],
    count: &[usize],
) -> Result<()> {
    let mut v = nc
        .variable_mut(name)
        .with_context(|| format!("variable {name} missing"))?;
    if values.len() != count.iter().product::<usize>() {
        bail!(
            "variable {name}: {} values for shape {count:?}",
            values.len()
        );
    }
    v.put_values(values, (start, count))
        .with_context(|| format!("writing variable {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendars_agree_on_known_dates() {
        assert_eq!(Calendar::Gregorian.days_since_1850(1850, 1, 1), 0);
        assert_eq!(Calendar::Gregorian.days_since_1850(1851, 1, 1), 365);
        assert_eq!(
            Calendar::ProlepticGregorian.days_since_1850(2015, 1, 1),
            60_265
        );
        assert_eq!(Calendar::NoLeap.days_since_1850(2015, 1, 1), 165 * 365);
        assert_eq!(Calendar::Day360.days_since_1850(2015, 3, 1), 165 * 360 + 60);
    }

    #[test]
    fn variant_label_indices() {
        assert_eq!(variant_indices("r1i1p1f3"), [1, 1, 1, 3]);
        assert_eq!(variant_indices("r12i2p10f1"), [12, 2, 10, 1]);
    }

    #[test]
    fn scale_datasets_are_distinct_and_avoid_demo() {
        let mut seen = std::collections::HashSet::new();
        for ds in demo_datasets() {
            assert!(seen.insert(ds.drs_dir()));
        }
        for i in 0..3000 {
            assert!(
                seen.insert(scale_dataset(i).drs_dir()),
                "dataset {i} collides"
            );
        }
    }
}
