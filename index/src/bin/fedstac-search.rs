//! Runs one search against an index directory the way the viewer does and
//! prints the outcome as JSON (for the cross-checks and the benchmark):
//!   fedstac-search <site>/index 'f.variable=tas&from=2015-01-01' [--all] [--exact]
//! `--all` lists every matching id; `--exact` (implied by `--all`) reads all
//! of the segmented postings of common words, so the total and the counts are
//! exact (without it the engine reads them as far as the page needs, as the
//! viewer does, and says `"exact": false` when the total is a lower bound).
use std::process::ExitCode;

use fedstac_index::query::{search_dir_opts, Query, SearchOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.iter().any(|a| a == "--all");
    let exact = args.iter().any(|a| a == "--exact");
    // --defer-bytes=N: evaluate facet filters with postings over N bytes from the blocks (tests use 0).
    let defer = args.iter().find_map(|a| a.strip_prefix("--defer-bytes=")).and_then(|v| v.parse().ok());
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [dir, query] = rest[..] else {
        eprintln!("usage: fedstac-search <index dir> <url query string> [--all] [--exact] [--defer-bytes=N]");
        return ExitCode::from(2);
    };
    let pairs: Vec<(String, String)> = query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    }).collect();
    let q = Query::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match search_dir_opts(std::path::Path::new(dir), &q, &SearchOptions { all, exact, defer_bytes: defer, complete_bytes: None }) {
        Ok(out) => {
            println!("{}", serde_json::to_string(&out).expect("serializable"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
