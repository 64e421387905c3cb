//! Lifecycle of the real binary (the in-process restart tests are in
//! `restart.rs`, run on each engine): "204 means durable" (SIGKILL right after a 204), graceful shutdown that
//! completes an in-flight request and exits 0 on SIGTERM, and refusing to
//! start when the port is taken, the certificate or key is unreadable or
//! mismatched, or the database is locked by another flow-store; and the
//! async runtime it picks for the CPUs it may use (one thread on one CPU).

use std::time::Duration;

use crate::common::{raw_head, save_body, uuid, Deployment, RawConn, TestCert};

// -------------------------------------------------------------------- binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_exits_0_on_sigterm() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    run.health().await.expect_status(200);
    let (t, id) = (uuid(), uuid());
    run.save_ok(&t, &id, "\"from the binary\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(run.content(&t, &id).await, "\"from the binary\"");
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keeps_states_across_restarts() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let (t, id) = (uuid(), uuid());
    run.save_ok(&t, &id, "\"v1\"", "2024-01-01T00:00:00Z").await;
    run.terminate().await;
    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart: {f:?}"));
    assert_eq!(run.content(&t, &id).await, "\"v1\"");
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_is_durable_even_if_the_process_is_killed() {
    let d = Deployment::new();
    let t = uuid();
    let (a, b, c) = (uuid(), uuid(), uuid());

    // A delete is the last thing before SIGKILL (no graceful flush).
    let mut run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    run.save_ok(&t, &a, "\"a\"", "2024-01-01T00:00:00Z").await;
    run.save_ok(&t, &b, "\"b\"", "2024-01-01T00:00:00Z").await;
    run.delete(&t, &[&b]).await.expect_status(204);
    kill(&mut run).await;

    // A save is the last thing before SIGKILL.
    let mut run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart after SIGKILL: {f:?}"));
    assert_eq!(run.content(&t, &a).await, "\"a\"");
    run.expect_absent(&t, &b).await;
    run.save_ok(&t, &c, "\"c\"", "2024-01-01T00:00:00Z").await;
    kill(&mut run).await;

    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart after SIGKILL: {f:?}"));
    assert_eq!(run.content(&t, &c).await, "\"c\"");
    assert_eq!(run.content(&t, &a).await, "\"a\"");
    run.terminate().await;
}

/// With one CPU the binary runs tokio's current-thread runtime
/// (`server::runtime`), and with more a worker per CPU: concurrent clients
/// save, load and delete through that one thread (the writer thread and
/// the blocking pool beside it), it drains and exits 0 on SIGTERM, and
/// what it acknowledged is there after a restart on every CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_on_one_cpu_runs_one_thread_and_serves_concurrent_clients() {
    let d = Deployment::new();
    let run = d
        .spawn_on_one_cpu()
        .unwrap_or_else(|f| panic!("did not start on one CPU: {f:?}"));
    let log = run.stderr_text();
    assert!(
        log.contains("async runtime: one thread (1 CPU available)"),
        "pinned to one CPU, the binary must say it runs one thread; log:\n{log}"
    );
    let run = std::sync::Arc::new(run);
    let t = uuid();
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..16 {
        let (run, t) = (std::sync::Arc::clone(&run), t.clone());
        clients.spawn(async move {
            let (gone, kept) = (uuid(), uuid());
            let content = format!("\"client {n}\"");
            run.save_ok(&t, &gone, &content, "2024-01-01T00:00:00Z")
                .await;
            run.save_ok(&t, &kept, &content, "2024-01-01T00:00:00Z")
                .await;
            assert_eq!(run.content(&t, &gone).await, content);
            run.delete(&t, &[&gone]).await.expect_status(204);
            run.expect_absent(&t, &gone).await;
            (kept, content)
        });
    }
    let kept = clients.join_all().await;
    run.health().await.expect_status(200);
    let run = std::sync::Arc::into_inner(run).expect("every client is done");
    run.terminate().await;

    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart: {f:?}"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = match cpus {
        1 => "async runtime: one thread (1 CPU available)".to_string(),
        n => format!("async runtime: {n} worker threads ({n} CPUs available)"),
    };
    let log = run.stderr_text();
    assert!(
        log.contains(&expected),
        "expected {expected:?}; log:\n{log}"
    );
    for (id, content) in &kept {
        assert_eq!(&run.content(&t, id).await, content);
    }
    run.terminate().await;
}

/// `TOKIO_WORKER_THREADS` sets the worker count, as tokio's default did,
/// and the log says so; a value that is no count stops the start with a
/// message naming the variable (tokio itself would panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_takes_its_worker_count_from_tokio_worker_threads() {
    let d = Deployment::new();
    let run = d
        .spawn_with_env(&[("TOKIO_WORKER_THREADS", "3")])
        .unwrap_or_else(|f| panic!("did not start with 3 workers: {f:?}"));
    let log = run.stderr_text();
    assert!(
        log.contains("async runtime: 3 worker threads (TOKIO_WORKER_THREADS)"),
        "log:\n{log}"
    );
    let (t, id) = (uuid(), uuid());
    run.save_ok(&t, &id, "\"three workers\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(run.content(&t, &id).await, "\"three workers\"");
    run.terminate().await;

    let refused = match d.spawn_with_env(&[("TOKIO_WORKER_THREADS", "zero")]) {
        Ok(_) => panic!("TOKIO_WORKER_THREADS=zero must stop the start"),
        Err(failed) => failed,
    };
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("TOKIO_WORKER_THREADS=\"zero\" is not a number of worker threads"),
        "{}",
        refused.stderr
    );
}

async fn kill(run: &mut crate::common::Running) {
    run.signal("KILL");
    run.wait_exit(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sigterm_completes_an_in_flight_request() {
    let d = Deployment::new();
    let mut run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let (t, id) = (uuid(), uuid());
    let token = run.token(&run.claims(&t, &id, "\"in flight\"", "2024-01-01T00:00:00Z"));
    let body = save_body(&[token]);
    let path = run.states_path(&t);
    let mut headers = run.signed("POST", &path, &t).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("content-length".into(), body.len().to_string()));
    let mut conn = RawConn::open(&run.http).await;
    conn.write(&raw_head("POST", &path, &headers)).await;
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write(first).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        run.is_running(),
        "exited with a request in flight; stderr:\n{}",
        run.stderr_text()
    );
    conn.write(rest).await;
    let (status, resp) = conn.read_response().await;
    assert_eq!(
        status,
        204,
        "in-flight save: {}",
        String::from_utf8_lossy(&resp)
    );
    let status = run.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", run.stderr_text());
    drop(run);
    let run = d
        .spawn()
        .unwrap_or_else(|f| panic!("did not restart: {f:?}"));
    assert_eq!(run.content(&t, &id).await, "\"in flight\"");
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_a_port_that_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let d = Deployment::new();
    d.configure(|c| c.server.listen = addr.to_string());
    let failed = match d.spawn() {
        Ok(run) => panic!("started on a taken port; stderr:\n{}", run.stderr_text()),
        Err(f) => f,
    };
    assert!(!failed.status.success(), "exit status {}", failed.status);
    assert!(!failed.stderr.trim().is_empty(), "no message on stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_a_database_locked_by_another_flow_store() {
    let d = Deployment::new();
    let first = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    // Same config (same data dir), its own ephemeral port.
    let failed = match d.spawn() {
        Ok(run) => panic!(
            "second process opened a locked database; stderr:\n{}",
            run.stderr_text()
        ),
        Err(f) => f,
    };
    assert!(!failed.status.success());
    assert!(!failed.stderr.trim().is_empty(), "no message on stderr");
    // The first one is unharmed.
    first.health().await.expect_status(200);
    first.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_unreadable_or_mismatched_tls_files() {
    let d = Deployment::new();
    let tls = d.dir.path().join("tls");
    let good_key = std::fs::read(tls.join("key.pem")).unwrap();

    // Key of another certificate.
    let other = TestCert::generate();
    std::fs::write(tls.join("key.pem"), &other.key_pem).unwrap();
    expect_refusal(&d, "mismatched certificate and key");

    // Missing key file.
    std::fs::remove_file(tls.join("key.pem")).unwrap();
    expect_refusal(&d, "missing key file");

    // Key file that is not PEM.
    std::fs::write(tls.join("key.pem"), b"not a key").unwrap();
    expect_refusal(&d, "garbage key file");

    // Missing certificate.
    std::fs::write(tls.join("key.pem"), &good_key).unwrap();
    std::fs::remove_file(tls.join("cert.pem")).unwrap();
    expect_refusal(&d, "missing certificate");

    // Certificate file that is not PEM.
    std::fs::write(tls.join("cert.pem"), b"not a certificate").unwrap();
    expect_refusal(&d, "garbage certificate");
}

fn expect_refusal(d: &Deployment, what: &str) {
    match d.spawn() {
        Ok(run) => panic!("started with {what}; stderr:\n{}", run.stderr_text()),
        Err(f) => {
            assert!(!f.status.success(), "{what}: exit {}", f.status);
            assert!(!f.stderr.trim().is_empty(), "{what}: no message on stderr");
        }
    }
}
