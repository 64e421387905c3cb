//! `fault-tests`: the fault suite against the real `flow-store` binary.
//!
//! ```text
//! cargo build --release && cargo run --release -p fault-tests -- --full   # docs/reliability.md
//! cargo build && cargo run -p fault-tests -- --quick                      # what cargo test runs
//! ```
//!
//! Exit status: 0 all passed, 1 a suite failed, 2 the bench itself could
//! not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fault_tests::run::{locate_binary, run, RunOptions};

/// Runs the fault suite against the flow-store binary and prints a report.
#[derive(Debug, Parser)]
#[command(name = "fault-tests")]
struct Args {
    /// A few crash cycles and ~10 s load phases (CI).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// At least 50 crash cycles and one-minute load phases (the documented figures).
    #[arg(long)]
    full: bool,
    /// The flow-store binary; default: next to this one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where scratch directories go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    scratch: PathBuf,
    /// Only these suites (crash, writers, abuse, memory, disk, failure, elsewhere).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match locate_binary(args.binary) {
        Ok(binary) => RunOptions {
            full: args.full,
            binary,
            scratch: args.scratch,
            only: args.only,
        },
        Err(e) => {
            eprintln!("fault-tests: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fault-tests: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("\nRESULT: FAILED (see the lines marked FAIL)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("fault-tests: {e:#}");
            ExitCode::from(2)
        }
    }
}
