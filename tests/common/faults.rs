//! The fault suite ([`fault_tests::run`]) against a binary, from a test:
//! its report is printed (libtest shows it when the test fails) and its own
//! verdict asserted, which checks invariants, never speeds.

use std::path::Path;

use fault_tests::run::{run, RunOptions};

/// Runs the quick fault suite (only the named suites, when given) against
/// `binary`. Callers hold the gate exclusively (see [`super::gate`]): the
/// suite measures timeouts and memory.
pub fn assert_fault_suite_passes(binary: &Path, only: &[&str]) {
    let options = RunOptions {
        full: false,
        binary: binary.to_path_buf(),
        scratch: std::env::temp_dir(),
        only: only.iter().map(|s| s.to_string()).collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the fault suite");
    match runtime.block_on(run(options)) {
        Ok(true) => {}
        Ok(false) => panic!(
            "the fault suite failed against {}; see the lines marked FAIL in its report above",
            binary.display()
        ),
        Err(e) => panic!("the fault suite could not run: {e:#}"),
    }
}
