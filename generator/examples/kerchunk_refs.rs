//! Writes Kerchunk references of files given on the command line, for the
//! Python cross-checks in tests/python/test_kerchunk.py and the benchmark
//! (`fedstac build` writes them into sites: generator/src/sidecars.rs).
//!
//! ```text
//! kerchunk_refs OUT_DIR FILE...              # OUT_DIR/<n>.json per file + OUT_DIR/index.json
//! kerchunk_refs --combine OUT.json FILE...   # one combined reference; prints its timings as JSON
//! ```
//! Each file's URL is its path as given. index.json lists, in argument order,
//! `{"path": .., "refs": "<n>.json", "skipped": {variable: why}}` or
//! `{"path": .., "error": ..}`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use fedstac::kerchunk::{combine_along_time, file_references};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((flag, rest)) if flag == "--combine" => {
            let (out, files) = rest.split_first().context("--combine OUT.json FILE...")?;
            let started = Instant::now();
            let parts = files.iter().map(|f| file_references(Path::new(f), f)).collect::<Result<Vec<_>>>()?;
            let read = started.elapsed().as_secs_f64();
            // Timed apart, for bench/kerchunk.sh: the combine itself (as Python's MultiZarrToZarr
            // is given references already made) and writing its JSON.
            let started = Instant::now();
            let combined = combine_along_time(&parts)?;
            let json = combined.to_json();
            let combine = started.elapsed().as_secs_f64();
            std::fs::write(out, json)?;
            println!("{}", serde_json::json!({"read_seconds": read, "combine_seconds": combine}));
        }
        Some((out_dir, files)) => {
            std::fs::create_dir_all(out_dir)?;
            let mut index = Vec::new();
            for (n, f) in files.iter().enumerate() {
                // `seconds`: references made and serialised (what bench/kerchunk.sh compares).
                let started = Instant::now();
                let made = file_references(Path::new(f), f).map(|refs| {
                    let json = refs.to_json();
                    (refs, json)
                });
                let seconds = started.elapsed().as_secs_f64();
                let entry = match made {
                    Ok((refs, json)) => {
                        let name = format!("{n}.json");
                        std::fs::write(Path::new(out_dir).join(&name), json)?;
                        serde_json::json!({"path": f, "refs": name, "skipped": refs.skipped(), "seconds": seconds})
                    }
                    Err(e) => serde_json::json!({"path": f, "error": format!("{e:#}"), "seconds": seconds}),
                };
                index.push(entry);
            }
            std::fs::write(Path::new(out_dir).join("index.json"), serde_json::to_vec_pretty(&index)?)?;
        }
        None => anyhow::bail!("usage: kerchunk_refs OUT_DIR FILE... | kerchunk_refs --combine OUT.json FILE..."),
    }
    Ok(())
}
