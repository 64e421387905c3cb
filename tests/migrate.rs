//! `flow-store migrate`, the real binary: sled → PostgreSQL → a fresh sled
//! is byte-identical (thousands of states, 1 MiB ones among them), re-runs
//! are harmless and keep newer states, a sled source in use is refused,
//! and a database of Boomi's reference store (built here from its Flyway
//! DDL) is migrated, left untouched, and then served.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flow_store::model::{State, StateMeta, Timestamp};
use flow_store::store::postgres::PostgresStore;
use flow_store::store::sled::SledStore;
use flow_store::store::Store;
use uuid::Uuid;

use crate::common::{start_or_skip, Engine, PgServer, Setup, StoreKeys, DATABASE_FILE};

const CACHE: u64 = 16 * 1024 * 1024;

/// Runs `flow-store migrate ARGS`: (success, stdout, stderr).
fn migrate(args: &[String]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_flow-store"))
        .arg("migrate")
        .args(args)
        .output()
        .expect("running flow-store migrate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn must_migrate(args: &[String]) -> String {
    let (ok, out, err) = migrate(args);
    assert!(ok, "migrate {args:?} failed:\n{out}\n{err}");
    out
}

fn timestamp(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("timestamp")
}

/// State number `n`, every metadata field exercised across `n`.
fn state(tenant: Uuid, n: usize) -> State {
    let pick = |k: usize| (n % k == 0).then(Uuid::new_v4);
    State {
        tenant,
        id: Uuid::new_v4(),
        meta: StateMeta {
            parent: pick(2),
            flow: pick(3),
            flow_version: pick(4),
            current_map_element: pick(5),
            current_user: pick(6),
            is_done: n % 7 == 0,
            created_at: (n % 2 == 0).then(|| timestamp("2024-01-01T00:00:00.1234567+01:00")),
            updated_at: timestamp(&format!(
                "2024-02-01T00:{:02}:{:02}.{:07}Z",
                n / 60 % 60,
                n % 60,
                n
            )),
            expires_at: (n % 3 == 0).then(|| timestamp("2099-01-01T00:00:00.0000001Z")),
        },
        // A NUL and non-ASCII: bytes a `text` column or jsonb would change.
        content: format!("{{\"n\":{n},\"text\":\"wörld \u{0} end\"}}"),
    }
}

async fn all_states(store: &dyn Store) -> Vec<State> {
    let (mut all, mut after) = (Vec::new(), None);
    loop {
        let page = store.scan(after, 500).await.expect("scan");
        let Some(last) = page.last() else {
            return all;
        };
        after = Some((last.tenant, last.id));
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_to_postgres_to_sled_is_identical_and_reruns_keep_newer_states() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let tenants = [Uuid::new_v4(), Uuid::new_v4()];
    let mut saved: Vec<State> = (0..3000).map(|n| state(tenants[n % 2], n)).collect();
    for (n, big) in saved.iter_mut().take(4).enumerate() {
        big.content = format!("\"{}\"", "x".repeat(1024 * 1024 - 2 + n));
    }
    let expired: Vec<State> = (0..3)
        .map(|n| State {
            meta: StateMeta {
                expires_at: Some(timestamp("2000-01-01T00:00:00Z")),
                ..state(tenants[0], n).meta
            },
            ..state(tenants[0], n)
        })
        .collect();
    {
        let store = SledStore::open(&first, CACHE).expect("sled");
        for batch in saved.chunks(250) {
            store.save_all(batch.to_vec()).await.expect("save");
        }
        store.save_all(expired.clone()).await.expect("save");
        store.close().await.expect("close");
    }

    let database = cluster.create_database().await;
    let options = cluster.options(&database, dir.path());
    let password = options.password_file.clone().unwrap();
    let pg = |side: &str| {
        vec![
            format!("--{side}"),
            format!("postgres:{}", options.url),
            format!("--{side}-password-file"),
            password.display().to_string(),
        ]
    };
    let sled =
        |side: &str, path: &Path| vec![format!("--{side}"), format!("sled:{}", path.display())];
    let to_pg = [sled("from", &first), pg("to")].concat();
    let out = must_migrate(&to_pg);
    assert!(
        out.contains("read 3003 state(s) from the source: 3000 written, 0 kept (newer at the destination), 3 expired"),
        "{out}"
    );
    assert!(
        out.contains("verified 3000 identical, 0 newer at the destination, 0 missing"),
        "{out}"
    );
    must_migrate(&[pg("from"), sled("to", &second)].concat());

    let copied = SledStore::open(&second, CACHE).expect("second sled");
    let mut expected = saved.clone();
    expected.sort_by_key(|s| (s.tenant, s.id));
    let back = all_states(&copied).await;
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "the round trip changed a state");
    drop(copied);

    // A re-run is harmless; a state the platform updated at the
    // destination since is kept, and reported.
    let destination = PostgresStore::open(&options).await.expect("open");
    let mut newer = saved[10].clone();
    newer.meta.updated_at = timestamp("2030-01-01T00:00:00Z");
    newer.content = "\"written by the platform since\"".into();
    destination.save_all(vec![newer.clone()]).await.unwrap();
    let out = must_migrate(&to_pg);
    assert!(
        out.contains("2999 written, 1 kept (newer at the destination)"),
        "{out}"
    );
    assert!(
        out.contains("verified 2999 identical, 1 newer at the destination, 0 missing"),
        "{out}"
    );
    let now = timestamp("2025-01-01T00:00:00Z").instant();
    assert_eq!(
        destination.get(newer.tenant, newer.id, now).await.unwrap(),
        Some(newer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_source_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("live"), dir.path().join("copy"));
    let _serving = SledStore::open(&source, CACHE).expect("sled");
    let (ok, out, err) = migrate(&[
        "--from".into(),
        format!("sled:{}", source.display()),
        "--to".into(),
        format!("sled:{}", target.display()),
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("in use by a running flow-store: stop it first"),
        "{err}"
    );
}

/// The reference store's PostgreSQL schema, from its Flyway migrations.
const REFERENCE_DDL: &str = "
    -- V0001__create_states
    CREATE TABLE states (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL,
        parent_id uuid,
        flow_id uuid NOT NULL,
        flow_version_id uuid NOT NULL,
        is_done boolean NOT NULL,
        current_map_element_id uuid NOT NULL,
        current_user_id uuid,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        content jsonb NOT NULL
    );
    -- V0002__add_expires_at
    ALTER TABLE states ADD COLUMN expires_at timestamptz;
    -- V0003__make_current_map_element_id_nullable
    ALTER TABLE states ALTER COLUMN current_map_element_id DROP NOT NULL;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_store_database_is_migrated_untouched_and_served() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let database = cluster.create_database().await;
    let client = cluster.connect(&database).await;
    client.batch_execute(REFERENCE_DDL).await.unwrap();
    let (tenant, kept, done, expired) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    client
        .execute(
            "INSERT INTO states (id, tenant_id, parent_id, flow_id, flow_version_id, is_done, \
             current_map_element_id, current_user_id, created_at, updated_at, content, expires_at) VALUES \
             ($1, $4, NULL, gen_random_uuid(), gen_random_uuid(), false, gen_random_uuid(), NULL, \
              '2024-01-01 10:00:00.123456+00', '2024-01-02 10:00:00.654321+00', '{\"b\": 1, \"a\": [1, 2]}', NULL), \
             ($2, $4, $1, gen_random_uuid(), gen_random_uuid(), true, NULL, gen_random_uuid(), \
              '2024-01-01 10:00:00+00', '2024-01-03 10:00:00+00', '{\"done\": true}', '2099-01-01 00:00:00+00'), \
             ($3, $4, NULL, gen_random_uuid(), gen_random_uuid(), false, NULL, NULL, \
              '2000-01-01 10:00:00+00', '2000-01-01 10:00:00+00', '{}', '2000-01-02 00:00:00+00')",
            &[&kept, &done, &expired, &tenant],
        )
        .await
        .unwrap();
    let before: String = client
        .query_one(
            "SELECT md5(string_agg(states::text, ',' ORDER BY id)) FROM states",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let dir = tempfile::tempdir().unwrap();
    let options = cluster.options(&database, dir.path());
    let password = options.password_file.clone().unwrap().display().to_string();
    // Into flow-store's own tables of the same database.
    let out = must_migrate(&[
        "--from".into(),
        format!("reference-postgres:{}", options.url),
        "--from-password-file".into(),
        password.clone(),
        "--to".into(),
        format!("postgres:{}", options.url),
        "--to-password-file".into(),
        password,
    ]);
    assert!(
        out.contains("read 3 state(s) from the source: 2 written"),
        "{out}"
    );
    assert!(out.contains("1 expired"), "{out}");
    assert!(out.contains("verified 2 identical"), "{out}");
    let after: String = client
        .query_one(
            "SELECT md5(string_agg(states::text, ',' ORDER BY id)) FROM states",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after, "the reference's table was changed");

    // Served by flow-store from that database.
    let serving = tempfile::tempdir().unwrap();
    std::fs::write(serving.path().join(DATABASE_FILE), &database).unwrap();
    let server = start_or_skip!(Setup {
        stores: vec![StoreKeys::generate()],
        dir: Some(Arc::new(serving)),
        ..Setup::on(Engine::Postgres)
    });
    let (t, k, d) = (tenant.to_string(), kept.to_string(), done.to_string());
    // jsonb re-serialised the content: keys sorted, its own spacing.
    assert_eq!(server.content(&t, &k).await, r#"{"a": [1, 2], "b": 1}"#);
    assert_eq!(server.content(&t, &d).await, r#"{"done": true}"#);
    server.expect_absent(&t, &expired.to_string()).await;
}
