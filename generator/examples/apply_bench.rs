//! Times one apply of a batch of new items into a site (what the receiver's
//! applier does for a bulk POST), for profiling:
//!   cargo run --release --example apply_bench -- <site dir> <items> [rounds]
//! The site directory is rewritten in place (use a copy: `cp -al`).
//! APPLY_WARM=1: first what the receiver does at its start (`Site::warm_up`).

use std::collections::BTreeMap;
use std::path::Path;

use fedstac::config::SiteInfo;
use fedstac::publish::store::{strip_tree_links, Change, Site};
use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let rounds: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let info = SiteInfo { name: "bench".into(), title: "Publishing benchmark".into(), description: String::new(), url: None };
    let recipes: Vec<String> = fedstac::recipe::builtin_names().map(String::from).collect();
    let site = Site::open(dir, &info, &recipes, None)?;
    if std::env::var_os("APPLY_WARM").is_some() {
        // What the receiver does at its start.
        let started = std::time::Instant::now();
        site.warm_up()?;
        println!("warm-up: {:.2} s", started.elapsed().as_secs_f64());
    }
    let template = walkdir_first(&dir.join("CMIP6")).expect("an item");
    let mut t: Value = serde_json::from_slice(&std::fs::read(&template)?)?;
    strip_tree_links(&mut t);
    let id = t["id"].as_str().unwrap().to_string();
    let parts: Vec<&str> = id.split('.').collect();
    for round in 0..rounds {
        let mut changes = BTreeMap::new();
        for k in 0..n {
            let member = format!("r{}i1p1f{}", k + 1, 9 + round);
            let mut v = t.clone();
            v["id"] = json!([&parts[..5], &[member.as_str()], &parts[6..]].concat().join("."));
            v["properties"]["cmip6:member_id"] = json!(member);
            changes.insert(v["id"].as_str().unwrap().to_string(), Change::Put(v));
        }
        let stats = site.apply(&changes)?;
        println!("round {round}: {n} items into {} in {:.2} s ({:.0} items/s); written {}, unchanged {}", stats.items, stats.seconds, n as f64 / stats.seconds, stats.written, stats.unchanged);
    }
    Ok(())
}

fn walkdir_first(dir: &Path) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name()?.to_str()?.starts_with("CMIP6.") && p.extension()? == "json" {
                return Some(p);
            }
        }
    }
    None
}
