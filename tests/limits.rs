//! `server.max_body_bytes`: a larger body is 413 (before it is read whole),
//! whether its length is declared or chunked; a body of exactly the limit
//! is served; nothing of a refused request is stored.

use crate::common::{raw_head, save_body, uuid, RawConn, Server, Setup};
use serde_json::json;

const LIMIT: u64 = 4096;

async fn small_server() -> Option<Server> {
    Setup {
        max_body_bytes: Some(LIMIT),
        ..Setup::on(super::ENGINE)
    }
    .start_or_skip()
    .await
}

/// A valid save body for one state, padded with JSON whitespace to `len`.
fn padded_body(server: &Server, t: &str, id: &str, len: usize) -> Vec<u8> {
    let token = server.token(&server.claims(t, id, "\"padded\"", "2024-01-01T00:00:00Z"));
    let mut body = save_body(&[token]);
    assert!(body.len() <= len, "token alone is {} bytes", body.len());
    body.resize(len, b' ');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_of_exactly_the_limit_is_served() {
    let Some(server) = small_server().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    let body = padded_body(&server, &t, &id, LIMIT as usize);
    server.save_raw(&t, body).await.expect_status(204);
    assert_eq!(server.content(&t, &id).await, "\"padded\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_one_byte_over_the_limit_is_413_and_stores_nothing() {
    let Some(server) = small_server().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    let body = padded_body(&server, &t, &id, LIMIT as usize + 1);
    let (status, resp) = send_raw(&server, "POST", &t, &body).await;
    expect_413(status, &resp);
    server.expect_absent(&t, &id).await;
}

/// Send a whole request with a declared length over a raw connection,
/// tolerating the store closing before the body is all written (it may
/// answer as soon as the limit is crossed), then read its answer.
///
/// Not through hyper's client: that one reports "error writing a body" and
/// drops the early 413 when the store stops reading.
async fn send_raw(server: &Server, method: &str, tenant: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let path = server.states_path(tenant);
    let mut headers = server.signed(method, &path, tenant).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("content-length".into(), body.len().to_string()));
    let mut conn = RawConn::open(&server.http).await;
    conn.write(&raw_head(method, &path, &headers)).await;
    let _ = conn.try_write(body).await;
    conn.read_response().await
}

fn expect_413(status: u16, body: &[u8]) {
    assert_eq!(status, 413, "body: {}", String::from_utf8_lossy(body));
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON error body");
    assert_eq!(v["status"], 413, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn much_larger_bodies_are_413_on_save_and_delete() {
    let Some(server) = small_server().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    let body = padded_body(&server, &t, &id, 64 * 1024);
    let (status, resp) = send_raw(&server, "POST", &t, &body).await;
    expect_413(status, &resp);
    server.expect_absent(&t, &id).await;

    server
        .save_ok(&t, &id, "\"keep\"", "2024-01-01T00:00:00Z")
        .await;
    let mut ids = vec![id.clone()];
    ids.extend((0..2000).map(|_| uuid()));
    let body = json!(ids).to_string().into_bytes();
    assert!(body.len() as u64 > LIMIT);
    let (status, resp) = send_raw(&server, "DELETE", &t, &body).await;
    expect_413(status, &resp);
    assert_eq!(server.content(&t, &id).await, "\"keep\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_huge_length_is_refused_without_reading_the_body() {
    let Some(server) = small_server().await else {
        return;
    };
    let t = uuid();
    let path = server.states_path(&t);
    let mut headers = server.signed("POST", &path, &t).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("content-length".into(), (1u64 << 30).to_string()));
    let mut conn = RawConn::open(&server.http).await;
    // Only the head is sent: a store that waited for 1 GiB would time out.
    conn.write(&raw_head("POST", &path, &headers)).await;
    conn.write(b"[{\"token\": \"").await;
    let (status, body) = conn.read_response().await;
    assert_eq!(status, 413, "body: {}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_413() {
    let Some(server) = small_server().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    let path = server.states_path(&t);
    let body = padded_body(&server, &t, &id, 3 * LIMIT as usize);
    let mut headers = server.signed("POST", &path, &t).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("transfer-encoding".into(), "chunked".into()));
    let mut conn = RawConn::open(&server.http).await;
    conn.write(&raw_head("POST", &path, &headers)).await;
    for chunk in body.chunks(1024) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if !conn.try_write(&framed).await {
            break; // the store answered and closed early: fine
        }
    }
    let _ = conn.try_write(b"0\r\n\r\n").await;
    let (status, body) = conn.read_response().await;
    assert_eq!(status, 413, "body: {}", String::from_utf8_lossy(&body));
    server.expect_absent(&t, &id).await;
}
