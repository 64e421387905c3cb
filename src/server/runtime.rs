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
//! Nothing the server runs depends on the flavour: a request's
//! cryptography runs on the runtime's thread either way, a write goes to
//! the store's writer thread, and a read that may block goes to the
//! blocking pool, which both flavours have.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// Which runtime [`build`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One thread: the process may use one CPU.
    CurrentThread,
    /// One worker per CPU the process may use.
    MultiThread {
        /// How many: the CPUs available.
        workers: usize,
    },
}

impl Flavor {
    /// The flavour for `cpus` available CPUs.
    pub fn for_cpus(cpus: NonZeroUsize) -> Self {
        match cpus.get() {
            1 => Flavor::CurrentThread,
            workers => Flavor::MultiThread { workers },
        }
    }

    /// The flavour for the CPUs this process may use now; one if that
    /// cannot be read, as tokio itself assumes.
    pub fn for_this_process() -> Self {
        Self::for_cpus(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }

    /// A line for the startup log.
    pub fn describe(&self) -> String {
        match self {
            Flavor::CurrentThread => "async runtime: one thread (1 CPU available)".to_string(),
            Flavor::MultiThread { workers } => {
                format!("async runtime: {workers} worker threads ({workers} CPUs available)")
            }
        }
    }
}

/// The runtime for `flavor`, with I/O and timers enabled and its threads
/// named `flow-store`.
pub fn build(flavor: Flavor) -> std::io::Result<Runtime> {
    let mut builder = match flavor {
        Flavor::CurrentThread => Builder::new_current_thread(),
        Flavor::MultiThread { workers } => {
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

    #[test]
    fn one_cpu_gets_the_current_thread_runtime_and_more_get_a_worker_each() {
        let cpus = |n| NonZeroUsize::new(n).expect("non-zero");
        assert_eq!(Flavor::for_cpus(cpus(1)), Flavor::CurrentThread);
        assert_eq!(
            Flavor::for_cpus(cpus(2)),
            Flavor::MultiThread { workers: 2 }
        );
        assert_eq!(
            Flavor::for_cpus(cpus(16)),
            Flavor::MultiThread { workers: 16 }
        );
    }

    #[test]
    fn both_flavours_run_spawned_tasks_timers_and_blocking_work() {
        for flavor in [Flavor::CurrentThread, Flavor::MultiThread { workers: 2 }] {
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
