//! Writes the search index of a synthetic CMIP6 catalogue (no netCDF files,
//! no item JSON) for the scale benchmark (bench/search/run.sh):
//!
//!   cargo run --release -p fedstac-index --features write --example bench-index -- <items> <out dir> [--no-fgb] [--dump=items.jsonl] [--text-segments=<bytes>,<docs>]
//!
//! `--text-segments` segments text postings over twice `<bytes>` at multiples
//! of `<docs>` (the browser test makes a small index read like a 10M one).
//!
//! The catalogue imitates CMIP6's shape: ~20 activities with their
//! experiments, 130 sources in 45 institutions with Zipf-like participation,
//! ensembles of 1–50 members (mostly 1–3), ~40 tables with realistic
//! frequency/realm and a Zipf-like number of variables, per-source variable
//! coverage, experiment-specific time spans (fx time-invariant), global
//! footprints with a few regional ones, and ~10% superseded versions.
//! Datasets are drawn whole per (source, experiment, member, table) in DRS
//! order until the wanted number of items is reached, as a data centre holds them.
use std::time::Instant;

use fedstac_index::query::days_from_civil;
use fedstac_index::write::{DirSink, IndexWriter, ItemInput, Options};
use fedstac_index::SiteRef;

/// splitmix64: a deterministic stream for the synthetic catalogue.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
    x ^ (x >> 31)
}

fn unit(seed: u64) -> f64 {
    (mix(seed) >> 11) as f64 / (1u64 << 53) as f64
}

fn h(parts: &[u64]) -> u64 {
    parts.iter().fold(0xC0FFEE, |a, &p| mix(a ^ p.wrapping_mul(0x100000001B3)))
}

struct Experiment {
    activity: &'static str,
    name: String,
    /// Share of sources that ran it.
    popularity: f64,
    start: i64,
    years: i64,
    /// Share of tables it has.
    tables: f64,
}

struct Table {
    name: &'static str,
    frequency: &'static str,
    realm: &'static [&'static str],
    variables: Vec<(String, String, String)>, // id, long name, standard name
}

/// Real variables with the tables that hold them (as in the CMIP6 data request).
const REAL_VARS: &[(&str, &str, &str, &[&str])] = &[
    ("tas", "Near-Surface Air Temperature", "air_temperature", &["Amon", "day", "3hr", "6hrPlevPt"]),
    ("pr", "Precipitation", "precipitation_flux", &["Amon", "day", "3hr"]),
    ("psl", "Sea Level Pressure", "air_pressure_at_mean_sea_level", &["Amon", "day", "6hrPlevPt"]),
    ("tasmax", "Daily Maximum Near-Surface Air Temperature", "air_temperature", &["Amon", "day"]),
    ("tasmin", "Daily Minimum Near-Surface Air Temperature", "air_temperature", &["Amon", "day"]),
    ("uas", "Eastward Near-Surface Wind", "eastward_wind", &["Amon", "day", "3hr"]),
    ("vas", "Northward Near-Surface Wind", "northward_wind", &["Amon", "day", "3hr"]),
    ("huss", "Near-Surface Specific Humidity", "specific_humidity", &["Amon", "day", "3hr"]),
    ("rsds", "Surface Downwelling Shortwave Radiation", "surface_downwelling_shortwave_flux_in_air", &["Amon", "day", "3hr"]),
    ("rlds", "Surface Downwelling Longwave Radiation", "surface_downwelling_longwave_flux_in_air", &["Amon", "day", "3hr"]),
    ("clt", "Total Cloud Cover Percentage", "cloud_area_fraction", &["Amon", "day", "3hr"]),
    ("ta", "Air Temperature", "air_temperature", &["Amon", "day", "6hrPlev"]),
    ("ua", "Eastward Wind", "eastward_wind", &["Amon", "day", "6hrPlev"]),
    ("va", "Northward Wind", "northward_wind", &["Amon", "day", "6hrPlev"]),
    ("zg", "Geopotential Height", "geopotential_height", &["Amon", "day"]),
    ("hus", "Specific Humidity", "specific_humidity", &["Amon", "day"]),
    ("tos", "Sea Surface Temperature", "sea_surface_temperature", &["Omon", "Oday"]),
    ("sos", "Sea Surface Salinity", "sea_surface_salinity", &["Omon", "Oday"]),
    ("thetao", "Sea Water Potential Temperature", "sea_water_potential_temperature", &["Omon"]),
    ("so", "Sea Water Salinity", "sea_water_salinity", &["Omon"]),
    ("zos", "Sea Surface Height Above Geoid", "sea_surface_height_above_geoid", &["Omon"]),
    ("siconc", "Sea-Ice Area Percentage", "sea_ice_area_fraction", &["SImon", "SIday"]),
    ("sithick", "Sea-Ice Thickness", "sea_ice_thickness", &["SImon"]),
    ("mrso", "Total Soil Moisture Content", "mass_content_of_water_in_soil", &["Lmon"]),
    ("gpp", "Carbon Mass Flux out of Atmosphere Due to Gross Primary Production on Land", "gross_primary_productivity_of_biomass_expressed_as_carbon", &["Lmon"]),
    ("sftlf", "Percentage of the Grid Cell Occupied by Land", "land_area_fraction", &["fx"]),
    ("areacella", "Grid-Cell Area for Atmospheric Grid Variables", "cell_area", &["fx"]),
    ("orog", "Surface Altitude", "surface_altitude", &["fx"]),
];

const WORDS: &[&str] = &[
    "air", "sea", "surface", "water", "ice", "snow", "soil", "land", "ocean", "atmosphere", "temperature", "salinity", "pressure", "wind",
    "eastward", "northward", "upward", "downward", "flux", "radiation", "shortwave", "longwave", "cloud", "aerosol", "carbon", "nitrogen",
    "mass", "content", "fraction", "area", "depth", "height", "humidity", "precipitation", "evaporation", "runoff", "heat", "latent",
    "sensible", "velocity", "stress", "tendency", "concentration", "ozone", "dust", "sulfate", "chlorophyll", "oxygen", "iron",
    "phytoplankton", "zooplankton", "litter", "vegetation", "leaf", "root", "wood", "burnt", "albedo", "optical", "thickness", "transport",
];

fn tables() -> Vec<Table> {
    // (table, frequency, realm, number of variables)
    let spec: &[(&str, &str, &[&str], usize)] = &[
        ("Amon", "mon", &["atmos"], 75), ("Omon", "mon", &["ocean"], 120), ("day", "day", &["atmos"], 35), ("Lmon", "mon", &["land"], 55),
        ("SImon", "mon", &["seaIce"], 65), ("fx", "fx", &["atmos", "land"], 8), ("Ofx", "fx", &["ocean"], 10), ("3hr", "3hr", &["atmos"], 20),
        ("6hrPlev", "6hr", &["atmos"], 12), ("6hrPlevPt", "6hr", &["atmos"], 25), ("AERmon", "mon", &["aerosol"], 110), ("CFmon", "mon", &["atmos"], 40),
        ("Emon", "mon", &["atmos"], 300), ("Eday", "day", &["atmos"], 120), ("Oday", "day", &["ocean"], 5), ("LImon", "mon", &["landIce", "land"], 30),
        ("Oyr", "yr", &["ocnBgchem"], 80), ("Omon_bgc", "mon", &["ocnBgchem"], 0), ("AERday", "day", &["aerosol"], 15), ("CFday", "day", &["atmos"], 30),
        ("E3hr", "3hr", &["atmos"], 20), ("Eyr", "yr", &["land"], 30), ("SIday", "day", &["seaIce"], 8), ("Efx", "fx", &["land"], 12),
        ("CF3hr", "3hr", &["atmos"], 60), ("6hrLev", "6hr", &["atmos"], 10), ("AERmonZ", "mon", &["aerosol"], 20), ("EdayZ", "day", &["atmos"], 10),
        ("EmonZ", "mon", &["atmos"], 25), ("Lyr", "yr", &["land"], 5), ("Amon_extra", "mon", &["atmos"], 0), ("IfxGre", "fx", &["landIce"], 5),
        ("ImonGre", "mon", &["landIce"], 30), ("CFsubhr", "subhrPt", &["atmos"], 50), ("E1hr", "1hr", &["atmos"], 15), ("E6hrZ", "6hr", &["atmos"], 5),
    ];
    let mut synth = 0u64;
    spec.iter()
        .filter(|s| s.3 > 0)
        .map(|&(name, frequency, realm, n)| {
            let mut real = REAL_VARS.iter().filter(|v| v.3.contains(&name));
            let variables = (0..n)
                .map(|_| match real.next() {
                    Some(&(id, long, std, _)) => (id.to_string(), long.to_string(), std.to_string()),
                    None => {
                        synth += 1;
                        let w = |k: u64| WORDS[(mix(synth * 7 + k) % WORDS.len() as u64) as usize];
                        let (a, b, c) = (w(1), w(2), w(3));
                        let long = format!("{}{} {} {}", a[..1].to_uppercase(), &a[1..], b, c);
                        (format!("{}{}{}", &a[..2.min(a.len())], &b[..3.min(b.len())], synth % 97), long, format!("{a}_{b}_{c}"))
                    }
                })
                .collect();
            Table { name, frequency, realm, variables }
        })
        .collect()
}

fn experiments() -> Vec<Experiment> {
    let mut out = Vec::new();
    let mut add = |activity: &'static str, name: &str, popularity: f64, start: i64, years: i64, tables: f64| {
        out.push(Experiment { activity, name: name.to_string(), popularity, start, years, tables })
    };
    add("CMIP", "historical", 0.9, 1850, 165, 1.0);
    add("CMIP", "piControl", 0.9, 1850, 500, 0.8);
    add("CMIP", "amip", 0.7, 1979, 36, 0.5);
    add("CMIP", "abrupt-4xCO2", 0.7, 1850, 150, 0.4);
    add("CMIP", "1pctCO2", 0.7, 1850, 150, 0.4);
    add("CMIP", "esm-hist", 0.3, 1850, 165, 0.5);
    add("CMIP", "esm-piControl", 0.3, 1850, 300, 0.4);
    for (n, p) in [("ssp126", 0.7), ("ssp245", 0.8), ("ssp370", 0.7), ("ssp585", 0.8), ("ssp119", 0.3), ("ssp434", 0.2), ("ssp460", 0.2), ("ssp534-over", 0.2)] {
        add("ScenarioMIP", n, p, 2015, 86, 0.8);
    }
    for n in ["hist-GHG", "hist-aer", "hist-nat", "hist-stratO3", "ssp245-GHG", "ssp245-aer", "ssp245-nat"] {
        add("DAMIP", n, 0.3, 1850, 165, 0.3);
    }
    add("DCPP", "dcppA-hindcast", 0.15, 1960, 10, 0.3);
    add("DCPP", "dcppC-hindcast-noPinatubo", 0.05, 1990, 10, 0.2);
    for n in ["highresSST-present", "hist-1950", "control-1950", "highres-future"] {
        add("HighResMIP", n, 0.15, 1950, 65, 0.4);
    }
    for n in ["lgm", "midHolocene", "lig127k", "past1000"] {
        add("PMIP", n, 0.15, 1850, 100, 0.3);
    }
    for (a, k) in [("AerChemMIP", 24), ("C4MIP", 12), ("CFMIP", 20), ("LUMIP", 16), ("OMIP", 6), ("RFMIP", 12), ("GeoMIP", 12), ("LS3MIP", 8), ("VolMIP", 16), ("ISMIP6", 12), ("FAFMIP", 10), ("GMMIP", 8), ("HighResMIP", 0)] {
        for i in 0..k {
            add(a, &format!("{}-exp{}", a.to_lowercase(), i + 1), 0.3, 1850 + (i as i64 * 37) % 150, 30 + (i as i64 * 17) % 120, 0.25);
        }
    }
    out.sort_by(|a, b| (a.activity, &a.name).cmp(&(b.activity, &b.name)));
    out
}

const INSTITUTIONS: &[&str] = &[
    "AS-RCEC", "AWI", "BCC", "CAMS", "CAS", "CCCR-IITM", "CCCma", "CMCC", "CNRM-CERFACS", "CSIRO", "CSIRO-ARCCSS", "DKRZ", "DWD", "E3SM-Project",
    "EC-Earth-Consortium", "ECMWF", "FIO-QLNM", "HAMMOZ-Consortium", "INM", "IPSL", "KIOST", "MIROC", "MOHC", "MPI-M", "MRI", "NASA-GISS",
    "NCAR", "NCC", "NERC", "NIMS-KMA", "NIWA", "NOAA-GFDL", "NTU", "NUIST", "SNU", "THU", "UA", "UCSB", "UHH", "CCCR", "KMA", "IITM", "LASG", "EMAC", "CAU",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().and_then(|a| a.replace('_', "").parse().ok()).expect("usage: bench-index <items> <out dir> [--no-fgb]");
    let out = std::path::PathBuf::from(args.get(1).expect("out dir"));
    let fgb = !args.iter().any(|a| a == "--no-fgb");
    // --dump=<file>: also write the items as JSON lines (for the Pagefind comparison).
    let mut dump = args.iter().find_map(|a| a.strip_prefix("--dump=")).map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("dump file")));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("out dir");

    let tables = tables();
    let exps = experiments();
    let sources: Vec<(String, &str, &str)> = (0..130u64)
        .map(|i| {
            let inst = INSTITUTIONS[(mix(i * 3 + 1) % INSTITUTIONS.len() as u64) as usize];
            let res = ["100 km", "250 km", "50 km", "500 km", "25 km"][(mix(i * 5 + 2) % 5) as usize];
            (format!("{}-M{}", inst.split('-').next().unwrap(), i), inst, res)
        })
        .collect();
    let mut sources_sorted: Vec<usize> = (0..sources.len()).collect();
    sources_sorted.sort_by(|&a, &b| (sources[a].1, &sources[a].0).cmp(&(sources[b].1, &sources[b].0)));
    // Source weight: Zipf-like (a few big modelling centres run most experiments).
    let weight = |s: usize| 2.2 / (1.0 + (mix(s as u64 * 11) % 130) as f64).powf(0.35);
    let members_of = |s: usize, e: usize| -> u64 {
        let u = unit(h(&[s as u64, e as u64, 77]));
        if u < 0.35 { 1 } else if u < 0.6 { 3 } else if u < 0.8 { 10 } else if u < 0.93 { 20 } else if u < 0.98 { 40 } else { 50 }
    };
    let var_share = |s: usize| 0.25 + 0.7 * unit(h(&[s as u64, 5]));

    let vars_of = |s: usize, t: usize| -> Vec<usize> { (0..tables[t].variables.len()).filter(|&vi| unit(h(&[s as u64, t as u64, vi as u64, 6])) < var_share(s)).collect() };
    let versions_of = |s: usize, e: usize, m: u64, t: usize, vi: usize| -> &'static [u32] {
        if unit(h(&[s as u64, e as u64, m, t as u64, vi as u64, 8])) < 0.1 { &[20190312, 20200117] } else { &[20190710] }
    };
    // Every (source, experiment, member, table) group in DRS order, with its item count.
    let mut groups: Vec<(usize, usize, u64, usize, u64)> = Vec::new();
    for (e, exp) in exps.iter().enumerate() {
        for &s in &sources_sorted {
            if unit(h(&[s as u64, e as u64, 1])) >= (exp.popularity * weight(s)).min(1.0) {
                continue;
            }
            for m in 1..=members_of(s, e) {
                for t in 0..tables.len() {
                    if unit(h(&[e as u64, t as u64, 2])) >= exp.tables {
                        continue;
                    }
                    let size: u64 = vars_of(s, t).iter().map(|&vi| versions_of(s, e, m, t, vi).len() as u64).sum();
                    if size > 0 {
                        groups.push((e, s, m, t, size));
                    }
                }
            }
        }
    }
    // Groups in a fixed pseudo-random order until the size is reached, then emitted in DRS order.
    let universe: u64 = groups.iter().map(|g| g.4).sum();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| h(&[groups[i].0 as u64, groups[i].1 as u64, groups[i].2, groups[i].3 as u64, 4]));
    let mut chosen = vec![false; groups.len()];
    let mut sum = 0;
    for i in order {
        if sum >= n {
            break;
        }
        chosen[i] = true;
        sum += groups[i].4;
    }
    eprintln!("synthetic universe {universe} items in {} groups; {sum} items chosen", groups.len());

    let started = Instant::now();
    let mut sink = DirSink(out.clone());
    let mut w = IndexWriter::new(Options { fgb, ..Options::cmip6(SiteRef { name: "bench".into(), title: format!("Synthetic CMIP6, {n} items") }) }).expect("writer");
    if let Some((bytes, docs)) = args.iter().find_map(|a| a.strip_prefix("--text-segments=")).and_then(|v| v.split_once(',')) {
        w.set_text_segments(bytes.parse().expect("segment bytes"), docs.parse().expect("segment docs"));
    }
    let mut count = 0u64;
    'all: for (gi, &(e, s, m, t, _)) in groups.iter().enumerate() {
        if !chosen[gi] {
            continue;
        }
        let exp = &exps[e];
        let table = &tables[t];
        let (source, inst, res) = &sources[s];
        let grid = if unit(h(&[s as u64, 9])) < 0.7 { "gn" } else { "gr" };
        let lat = [90.0, 89.5, 88.75, 87.5, 85.0][(mix(s as u64 * 13) % 5) as usize];
        let regional = unit(h(&[s as u64, e as u64, 3])) < 0.01;
        let f = 1 + mix(s as u64 * 17) % 3;
        let member = if exp.activity == "DCPP" { format!("s{}-r{m}i1p1f{f}", exp.start + (m as i64 % 30)) } else { format!("r{m}i1p1f{f}") };
        let (start_year, years) = if exp.name == "piControl" { (exp.start + (mix(s as u64) % 200) as i64, exp.years) } else { (exp.start, exp.years) };
        for vi in vars_of(s, t) {
            let (var, long, std) = &table.variables[vi];
            let versions = versions_of(s, e, m, t, vi);
            for (k, version) in versions.iter().enumerate() {
                let id = format!("CMIP6.{}.{inst}.{source}.{}.{member}.{}.{var}.{grid}.v{version}", exp.activity, exp.name, table.name);
                let (start, end) = if table.frequency == "fx" {
                    (days_from_civil(1, 1, 1) * 86400, days_from_civil(9999, 12, 31) * 86400 + 86399)
                } else {
                    (days_from_civil(start_year, 1, 1) * 86400, days_from_civil(start_year + years, 1, 1) * 86400)
                };
                let bbox = if regional { [-30.0, 20.0, 60.0, 75.0] } else { [-180.0, -lat, 180.0, lat] };
                let activities = if exp.activity == "ScenarioMIP" && unit(h(&[s as u64, e as u64, 10])) < 0.3 {
                    vec!["AerChemMIP".to_string(), "ScenarioMIP".to_string()]
                } else {
                    vec![exp.activity.to_string()]
                };
                let item = ItemInput {
                    href: format!("CMIP6/{}/{inst}/{source}/{}/{id}.json", exp.activity, exp.name),
                    title: id.rsplit_once('.').unwrap().0.to_string(),
                    start,
                    end,
                    bbox,
                    facets: vec![
                        (true, activities),
                        (false, vec![inst.to_string()]),
                        (false, vec![source.clone()]),
                        (false, vec![exp.name.clone()]),
                        (false, vec![member.clone()]),
                        (false, vec![table.name.to_string()]),
                        (false, vec![var.clone()]),
                        (false, vec![grid.to_string()]),
                        (false, vec![table.frequency.to_string()]),
                        (true, table.realm.iter().map(|r| r.to_string()).collect()),
                        (false, vec![res.to_string()]),
                        (false, vec![(k + 1 == versions.len()).to_string()]),
                    ],
                    text: vec![long.clone(), std.clone()],
                    label: long.clone(),
                    id,
                };
                if let Some(d) = dump.as_mut() {
                    use std::io::Write;
                    let facets: serde_json::Map<String, serde_json::Value> =
                        fedstac_index::CMIP6_FACETS.iter().zip(&item.facets).map(|((_, name, _), (_, v))| (name.to_string(), serde_json::json!(v))).collect();
                    let line = serde_json::json!({"id": item.id, "title": item.title, "text": item.text, "facets": facets, "start": item.start, "end": item.end, "bbox": item.bbox});
                    writeln!(d, "{line}").expect("dump");
                }
                w.add(item, &mut sink).expect("add");
                count += 1;
                if count == n {
                    break 'all;
                }
                if count.is_multiple_of(1_000_000) {
                    eprintln!("  {count} items, {:.1}s", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    let t_add = started.elapsed();
    let meta = w.finish(&mut sink).expect("finish");
    let total = started.elapsed();
    println!(
        "{{\"items\": {}, \"seconds\": {:.2}, \"add_seconds\": {:.2}, \"finish_seconds\": {:.2}, \"fgb\": {}, \"peak_rss_mib\": {:.0}}}",
        meta.items,
        total.as_secs_f64(),
        t_add.as_secs_f64(),
        (total - t_add).as_secs_f64(),
        fgb,
        peak_rss_mib()
    );
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}
