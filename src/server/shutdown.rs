//! Signals: SIGTERM and SIGINT start a graceful shutdown; SIGHUP asks for a
//! reload of keys and certificate. Everything else keeps its default.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Installs the SIGTERM and SIGINT handlers now and returns a future that
/// completes (logging which signal came) when one of them arrives.
///
/// Why install eagerly: a handler installed only when the future is first
/// polled leaves a window after start-up in which SIGTERM would kill the
/// process outright (no drain, no flush, not exit 0). Call this before the
/// store announces that it is listening. Needs a Tokio runtime.
pub fn terminate() -> impl std::future::Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            log::error!("cannot install SIGTERM/SIGINT handlers; stop the store with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM received: shutting down"),
            _ = int.recv() => log::info!("SIGINT received: shutting down"),
        }
    }
}

/// A stream of SIGHUPs, one message per signal.
pub fn hangups() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => log::warn!("cannot install the SIGHUP handler, reload is unavailable: {e}"),
    }
    rx
}
