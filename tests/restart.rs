//! Restarts in-process, on each engine: states, deletions and `updatedAt`
//! survive a restart of the app, and a graceful shutdown completes the
//! request in flight before the database is closed.

use std::time::Duration;

use crate::common::{raw_head, save_body, start_or_skip, uuid, RawConn, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_survive_a_restart_of_the_app() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let keys = server.keys().clone();
    let (t, id, gone) = (uuid(), uuid(), uuid());
    server
        .save_ok(&t, &id, "\"persisted\"", "2024-01-01T00:00:00Z")
        .await;
    server
        .save_ok(&t, &gone, "\"deleted\"", "2024-01-01T00:00:00Z")
        .await;
    server.delete(&t, &[&gone]).await.expect_status(204);
    let dir = server.stop().await;

    let server = start_or_skip!(Setup {
        stores: vec![keys],
        dir: Some(dir),
        ..Setup::on(super::ENGINE)
    });
    assert_eq!(server.content(&t, &id).await, "\"persisted\"");
    server.expect_absent(&t, &gone).await;
    // updatedAt survives too: an older save is still ignored.
    server
        .save_ok(&t, &id, "\"older\"", "2023-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t, &id).await, "\"persisted\"");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_an_in_flight_request() {
    let mut server = start_or_skip!(Setup::on(super::ENGINE));
    let keys = server.keys().clone();
    let (t, id) = (uuid(), uuid());
    let token = server.token(&server.claims(&t, &id, "\"in flight\"", "2024-01-01T00:00:00Z"));
    let body = save_body(&[token]);
    let path = server.states_path(&t);
    let mut headers = server.signed("POST", &path, &t).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("content-length".into(), body.len().to_string()));

    let mut conn = RawConn::open(&server.http).await;
    conn.write(&raw_head("POST", &path, &headers)).await;
    let (first, rest) = body.split_at(body.len() / 2);
    conn.write(first).await;
    // Let the server take the request in hand before it is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.write(rest).await;
    let (status, resp) = conn.read_response().await;
    assert_eq!(
        status,
        204,
        "in-flight save: {}",
        String::from_utf8_lossy(&resp)
    );
    let dir = server.stop().await;

    let server = start_or_skip!(Setup {
        stores: vec![keys],
        dir: Some(dir),
        ..Setup::on(super::ENGINE)
    });
    assert_eq!(server.content(&t, &id).await, "\"in flight\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_promptly_when_idle() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    server.health().await.expect_status(200);
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
