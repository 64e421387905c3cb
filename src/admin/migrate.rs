//! `flow-store migrate`: copies every state from one engine to another —
//! sled ↔ PostgreSQL, and from the `states` table of Boomi's reference
//! store — then verifies the copy.
//!
//! - Streams: the source is read in pages of `batch` states in key order
//!   (keyset pagination), each page saved in one transaction; memory is
//!   bounded by one page whatever the number of states.
//! - Idempotent and resumable: saves follow the store's own `updatedAt`
//!   rule, so re-running never overwrites a newer state at the destination
//!   (one the platform wrote after it was pointed at the new store).
//! - Verified: a second pass reads every source state again and compares it
//!   with the destination's; a SHA-256 digest per side over the compared
//!   states is printed, and any difference ends the command with exit 1.
//! - Expired states are not copied.
//! - A sled source must not be open by a running flow-store (sled's lock
//!   refuses it); a PostgreSQL source may be live: states changed during the
//!   copy show up in the verification and are copied by a re-run.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::State;
use crate::store::postgres::reference::ReferenceStates;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sled::SledStore;
use crate::store::{Store, StoreError};

/// One side of a migration, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `sled:PATH`.
    Sled(PathBuf),
    /// `postgres:URL`: flow-store's own tables.
    Postgres(String),
    /// `reference-postgres:URL`: the reference store's `states` (source only).
    ReferencePostgres(String),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        if rest.is_empty() {
            return Err(format!(
                "{text:?} is not sled:PATH, postgres:URL or reference-postgres:URL"
            ));
        }
        match kind {
            "sled" => Ok(Endpoint::Sled(PathBuf::from(rest))),
            "postgres" => Ok(Endpoint::Postgres(rest.to_string())),
            "reference-postgres" => Ok(Endpoint::ReferencePostgres(rest.to_string())),
            other => Err(format!(
                "{other:?} is not an engine: use sled:PATH, postgres:URL or reference-postgres:URL"
            )),
        }
    }
}

/// What `migrate` was asked to do.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Where the states are.
    pub from: Endpoint,
    /// Where they go.
    pub to: Endpoint,
    /// File holding the source database's password.
    pub from_password_file: Option<PathBuf>,
    /// File holding the destination database's password.
    pub to_password_file: Option<PathBuf>,
    /// CA certificate(s) of the source database.
    pub from_ca: Option<PathBuf>,
    /// CA certificate(s) of the destination database.
    pub to_ca: Option<PathBuf>,
    /// States per page (and per destination transaction).
    pub batch: usize,
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// States read from the source (expired ones included).
    pub read: u64,
    /// Saved at the destination (new, or replacing an older or equal one).
    pub written: u64,
    /// Left alone because the destination's is newer.
    pub kept_newer: u64,
    /// Expired at the source: not copied.
    pub expired: u64,
    /// Verified identical at the destination.
    pub verified: u64,
    /// Source states whose destination copy is newer (written there since).
    pub newer_at_destination: u64,
    /// Source states missing or different at the destination.
    pub mismatched: u64,
    /// SHA-256 over every unexpired source state: equal to
    /// `destination_digest` when the destination holds exactly those.
    pub source_digest: String,
    /// SHA-256 over the destination's copies of those states.
    pub destination_digest: String,
    /// States at the destination afterwards (it may hold others too).
    pub destination_states: u64,
}

impl Summary {
    /// Whether the destination holds every source state (or a newer one).
    pub fn verified_ok(&self) -> bool {
        self.mismatched == 0
    }

    /// The closing report, one fact a line.
    pub fn render(&self) -> String {
        format!(
            "read {} state(s) from the source: {} written, {} kept (newer at the destination), \
             {} expired (not copied)\n\
             verified {} identical, {} newer at the destination, {} missing or different\n\
             source digest      sha256:{}\ndestination digest sha256:{}\n\
             the destination now holds {} state(s)\n",
            self.read,
            self.written,
            self.kept_newer,
            self.expired,
            self.verified,
            self.newer_at_destination,
            self.mismatched,
            self.source_digest,
            self.destination_digest,
            self.destination_states
        )
    }
}

/// Where states come from.
enum Source {
    Store(Arc<dyn Store>),
    Reference(ReferenceStates),
}

impl Source {
    async fn count(&self) -> Result<u64, StoreError> {
        match self {
            Source::Store(store) => Ok(store.stats().await?.states),
            Source::Reference(reference) => reference.count().await,
        }
    }

    async fn page(
        &self,
        after: Option<(Uuid, Uuid)>,
        limit: usize,
    ) -> Result<Vec<State>, StoreError> {
        match self {
            Source::Store(store) => store.scan(after, limit).await,
            Source::Reference(reference) => reference.scan(after.map(|(_, id)| id), limit).await,
        }
    }
}

/// Runs the migration and its verification at `now`; progress on stderr.
pub async fn run(options: &MigrateOptions, now: OffsetDateTime) -> anyhow::Result<Summary> {
    if options.from == options.to {
        anyhow::bail!("--from and --to are the same database");
    }
    if options.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let source = open_source(options).await?;
    let destination = open_destination(options).await?;
    let total = source
        .count()
        .await
        .context("counting the source's states")?;
    let mut summary = Summary::default();
    copy(
        &source,
        destination.as_ref(),
        options.batch,
        now,
        total,
        &mut summary,
    )
    .await?;
    verify(
        &source,
        destination.as_ref(),
        options.batch,
        now,
        total,
        &mut summary,
    )
    .await?;
    summary.destination_states = destination
        .stats()
        .await
        .context("counting the destination's states")?
        .states;
    destination
        .close()
        .await
        .context("closing the destination")?;
    Ok(summary)
}

async fn copy(
    source: &Source,
    destination: &dyn Store,
    batch: usize,
    now: OffsetDateTime,
    total: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut progress = Progress::new("copy", total);
    let mut after = None;
    loop {
        let page = source
            .page(after, batch)
            .await
            .context("reading the source")?;
        let Some(last) = page.last() else { break };
        after = Some((last.tenant, last.id));
        summary.read += page.len() as u64;
        let (expired, live): (Vec<State>, Vec<State>) =
            page.into_iter().partition(|s| s.is_expired(now));
        summary.expired += expired.len() as u64;
        if !live.is_empty() {
            let outcome = destination
                .save_all(live)
                .await
                .context("writing to the destination")?;
            summary.written += outcome.applied as u64;
            summary.kept_newer += outcome.ignored as u64;
        }
        progress.show(summary.read);
    }
    progress.finish(summary.read);
    Ok(())
}

async fn verify(
    source: &Source,
    destination: &dyn Store,
    batch: usize,
    now: OffsetDateTime,
    total: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut progress = Progress::new("verify", total);
    let (mut source_digest, mut destination_digest) = (Sha256::new(), Sha256::new());
    let (mut after, mut seen) = (None, 0u64);
    loop {
        let page = source
            .page(after, batch)
            .await
            .context("reading the source again")?;
        let Some(last) = page.last() else { break };
        after = Some((last.tenant, last.id));
        seen += page.len() as u64;
        for state in page.iter().filter(|s| !s.is_expired(now)) {
            let copy = destination
                .get(state.tenant, state.id, now)
                .await
                .context("reading the destination")?;
            digest(&mut source_digest, Some(state));
            digest(&mut destination_digest, copy.as_ref());
            match copy {
                Some(copy) if copy == *state => summary.verified += 1,
                Some(copy) if copy.meta.updated_at > state.meta.updated_at => {
                    summary.newer_at_destination += 1;
                }
                _ => summary.mismatched += 1,
            }
        }
        progress.show(seen);
    }
    progress.finish(seen);
    summary.source_digest = hex(&source_digest.finalize());
    summary.destination_digest = hex(&destination_digest.finalize());
    Ok(())
}

/// Adds every byte of a state (metadata and content) to `hasher`; a
/// missing state adds a marker no state can produce.
fn digest(hasher: &mut Sha256, state: Option<&State>) {
    let Some(state) = state else {
        hasher.update([0xff]);
        return;
    };
    hasher.update([0x01]);
    hasher.update(state.tenant.as_bytes());
    hasher.update(state.id.as_bytes());
    // Plain data (UUIDs, strings, booleans) always serializes.
    let meta = serde_json::to_vec(&state.meta).unwrap_or_default();
    for part in [&meta[..], state.content.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn open_source(options: &MigrateOptions) -> anyhow::Result<Source> {
    let pg = |url: &str| postgres_options(url, &options.from_password_file, &options.from_ca);
    Ok(match &options.from {
        Endpoint::Sled(path) => Source::Store(Arc::new(open_sled(path, "source")?)),
        Endpoint::Postgres(url) => Source::Store(Arc::new(
            PostgresStore::open(&pg(url))
                .await
                .context("opening the PostgreSQL source")?,
        )),
        Endpoint::ReferencePostgres(url) => Source::Reference(
            ReferenceStates::open(&pg(url))
                .await
                .context("opening the reference store's database")?,
        ),
    })
}

async fn open_destination(options: &MigrateOptions) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &options.to {
        Endpoint::Sled(path) => Arc::new(open_sled(path, "destination")?),
        Endpoint::Postgres(url) => Arc::new(
            PostgresStore::open(&postgres_options(
                url,
                &options.to_password_file,
                &options.to_ca,
            ))
            .await
            .context("opening the PostgreSQL destination")?,
        ),
        Endpoint::ReferencePostgres(_) => anyhow::bail!(
            "reference-postgres: is a source only; flow-store never writes the reference store"
        ),
    })
}

fn open_sled(path: &std::path::Path, side: &str) -> anyhow::Result<SledStore> {
    SledStore::open(path, crate::config::DEFAULT_CACHE_BYTES).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "the sled {side} {} is in use by a running flow-store: stop it first \
             (systemctl stop flow-store), then run migrate again",
            path.display()
        ),
        other => {
            anyhow::Error::new(other).context(format!("opening the sled {side} {}", path.display()))
        }
    })
}

fn postgres_options(
    url: &str,
    password_file: &Option<PathBuf>,
    ca: &Option<PathBuf>,
) -> PostgresOptions {
    PostgresOptions {
        url: url.to_string(),
        password_file: password_file.clone(),
        ca: ca.clone(),
        pool_size: 2,
        // A page of large states is one transaction: give it time.
        statement_timeout: Duration::from_secs(120),
    }
}

/// Progress on stderr: a redrawn bar on a terminal, a plain line every few
/// seconds otherwise (a log, a pipe).
struct Progress {
    phase: &'static str,
    total: u64,
    tty: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(phase: &'static str, total: u64) -> Progress {
        let now = Instant::now();
        Progress {
            phase,
            total,
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: now,
        }
    }

    fn show(&mut self, done: u64) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print(done, false);
        }
    }

    fn finish(&mut self, done: u64) {
        self.print(done, true);
    }

    fn print(&self, done: u64, last: bool) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        let total = self.total.max(done);
        let line = format!("{}: {done}/{total} states, {rate:.0}/s", self.phase);
        let mut err = std::io::stderr();
        if self.tty {
            const WIDTH: u64 = 30;
            let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
            let bar = format!(
                "{}{}",
                "#".repeat(filled),
                "-".repeat(WIDTH as usize - filled)
            );
            let _ = write!(err, "\r[{bar}] {line}\x1b[K");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!(
            "sled:/var/lib/flow-store".parse::<Endpoint>(),
            Ok(Endpoint::Sled("/var/lib/flow-store".into()))
        );
        assert_eq!(
            "postgres:postgresql://u@h/db".parse::<Endpoint>(),
            Ok(Endpoint::Postgres("postgresql://u@h/db".into()))
        );
        assert_eq!(
            "reference-postgres:postgresql://u@h/ref".parse::<Endpoint>(),
            Ok(Endpoint::ReferencePostgres("postgresql://u@h/ref".into()))
        );
        for bad in ["sled:", "mysql:x", "/var/lib/flow-store"] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.contains("sled:PATH"), "{bad}: {e}");
        }
    }
}
