//! The listener: accept loop, TLS handshake, one task per connection, and
//! the graceful drain, for any HTTP application.
//!
//! [`run`] takes a [`Listener`] that is already bound (TCP here; any other
//! transport implements the trait), an optional TLS acceptor, the
//! [`Handler`] that answers requests, and any future as its stop signal,
//! so tests bind port 0 on loopback and stop the server at will. The
//! storage API is one handler (`crate::http`); other endpoints (metrics, an
//! admin channel) are others, each with its own router, all served by this
//! one loop with the same limits, timeouts and drain. This module knows no
//! route and no rule of the contract.
//!
//! One bad client never stops the loop: failed handshakes are logged at
//! debug level, accept errors are logged and retried with backoff.

pub mod runtime;
pub mod shutdown;
pub mod tls;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// An HTTP application: answers every request of every connection it is
/// given. Errors are the application's to turn into responses; the server
/// only moves bytes.
pub trait Handler: Send + Sync + 'static {
    /// The response body type.
    type Body: hyper::body::Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The response body's error type.
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;

    /// Answers one request.
    fn handle(
        &self,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish within `handshake_timeout`.
    TimedOut,
    /// The handshake failed (a protocol error, a client that refused our
    /// certificate, a connection closed half-way).
    Failed,
}

/// What the accept loop tells an observer (the metrics) about connections.
/// Every method has an empty default, so `()` observes nothing.
pub trait ConnectionEvents: Send + Sync + 'static {
    /// A connection was accepted.
    fn opened(&self) {}
    /// An accepted connection is gone, however it ended.
    fn closed(&self) {}
    /// A TLS handshake did not complete.
    fn handshake_failed(&self, _failure: HandshakeFailure) {}
}

impl ConnectionEvents for () {}

/// A bound listening socket the accept loop can take connections from.
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Who is on the other end, for the log.
    type Peer: fmt::Display + Send + Sync + 'static;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Peer)>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    type Peer = std::net::SocketAddr;

    async fn accept(&self) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Requests and replies are small and latency-bound.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

/// Limits and timeouts of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time allowed to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may carry no traffic before it is closed.
    pub idle_timeout: Duration,
    /// Time in-flight requests get to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

/// What every connection task holds while it lives.
///
/// The accept loop keeps the original `stop` sender and `done` receiver:
/// sending `true` on `stop` asks every connection to finish gracefully, and
/// `done` yields `None` once the last connection task has dropped its
/// sender, i.e. once every connection is closed (the mini-redis pattern).
///
/// It also tells the [`ConnectionEvents`] observer when the connection
/// opened and, on drop, that it closed, however the task ended.
struct ConnectionGuard {
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
    events: Arc<dyn ConnectionEvents>,
}

impl ConnectionGuard {
    fn open(
        permit: OwnedSemaphorePermit,
        done: mpsc::Sender<()>,
        stop: watch::Receiver<bool>,
        events: Arc<dyn ConnectionEvents>,
    ) -> Self {
        events.opened();
        Self {
            _permit: permit,
            _done: done,
            stop,
            events,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.events.closed();
    }
}

/// Serves `listener` with `handler` until `shutdown` completes, then stops
/// accepting and drains open connections for up to `shutdown_grace`;
/// `events` hears of every connection.
pub async fn run<L, H>(
    listener: L,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    options: ServerOptions,
    events: Arc<dyn ConnectionEvents>,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    H: Handler,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
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
        let guard = ConnectionGuard::open(
            permit,
            done_tx.clone(),
            stop_rx.clone(),
            Arc::clone(&events),
        );
        tokio::spawn(handle_connection(
            stream,
            peer,
            tls.clone(),
            Arc::clone(&handler),
            options,
            guard,
        ));
    }
    drop(listener);
    drop(done_tx);
    log::info!(
        "stopped accepting; draining open connections (up to {:?})",
        options.shutdown_grace
    );
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = done_rx.recv() => log::info!("all connections closed"),
        _ = tokio::time::sleep(options.shutdown_grace) => {
            log::warn!("shutdown grace period over; closing the remaining connections");
        }
    }
}

/// One connection: TLS handshake (bounded), the first bytes (bounded), then
/// HTTP until the client leaves, goes idle, or shutdown asks it to finish.
async fn handle_connection<S, P, H>(
    stream: S,
    peer: P,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    options: ServerOptions,
    mut guard: ConnectionGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: fmt::Display + Sync,
    H: Handler,
{
    let activity = Activity::new();
    let stream = Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    };
    match tls {
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls_stream)) => {
                    serve_connection(tls_stream, &peer, handler, options, activity, &mut guard)
                        .await
                }
                Ok(Err(e)) => {
                    log::debug!("TLS handshake with {peer} failed: {e}");
                    guard.events.handshake_failed(HandshakeFailure::Failed);
                }
                Err(_) => {
                    log::debug!("TLS handshake with {peer} timed out");
                    guard.events.handshake_failed(HandshakeFailure::TimedOut);
                }
            }
        }
        None => serve_connection(stream, &peer, handler, options, activity, &mut guard).await,
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

/// HTTP on one (decrypted) connection, once its first bytes came.
async fn serve_connection<S, H>(
    stream: S,
    peer: &(dyn fmt::Display + Sync),
    handler: Arc<H>,
    options: ServerOptions,
    activity: Arc<Activity>,
    guard: &mut ConnectionGuard,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let first = tokio::select! {
        first = first_bytes(stream, options.header_read_timeout) => first,
        _ = guard.stop.changed() => None,
    };
    let Some(stream) = first else {
        log::debug!("{peer} sent no request");
        return;
    };
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
    let service = service_fn(move |request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_deadline = activity.last() + options.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    log::debug!("connection closed with an error: {e}");
                }
                return;
            }
            _ = guard.stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_deadline), if !closing => {
                // Traffic may have moved the deadline while we slept.
                if activity.last() + options.idle_timeout <= Instant::now() {
                    log::debug!("closing a connection idle for {:?}", options.idle_timeout);
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// When a connection last moved a byte, in either direction.
///
/// Why: HTTP/2 connections have no idle limit in hyper, and an HTTP/1.1
/// connection waiting on a slow request body has none either; without one,
/// silent clients would hold their `max_connections` slots forever.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_millis: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
    }
}

/// A stream that records its traffic in an [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

    #[tokio::test(start_paused = true)]
    async fn activity_moves_with_traffic() {
        let activity = Activity::new();
        let start = activity.last();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.last(), start);
        let (mut client, server) = tokio::io::duplex(64);
        let mut tracked = Tracked {
            inner: server,
            activity: Arc::clone(&activity),
        };
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        tracked.read_exact(&mut byte).await.unwrap();
        assert!(activity.last() >= start + Duration::from_secs(5));
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
