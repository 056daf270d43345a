//! The `fedstac` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fedstac::build::{build, BuildOptions, BuildSummary};
use fedstac::config::SiteConfig;
use fedstac::sample::{write_sample_archive, SampleSpec};

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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
            let output = site.output.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            let started = std::time::Instant::now();
            let summary = runtime.block_on(build(BuildOptions { config: site, strict, jobs, progress: !cli.quiet }))?;
            if !cli.quiet {
                print_summary(&summary, &output, started.elapsed());
            }
            Ok(())
        }
        Command::Sample { dir, extra_datasets } => {
            let report = write_sample_archive(&dir, &SampleSpec { extra_datasets })?;
            if !cli.quiet {
                println!("wrote {} files in {} datasets ({} bytes) under {}", report.files, report.datasets, report.bytes, dir.display());
            }
            Ok(())
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
    println!("  warnings       {:>8}", s.warnings.len());
    for w in s.warnings.iter().take(LISTED) {
        println!("    {w}");
    }
    if s.warnings.len() > LISTED {
        println!("    … {} more in the build report", s.warnings.len() - LISTED);
    }
    println!("  peak memory    {:>8.1} MiB", peak_rss_mib());
    if let Some(report) = &s.report_path {
        println!("  build report   {}", report.display());
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
