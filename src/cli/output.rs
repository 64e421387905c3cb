//! Standard output of the commands (`status`, `keys list`, `check`, `simulate`…).
//!
//! `print!` panics when a write fails, and Rust ignores `SIGPIPE`, so
//! `flow-store status --json | grep -q healthy` used to end in "failed
//! printing to stdout: Broken pipe" and exit code 101 whenever `grep` had
//! found its line and gone before the last one was written. Here a reader
//! that stopped reading changes nothing: the command does what it does and
//! exits with the code it would have had (like ripgrep). A write that fails
//! for any other reason (a full disk under `> file`) is said once on stderr
//! and turns success into exit code 1, so a report that did not reach its
//! file is not taken for one that did.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write failed for a reason other than a closed pipe.
static FAILED: AtomicBool = AtomicBool::new(false);
/// Set once the reader went away: later writes are skipped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// `print!` that neither panics nor loses a failure.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// `println!` that neither panics nor loses a failure.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writes `args` to standard output in one piece and flushes it.
pub fn write(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let text = args.to_string();
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => CLOSED.store(true, Ordering::Relaxed),
        Err(e) => {
            CLOSED.store(true, Ordering::Relaxed);
            if !FAILED.swap(true, Ordering::Relaxed) {
                eprintln!("flow-store: cannot write to standard output: {e}");
            }
        }
    }
}

/// The exit code of a command that returned `code`: 1 instead of success
/// when its output could not be written.
pub fn finish(code: ExitCode) -> ExitCode {
    if FAILED.load(Ordering::Relaxed) && code == ExitCode::SUCCESS {
        ExitCode::from(1)
    } else {
        code
    }
}
