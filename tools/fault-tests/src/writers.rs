//! Item 2, concurrent writers on one (tenant, id).
//!
//! Saves only: versions 1..=n are sent in shuffled order by many clients at
//! once; every request must be answered 204 and the final state must be
//! version n, whatever order the server saw them in.
//!
//! Saves and deletes interleaved: a delete has no `updatedAt`, so it removes
//! whatever is stored when it runs and a later save recreates the state.
//! From real time alone the bench can then require exactly this:
//! - R1: if the final state is version v, the save of v had not finished
//!   before the last delete started (a save finished before a delete began
//!   is erased by it, and versions are never sent twice);
//! - R2: every save that started after the last delete finished is ordered
//!   after all deletes, so the final state exists and is at least the
//!   newest of those saves.
//!
//! Then one more save and a delete check that nothing is left behind (no
//! tombstone, no stale version).

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::{Bench, Rng};
use crate::process::ServerProcess;

/// Scale of the run.
#[derive(Debug, Clone, Copy)]
pub struct WritersPlan {
    /// Concurrent clients.
    pub clients: usize,
    /// Versions saved per round.
    pub versions: u64,
    /// Deletes mixed into each interleaved round.
    pub deletes: usize,
    /// Rounds of each kind.
    pub rounds: usize,
}

/// What the suite found.
#[derive(Debug, Default)]
pub struct WritersReport {
    /// Requests sent.
    pub requests: u64,
    /// Requests not answered 204 (or not answered at all).
    pub failed: Vec<String>,
    /// Saves-only rounds whose final state was the newest.
    pub newest_won: usize,
    /// Saves-only rounds run.
    pub save_rounds: usize,
    /// Interleaved rounds that met R1 and R2.
    pub interleaved_ok: usize,
    /// Interleaved rounds run.
    pub interleaved_rounds: usize,
    /// Interleaved rounds that ended with the state present.
    pub ended_present: usize,
    /// Rule violations.
    pub violations: Vec<String>,
    /// Slowest request, ms.
    pub slowest_ms: f64,
}

impl WritersReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
            && self.violations.is_empty()
            && self.newest_won == self.save_rounds
            && self.interleaved_ok == self.interleaved_rounds
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Save(u64),
    Delete,
}

#[derive(Debug, Clone, Copy)]
struct Timed {
    op: Op,
    start: Instant,
    end: Instant,
}

/// Runs both kinds of rounds against `server`.
pub async fn run(
    bench: &Bench,
    server: &ServerProcess,
    plan: WritersPlan,
) -> anyhow::Result<WritersReport> {
    let mut rng = Rng::new(Rng::seed());
    let mut report = WritersReport::default();
    let tenant = Uuid::new_v4();
    for round in 0..plan.rounds * 2 {
        let interleaved = round % 2 == 1;
        let id = Uuid::new_v4();
        let mut ops: Vec<Op> = (1..=plan.versions).map(Op::Save).collect();
        if interleaved {
            ops.extend((0..plan.deletes).map(|_| Op::Delete));
        }
        rng.shuffle(&mut ops);
        let timed = race(bench, server, tenant, id, &ops, plan.clients, &mut report).await?;
        let checker = bench.client(server.addr())?;
        let final_state = checker.load_version(tenant, id).await?;
        if interleaved {
            report.interleaved_rounds += 1;
            report.ended_present += usize::from(final_state.is_some());
            match check_interleaved(&timed, final_state) {
                Ok(()) => report.interleaved_ok += 1,
                Err(v) => report.violations.push(format!("round {round}: {v}")),
            }
        } else {
            report.save_rounds += 1;
            if final_state == Some(plan.versions) {
                report.newest_won += 1;
            } else {
                report.violations.push(format!(
                    "round {round}: final state {final_state:?}, expected version {}",
                    plan.versions
                ));
            }
        }
        // Nothing left behind: a newer save lands, a delete removes it.
        let newer = plan.versions + 1;
        let reply = checker
            .save_tokens(tenant, &[bench.tokens.token(tenant, id, newer, "w")?])
            .await?;
        let after_save = checker.load_version(tenant, id).await?;
        let deleted = checker.delete(tenant, &[id]).await?;
        let after_delete = checker.load_version(tenant, id).await?;
        if reply.status != 204
            || after_save != Some(newer)
            || deleted.status != 204
            || after_delete.is_some()
        {
            report.violations.push(format!(
                "round {round}: follow-up save/delete saw {after_save:?} then {after_delete:?}"
            ));
        }
    }
    Ok(report)
}

/// Sends `ops` on (tenant, id) from `clients` clients at once; the timings of
/// the acknowledged ones.
async fn race(
    bench: &Bench,
    server: &ServerProcess,
    tenant: Uuid,
    id: Uuid,
    ops: &[Op],
    clients: usize,
    report: &mut WritersReport,
) -> anyhow::Result<Vec<Timed>> {
    let clients = clients.max(1);
    // Tokens first, so the race is between requests, not token building.
    let mut prepared = Vec::with_capacity(ops.len());
    for op in ops {
        let token = match op {
            Op::Save(v) => Some(bench.tokens.token(tenant, id, *v, "w")?),
            Op::Delete => None,
        };
        prepared.push((*op, token));
    }
    let mut lanes: Vec<Vec<(Op, Option<String>)>> = vec![Vec::new(); clients];
    for (i, item) in prepared.into_iter().enumerate() {
        lanes[i % clients].push(item);
    }
    let mut tasks = Vec::new();
    for lane in lanes {
        let client = bench.client(server.addr())?;
        tasks.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            let mut failed = Vec::new();
            for (op, token) in lane {
                let start = Instant::now();
                let sent = match &token {
                    Some(token) => {
                        client
                            .save_tokens(tenant, std::slice::from_ref(token))
                            .await
                    }
                    None => client.delete(tenant, &[id]).await,
                };
                let end = Instant::now();
                match sent {
                    Ok(r) if r.status == 204 => timed.push(Timed { op, start, end }),
                    Ok(r) => failed.push(format!("{op:?} answered {}: {}", r.status, r.message())),
                    Err(e) => failed.push(format!("{op:?}: {e:#}")),
                }
            }
            (timed, failed)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let (timed, failed) = task.await?;
        all.extend(timed);
        report.failed.extend(failed);
    }
    report.requests += ops.len() as u64;
    let slowest = all
        .iter()
        .map(|t| t.end - t.start)
        .max()
        .unwrap_or(Duration::ZERO);
    report.slowest_ms = report.slowest_ms.max(slowest.as_secs_f64() * 1000.0);
    Ok(all)
}

/// R1 and R2 of the module docs.
fn check_interleaved(timed: &[Timed], final_state: Option<u64>) -> Result<(), String> {
    let deletes = timed.iter().filter(|t| matches!(t.op, Op::Delete));
    let last_delete_start = deletes.clone().map(|t| t.start).max();
    let last_delete_end = deletes.map(|t| t.end).max();
    let save_of = |v: u64| timed.iter().find(|t| matches!(t.op, Op::Save(s) if s == v));
    if let Some(v) = final_state {
        let Some(save) = save_of(v) else {
            return Err(format!("final version {v} was never acknowledged"));
        };
        if last_delete_start.is_some_and(|d| save.end < d) {
            return Err(format!(
                "final version {v} finished saving before a delete started, yet survived"
            ));
        }
    }
    let after_deletes = timed
        .iter()
        .filter_map(|t| match t.op {
            Op::Save(v) if last_delete_end.is_none_or(|d| t.start > d) => Some(v),
            _ => None,
        })
        .max();
    match (after_deletes, final_state) {
        (Some(min), None) => Err(format!(
            "absent, though version {min} was saved after every delete finished"
        )),
        (Some(min), Some(v)) if v < min => Err(format!(
            "final version {v} is older than {min}, saved after every delete finished"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn interleaved_rules() {
        let b = Instant::now();
        let timed = [
            Timed {
                op: Op::Save(1),
                start: at(b, 0),
                end: at(b, 10),
            },
            Timed {
                op: Op::Delete,
                start: at(b, 20),
                end: at(b, 30),
            },
            Timed {
                op: Op::Save(2),
                start: at(b, 25),
                end: at(b, 35),
            },
            Timed {
                op: Op::Save(3),
                start: at(b, 40),
                end: at(b, 50),
            },
        ];
        assert!(check_interleaved(&timed, Some(3)).is_ok());
        assert!(
            check_interleaved(&timed, Some(2)).is_err(),
            "R2: 3 came after all deletes"
        );
        assert!(
            check_interleaved(&timed, Some(1)).is_err(),
            "R1: 1 was erased"
        );
        assert!(check_interleaved(&timed, None).is_err());
        assert!(check_interleaved(&timed[..3], Some(2)).is_ok());
        assert!(check_interleaved(&timed[..3], None).is_ok());
    }
}
