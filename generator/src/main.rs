//! The `fedstac` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fedstac::build::{build, BuildOptions, BuildSummary};
use fedstac::config::SiteConfig;
use fedstac::diff::{diff, load_site};
use fedstac::harvest::fetch::FetchOptions;
use fedstac::harvest::{harvest, HarvestOptions, HarvestReport, Target};
use fedstac::merge::Placer;
use fedstac::sample::{write_sample_archive, SampleSpec};

/// Many small allocations freed on other threads (tokio workers, HTTP buffers,
/// JSON values): mimalloc handles them far better than glibc's malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fedstac", version, about = "Static, federated STAC catalogues for CMIP6 archives")]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bars or summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan the configured archive roots and write the static site.
    Build {
        /// Site config (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// Output directory (overrides the config's `output`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Header cache directory (overrides the config's `cache`).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Skip SHA-256 checksums (huge archives).
        #[arg(long)]
        no_checksums: bool,
        /// Fail, writing nothing, if any file cannot be read.
        #[arg(long)]
        strict: bool,
        /// Files read concurrently.
        #[arg(short, long, default_value_t = 8)]
        jobs: usize,
    },
    /// Mirror partner catalogues (the config's `partners`, or one URL) for the next build to merge.
    ///
    /// Exit status: 0 harvested cleanly; 2 harvested, but documents were
    /// refused or failed (listed in the report); 1 nothing was harvested.
    Harvest {
        /// Partner catalogue URL (its root catalog.json); default: every partner in the config.
        url: Option<String>,
        /// Site config (YAML): partners, and the cache the mirrors live in.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Cache directory (overrides the config's `cache`); mirrors go to <cache>/partners/<name>/.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Partner name for URL (default: the configured partner with that URL, else the URL's host).
        #[arg(long)]
        name: Option<String>,
        /// Requests in flight at once.
        #[arg(short, long, default_value_t = 16)]
        jobs: usize,
        /// Seconds a request may take.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Further attempts after a transient failure.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// First retry delay in seconds (doubled each time).
        #[arg(long, default_value_t = 0.25)]
        backoff: f64,
        /// Largest catalogue or item accepted, in bytes.
        #[arg(long, default_value_t = 16 << 20)]
        max_document_bytes: u64,
        /// Largest partner manifest accepted, in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        max_manifest_bytes: u64,
        /// Give up (changing nothing) past this many documents.
        #[arg(long, default_value_t = 10_000_000)]
        max_documents: usize,
        /// Never take the partner's bundle (fetch one document at a time).
        #[arg(long)]
        no_bundle: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare the datasets two sites answer with (URLs or directories); exit 1 when they differ.
    Diff {
        /// Site A: URL of its catalog.json (or site directory), or a directory.
        a: String,
        /// Site B.
        b: String,
        /// Documents read at once.
        #[arg(short, long, default_value_t = 16)]
        jobs: usize,
        /// Print the differences as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the write side of a site: STAC item transactions and signed uploads (OAuth2 bearer tokens).
    Receive {
        /// Receiver config (YAML): site directory, issuer, grants, publisher keys.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build the site, then sign and upload what changed to a receiver (what publish.sh runs).
    Publish {
        /// Site config (YAML) to build; its output is what is published.
        #[arg(short, long)]
        config: PathBuf,
        /// Receiver base URL (e.g. https://stac.example.org/, where /publish is proxied to `fedstac receive`).
        #[arg(long)]
        receiver: String,
        /// Client config (YAML): issuer, client_id, client_secret_file, scope, resource.
        #[arg(long)]
        auth: PathBuf,
        /// The publisher's ed25519 secret key file (`fedstac keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The key's id in the receiver's config.
        #[arg(long)]
        key_id: String,
        /// Publish the site as built, without building it first.
        #[arg(long)]
        no_build: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write items or patches into a partner's transaction endpoint.
    Push {
        /// Receiver base URL.
        #[arg(long)]
        receiver: String,
        /// Client config (YAML): issuer, client_id, client_secret_file, scope, resource.
        #[arg(long)]
        auth: PathBuf,
        /// Collection id.
        #[arg(long, default_value = "CMIP6")]
        collection: String,
        /// Patch (JSON Patch array or merge-patch object in FILE) the item with this id.
        #[arg(long, conflicts_with_all = ["replace", "delete"])]
        patch: Option<String>,
        /// Replace the item with this id by FILE.
        #[arg(long, conflicts_with = "delete")]
        replace: Option<String>,
        /// Delete the item with this id.
        #[arg(long)]
        delete: Option<String>,
        /// JSON file: an item or a FeatureCollection (created), or the patch/replacement.
        file: Option<PathBuf>,
    },
    /// Write a new ed25519 key pair for signed publishing: KEY (secret, 0600) and KEY.pub.
    Keygen {
        key: PathBuf,
    },
    /// Write a small synthetic CMIP6 archive (two sites, partial overlap).
    Sample {
        /// Directory to write into.
        dir: PathBuf,
        /// Additional tiny single-file datasets, for benchmarks.
        #[arg(long, default_value_t = 0)]
        extra_datasets: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Harvest { url, config, cache, name, jobs, timeout, retries, backoff, max_document_bytes, max_manifest_bytes, max_documents, no_bundle, json } => {
            let opts = HarvestOptions {
                fetch: FetchOptions { timeout: Duration::from_secs_f64(timeout), connect_timeout: Duration::from_secs_f64(timeout.min(10.0)), retries, backoff: Duration::from_secs_f64(backoff) },
                jobs,
                max_document_bytes,
                max_manifest_bytes,
                max_documents,
                use_bundle: !no_bundle,
                progress: !cli.quiet && !json,
                ..HarvestOptions::default()
            };
            let site = config.as_deref().map(SiteConfig::load).transpose()?;
            let cache = cache.or_else(|| site.as_ref().map(|s| s.cache.clone())).unwrap_or_else(|| PathBuf::from(".fedstac-cache"));
            let targets: Vec<Target> = match (&url, &site) {
                (Some(u), _) => {
                    let configured = site.iter().flat_map(|s| &s.partners).find(|p| &p.url == u).map(|p| p.name.clone());
                    let name = name.or(configured).or_else(|| url::Url::parse(u).ok().and_then(|x| x.host_str().map(|h| format!("{h}{}", x.port().map(|p| format!("-{p}")).unwrap_or_default())))).context("give the partner a --name")?;
                    vec![Target { name, url: u.clone() }]
                }
                (None, Some(s)) if !s.partners.is_empty() => s.partners.iter().map(Target::from).collect(),
                _ => anyhow::bail!("nothing to harvest: give a partner URL, or a config (-c) with partners"),
            };
            let placer = std::sync::Arc::new(match &site {
                Some(s) => Placer::for_config(s)?,
                None => Placer::new(Vec::new())?,
            });
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            let mut code = 0;
            for target in targets {
                let report = runtime.block_on(harvest(&target, &cache, placer.clone(), &opts)).with_context(|| format!("harvesting {}", target.name))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else if !cli.quiet {
                    print_harvest(&report);
                }
                code = code.max(report.exit_code());
            }
            Ok(code)
        }
        Command::Diff { a, b, jobs, json } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            let opts = FetchOptions::default();
            let (sa, sb) = match runtime.block_on(async { futures::try_join!(load_site(&a, &opts, jobs), load_site(&b, &opts, jobs)) }) {
                Ok(sites) => sites,
                Err(e) => {
                    // 2: the comparison could not be made (1 means the sites differ).
                    eprintln!("error: {e:#}");
                    return Ok(2);
                }
            };
            let d = diff(&sa, &sb);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else if !cli.quiet {
                d.print(LISTED);
            }
            Ok(if d.is_empty() { 0 } else { 1 })
        }
        Command::Build { config, output, cache, no_checksums, strict, jobs } => {
            let mut site = SiteConfig::load(&config)?;
            if let Some(o) = output {
                site.output = o;
            }
            if let Some(c) = cache {
                site.cache = c;
            }
            if no_checksums {
                site.checksums = false;
            }
            // Temp files (sort runs, the spilled search index, items.fgb being
            // assembled: ~5 GB at 10M items) go beside the header cache, on
            // disk, unless TMPDIR says otherwise: /tmp may be RAM (tmpfs).
            if std::env::var_os("TMPDIR").is_none() {
                std::fs::create_dir_all(&site.cache).with_context(|| format!("creating the cache directory {}", site.cache.display()))?;
                let _ = tempfile::env::override_temp_dir(&site.cache);
            }
            let output = site.output.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            let started = std::time::Instant::now();
            let summary = runtime.block_on(build(BuildOptions { config: site, strict, jobs, progress: !cli.quiet }))?;
            if !cli.quiet {
                print_summary(&summary, &output, started.elapsed());
            }
            Ok(0)
        }
        Command::Receive { config } => {
            let config = fedstac::publish::config::ReceiverConfig::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(fedstac::publish::receiver::serve(config))?;
            Ok(0)
        }
        Command::Keygen { key } => {
            let public = fedstac::publish::bundle::keygen(&key)?;
            println!("{public}");
            Ok(0)
        }
        Command::Push { receiver, auth, collection, patch, replace, delete, file } => {
            use fedstac::publish::client::{push, ClientAuth, PushOp};
            let auth = ClientAuth::load(&auth)?;
            let body = || -> Result<serde_json::Value> {
                let f = file.as_ref().context("give a JSON file")?;
                serde_json::from_slice(&std::fs::read(f).with_context(|| format!("reading {}", f.display()))?).with_context(|| format!("parsing {}", f.display()))
            };
            let op = match (patch, replace, delete) {
                (Some(id), _, _) => PushOp::Patch { collection, id, body: body()? },
                (_, Some(id), _) => PushOp::Replace { collection, id, body: body()? },
                (_, _, Some(id)) => PushOp::Delete { collection, id },
                _ => PushOp::Create { collection, body: body()? },
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            let (status, answer) = runtime.block_on(push(&receiver, &auth, op))?;
            println!("{status} {}", serde_json::to_string_pretty(&answer)?);
            Ok(if (200..300).contains(&status) { 0 } else { 1 })
        }
        Command::Publish { config, receiver, auth, key, key_id, no_build, json } => {
            let site = SiteConfig::load(&config)?;
            let output = site.output.clone();
            let name = site.site.name.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            if !no_build {
                let started = std::time::Instant::now();
                let summary = runtime.block_on(build(BuildOptions { config: site, strict: false, jobs: 8, progress: !cli.quiet && !json }))?;
                if !cli.quiet && !json {
                    print_summary(&summary, &output, started.elapsed());
                }
            }
            let auth = fedstac::publish::client::ClientAuth::load(&auth)?;
            let key = fedstac::publish::bundle::read_signing_key(&key)?;
            let r = runtime.block_on(fedstac::publish::client::publish(&output, &name, &receiver, &auth, &key, &key_id))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if !cli.quiet {
                println!("fedstac publish {} → {}: HTTP {} in {:.2}s", output.display(), r.receiver, r.status, r.seconds);
                println!("  files          {:>8}  ({} unchanged)", r.files, r.unchanged);
                println!("  uploaded       {:>8}  ({} bytes)", r.uploaded, r.upload_bytes);
                println!("  removed        {:>8}", r.removed);
                for p in r.changed.iter().take(LISTED) {
                    println!("    + {p}");
                }
                for p in r.removed_paths.iter().take(LISTED) {
                    println!("    - {p}");
                }
                if !(200..300).contains(&r.status) {
                    println!("  receiver said  {}", r.answer);
                }
            }
            Ok(if (200..300).contains(&r.status) { 0 } else { 1 })
        }
        Command::Sample { dir, extra_datasets } => {
            let report = write_sample_archive(&dir, &SampleSpec { extra_datasets })?;
            if !cli.quiet {
                println!("wrote {} files in {} datasets ({} bytes) under {}", report.files, report.datasets, report.bytes, dir.display());
            }
            Ok(0)
        }
    }
}

fn print_summary(s: &BuildSummary, output: &std::path::Path, elapsed: std::time::Duration) {
    println!("fedstac build: {} in {:.2}s", output.display(), elapsed.as_secs_f64());
    println!("  files seen     {:>8}", s.files_seen);
    for (why, n) in &s.ignored {
        println!("  ignored        {n:>8}  ({why})");
    }
    println!("  files used     {:>8}  ({} read, {} from cache)", s.files_used, s.files_read, s.files_cached);
    println!("  files skipped  {:>8}", s.skipped.len());
    for (path, why) in s.skipped.iter().take(LISTED) {
        println!("    {path}: {why}");
    }
    if s.skipped.len() > LISTED {
        println!("    … {} more in the build report", s.skipped.len() - LISTED);
    }
    println!("  items          {:>8}  in {} collection(s)", s.items, s.collections);
    println!("  outputs        {:>8}  written, {} unchanged, {} removed", s.outputs_written, s.outputs_unchanged, s.outputs_removed);
    if let Some(k) = &s.kerchunk {
        println!(
            "  kerchunk       {:>8}  file sidecars ({} read, {} from cache), {} combined; {} files without, {} variables left out, {} datasets not combined",
            k.files, k.read, k.cached, k.combined, k.failed, k.unreferenced_variables, k.not_combined
        );
    }
    println!("  warnings       {:>8}", s.warnings.len());
    for w in s.warnings.iter().take(LISTED) {
        println!("    {w}");
    }
    if s.warnings.len() > LISTED {
        println!("    … {} more in the build report", s.warnings.len() - LISTED);
    }
    let m = &s.merge;
    if !m.partners.is_empty() {
        let partners: Vec<String> = m.partners.iter().map(|p| if p.harvested { format!("{} ({} mirrored)", p.name, p.items) } else { format!("{} (not harvested yet)", p.name) }).collect();
        println!("  partners       {:>8}  {}", m.partners.len(), partners.join(", "));
        println!("  merged         {:>8}  items with partner copies, {} held only at partners, {} superseded by a partner's newer version", m.merged, m.partner_only, m.superseded);
        println!("  conflicts      {:>8}", m.conflicts.len());
    }
    println!("  peak memory    {:>8.1} MiB", peak_rss_mib());
    if let Some(report) = &s.report_path {
        println!("  build report   {}", report.display());
    }
}

fn print_harvest(r: &HarvestReport) {
    println!("fedstac harvest {}: {} in {:.2}s ({})", r.partner, r.outcome, r.seconds, r.url);
    println!("  manifest       {}", r.manifest);
    println!("  bundle         {}", r.bundle);
    println!("  requests       {:>8}  ({} not modified, {} retries), {} bytes received", r.requests, r.not_modified, r.retries, r.bytes);
    println!("  documents      {:>8}  fetched, {} from the bundle, {} known unchanged, {} resumed from an interrupted harvest", r.fetched, r.bundled, r.reused, r.resumed);
    println!("  mirror         {:>8}  items in {} catalogues: {} added, {} changed, {} removed", r.items, r.catalogs, r.items_added, r.items_changed, r.items_removed);
    println!("  refused        {:>8}", r.refused);
    println!("  failed         {:>8}  ({} kept their previous copy)", r.failed, r.kept_previous);
    for p in r.problems.iter().take(LISTED) {
        println!("    {} {}: {}", p.kind, p.url, p.reason);
    }
    if r.problems.len() > LISTED {
        println!("    … {} more in the report", r.problems.len() - LISTED);
    }
    if !r.notes.is_empty() {
        println!("  notes          {:>8}  (dropped hrefs, links, fields; in the report)", r.notes.len());
    }
    if let Some(p) = &r.path {
        println!("  report         {p}");
    }
}

/// Lines of skipped files and warnings printed; the rest are in the report.
const LISTED: usize = 15;

/// Peak resident set size of this process (Linux reports ru_maxrss in KiB).
fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}
