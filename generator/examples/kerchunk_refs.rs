//! Writes Kerchunk references of files given on the command line, for the
//! Python cross-checks in tests/python/test_kerchunk.py and the benchmark
//! (`fedstac build` writes them into sites: generator/src/sidecars.rs).
//!
//! ```text
//! kerchunk_refs OUT_DIR FILE...              # OUT_DIR/<n>.json per file + OUT_DIR/index.json
//! kerchunk_refs --combine OUT.json FILE...   # one combined reference
//! ```
//! Each file's URL is its path as given. index.json lists, in argument order,
//! `{"path": .., "refs": "<n>.json", "skipped": {variable: why}}` or
//! `{"path": .., "error": ..}`.

use std::path::Path;

use anyhow::{Context, Result};
use fedstac::kerchunk::{combine_along_time, file_references};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((flag, rest)) if flag == "--combine" => {
            let (out, files) = rest.split_first().context("--combine OUT.json FILE...")?;
            let parts = files.iter().map(|f| file_references(Path::new(f), f)).collect::<Result<Vec<_>>>()?;
            let combined = combine_along_time(&parts)?;
            std::fs::write(out, combined.to_json())?;
        }
        Some((out_dir, files)) => {
            std::fs::create_dir_all(out_dir)?;
            let mut index = Vec::new();
            for (n, f) in files.iter().enumerate() {
                let entry = match file_references(Path::new(f), f) {
                    Ok(refs) => {
                        let name = format!("{n}.json");
                        std::fs::write(Path::new(out_dir).join(&name), refs.to_json())?;
                        serde_json::json!({"path": f, "refs": name, "skipped": refs.skipped()})
                    }
                    Err(e) => serde_json::json!({"path": f, "error": format!("{e:#}")}),
                };
                index.push(entry);
            }
            std::fs::write(Path::new(out_dir).join("index.json"), serde_json::to_vec_pretty(&index)?)?;
        }
        None => anyhow::bail!("usage: kerchunk_refs OUT_DIR FILE... | kerchunk_refs --combine OUT.json FILE..."),
    }
    Ok(())
}
