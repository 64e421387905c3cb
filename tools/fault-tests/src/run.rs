//! The whole fault suite in one call: [`run`] starts each suite in turn
//! against the given binary and prints one report; the `fault-tests`
//! binary and the integration tests (`tests/common/faults.rs`) both call
//! it. Suites that need root (tmpfs, `chattr`) skip loudly without it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{abuse, crash, disk, elsewhere, harness, memory, writers};

/// What to run, against what.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--full` (at least 50 crash cycles, one-minute load phases: the
    /// documented figures) or `--quick` (CI).
    pub full: bool,
    /// The flow-store binary under test.
    pub binary: PathBuf,
    /// Where scratch directories go.
    pub scratch: PathBuf,
    /// Only these suites (crash, writers, abuse, memory, disk, failure,
    /// elsewhere); all when empty.
    pub only: Vec<String>,
}

/// Everything that differs between `--quick` and `--full`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    name: &'static str,
    crash: crash::CrashPlan,
    writers: writers::WritersPlan,
    abuse: abuse::AbusePlan,
    memory: memory::MemoryPlan,
}

impl Plan {
    fn quick() -> Self {
        Self {
            name: "quick",
            crash: crash::CrashPlan {
                cycles: 4,
                clients: 8,
                keys_per_client: 6,
                tenants: 3,
                max_run_ms: 1500,
            },
            writers: writers::WritersPlan {
                clients: 16,
                versions: 64,
                deletes: 8,
                rounds: 1,
            },
            abuse: abuse::AbusePlan {
                slowloris: 500,
                attack: Duration::from_secs(8),
                timeout_seconds: 3,
                max_connections: 16,
            },
            memory: memory::MemoryPlan {
                clients: 64,
                state_bytes: 1024 * 1024,
                duration: Duration::from_secs(10),
                settle: Duration::from_secs(5),
            },
        }
    }

    fn full() -> Self {
        Self {
            name: "full",
            crash: crash::CrashPlan {
                cycles: 60,
                clients: 16,
                keys_per_client: 8,
                tenants: 4,
                max_run_ms: 3000,
            },
            writers: writers::WritersPlan {
                clients: 32,
                versions: 400,
                deletes: 40,
                rounds: 5,
            },
            abuse: abuse::AbusePlan {
                slowloris: 500,
                attack: Duration::from_secs(30),
                timeout_seconds: 10,
                max_connections: 16,
            },
            memory: memory::MemoryPlan {
                clients: 64,
                state_bytes: 1024 * 1024,
                duration: Duration::from_secs(60),
                settle: Duration::from_secs(10),
            },
        }
    }
}

/// Descriptors the bench needs: 500 slowloris connections on each side plus
/// clients. The server inherits the limit.
const FD_NEEDED: u64 = 4096;

/// Raises this process's soft limit on open files to [`FD_NEEDED`] (up to
/// the hard limit); the servers it starts inherit it.
fn ensure_fd_headroom() -> anyhow::Result<()> {
    rlimit::increase_nofile_limit(FD_NEEDED)
        .map(|_| ())
        .context("raising the limit on open files")
}

/// The flow-store binary: `--binary`, else a sibling of this executable
/// (or of its parent directory, for `target/*/deps`).
pub fn locate_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        anyhow::ensure!(path.is_file(), "--binary {} is not a file", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("flow-store");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d
            .parent()
            .filter(|p| p.ends_with("release") || p.ends_with("debug"));
    }
    anyhow::bail!(
        "no flow-store binary next to {}; build it (cargo build --release) or pass --binary",
        exe.display()
    )
}

/// Runs the suites `options` asks for and prints the report; `Ok(true)` when
/// every invariant held, `Err` when the bench itself could not run.
pub async fn run(options: RunOptions) -> anyhow::Result<bool> {
    ensure_fd_headroom()?;
    let plan = if options.full {
        Plan::full()
    } else {
        Plan::quick()
    };
    let binary = options.binary.clone();
    let bench = harness::Bench::new(binary.clone(), &options.scratch)?;
    let wanted = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let started = Instant::now();
    println!("flow-store fault suite ({} run)", plan.name);
    println!("  binary   {}", binary.display());
    println!("  commit   {}", elsewhere::git_commit());
    println!(
        "  date     {}",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let mut passed = true;
    if wanted("crash") {
        let report = timed("1. crash safety (SIGKILL)", crash::run(&bench, plan.crash)).await?;
        passed &= print_crash(&report);
    }
    if wanted("writers") {
        let server = bench.start(&harness::ServerSettings::defaults(
            bench.subdir("writers-data")?,
        ))?;
        let report = timed(
            "2. concurrent writers",
            writers::run(&bench, &server, plan.writers),
        )
        .await?;
        passed &= print_writers(&report);
    }
    if wanted("elsewhere") {
        elsewhere::print();
    }
    if wanted("abuse") {
        let report = timed("5. abusive clients", abuse::run(&bench, plan.abuse)).await?;
        passed &= print_abuse(&report);
    }
    if wanted("disk") {
        let report = timed("6. disk full", disk::disk_full(&bench)).await?;
        passed &= print_disk_full(&report);
    }
    if wanted("memory") {
        let report = timed(
            "9. memory and descriptors",
            memory::run(&bench, plan.memory),
        )
        .await?;
        passed &= print_memory(&report);
    }
    if wanted("failure") {
        let report = timed("10. storage failures", disk::storage_failure(&bench)).await?;
        passed &= print_failure(&report);
    }
    println!(
        "\ntotal {:.0} s; RESULT: {}",
        started.elapsed().as_secs_f64(),
        if passed { "PASSED" } else { "FAILED" }
    );
    Ok(passed)
}

async fn timed<T>(
    title: &str,
    suite: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    println!("\n== {title}");
    let started = Instant::now();
    let result = suite.await.with_context(|| format!("suite \"{title}\""));
    println!("   ({:.1} s)", started.elapsed().as_secs_f64());
    result
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok  "
    } else {
        "FAIL"
    }
}

fn print_crash(r: &crash::CrashReport) -> bool {
    println!(
        "   {} cycles run: {} (seed {})",
        verdict(r.cycles > 0),
        r.cycles,
        r.seed
    );
    println!(
        "        acknowledged saves {} and deletes {}; {} loads checked during the runs",
        r.acked_saves, r.acked_deletes, r.loads_checked
    );
    println!(
        "        {} key checks after restarts; in-flight at the kill: {} applied, {} not",
        r.keys_verified, r.in_flight_applied, r.in_flight_dropped
    );
    println!("   {} lost states: {}", verdict(r.lost == 0), r.lost);
    println!(
        "   {} resurrected states: {}",
        verdict(r.resurrected == 0),
        r.resurrected
    );
    println!(
        "   {} database reopened without warnings: {} warning line(s)",
        verdict(r.reopen_warnings.is_empty()),
        r.reopen_warnings.len()
    );
    for line in r.anomalies.iter().chain(&r.reopen_warnings).take(10) {
        println!("        {line}");
    }
    println!(
        "   {} other anomalies: {}",
        verdict(r.anomalies.is_empty()),
        r.anomalies.len()
    );
    r.passed()
}

fn print_writers(r: &writers::WritersReport) -> bool {
    println!(
        "   {} saves only: newest won in {}/{} rounds",
        verdict(r.newest_won == r.save_rounds),
        r.newest_won,
        r.save_rounds
    );
    println!(
        "   {} with deletes: rules R1+R2 held in {}/{} rounds ({} ended present)",
        verdict(r.interleaved_ok == r.interleaved_rounds),
        r.interleaved_ok,
        r.interleaved_rounds,
        r.ended_present
    );
    println!(
        "   {} {} requests, {} failed or hung; slowest {:.0} ms",
        verdict(r.failed.is_empty()),
        r.requests,
        r.failed.len(),
        r.slowest_ms
    );
    for line in r.failed.iter().chain(&r.violations).take(10) {
        println!("        {line}");
    }
    r.passed()
}

fn print_abuse(r: &abuse::AbuseReport) -> bool {
    println!(
        "   timeouts (handshake, header read): {} s",
        r.timeout_seconds
    );
    for cut in &r.cut_offs {
        match cut.closed_after {
            Some(s) => println!("   ok   {}: closed after {s:.1} s", cut.kind),
            None => println!("   FAIL {}: still open", cut.kind),
        }
    }
    println!(
        "   ok   slowloris: {} asked, {}..{} held open during the measurement, {} cut and reopened",
        r.slowloris_target, r.held_min, r.held_max, r.slowloris_cut
    );
    println!(
        "   {} good client (save+load): median {:.1} ms / p99 {:.1} ms alone; {:.1} / {:.1} ms under slowloris ({} requests, {} failed)",
        verdict(r.good_failures.is_empty() && r.attack_requests > 0),
        r.baseline_ms.0,
        r.baseline_ms.1,
        r.attack_ms.0,
        r.attack_ms.1,
        r.attack_requests,
        r.good_failures.len()
    );
    for line in r.good_failures.iter().take(5) {
        println!("        {line}");
    }
    println!(
        "   {} max_connections {}: {}/{} waiting clients served, longest wait {:.1} s; responsive after: {}",
        verdict(r.waiting_served == r.waiting_sent && r.responsive_after),
        r.max_connections,
        r.waiting_served,
        r.waiting_sent,
        r.longest_wait,
        r.responsive_after
    );
    r.passed()
}

fn print_disk_full(r: &disk::DiskFullReport) -> bool {
    if let Some(why) = &r.skipped {
        println!("   SKIPPED ({why})");
        return true;
    }
    println!(
        "   tmpfs {} MiB; {} saves of 256 KiB acknowledged before it filled",
        disk::TMPFS_MIB,
        r.acked_before_full
    );
    match &r.refusal {
        Some((status, message)) => println!(
            "   {} refused with {status}: {message}",
            verdict(*status == 507 || *status == 503)
        ),
        None => println!("   FAIL the disk never filled"),
    }
    println!(
        "   {} further saves answered {:?}",
        verdict(r.later_statuses.iter().all(|s| *s == 507 || *s == 503)),
        r.later_statuses
    );
    println!(
        "   {} log line: {}",
        verdict(r.log_line.is_some()),
        r.log_line.as_deref().unwrap_or("none")
    );
    match &r.health_full {
        Some((status, message)) => println!(
            "   {} /health while full: {status} {message}",
            verdict(*status != 200)
        ),
        None => println!("   FAIL /health while full: no answer"),
    }
    println!(
        "   {} acknowledged states loadable while full: {}/{}",
        verdict(r.loaded_while_full.0 == r.loaded_while_full.1),
        r.loaded_while_full.0,
        r.loaded_while_full.1
    );
    println!(
        "   info deletes on the full disk answered {:?}",
        r.delete_statuses
    );
    match r.recovered_after {
        Some(s) => println!(
            "   ok   saves accepted again {s:.1} s after space was freed, without a restart"
        ),
        None => println!("   FAIL saves still refused after space was freed"),
    }
    println!(
        "   {} /health after: {:?}",
        verdict(r.health_after == Some(200)),
        r.health_after
    );
    println!(
        "   {} restart on the full disk: opened {}, {}/{} acknowledged states loadable",
        verdict(r.restart_opened && r.loaded_after_restart.0 == r.loaded_after_restart.1),
        r.restart_opened,
        r.loaded_after_restart.0,
        r.loaded_after_restart.1
    );
    println!(
        "   {} disk then filled to the last byte by another process, store killed: reopened {}, {}/{} acknowledged states loadable",
        verdict(r.reopened_when_full && r.loaded_when_full.0 == r.loaded_when_full.1),
        r.reopened_when_full,
        r.loaded_when_full.0,
        r.loaded_when_full.1
    );
    println!(
        "   {} /health and a save there: {:?} (503 and 507 expected)",
        verdict(r.health_and_save_when_full == Some((503, 507))),
        r.health_and_save_when_full
    );
    match r.recovered_after_filler {
        Some(s) => println!(
            "   ok   saves accepted again {s:.1} s after the filler and {} MiB more were freed, without a restart",
            disk::SPARE_MIB
        ),
        None => println!("   FAIL saves still refused after the filler and more space were freed"),
    }
    for line in r.anomalies.iter().take(10) {
        println!("        {line}");
    }
    r.passed()
}

fn print_memory(r: &memory::MemoryReport) -> bool {
    println!(
        "   {} {} clients saving {} KiB states for {:.0} s: {} saves, {} failed{}",
        verdict(r.failures == 0 && r.saves > 0),
        r.clients,
        r.state_bytes / 1024,
        r.seconds,
        r.saves,
        r.failures,
        r.first_failure
            .as_deref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    println!(
        "   {} peak RSS {} MiB (limit {} MiB); baseline {} MiB; {} s after {} MiB",
        verdict(r.peak_rss_kib < memory::RSS_LIMIT_KIB),
        r.peak_rss_kib / 1024,
        memory::RSS_LIMIT_KIB / 1024,
        r.baseline.rss_kib / 1024,
        r.settle_seconds,
        r.after.rss_kib / 1024
    );
    println!(
        "   {} descriptors: baseline {}, peak {}, after {}",
        verdict(r.after.fds <= r.baseline.fds + 4),
        r.baseline.fds,
        r.peak_fds,
        r.after.fds
    );
    r.passed()
}

fn print_failure(r: &disk::FailureReport) -> bool {
    if let Some(why) = &r.skipped {
        println!("   SKIPPED ({why})");
        return true;
    }
    match &r.refusal {
        Some((status, message)) => println!(
            "   {} save while blobs/ is immutable: {status} {message}",
            verdict(*status == 503 || *status == 507)
        ),
        None => println!("   FAIL no answer"),
    }
    println!(
        "   {} log line: {}",
        verdict(r.log_line.is_some()),
        r.log_line.as_deref().unwrap_or("none")
    );
    println!(
        "   {} /health during the failure: {:?}",
        verdict(r.health_during.is_some_and(|s| s != 200)),
        r.health_during
    );
    match r.recovered_after {
        Some(s) => println!("   ok   recovered by itself {s:.1} s after the cause was removed"),
        None => println!(
            "   LIMIT did not recover without a restart: sled 0.34 stays wedged after a failed blob write"
        ),
    }
    if let Some(ok) = r.recovered_by_restart {
        println!(
            "   {} a restart recovered it, acknowledged state intact: {ok}",
            verdict(ok)
        );
    }
    for line in r.anomalies.iter().take(5) {
        println!("        {line}");
    }
    r.passed()
}
