//! Signals: SIGTERM and SIGINT start a graceful shutdown; SIGHUP asks for a
//! reload of keys and certificate. Everything else keeps its default.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Waits for SIGTERM or SIGINT and logs which one came.
pub async fn terminate() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot install SIGTERM/SIGINT handlers; stop the store with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received: shutting down"),
        _ = int.recv() => log::info!("SIGINT received: shutting down"),
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
