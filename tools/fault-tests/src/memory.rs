//! Item 9, bounded memory and descriptors: 64 clients save 1 MiB states
//! as fast as the store takes them; the server's resident set and open
//! descriptors are sampled from `/proc` throughout and after.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::{Bench, Rng, ServerSettings};
use crate::process::{ProcSample, ServerProcess};

/// Peak resident set the issue allows.
pub const RSS_LIMIT_KIB: u64 = 512 * 1024;

/// Scale of the run.
#[derive(Debug, Clone, Copy)]
pub struct MemoryPlan {
    /// Concurrent clients.
    pub clients: usize,
    /// Content size of each state.
    pub state_bytes: usize,
    /// How long the clients save.
    pub duration: Duration,
    /// How long to wait before the "after" sample.
    pub settle: Duration,
}

/// What the suite found.
#[derive(Debug, Default)]
pub struct MemoryReport {
    /// Clients and state size.
    pub clients: usize,
    /// See `clients`.
    pub state_bytes: usize,
    /// Seconds of load.
    pub seconds: f64,
    /// Saves answered 204.
    pub saves: u64,
    /// Saves not answered 204.
    pub failures: u64,
    /// First failure, for the report.
    pub first_failure: Option<String>,
    /// Before the load.
    pub baseline: ProcSample,
    /// Highest VmHWM seen.
    pub peak_rss_kib: u64,
    /// Most descriptors seen.
    pub peak_fds: usize,
    /// `settle_seconds` after the load.
    pub after: ProcSample,
    /// See `after`.
    pub settle_seconds: u64,
}

impl MemoryReport {
    /// Whether the bounds held.
    pub fn passed(&self) -> bool {
        self.saves > 0
            && self.failures == 0
            && self.peak_rss_kib < RSS_LIMIT_KIB
            // Every connection closed again: back to the idle count (a few
            // of slack for sled's files and the logger).
            && self.after.fds <= self.baseline.fds + 4
    }
}

/// Runs the suite on a server of its own.
pub async fn run(bench: &Bench, plan: MemoryPlan) -> anyhow::Result<MemoryReport> {
    let server = bench.start(&ServerSettings::defaults(bench.subdir("memory-data")?))?;
    let mut report = MemoryReport {
        clients: plan.clients,
        state_bytes: plan.state_bytes,
        ..MemoryReport::default()
    };
    let tenant = Uuid::new_v4();
    let warm = bench.client(server.addr())?;
    warm.health().await?;
    report.baseline = server.sample();
    // Eight states, tokens built up front (building 1 MiB tokens is slow in
    // a debug build); client n saves state n % 8, so the clients only send.
    let mut rng = Rng::new(Rng::seed());
    let content = rng.text(plan.state_bytes);
    let mut distinct = Vec::new();
    for n in 0..plan.clients.clamp(1, 8) {
        distinct.push(
            bench
                .tokens
                .token(tenant, Uuid::new_v4(), n as u64, &content)?,
        );
    }
    let tokens: Vec<String> = (0..plan.clients)
        .map(|n| distinct[n % distinct.len()].clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let saves = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None));
    let mut tasks = Vec::new();
    for token in tokens {
        let client = bench.client(server.addr())?;
        let (stop, saves, failures, first) = (
            Arc::clone(&stop),
            Arc::clone(&saves),
            Arc::clone(&failures),
            Arc::clone(&first_failure),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let outcome = match client
                    .save_tokens(tenant, std::slice::from_ref(&token))
                    .await
                {
                    Ok(r) if r.status == 204 => Ok(()),
                    Ok(r) => Err(format!("answered {}: {}", r.status, r.message())),
                    Err(e) => Err(format!("{e:#}")),
                };
                match outcome {
                    Ok(()) => saves.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if let Ok(mut first) = first.lock() {
                            first.get_or_insert(e);
                        }
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < plan.duration {
        record_peak(&server, &mut report);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    record_peak(&server, &mut report);
    tokio::time::sleep(plan.settle).await;
    report.settle_seconds = plan.settle.as_secs();
    report.after = server.sample();
    report.saves = saves.load(Ordering::Relaxed);
    report.failures = failures.load(Ordering::Relaxed);
    report.first_failure = first_failure.lock().ok().and_then(|f| f.clone());
    Ok(report)
}

fn record_peak(server: &ServerProcess, report: &mut MemoryReport) {
    let now = server.sample();
    report.peak_rss_kib = report.peak_rss_kib.max(now.hwm_kib.max(now.rss_kib));
    report.peak_fds = report.peak_fds.max(now.fds);
}
