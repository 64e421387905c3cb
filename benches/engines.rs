//! Durable saves per second on each storage engine, side by side in one
//! run: 16 concurrent writers call `Store::save_all` (one 1 KiB state per
//! call, each a new state) on sled in a temporary directory and on a
//! PostgreSQL cluster started for the run (Debian's `initdb` + `pg_ctl`,
//! fsync on, on loopback). Below HTTP and JOSE: the storage layer alone.
//! Prints the figures; asserts nothing. PostgreSQL is skipped, loudly,
//! when it is not installed.
//!
//! Run: `cargo bench --bench engines` (add `-- --quick` for a short run).

// The test harness's PostgreSQL helper, shared rather than copied; the
// bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/common/tls.rs"]
mod tls;

#[path = "common/state.rs"]
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_store::store::postgres::PostgresStore;
use flow_store::store::sled::SledStore;
use flow_store::store::Store;
use state::state_1kib;
use uuid::Uuid;

const WRITERS: usize = 16;

/// Saves `per_writer` states from each of [`WRITERS`] tasks; saves/s.
async fn saves_per_second(store: Arc<dyn Store>, per_writer: usize) -> f64 {
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            let tenant = Uuid::new_v4();
            for n in 0..per_writer {
                store
                    .save_all(vec![state_1kib(tenant, n, None)])
                    .await
                    .expect("save");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    (WRITERS * per_writer) as f64 / started.elapsed().as_secs_f64()
}

fn print(engine: &str, rate: f64) {
    println!("{engine:<52} {rate:>8.0} durable saves/s ({WRITERS} writers, 1 KiB states)");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let per_writer = if quick { 20 } else { 200 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "flow-store storage engines, {} saves each",
        WRITERS * per_writer
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let sled = SledStore::open(
        &dir.path().join("sled"),
        flow_store::config::DEFAULT_CACHE_BYTES,
    )
    .expect("sled");
    print(
        "sled (fsync per flush, group commit)",
        runtime.block_on(saves_per_second(Arc::new(sled), per_writer)),
    );

    let Some(cluster) = postgres::PgServer::start_durable() else {
        return;
    };
    let rate = runtime.block_on(async {
        let mut config = flow_store::config::Config::default();
        cluster.configure(&mut config, "postgres", dir.path());
        config.storage.postgres.pool_size = WRITERS;
        config.storage.postgres.statement_timeout_seconds = 30;
        let options = flow_store::app::postgres_options(&config).expect("options");
        let store = PostgresStore::open(&options).await.expect("PostgreSQL");
        // Connections are opened on first use: open them before timing.
        let _ = saves_per_second(Arc::new(store.clone()), 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        saves_per_second(Arc::new(store), per_writer).await
    });
    print("PostgreSQL (loopback, fsync on, synchronous_commit)", rate);
}
