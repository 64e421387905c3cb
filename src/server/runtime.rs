//! The async runtime `serve` runs on, chosen from the CPUs the process may
//! use.
//!
//! Tokio's multi-threaded runtime starts one worker per available CPU
//! (`std::thread::available_parallelism`, which counts the affinity mask
//! and a cgroup's CPU quota). Where that is one, it is one worker under a
//! scheduler built for stealing work between several; the current-thread
//! runtime runs the same tasks on one thread with less of the scheduler's
//! own work per task (what differs is user time, not context switches).
//! On one core, measured with the end-to-end bench (three full runs
//! against the build before), it serves 2–7% more saves and 3% more loads
//! (`docs/performance.md`, "The runtime on one core").
//!
//! Where `TOKIO_WORKER_THREADS` is set, `serve` runs that many workers
//! on any number of CPUs, as tokio's default runtime did before this
//! module; a value that is no count stops the start with a message (tokio
//! would panic).
//!
//! Nothing the server runs depends on the flavour: a request's
//! cryptography runs on the runtime's thread either way, a write goes to
//! the store's writer thread, and a read that may block goes to the
//! blocking pool, which both flavours have.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// The variable tokio's default runtime takes its worker count from; an
/// operator who sets it gets that many workers, as before this module.
pub const WORKERS_VARIABLE: &str = "TOKIO_WORKER_THREADS";

/// Which runtime [`build`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread: the process may use one CPU.
    CurrentThread,
    /// A multi-threaded runtime.
    MultiThread {
        /// How many workers.
        workers: usize,
        /// Whether [`WORKERS_VARIABLE`] set the count (else one per CPU).
        from_variable: bool,
    },
}

/// [`WORKERS_VARIABLE`] is set to something that is no worker count.
#[derive(Debug, thiserror::Error)]
#[error("{WORKERS_VARIABLE}={0:?} is not a number of worker threads (1 or more); unset it to get one worker per CPU")]
pub struct InvalidWorkerCount(String);

impl Flavor {
    /// The flavour for `cpus` available CPUs and the value of
    /// [`WORKERS_VARIABLE`], if set.
    pub fn choose(cpus: NonZeroUsize, variable: Option<&str>) -> Result<Self, InvalidWorkerCount> {
        if let Some(value) = variable {
            let workers = value
                .trim()
                .parse::<NonZeroUsize>()
                .map_err(|_| InvalidWorkerCount(value.to_string()))?;
            return Ok(Flavor::MultiThread {
                workers: workers.get(),
                from_variable: true,
            });
        }
        Ok(match cpus.get() {
            1 => Flavor::CurrentThread,
            workers => Flavor::MultiThread {
                workers,
                from_variable: false,
            },
        })
    }

    /// The flavour for the CPUs this process may use now (one if that
    /// cannot be read, as tokio itself assumes) and its environment.
    pub fn for_this_process() -> Result<Self, InvalidWorkerCount> {
        let cpus = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        let variable = std::env::var_os(WORKERS_VARIABLE);
        Self::choose(
            cpus,
            variable.as_ref().map(|v| v.to_string_lossy()).as_deref(),
        )
    }

    /// A line for the startup log.
    pub fn describe(&self) -> String {
        match self {
            Flavor::CurrentThread => "async runtime: one thread (1 CPU available)".to_string(),
            Flavor::MultiThread {
                workers,
                from_variable: false,
            } => format!("async runtime: {workers} worker threads ({workers} CPUs available)"),
            Flavor::MultiThread {
                workers,
                from_variable: true,
            } => format!("async runtime: {workers} worker threads ({WORKERS_VARIABLE})"),
        }
    }
}

/// The runtime for `flavor`, with I/O and timers enabled and its threads
/// named `flow-store`.
pub fn build(flavor: Flavor) -> std::io::Result<Runtime> {
    let mut builder = match flavor {
        Flavor::CurrentThread => Builder::new_current_thread(),
        Flavor::MultiThread { workers, .. } => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
    };
    builder.enable_all().thread_name("flow-store").build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    fn threads(workers: usize, from_variable: bool) -> Flavor {
        Flavor::MultiThread {
            workers,
            from_variable,
        }
    }

    #[test]
    fn one_cpu_gets_the_current_thread_runtime_and_more_get_a_worker_each() {
        let choose = |n| Flavor::choose(cpus(n), None).expect("no variable");
        assert_eq!(choose(1), Flavor::CurrentThread);
        assert_eq!(choose(2), threads(2, false));
        assert_eq!(choose(16), threads(16, false));
    }

    #[test]
    fn the_worker_variable_sets_the_count_on_any_number_of_cpus() {
        let choose = |n, value| Flavor::choose(cpus(n), Some(value)).expect("a count");
        assert_eq!(choose(1, "4"), threads(4, true));
        assert_eq!(choose(8, "2"), threads(2, true));
        assert_eq!(choose(8, " 1 "), threads(1, true));
        assert_eq!(
            threads(4, true).describe(),
            "async runtime: 4 worker threads (TOKIO_WORKER_THREADS)"
        );
    }

    #[test]
    fn a_worker_variable_that_is_no_count_is_refused_naming_it() {
        for value in ["0", "", "many", "-2", "1.5"] {
            let error = Flavor::choose(cpus(2), Some(value)).expect_err(value);
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("TOKIO_WORKER_THREADS={value:?} is not")),
                "{message}"
            );
            assert!(message.contains("unset it"), "{message}");
        }
    }

    #[test]
    fn both_flavours_run_spawned_tasks_timers_and_blocking_work() {
        for flavor in [Flavor::CurrentThread, threads(2, false)] {
            let runtime = build(flavor).expect("runtime");
            let answer = runtime.block_on(async {
                let spawned = tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    tokio::task::spawn_blocking(|| 6 * 7).await
                });
                spawned.await
            });
            assert_eq!(
                answer.expect("task").expect("blocking task"),
                42,
                "{flavor:?}"
            );
        }
    }
}
