//! Throughput and latency of the request path below HTTP: request-signature
//! check, opening a state token, the durable save (sled transaction + fsync),
//! the load with its reply token. Prints medians and p90s; asserts nothing.
//!
//! Run: `cargo bench --bench throughput` (add `-- --quick` for a short run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_store::clock::SystemClock;
use flow_store::config::{KeySource, StoreEntry};
use flow_store::keys::{generate_p384_jwk, KeyRing};
use flow_store::platform::{Encryption, PlatformKeys};
use flow_store::service::{KeyIds, Service};
use flow_store::store::sled::SledStore;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn measure(iterations: usize, mut f: impl FnMut()) -> Stats {
        // One warm-up round so lazy initialisation is not measured.
        f();
        let samples = (0..iterations)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect();
        Stats { samples }
    }

    fn print(mut self, name: &str) {
        self.samples.sort();
        let pick = |q: f64| self.samples[((self.samples.len() - 1) as f64 * q) as usize];
        let median = pick(0.5);
        println!(
            "{name:<48} median {:>9.3} ms  p90 {:>9.3} ms  ({:>8.0}/s at the median, n={})",
            median.as_secs_f64() * 1e3,
            pick(0.9).as_secs_f64() * 1e3,
            1.0 / median.as_secs_f64(),
            self.samples.len()
        );
    }
}

fn public(jwk: &josekit::jwk::Jwk) -> String {
    flow_store::keys::public_jwk(jwk)
        .expect("public key")
        .to_string()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 30 } else { 300 };
    let platform = generate_p384_jwk().expect("key");
    let receiver = generate_p384_jwk().expect("key");
    let entry = StoreEntry {
        name: "bench".into(),
        platform_key: KeySource::Inline(public(&platform)),
        receiver_key: KeySource::Inline(receiver.to_string()),
    };
    let ring = KeyRing::load(&[entry]).expect("keys");
    let sim =
        PlatformKeys::from_json(&platform.to_string(), &public(&receiver)).expect("platform keys");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SledStore::open(dir.path(), flow_store::config::DEFAULT_CACHE_BYTES).expect("store");
    let service = Arc::new(Service::new(
        Arc::new(store),
        ring,
        Arc::new(SystemClock),
        30,
        64 << 20,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tenant = Uuid::new_v4();
    let path = format!("/api/storage/1/states/{tenant}");
    let key_ids = KeyIds {
        platform: sim.platform_kid().to_string(),
        receiver: sim.receiver_kid().to_string(),
    };
    println!("flow-store throughput (below HTTP), {n} iterations each");

    Stats::measure(n, || {
        let sig = sim
            .request_signature(tenant, &path, OffsetDateTime::now_utc())
            .expect("sign");
        service
            .authenticate(Some(&sig), key_ids.clone(), tenant, &path)
            .expect("authenticated");
    })
    .print("sign + verify request signature");

    let auth = service
        .authenticate(
            Some(
                &sim.request_signature(tenant, &path, OffsetDateTime::now_utc())
                    .expect("sign"),
            ),
            key_ids.clone(),
            tenant,
            &path,
        )
        .expect("authenticated");

    for (label, size, encryption) in [
        ("1 KiB", 1 << 10, Encryption::default()),
        ("64 KiB", 64 << 10, Encryption::default()),
        (
            "1 MiB, A256KW, no zip",
            1 << 20,
            Encryption {
                alg: "ECDH-ES+A256KW",
                enc: "A256CBC-HS512",
                zip: false,
            },
        ),
    ] {
        let content = json!({"blob": "x".repeat(size)}).to_string();
        let id = Uuid::new_v4();
        let mut version = 0u64;
        let mut token_for = |version: u64| {
            let updated = OffsetDateTime::UNIX_EPOCH
                + time::Duration::seconds(1_700_000_000 + version as i64);
            let claims = json!({
                "id": id, "tenant": tenant, "isDone": false,
                "updatedAt": updated.format(&time::format_description::well_known::Rfc3339).expect("format"),
                "content": content,
            });
            sim.state_token(tenant, &claims, OffsetDateTime::now_utc(), encryption)
                .expect("token")
        };
        let tokens: Vec<String> = (0..=n as u64).map(&mut token_for).collect();
        Stats::measure(n, || {
            version += 1;
            let token = tokens[version as usize % tokens.len()].clone();
            runtime
                .block_on(service.save(&auth, vec![token]))
                .expect("save");
        })
        .print(&format!("save {label} (open token + durable write)"));
        Stats::measure(n, || {
            runtime
                .block_on(service.load(&auth, id))
                .expect("load")
                .expect("present");
        })
        .print(&format!("load {label} (read + reply token)"));
    }

    // Concurrency: 16 writers, each saving its own states; fsyncs overlap.
    let writers = 16;
    let per_writer = if quick { 10 } else { 50 };
    let content = json!({"small": true}).to_string();
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let service = Arc::clone(&service);
            let auth = auth.clone();
            let tokens: Vec<String> = (0..per_writer)
                .map(|_| {
                    let claims = json!({
                        "id": Uuid::new_v4(), "tenant": tenant, "isDone": false,
                        "updatedAt": "2026-01-01T00:00:00Z", "content": content,
                    });
                    sim.state_token(
                        tenant,
                        &claims,
                        OffsetDateTime::now_utc(),
                        Encryption::default(),
                    )
                    .expect("token")
                })
                .collect();
            tasks.push(tokio::spawn(async move {
                for token in tokens {
                    service.save(&auth, vec![token]).await.expect("save");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
    });
    let elapsed = started.elapsed();
    let total = writers * per_writer;
    println!(
        "{:<48} {total} saves in {:.2} s = {:.0} durable saves/s",
        format!("{writers} concurrent writers"),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}
