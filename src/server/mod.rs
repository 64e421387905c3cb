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
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
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
                            let Some(stream) =
                                first_bytes(tls_stream, options.header_read_timeout).await
                            else {
                                log::debug!("{peer} sent no request after the TLS handshake");
                                return;
                            };
                            serve_connection(stream, ctx, options, watcher).await
                        }
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                }
                None => {
                    let Some(stream) = first_bytes(stream, options.header_read_timeout).await
                    else {
                        log::debug!("{peer} sent no request");
                        return;
                    };
                    serve_connection(stream, ctx, options, watcher).await
                }
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

/// Waits up to `limit` for the client's first bytes; `None` if none come
/// (or the client closes). The bytes stay buffered for hyper.
///
/// Why: hyper's `header_read_timeout` only runs once HTTP/1 has been chosen,
/// and hyper-util's auto builder waits for the first bytes (to choose
/// between HTTP/1 and HTTP/2) with no deadline, so a client that completes
/// the TLS handshake and then stays silent held its connection slot
/// forever; enough of them exhaust `max_connections`. Found by the abuse
/// suite of `fault-tests`. A trickling client then gets at most this wait
/// plus hyper's own header timeout.
async fn first_bytes<S>(stream: S, limit: Duration) -> Option<BufReader<S>>
where
    S: AsyncRead + Unpin,
{
    let mut reader = BufReader::new(stream);
    match tokio::time::timeout(limit, reader.fill_buf()).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => Some(reader),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_limit() {
        let (_client, server) = tokio::io::duplex(64);
        let started = std::time::Instant::now();
        assert!(first_bytes(server, Duration::from_millis(50))
            .await
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_closed_client_is_dropped_at_once() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(first_bytes(server, Duration::from_secs(10)).await.is_none());
    }

    #[tokio::test]
    async fn the_first_bytes_stay_readable() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut reader = first_bytes(server, Duration::from_secs(10)).await.unwrap();
        let mut head = [0u8; 16];
        reader.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1\r\n");
    }
}
