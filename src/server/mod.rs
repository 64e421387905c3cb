//! The listener: accept loop, TLS handshake, one task per connection, and
//! the graceful drain.
//!
//! [`run`] takes a listener that is already bound and any future as its stop
//! signal, so tests bind port 0 on loopback and stop the server at will.
//! One bad client never stops the loop: failed handshakes are logged at
//! debug level, accept errors are logged and retried with backoff.

pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::http::{self, HttpContext};

/// Limits and timeouts of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// drains open connections for up to `shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<HttpContext>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(e) => {
                // Typically EMFILE: wait for connections to close.
                log::warn!("accept failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, ctx, options, watcher).await
                        }
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                }
                None => serve_connection(stream, ctx, options, watcher).await,
            }
        });
    }
    drop(listener);
    log::info!(
        "stopped accepting; draining open connections (up to {:?})",
        options.shutdown_grace
    );
    tokio::select! {
        _ = graceful.shutdown() => log::info!("all connections closed"),
        _ = tokio::time::sleep(options.shutdown_grace) => {
            log::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    ctx: Arc<HttpContext>,
    options: ServerOptions,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_pending_accept_reset_streams(32)
        .max_local_error_reset_streams(64);
    let service = service_fn(move |request| http::handle(request, Arc::clone(&ctx)));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        log::debug!("connection closed with an error: {e}");
    }
}
