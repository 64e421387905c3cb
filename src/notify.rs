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

/// A reload has started.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// Shutdown has started.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}
