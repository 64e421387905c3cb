//! systemd readiness notifications (`Type=notify`). Outside systemd
//! (`NOTIFY_SOCKET` unset) every call is a no-op.

use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// Listening and the database is open.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload has started. systemd 253 and later also require the current
/// monotonic time with it, or they fail the reload and stop the service.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The service is alive and its database answers.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to feed systemd's watchdog (half its timeout), if the unit
/// has `WatchdogSec=` set.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| std::time::Duration::from_micros(usec / 2))
}

/// Shutdown has started.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
