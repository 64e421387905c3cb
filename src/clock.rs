//! Where "now" comes from.
//!
//! Every rule with a deadline (signature expiry, state expiry, reply token
//! lifetimes) asks a [`Clock`] instead of the system, so tests and the
//! interoperability vectors can be checked "as of" a fixed instant.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    // Nanoseconds since the Unix epoch; i64 covers years 1678..2262.
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: i64) -> Self {
        Self {
            nanos: Arc::new(AtomicI64::new(secs.saturating_mul(1_000_000_000))),
        }
    }

    /// Moves the clock to `secs` seconds after the Unix epoch.
    pub fn set_unix(&self, secs: i64) {
        self.nanos
            .store(secs.saturating_mul(1_000_000_000), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let step = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(step, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = i128::from(self.nanos.load(Ordering::SeqCst));
        // The stored value is always within OffsetDateTime's range (i64 nanos).
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let clock = ManualClock::at_unix(1_790_000_000);
        let other = clock.clone();
        other.advance(Duration::from_secs(5));
        assert_eq!(clock.now().unix_timestamp(), 1_790_000_005);
        clock.set_unix(10);
        assert_eq!(other.now().unix_timestamp(), 10);
    }
}
