//! Item 5, abusive clients.
//!
//! - Cut-offs: a TCP connection that never starts TLS, one that stalls
//!   mid-handshake, a TLS connection that never sends a byte, and one that
//!   trickles its headers a byte a second must each be closed by the server
//!   (handshake timeout, header read timeout), not held forever.
//! - Slowloris: hundreds of TLS connections trickling header bytes, each
//!   reopened when cut; meanwhile a well-behaved client must keep being
//!   served (every request answered, none slower than [`GOOD_CLIENT_BOUND`]).
//! - `max_connections`: with every slot taken by tricklers, extra clients
//!   wait (in the kernel backlog) and are served once slots free.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::harness::{percentiles, Bench, Client, ServerSettings};
use crate::process::ServerProcess;

/// A good client's request slower than this counts as not served.
pub const GOOD_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// Scale of the run.
#[derive(Debug, Clone, Copy)]
pub struct AbusePlan {
    /// Slowloris connections.
    pub slowloris: usize,
    /// How long the good client measures under attack.
    pub attack: Duration,
    /// `header_read_timeout_seconds` and `handshake_timeout_seconds` of the
    /// servers under test.
    pub timeout_seconds: u64,
    /// `max_connections` of the dedicated run.
    pub max_connections: usize,
}

/// How long the server took to close one kind of abusive connection.
#[derive(Debug)]
pub struct CutOff {
    /// What the connection did.
    pub kind: &'static str,
    /// Seconds until closed; `None` if still open at the end of the wait.
    pub closed_after: Option<f64>,
}

/// What the suite found.
#[derive(Debug, Default)]
pub struct AbuseReport {
    /// Configured timeout, seconds.
    pub timeout_seconds: u64,
    /// Cut-off measurements.
    pub cut_offs: Vec<CutOff>,
    /// Slowloris connections asked for.
    pub slowloris_target: usize,
    /// Fewest / most trickling connections open during the measurement.
    pub held_min: usize,
    /// See `held_min`.
    pub held_max: usize,
    /// Trickling connections the server cut (then reopened).
    pub slowloris_cut: usize,
    /// Good client: (median, p99) ms before the attack.
    pub baseline_ms: (f64, f64),
    /// Good client: (median, p99) ms under attack.
    pub attack_ms: (f64, f64),
    /// Good client requests under attack.
    pub attack_requests: usize,
    /// Good client failures (errors, wrong statuses, or over the bound).
    pub good_failures: Vec<String>,
    /// `max_connections` of the dedicated run.
    pub max_connections: usize,
    /// Extra clients served / sent while all slots were held.
    pub waiting_served: usize,
    /// See `waiting_served`.
    pub waiting_sent: usize,
    /// Longest wait of an extra client, seconds.
    pub longest_wait: f64,
    /// Whether the server answered promptly once the slots were free.
    pub responsive_after: bool,
}

impl AbuseReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.cut_offs.iter().all(|c| c.closed_after.is_some())
            && self.good_failures.is_empty()
            && self.attack_requests > 0
            && self.waiting_served == self.waiting_sent
            && self.responsive_after
    }
}

/// Runs the suite on two servers of its own.
pub async fn run(bench: &Bench, plan: AbusePlan) -> anyhow::Result<AbuseReport> {
    let mut report = AbuseReport {
        timeout_seconds: plan.timeout_seconds,
        slowloris_target: plan.slowloris,
        max_connections: plan.max_connections,
        ..AbuseReport::default()
    };
    let mut settings = ServerSettings::defaults(bench.subdir("abuse-data")?);
    settings.handshake_timeout = plan.timeout_seconds;
    settings.header_read_timeout = plan.timeout_seconds;
    {
        let server = bench.start(&settings)?;
        report.cut_offs = cut_offs(bench, &server, plan.timeout_seconds).await;
        slowloris(bench, &server, plan, &mut report).await?;
    }
    settings.data = bench.subdir("abuse-max-data")?;
    settings.max_connections = plan.max_connections;
    let server = bench.start(&settings)?;
    max_connections(bench, &server, plan, &mut report).await?;
    Ok(report)
}

/// Opens each kind of abusive connection at once and times its closing.
async fn cut_offs(bench: &Bench, server: &ServerProcess, timeout: u64) -> Vec<CutOff> {
    let wait = Duration::from_secs(timeout * 2 + 10);
    let addr = server.addr();
    let raw_silent = async move {
        let tcp = TcpStream::connect(addr).await.ok()?;
        time_to_close_raw(tcp, None, wait).await
    };
    let raw_partial = async move {
        // A TLS record header announcing a ClientHello that never comes.
        let tcp = TcpStream::connect(addr).await.ok()?;
        time_to_close_raw(tcp, Some(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), wait).await
    };
    let tls_silent = async {
        let stream = bench.tls_connect(addr).await.ok()?;
        time_to_close_tls(stream, None, false, wait).await
    };
    let tls_trickle = async {
        let stream = bench.tls_connect(addr).await.ok()?;
        time_to_close_tls(stream, None, true, wait).await
    };
    let keep_alive_idle = async {
        let stream = bench.tls_connect(addr).await.ok()?;
        let request = b"GET /api/storage/1/health HTTP/1.1\r\nHost: localhost\r\n\r\n";
        time_to_close_tls(stream, Some(request), false, wait).await
    };
    let (a, b, c, d, e) = tokio::join!(
        raw_silent,
        raw_partial,
        tls_silent,
        tls_trickle,
        keep_alive_idle
    );
    vec![
        CutOff {
            kind: "TCP connection, no TLS handshake",
            closed_after: a,
        },
        CutOff {
            kind: "TLS handshake stalled after the record header",
            closed_after: b,
        },
        CutOff {
            kind: "TLS connection that never sends a request",
            closed_after: c,
        },
        CutOff {
            kind: "TLS connection trickling headers (1 byte/s)",
            closed_after: d,
        },
        CutOff {
            kind: "keep-alive connection idle after one request",
            closed_after: e,
        },
    ]
}

async fn time_to_close_raw(mut tcp: TcpStream, send: Option<&[u8]>, wait: Duration) -> Option<f64> {
    let started = Instant::now();
    if let Some(bytes) = send {
        tcp.write_all(bytes).await.ok()?;
    }
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(wait, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed().as_secs_f64())
}

/// Time until the server closes a TLS connection that sends `prelude` (if
/// any) and then is silent or trickles a request head one byte a second.
async fn time_to_close_tls<S>(
    stream: S,
    prelude: Option<&[u8]>,
    trickle: bool,
    wait: Duration,
) -> Option<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(stream);
    if let Some(bytes) = prelude {
        writer.write_all(bytes).await.ok()?;
        writer.flush().await.ok()?;
    }
    let read_until_closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let trickler = async {
        if !trickle {
            return std::future::pending::<()>().await;
        }
        for byte in TRICKLE.iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let outcome = tokio::time::timeout(wait, async {
        tokio::select! {
            () = read_until_closed => {},
            () = trickler => {},
        }
    })
    .await;
    outcome.ok().map(|()| started.elapsed().as_secs_f64())
}

/// What tricklers send, a byte a second: a request head that never ends.
const TRICKLE: &[u8] = b"GET /api/storage/1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// One slowloris connection: trickles until the server cuts it, then
/// reconnects while `reconnect` holds. Counts itself in `open` while
/// connected and in `cut` when cut. Aborting the task closes it.
/// A crowd of [`trickler`] connections against one server.
struct Tricklers {
    open: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    reconnect: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tricklers {
    /// Starts `count` tricklers that reconnect whenever the server cuts them.
    fn start(bench: &Bench, server: &ServerProcess, count: usize) -> anyhow::Result<Self> {
        let open = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let reconnect = Arc::new(AtomicBool::new(true));
        // One TLS set-up for the crowd; each trickler opens its own connections.
        let transport = bench.transport(server.addr())?;
        let tasks = (0..count)
            .map(|_| {
                tokio::spawn(trickler(
                    transport.clone(),
                    Arc::clone(&open),
                    Arc::clone(&cut),
                    Arc::clone(&reconnect),
                ))
            })
            .collect();
        Ok(Self {
            open,
            cut,
            reconnect,
            tasks,
        })
    }

    /// Connections held open right now.
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until every trickler holds a connection, or `limit` passes
    /// (some may never connect).
    async fn ramp_up(&self, limit: Duration) {
        let ramp = Instant::now();
        while self.open() < self.tasks.len() && ramp.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A trickler the server cuts from now on stays gone.
    fn stop_reconnecting(&self) {
        self.reconnect.store(false, Ordering::SeqCst);
    }

    /// Stops them all; returns how many connections the server cut.
    fn stop(self) -> usize {
        self.stop_reconnecting();
        for task in self.tasks {
            task.abort();
        }
        self.cut.load(Ordering::SeqCst)
    }
}

async fn trickler(
    transport: flow_store::client::Client,
    open: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    reconnect: Arc<AtomicBool>,
) {
    while reconnect.load(Ordering::SeqCst) {
        let Ok(stream) = transport.connect_tls().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        open.fetch_add(1, Ordering::SeqCst);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = [0u8; 256];
        let mut position = 0;
        loop {
            let byte = TRICKLE[position % TRICKLE.len()];
            position += 1;
            if writer.write_all(&[byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            // Wait a second, noticing a close by the server meanwhile.
            match tokio::time::timeout(Duration::from_secs(1), reader.read(&mut buf)).await {
                Err(_) => {}
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
            }
        }
        open.fetch_sub(1, Ordering::SeqCst);
        cut.fetch_add(1, Ordering::SeqCst);
    }
}

/// One good request (a signed save then a signed load); its latency.
async fn good_request(
    bench: &Bench,
    client: &Client,
    tenant: Uuid,
    n: u64,
) -> Result<Duration, String> {
    let id = Uuid::new_v4();
    let token = bench
        .tokens
        .token(tenant, id, n, "good")
        .map_err(|e| format!("{e:#}"))?;
    let started = Instant::now();
    let reply = client
        .save_tokens(tenant, &[token])
        .await
        .map_err(|e| format!("save: {e:#}"))?;
    if reply.status != 204 {
        return Err(format!(
            "save answered {}: {}",
            reply.status,
            reply.message()
        ));
    }
    match client.load_version(tenant, id).await {
        Ok(Some(v)) if v == n => {}
        other => return Err(format!("load returned {other:?}")),
    }
    let took = started.elapsed();
    if took > GOOD_CLIENT_BOUND {
        return Err(format!("save+load took {took:?}"));
    }
    Ok(took)
}

async fn slowloris(
    bench: &Bench,
    server: &ServerProcess,
    plan: AbusePlan,
    report: &mut AbuseReport,
) -> anyhow::Result<()> {
    let tenant = Uuid::new_v4();
    let client = bench.client(server.addr())?;
    let mut baseline = Vec::new();
    for n in 0..30 {
        match good_request(bench, &client, tenant, n).await {
            Ok(took) => baseline.push(took),
            Err(e) => report.good_failures.push(format!("baseline: {e}")),
        }
    }
    report.baseline_ms = percentiles(&baseline);
    let tricklers = Tricklers::start(bench, server, plan.slowloris)?;
    // Let the connections pile up (bounded, in case some cannot connect).
    tricklers.ramp_up(Duration::from_secs(20)).await;
    let mut attack = Vec::new();
    let (mut held_min, mut held_max) = (usize::MAX, 0);
    let started = Instant::now();
    let mut n = 1000;
    while started.elapsed() < plan.attack {
        let held = tricklers.open();
        held_min = held_min.min(held);
        held_max = held_max.max(held);
        n += 1;
        match good_request(bench, &client, tenant, n).await {
            Ok(took) => attack.push(took),
            Err(e) => report.good_failures.push(format!("under attack: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.slowloris_cut = tricklers.stop();
    report.attack_requests = attack.len() + report.good_failures.len();
    report.attack_ms = percentiles(&attack);
    report.held_min = if held_min == usize::MAX { 0 } else { held_min };
    report.held_max = held_max;
    Ok(())
}

async fn max_connections(
    bench: &Bench,
    server: &ServerProcess,
    plan: AbusePlan,
    report: &mut AbuseReport,
) -> anyhow::Result<()> {
    let tricklers = Tricklers::start(bench, server, plan.max_connections)?;
    tricklers.ramp_up(Duration::from_secs(10)).await;
    // The tricklers hold every slot until the server cuts them; they do not
    // reconnect, so the slots then go to the waiting clients.
    tricklers.stop_reconnecting();
    let extra = 8;
    let tenant = Uuid::new_v4();
    let mut waiting = Vec::new();
    for n in 0..extra {
        let client = bench.client(server.addr())?;
        let tokens = bench.tokens.clone();
        waiting.push(tokio::spawn(async move {
            let started = Instant::now();
            let token = tokens.token(tenant, Uuid::new_v4(), n, "waiting")?;
            let reply = client.save_tokens(tenant, &[token]).await?;
            anyhow::ensure!(reply.status == 204, "answered {}", reply.status);
            Ok(started.elapsed())
        }));
    }
    report.waiting_sent = extra as usize;
    for task in waiting {
        if let Ok(Ok(took)) = task.await {
            report.waiting_served += 1;
            report.longest_wait = report.longest_wait.max(took.as_secs_f64());
        }
    }
    tricklers.stop();
    let client = bench.client(server.addr())?;
    report.responsive_after = good_request(bench, &client, tenant, 100).await.is_ok();
    Ok(())
}
