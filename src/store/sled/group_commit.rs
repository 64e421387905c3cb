//! Group commit: concurrent writers share one flush.
//!
//! A write to sled is durable only after `flush`, which fsyncs the log, and
//! an fsync costs the same for one write as for fifty. So a writer whose
//! transaction has returned calls [`GroupCommit::commit`]: if no flush is
//! running, it runs one itself (for everyone who wrote before it started);
//! if one is running, that flush may have started before this write, so the
//! writer waits for the next one, which the first waiter to wake runs. Every
//! caller returns only after a flush that *started after its write* has
//! succeeded, which is exactly the guarantee a flush of its own gave.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Flushes shared between concurrent writers.
#[derive(Debug, Default)]
pub struct GroupCommit {
    progress: Mutex<Progress>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    /// A flush is running.
    flushing: bool,
    /// Flushes started so far; the n-th flush started is number n.
    started: u64,
    /// The highest-numbered flush that succeeded.
    succeeded: u64,
}

impl GroupCommit {
    /// Returns once everything written before the call is durable, running
    /// `flush` on this thread when no flush started after the call has
    /// succeeded yet and none is running. A failed flush is this caller's
    /// error; a waiter whose flush failed runs the next one itself.
    pub fn commit<E>(&self, flush: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let mut progress = self.lock();
        // A flush running now may have started before this caller's write:
        // only one that starts from now on is sure to cover it.
        let needed = progress.started + 1;
        loop {
            if progress.succeeded >= needed {
                return Ok(());
            }
            if !progress.flushing {
                break;
            }
            progress = self
                .finished
                .wait(progress)
                .unwrap_or_else(PoisonError::into_inner);
        }
        progress.flushing = true;
        progress.started += 1;
        let number = progress.started;
        drop(progress);
        let running = Running { group: self };
        let result = flush();
        running.finish(result.is_ok().then_some(number));
        result
    }

    /// Flushes started so far.
    #[cfg(test)]
    pub fn started(&self) -> u64 {
        self.lock().started
    }

    // The counters stay consistent whatever a panicking holder did: each
    // update is a single assignment made under the lock.
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flush in progress; ends it even if `flush` panics, so waiters are
/// never left waiting for a flush that will not finish.
struct Running<'a> {
    group: &'a GroupCommit,
}

impl Running<'_> {
    /// Records a success; dropping `self` then ends the flush.
    fn finish(self, succeeded: Option<u64>) {
        if let Some(number) = succeeded {
            let mut progress = self.group.lock();
            progress.succeeded = progress.succeeded.max(number);
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.group.lock().flushing = false;
        self.group.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A stand-in for sled: `written` counts completed writes, a flush makes
    /// durable every write completed before it started.
    #[derive(Default)]
    struct Log {
        written: AtomicU64,
        durable: AtomicU64,
        flushes: AtomicU64,
        failed: AtomicU64,
    }

    impl Log {
        fn flush(&self, fail: bool) -> Result<(), &'static str> {
            let covered = self.written.load(Ordering::SeqCst);
            self.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            if fail {
                self.failed.fetch_add(1, Ordering::SeqCst);
                return Err("flush failed");
            }
            self.durable.fetch_max(covered, Ordering::SeqCst);
            Ok(())
        }
    }

    fn run(threads: u64, writes: u64, fail_every: u64) -> (Arc<Log>, u64) {
        let log = Arc::new(Log::default());
        let group = Arc::new(GroupCommit::default());
        let errors = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (log, group, errors) = (log.clone(), group.clone(), errors.clone());
                std::thread::spawn(move || {
                    for _ in 0..writes {
                        let mine = log.written.fetch_add(1, Ordering::SeqCst) + 1;
                        let fail = fail_every > 0
                            && log.flushes.load(Ordering::SeqCst) % fail_every == fail_every - 1;
                        match group.commit(|| log.flush(fail)) {
                            Ok(()) => assert!(
                                log.durable.load(Ordering::SeqCst) >= mine,
                                "commit returned before write {mine} was flushed"
                            ),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let errors = errors.load(Ordering::SeqCst);
        (log, errors)
    }

    #[test]
    fn concurrent_writers_share_flushes_and_each_returns_only_when_durable() {
        let (log, errors) = run(16, 40, 0);
        assert_eq!(errors, 0);
        let flushes = log.flushes.load(Ordering::SeqCst);
        assert!(flushes < 16 * 40 / 2, "{flushes} flushes for 640 writes");
        assert_eq!(log.durable.load(Ordering::SeqCst), 16 * 40);
    }

    #[test]
    fn a_single_writer_flushes_every_write() {
        let (log, errors) = run(1, 20, 0);
        assert_eq!((errors, log.flushes.load(Ordering::SeqCst)), (0, 20));
    }

    #[test]
    fn a_failed_flush_fails_only_its_runner_and_never_counts_as_durable() {
        let (log, errors) = run(8, 40, 3);
        assert!(errors > 0, "no flush failed");
        // Each error is the runner of one failed flush; no waiter is
        // released by a failed flush (the others asserted durability).
        assert_eq!(errors, log.failed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_panicking_flush_does_not_strand_the_waiters() {
        let group = Arc::new(GroupCommit::default());
        let panicked = {
            let group = group.clone();
            std::thread::spawn(move || group.commit::<()>(|| panic!("flush panicked"))).join()
        };
        assert!(panicked.is_err());
        assert_eq!(group.commit::<()>(|| Ok(())), Ok(()));
    }
}
