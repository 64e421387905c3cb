//! What one durable save costs the sled engine, below HTTP and JOSE: CPU
//! time and context switches per save, with 32 concurrent writers on a
//! runtime of one worker, in one process. Two ways side by side, in
//! alternating rounds:
//!
//! - **writer**: `SledStore::save_all`, as the server saves: the writer
//!   thread applies whatever is queued in one transaction and one flush;
//! - **per call**: `Database::save_all` on a blocking task per save, one
//!   transaction and one (shared) flush each: how the engine saved before
//!   the writer thread.
//!
//! Pin it to one core to see the cost on one core (the figures in
//! `docs/performance.md`): `taskset -c 0 cargo bench --bench storage_cost`.
//! CPU time comes from `/proc/self/stat` (10 ms ticks, so each round runs
//! a few thousand saves); switches from `/proc/self/task/*/status`,
//! counted over the threads alive at the end of a round (sled's I/O
//! threads stay). Prints the figures; asserts nothing.

#[path = "common/state.rs"]
mod state;

use std::sync::Arc;
use std::time::Instant;

use flow_store::model::{State, Timestamp};
use flow_store::store::sled::{Database, SledStore};
use flow_store::store::Store;
use state::state_1kib;
use uuid::Uuid;

const WRITERS: usize = 32;
const SAVES_PER_WRITER: usize = 150;
const ROUNDS: usize = 4;
const CACHE_BYTES: u64 = 256 << 20;

/// The two ways a save reaches sled.
#[derive(Debug, Clone, Copy)]
enum Way {
    Writer,
    PerCall,
}

/// Saves carry an expiry, as the platform's do: the index is written too.
fn expiry() -> Option<Timestamp> {
    Timestamp::parse("2030-01-01T00:00:00Z").ok()
}

/// User + system CPU of this process so far, in clock ticks (10 ms).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Voluntary and involuntary context switches of this process's threads.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

async fn save_all(way: Way, store: &Arc<SledStore>, db: &Database, states: Vec<State>) {
    match way {
        Way::Writer => {
            store.save_all(states).await.expect("save");
        }
        Way::PerCall => {
            let db = db.clone();
            tokio::task::spawn_blocking(move || db.save_all(&states))
                .await
                .expect("task")
                .expect("save");
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(&dir.path().join("writer"), CACHE_BYTES).expect("sled"));
    let db = Database::open(&dir.path().join("per-call"), CACHE_BYTES).expect("sled");
    let saves = WRITERS * SAVES_PER_WRITER;
    println!(
        "flow-store storage cost: {WRITERS} writers, {saves} saves of 1 KiB per round, \
         one runtime worker, {} core(s) available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for round in 1..=ROUNDS {
        for way in [Way::Writer, Way::PerCall] {
            let (ticks, switches, started) = (cpu_ticks(), context_switches(), Instant::now());
            runtime.block_on(async {
                let mut writers = tokio::task::JoinSet::new();
                for _ in 0..WRITERS {
                    let (store, db) = (Arc::clone(&store), db.clone());
                    writers.spawn(async move {
                        let tenant = Uuid::new_v4();
                        for n in 0..SAVES_PER_WRITER {
                            save_all(way, &store, &db, vec![state_1kib(tenant, n, expiry())]).await;
                        }
                    });
                }
                while writers.join_next().await.is_some() {}
            });
            let seconds = started.elapsed().as_secs_f64();
            let n = saves as f64;
            println!(
                "  round {round}  {:<9} {:7.0} saves/s  CPU {:6.1} µs/save  {:5.1} context switches/save",
                match way {
                    Way::Writer => "writer",
                    Way::PerCall => "per call",
                },
                n / seconds,
                cpu_ticks().saturating_sub(ticks) as f64 * 10_000.0 / n,
                context_switches().saturating_sub(switches) as f64 / n,
            );
        }
    }
}
