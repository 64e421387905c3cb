//! What only the PostgreSQL engine has to prove (the contract itself runs
//! on it as `on_postgres::…`): `updatedAt` ordered beyond timestamptz's
//! microseconds, a stopped database answered with 503 and served again
//! without a restart, migrations under the advisory lock, a newer schema
//! refused, bounded purges, `flow-store check` on the database, an online
//! backup of a PostgreSQL store restored into sled, and several real
//! flow-store processes on one database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_store::model::{State, StateMeta, Timestamp};
use flow_store::store::postgres::PostgresStore;
use flow_store::store::{Store, StoreError};

use crate::common::{
    run_bounded, save_body, start_or_skip, tool_command, uuid, Deployment, Engine, PgServer,
    Running, Setup, StoreKeys,
};

fn timestamp(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("timestamp")
}

fn state(tenant: uuid::Uuid, id: uuid::Uuid, updated: &str, expires: Option<&str>) -> State {
    State {
        tenant,
        id,
        meta: StateMeta {
            parent: None,
            flow: Some(uuid::Uuid::new_v4()),
            flow_version: None,
            current_map_element: None,
            current_user: None,
            is_done: false,
            created_at: Some(timestamp("2024-01-01T00:00:00Z")),
            updated_at: timestamp(updated),
            expires_at: expires.map(timestamp),
        },
        content: format!("{{\"updated\":\"{updated}\"}}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_saves_100_ns_apart_order_correctly() {
    let server = start_or_skip!(Setup::on(Engine::Postgres));
    let (t, id) = (uuid(), uuid());
    // Both instants are the same microsecond: timestamptz cannot tell them
    // apart, the engine must.
    server
        .save_ok(&t, &id, "\"first\"", "2024-01-01T00:00:00.0000001Z")
        .await;
    server
        .save_ok(&t, &id, "\"second\"", "2024-01-01T00:00:00.0000002Z")
        .await;
    assert_eq!(server.content(&t, &id).await, "\"second\"");
    // The older one arriving late is ignored (still 204).
    server
        .save_ok(&t, &id, "\"late\"", "2024-01-01T00:00:00.0000001Z")
        .await;
    assert_eq!(server.content(&t, &id).await, "\"second\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_503_then_serves_again_without_a_restart() {
    let Some(cluster) = PgServer::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let server = start_or_skip!(Setup {
        cluster: Some(Arc::clone(&cluster)),
        ..Setup::on(Engine::Postgres)
    });
    let (t, kept, refused) = (uuid(), uuid(), uuid());
    server
        .save_ok(&t, &kept, "\"before\"", "2024-01-01T00:00:00Z")
        .await;

    cluster.stop();
    let started = Instant::now();
    let health = server.health().await;
    health.expect_error(503);
    let token = server.token(&server.claims(&t, &refused, "\"during\"", "2024-01-01T00:00:00Z"));
    let save = server.save(&t, &[token]).await;
    save.expect_error(503);
    assert!(
        save.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("storage is unavailable")),
        "{}",
        save.text()
    );
    server.load(&t, &kept).await.expect_error(503);
    server.delete(&t, &[&kept]).await.expect_error(503);
    // Three requests and a health check, each bounded by the 5 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "503s took {:?}",
        started.elapsed()
    );

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.health().await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "/health did not return to 200 within 30 s of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.content(&t, &kept).await, "\"before\"");
    server.expect_absent(&t, &refused).await;
    server
        .save_ok(&t, &refused, "\"after\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t, &refused).await, "\"after\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let database = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let options = cluster.options(&database, dir.path());
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let options = options.clone();
        opening.spawn(async move { PostgresStore::open(&options).await.map(|_| ()) });
    }
    while let Some(opened) = opening.join_next().await {
        opened
            .unwrap()
            .expect("a node opening at the same time as others");
    }
    let client = cluster.connect(&database).await;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM flow_store_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 1, "each migration is applied once");
    // The engine never creates or touches a `states` table (the reference
    // store's name).
    let foreign: bool = client
        .query_one("SELECT to_regclass('states') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!foreign);

    client
        .batch_execute("INSERT INTO flow_store_schema (version) VALUES (99)")
        .await
        .unwrap();
    match PostgresStore::open(&options).await {
        Err(e @ StoreError::UnsupportedFormat { found: 99, .. }) => {
            assert!(e.to_string().contains("upgrade flow-store"), "{e}");
        }
        other => panic!("a schema from a newer release was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_expired_state_in_batches_and_nothing_else() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let database = cluster.create_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = PostgresStore::open(&cluster.options(&database, dir.path()))
        .await
        .expect("open");
    let tenant = uuid::Uuid::new_v4();
    let expired: Vec<State> = (0..2500)
        .map(|_| {
            state(
                tenant,
                uuid::Uuid::new_v4(),
                "2024-01-01T00:00:00Z",
                Some("2024-06-01T00:00:00.0000001Z"),
            )
        })
        .collect();
    for batch in expired.chunks(500) {
        store.save_all(batch.to_vec()).await.expect("save");
    }
    // 100 ns later than "now": not expired yet. No expiry: never.
    let later = state(
        tenant,
        uuid::Uuid::new_v4(),
        "2024-01-01T00:00:00Z",
        Some("2024-06-01T00:00:00.0000002Z"),
    );
    let never = state(tenant, uuid::Uuid::new_v4(), "2024-01-01T00:00:00Z", None);
    store
        .save_all(vec![later.clone(), never.clone()])
        .await
        .expect("save");
    let now = timestamp("2024-06-01T00:00:00.0000001Z").instant();
    assert!(store
        .get(tenant, expired[0].id, now)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.purge_expired(now).await.unwrap(), 2500);
    assert_eq!(store.stats().await.unwrap().states, 2);
    assert_eq!(
        store.get(tenant, later.id, now).await.unwrap().as_ref(),
        Some(&later),
        "every column comes back as saved"
    );
    assert!(store.get(tenant, never.id, now).await.unwrap().is_some());
    assert!(store.stats().await.unwrap().bytes_on_disk > 0);
}

/// `flow-store check` against a fresh database, a wrong password and a
/// schema from a newer release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_database() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let database = cluster.create_database().await;
    let d = Deployment::new();
    d.configure(|c| cluster.configure(c, &database, d.dir.path()));
    let check = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_flow-store"))
            .args(["check", "--config"])
            .arg(d.config_path())
            .output()
            .expect("running flow-store check");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(text.contains("no flow-store schema yet"), "{text}");

    let password = d.dir.path().join("postgres-password");
    std::fs::write(&password, "wrong").unwrap();
    let (ok, text) = check();
    assert!(!ok, "a wrong password passed:\n{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        !text.contains("wrong"),
        "check prints the password:\n{text}"
    );

    d.configure(|c| cluster.configure(c, &database, d.dir.path()));
    cluster
        .connect(&database)
        .await
        .batch_execute(
            "CREATE TABLE flow_store_schema (version integer PRIMARY KEY, applied_at timestamptz); \
             INSERT INTO flow_store_schema (version) VALUES (7)",
        )
        .await
        .unwrap();
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(text.contains("schema version 7, newer"), "{text}");
}

/// With `ca` set the engine speaks TLS and verifies the server against it;
/// another CA, or `require` against the system's trust store, is refused,
/// and a server that takes TLS logins only refuses `sslmode=disable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_the_ca() {
    let server_cert = crate::common::test_cert();
    let Some(cluster) = PgServer::start_tls_only(server_cert) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (right_ca, _) = server_cert.write_to(&dir.path().join("right"));
    let (wrong_ca, _) = crate::common::TestCert::generate().write_to(&dir.path().join("wrong"));
    let mut tls = cluster.options("postgres", dir.path());
    tls.url = tls.url.replace("?sslmode=disable", "");

    let open = |ca: Option<&std::path::Path>, url: String| {
        let mut options = tls.clone();
        options.ca = ca.map(std::path::Path::to_path_buf);
        options.url = url;
        async move { PostgresStore::open(&options).await }
    };
    let store = open(Some(&right_ca), tls.url.clone())
        .await
        .expect("TLS with the server's CA");
    let (t, id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let saved = state(t, id, "2024-01-01T00:00:00Z", None);
    store.save_all(vec![saved.clone()]).await.unwrap();
    let now = timestamp("2024-01-02T00:00:00Z").instant();
    assert_eq!(store.get(t, id, now).await.unwrap(), Some(saved));

    for (what, ca, url) in [
        ("another CA", Some(wrong_ca.as_path()), tls.url.clone()),
        (
            "require without a CA (system trust store)",
            None,
            format!("{}?sslmode=require", tls.url),
        ),
    ] {
        match open(ca, url).await {
            Err(e) => assert!(e.to_string().contains("certificate"), "{what}: {e}"),
            Ok(_) => panic!("{what}: a server certificate it cannot verify was accepted"),
        }
    }
    match open(None, format!("{}?sslmode=disable", tls.url)).await {
        Err(e) => assert!(e.to_string().contains("no encryption"), "{e}"),
        Ok(_) => panic!("a plain connection to a TLS-only server succeeded"),
    }
}

// ---------------------------------------------------------------- two nodes

/// Two real flow-store processes of one store on one new database, and
/// their directories (dropped after the processes).
struct TwoNodes {
    a: Running,
    b: Running,
    _dirs: [Deployment; 2],
}

async fn two_nodes() -> Option<TwoNodes> {
    Some(two_nodes_on(PgServer::shared()?).await)
}

/// [`two_nodes`] on a database of `cluster`.
async fn two_nodes_on(cluster: &PgServer) -> TwoNodes {
    let database = cluster.create_database().await;
    let keys = StoreKeys::generate();
    let node = |keys: StoreKeys| {
        let d = Deployment::with_keys(keys);
        d.configure(|c| cluster.configure(c, &database, d.dir.path()));
        let run = d
            .spawn()
            .unwrap_or_else(|f| panic!("node did not start: {f:?}"));
        (d, run)
    };
    let (da, a) = node(keys.clone());
    let (db, b) = node(keys);
    TwoNodes {
        a,
        b,
        _dirs: [da, db],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_saved_through_one_node_loads_through_the_other() {
    let Some(TwoNodes { a, b, _dirs }) = two_nodes().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    a.save_ok(&t, &id, "\"via A\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(b.content(&t, &id).await, "\"via A\"");
    b.save_ok(&t, &id, "\"via B\"", "2024-01-02T00:00:00Z")
        .await;
    assert_eq!(a.content(&t, &id).await, "\"via B\"");
    b.delete(&t, &[&id]).await.expect_status(204);
    a.expect_absent(&t, &id).await;
    a.health().await.expect_status(200);
    b.health().await.expect_status(200);
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_through_two_nodes_newest_wins() {
    let Some(TwoNodes { a, b, _dirs }) = two_nodes().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    // 40 versions, sent in an order unrelated to their updatedAt, half
    // through each node, all at once.
    let order: Vec<u32> = (0..40).map(|i| (i * 17) % 40).collect();
    let mut writers = tokio::task::JoinSet::new();
    for (n, version) in order.into_iter().enumerate() {
        let node = if n % 2 == 0 { &a } else { &b };
        let client = node.client.clone();
        let (t, id) = (t.clone(), id.clone());
        writers.spawn(async move {
            let updated = format!("2024-01-01T00:00:{version:02}.0000001Z");
            let token = client.token(&client.claims(&t, &id, &format!("{version}"), &updated));
            client.save(&t, &[token]).await.status
        });
    }
    while let Some(status) = writers.join_next().await {
        assert_eq!(status.unwrap(), 204, "every concurrent save is 204");
    }
    assert_eq!(a.content(&t, &id).await, "39");
    assert_eq!(b.content(&t, &id).await, "39");
    a.terminate().await;
    b.terminate().await;
}

/// What a writer saw.
struct Written {
    /// (tenant, id) of every save answered 204.
    acknowledged: Vec<(String, String)>,
    /// Every other status.
    refused: Vec<u16>,
    /// Whether it stopped because the node was gone (no answer at all).
    node_gone: bool,
}

/// Saves one new state after another through `client` until `stop`, or
/// until the node no longer answers.
async fn writer(
    client: crate::common::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Written {
    let mut written = Written {
        acknowledged: Vec::new(),
        refused: Vec::new(),
        node_gone: false,
    };
    let tenant = uuid();
    // Bounded: at most 2 000 saves, whatever happens.
    for _ in 0..2000 {
        if *stop.borrow() {
            break;
        }
        let id = uuid();
        let token = client.token(&client.claims(&tenant, &id, "\"acked\"", "2024-01-01T00:00:00Z"));
        let request = client
            .signed("POST", &client.states_path(&tenant), &tenant)
            .header("content-type", "application/json")
            .body(save_body(&[token]));
        match client.http.try_send(request).await {
            Ok(reply) if reply.status == 204 => written.acknowledged.push((tenant.clone(), id)),
            Ok(reply) => {
                written.refused.push(reply.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                written.node_gone = true;
                break;
            }
        }
    }
    written
}

/// Under load through two nodes: node A is SIGKILLed, then the database is
/// stopped for 10 s. The survivor answers 503 (never 204) while the database
/// is away and serves again by itself; every save that got 204 loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_and_a_stopped_database_lose_nothing_acknowledged() {
    let Some(cluster) = PgServer::start() else {
        return;
    };
    let TwoNodes { a, mut b, _dirs } = two_nodes_on(&cluster).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_a = tokio::spawn(writer(a.client.clone(), stopped.clone()));
    let on_b = tokio::spawn(writer(b.client.clone(), stopped));

    tokio::time::sleep(Duration::from_secs(2)).await;
    a.signal("KILL");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop();
    // /health on the survivor reports the database gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.health().await.status != 503 {
        assert!(
            Instant::now() < deadline,
            "/health stayed 200 with the database stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.health().await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "/health did not recover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let on_a = on_a.await.unwrap();
    let on_b = on_b.await.unwrap();

    assert!(b.is_running(), "node B died:\n{}", b.stderr_text());
    assert!(
        on_a.node_gone,
        "the writer through node A never noticed its death"
    );
    assert!(!on_b.node_gone, "node B stopped answering");
    assert!(
        !on_a.acknowledged.is_empty() && !on_b.acknowledged.is_empty(),
        "no load reached the nodes"
    );
    assert!(
        on_b.refused.iter().all(|&status| status == 503),
        "while the database was away node B answered {:?}, not only 503",
        on_b.refused
    );
    assert!(
        !on_b.refused.is_empty(),
        "node B never saw the database go away"
    );
    for (tenant, id) in on_a.acknowledged.iter().chain(&on_b.acknowledged) {
        assert_eq!(
            b.content(tenant, id).await,
            "\"acked\"",
            "an acknowledged save was lost"
        );
    }
    b.terminate().await;
}

/// `flow-store backup` from a running store on PostgreSQL (its snapshot is
/// a REPEATABLE READ transaction) verifies, and restores into a fresh sled
/// store and into an empty PostgreSQL database, each then serving every
/// state byte for byte; writes after the backup are not in it. A restore
/// into a database that holds states, or of a damaged file, writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_restores_into_sled_and_into_an_empty_postgres_database() {
    let Some(cluster) = PgServer::shared() else {
        return;
    };
    let database = cluster.create_database().await;
    let d = Deployment::new();
    d.configure(|c| cluster.configure(c, &database, d.dir.path()));
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let tenant = uuid();
    let ids: Vec<String> = (0..700).map(|_| uuid()).collect();
    let content = |i: usize| format!("{{\"n\":{i},\"text\":\"\u{e9} \\\"q\\\"\"}}");
    for (i, id) in ids.iter().enumerate() {
        run.save_ok(&tenant, id, &content(i), "2024-01-01T00:00:00Z")
            .await;
    }
    let file = d.dir.path().join("postgres.backup");
    let backup = d.cli(&["backup", "--output", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(backup.status.success(), "{stderr}");
    let late = uuid();
    run.save_ok(
        &tenant,
        &late,
        "\"after the backup\"",
        "2024-01-01T00:00:00Z",
    )
    .await;
    let verify = run_bounded(tool_command(&["backup", "verify"]).arg(&file));
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}");
    assert!(stdout.contains("700 states"), "{stdout}");
    run.terminate().await;

    let restored = Deployment::with_keys(d.keys.clone());
    let restore = restored.cli(&["restore", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(restore.status.success(), "{stderr}");
    let run = restored
        .spawn()
        .unwrap_or_else(|f| panic!("restored store did not start: {f:?}"));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(run.content(&tenant, id).await, content(i), "state {i}");
    }
    run.expect_absent(&tenant, &late).await;
    run.terminate().await;

    // Into an empty PostgreSQL database; then again, refused.
    let empty = cluster.create_database().await;
    let on_pg = Deployment::with_keys(d.keys.clone());
    on_pg.configure(|c| cluster.configure(c, &empty, on_pg.dir.path()));
    let restore = on_pg.cli(&["restore", &file.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&restore.stdout);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert!(
        stdout.contains("restored 700 states into the PostgreSQL"),
        "{stdout}"
    );
    let again = on_pg.cli(&["restore", &file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("already holds 700 states"), "{stderr}");
    let run = on_pg
        .spawn()
        .unwrap_or_else(|f| panic!("store on the restored database did not start: {f:?}"));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(run.content(&tenant, id).await, content(i), "state {i}");
    }
    run.expect_absent(&tenant, &late).await;
    run.terminate().await;

    // A damaged file into an empty database: refused before any write.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let damaged = d.dir.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes).unwrap();
    let untouched = cluster.create_database().await;
    let on_pg = Deployment::with_keys(d.keys.clone());
    on_pg.configure(|c| cluster.configure(c, &untouched, on_pg.dir.path()));
    let restore = on_pg.cli(&["restore", &damaged.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert!(!restore.status.success(), "a damaged backup was restored");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    let options = cluster.options(&untouched, on_pg.dir.path());
    let store = PostgresStore::open(&options).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().states,
        0,
        "the damaged restore wrote states"
    );
}
