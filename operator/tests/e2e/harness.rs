//! What the harnesses of both end-to-end tiers share (the kwok tier's `main.rs`, and the real
//! tier's through `#[path]`): libtest's command line, the skip without `--ignored`, one test's
//! outcome with its panic caught, and the summary line.

use std::future::Future;
use std::process::ExitCode;
use std::time::Instant;

use futures::FutureExt;

use crate::cluster::Result;

/// The libtest options cargo and scripts pass (`--ignored`, `--list`, name filters); others,
/// such as `--test-threads`, are accepted and have no effect: tests run in order.
pub struct Args {
    pub list: bool,
    pub ignored: bool,
    pub filters: Vec<String>,
}

impl Args {
    pub fn parse() -> Self {
        let mut args = Args {
            list: false,
            ignored: false,
            filters: Vec::new(),
        };
        let mut raw = std::env::args().skip(1);
        while let Some(arg) = raw.next() {
            match arg.as_str() {
                "--list" => args.list = true,
                "--ignored" | "--include-ignored" => args.ignored = true,
                "--test-threads" | "--format" | "--color" | "-Z" | "--skip" => {
                    raw.next();
                }
                other if other.starts_with('-') => {}
                filter => args.filters.push(filter.to_string()),
            }
        }
        args
    }

    /// Whether a test of this name is selected by the filters (all are without filters).
    pub fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

/// What `main` does before the suite: lists the tests (`--list`), or says they were skipped
/// (without `--ignored`, so a plain `cargo test` needs no cluster), or gives the runtime to run
/// them on. `Err` is the exit code to return at once.
pub fn prepare(
    suite: &str,
    args: &Args,
    names: &[&str],
    skipped: &str,
) -> std::result::Result<tokio::runtime::Runtime, ExitCode> {
    if args.list {
        for name in names {
            println!("{name}: test");
        }
        return Err(ExitCode::SUCCESS);
    }
    if !args.ignored {
        println!("{suite}: {} tests skipped: {skipped}", names.len());
        return Err(ExitCode::SUCCESS);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("{suite}: no async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// A test's outcome: its error, or its panic's message.
pub async fn outcome(test: impl Future<Output = Result>) -> std::result::Result<(), String> {
    match std::panic::AssertUnwindSafe(test).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())),
    }
}

/// The summary libtest prints, and the exit code.
pub fn summary(started: Instant, total: usize, failed: &[&str]) -> ExitCode {
    println!(
        "\ntest result: {}. {} passed; {} failed; finished in {:.0}s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        total - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures:\n    {}", failed.join("\n    "));
        ExitCode::FAILURE
    }
}
