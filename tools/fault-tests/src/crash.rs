//! Item 1, crash safety: platform clients save, update, load and delete
//! states while the server is SIGKILLed at a random moment; after each
//! restart on the same directory every key must hold exactly what its
//! acknowledged operations left, or what its one unacknowledged in-flight
//! operation would have left.
//!
//! Each worker owns its keys, so the operations on a key are totally
//! ordered and the expected state is exact: after an acknowledged save of
//! version v the key holds v; after an acknowledged delete it is absent. The
//! only uncertainty is the request in flight when the server died, which may
//! or may not have been applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::harness::{Bench, Client, Rng, ServerSettings, Tokens};

/// Scale of the run.
#[derive(Debug, Clone, Copy)]
pub struct CrashPlan {
    /// Kill-restart cycles.
    pub cycles: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys each client owns.
    pub keys_per_client: usize,
    /// Tenants the clients share.
    pub tenants: usize,
    /// The kill comes uniformly within this many milliseconds of the start.
    pub max_run_ms: u64,
}

/// What the crash suite found.
#[derive(Debug, Default)]
pub struct CrashReport {
    /// Cycles run.
    pub cycles: usize,
    /// Saves answered 204.
    pub acked_saves: u64,
    /// Deletes answered 204.
    pub acked_deletes: u64,
    /// Loads during the run that matched the model.
    pub loads_checked: u64,
    /// Key checks after restarts.
    pub keys_verified: u64,
    /// Keys whose acknowledged state was missing or older after a restart.
    pub lost: u64,
    /// Keys that held a state after an acknowledged delete.
    pub resurrected: u64,
    /// Any other mismatch, or a non-204 answer to a valid request.
    pub anomalies: Vec<String>,
    /// Unacknowledged in-flight operations at the kills that turned out applied.
    pub in_flight_applied: u64,
    /// … and not applied.
    pub in_flight_dropped: u64,
    /// Warning or error lines the server logged while reopening.
    pub reopen_warnings: Vec<String>,
    /// Seed of the random choices.
    pub seed: u64,
}

impl CrashReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.cycles > 0
            && self.lost == 0
            && self.resurrected == 0
            && self.anomalies.is_empty()
            && self.reopen_warnings.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Save(u64),
    Delete,
}

/// What the bench knows about one key.
#[derive(Debug, Clone)]
struct KeyModel {
    tenant: Uuid,
    id: Uuid,
    /// The version stored, as far as acknowledged operations say.
    state: Option<u64>,
    /// The unacknowledged operation sent when the server died.
    in_flight: Option<Op>,
}

#[derive(Debug, Default)]
struct WorkerTally {
    acked_saves: u64,
    acked_deletes: u64,
    loads_checked: u64,
    anomalies: Vec<String>,
}

/// Runs the suite.
pub async fn run(bench: &Bench, plan: CrashPlan) -> anyhow::Result<CrashReport> {
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let mut report = CrashReport {
        seed,
        ..CrashReport::default()
    };
    let settings = ServerSettings::defaults(bench.subdir("crash-data")?);
    let tenants: Vec<Uuid> = (0..plan.tenants.max(1)).map(|_| Uuid::new_v4()).collect();
    let mut owned: Vec<Vec<KeyModel>> = (0..plan.clients)
        .map(|c| {
            (0..plan.keys_per_client)
                .map(|_| KeyModel {
                    tenant: tenants[c % tenants.len()],
                    id: Uuid::new_v4(),
                    state: None,
                    in_flight: None,
                })
                .collect()
        })
        .collect();
    let versions = Arc::new(AtomicU64::new(1));
    for cycle in 0..plan.cycles {
        let mut server = bench.start(&settings)?;
        report
            .reopen_warnings
            .extend(opening_warnings(&server.log_since(0), cycle));
        let checker = bench.client(server.addr())?;
        for keys in &mut owned {
            verify(&checker, keys, &mut report).await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for keys in std::mem::take(&mut owned) {
            let client = bench.client(server.addr())?;
            let worker = Worker {
                tokens: bench.tokens.clone(),
                versions: Arc::clone(&versions),
                stop: Arc::clone(&stop),
                rng: Rng::new(rng.next_u64()),
            };
            workers.push(tokio::spawn(worker.run(client, keys)));
        }
        let run_ms = 100 + rng.below(plan.max_run_ms.max(1));
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            let (keys, tally) = worker.await?;
            report.acked_saves += tally.acked_saves;
            report.acked_deletes += tally.acked_deletes;
            report.loads_checked += tally.loads_checked;
            report.anomalies.extend(tally.anomalies);
            owned.push(keys);
        }
        report.cycles += 1;
    }
    // The last kill is verified by one more start.
    let server = bench.start(&settings)?;
    report
        .reopen_warnings
        .extend(opening_warnings(&server.log_since(0), plan.cycles));
    let checker = bench.client(server.addr())?;
    for keys in &mut owned {
        verify(&checker, keys, &mut report).await?;
    }
    Ok(report)
}

/// Warning and error lines logged before the server listened.
fn opening_warnings(lines: &[String], cycle: usize) -> Vec<String> {
    lines
        .iter()
        .take_while(|l| !l.contains("listening on"))
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(|l| format!("restart {cycle}: {l}"))
        .collect()
}

/// Checks every key against its model, then adopts what is stored.
async fn verify(
    client: &Client,
    keys: &mut [KeyModel],
    report: &mut CrashReport,
) -> anyhow::Result<()> {
    for key in keys.iter_mut() {
        let actual = client.load_version(key.tenant, key.id).await?;
        report.keys_verified += 1;
        let in_flight_result = match key.in_flight {
            // Versions only grow, so an applied save is always the newest.
            Some(Op::Save(v)) => Some(Some(v)),
            Some(Op::Delete) => Some(None),
            None => None,
        };
        if actual == key.state {
            if in_flight_result.is_some_and(|r| r != actual) {
                report.in_flight_dropped += 1;
            }
        } else if Some(actual) == in_flight_result {
            report.in_flight_applied += 1;
        } else {
            match (key.state, actual) {
                (Some(_), None) => report.lost += 1,
                (Some(want), Some(got)) if got < want => report.lost += 1,
                (None, Some(_)) => report.resurrected += 1,
                _ => report.anomalies.push(format!(
                    "key {}/{}: expected {:?} (in flight {:?}), found {:?}",
                    key.tenant, key.id, key.state, key.in_flight, actual
                )),
            }
        }
        key.state = actual;
        key.in_flight = None;
    }
    Ok(())
}

struct Worker {
    tokens: Tokens,
    versions: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

impl Worker {
    /// Operates on `keys` until the server dies or `stop` is set.
    async fn run(
        mut self,
        client: Client,
        mut keys: Vec<KeyModel>,
    ) -> (Vec<KeyModel>, WorkerTally) {
        let mut tally = WorkerTally::default();
        while !self.stop.load(Ordering::SeqCst) {
            let index = self.rng.below(keys.len() as u64) as usize;
            let key = &mut keys[index];
            let roll = self.rng.below(10);
            let op = if roll < 5 {
                Op::Save(self.versions.fetch_add(1, Ordering::SeqCst))
            } else if roll < 7 {
                Op::Delete
            } else {
                match client.load_version(key.tenant, key.id).await {
                    Ok(loaded) if loaded == key.state => tally.loads_checked += 1,
                    Ok(loaded) => tally.anomalies.push(format!(
                        "load during the run: expected {:?}, got {loaded:?}",
                        key.state
                    )),
                    Err(_) => break,
                }
                continue;
            };
            let sent = match op {
                Op::Save(v) => match self.tokens.token(key.tenant, key.id, v, "crash") {
                    Ok(token) => client.save_tokens(key.tenant, &[token]).await,
                    Err(e) => {
                        tally.anomalies.push(format!("building a token: {e:#}"));
                        break;
                    }
                },
                Op::Delete => client.delete(key.tenant, &[key.id]).await,
            };
            match sent {
                Ok(reply) if reply.status == 204 => match op {
                    Op::Save(v) => {
                        tally.acked_saves += 1;
                        key.state = Some(v);
                    }
                    Op::Delete => {
                        tally.acked_deletes += 1;
                        key.state = None;
                    }
                },
                Ok(reply) => {
                    tally.anomalies.push(format!(
                        "{op:?} answered {}: {}",
                        reply.status,
                        reply.message()
                    ));
                    key.in_flight = Some(op);
                    break;
                }
                Err(_) => {
                    // The server died with this request in flight.
                    key.in_flight = Some(op);
                    break;
                }
            }
        }
        (keys, tally)
    }
}
