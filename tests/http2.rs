//! HTTP/2 limits (issue 4, abusive clients): the server caps concurrent
//! streams per connection, and a client that opens and immediately resets
//! streams in a loop (the "rapid reset" attack) neither takes the server
//! down nor starves other clients. Uses the `h2` crate directly, because a
//! well-behaved client library will not misbehave on request.

use std::time::{Duration, Instant};

use crate::common::*;

async fn h2_client(
    server: &Server,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = server.http.connect(true).await;
    let (sender, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    (sender, driver)
}

fn health_request() -> http::Request<()> {
    http::Request::builder()
        .method("GET")
        .uri(format!("https://localhost{BASE}/health"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_capped_per_connection() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (mut sender, _driver) = h2_client(&server).await;
    // One full exchange, so the server's SETTINGS have been received.
    sender = sender.ready().await.expect("ready");
    let (response, _) = sender.send_request(health_request(), true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    assert_eq!(sender.current_max_send_streams(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_does_not_starve_other_clients() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (mut attacker, driver) = h2_client(&server).await;
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u32;
        while started.elapsed() < Duration::from_secs(5) && sent < 20_000 {
            attacker = match attacker.ready().await {
                Ok(ready) => ready,
                Err(_) => break, // the server closed the connection
            };
            match attacker.send_request(health_request(), true) {
                // Dropping the response future resets the stream at once.
                Ok((response, _)) => drop(response),
                Err(_) => break,
            }
            sent += 1;
        }
        sent
    });
    // Meanwhile a well-behaved client is served, promptly.
    let mut served = 0;
    let started = Instant::now();
    while !flood.is_finished() || served < 5 {
        let t = Instant::now();
        server.health().await.expect_status(200);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a good client waited {:?}",
            t.elapsed()
        );
        served += 1;
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let sent = flood.await.expect("flood task");
    eprintln!(
        "rapid reset: {sent} streams opened and reset; {served} good requests served meanwhile"
    );
    assert!(served >= 5);
    // The attacker's connection either survived or was closed by the server
    // (GOAWAY); the server itself keeps serving new connections.
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    let (mut fresh, _d) = h2_client(&server).await;
    fresh = fresh.ready().await.expect("ready");
    let (response, _) = fresh.send_request(health_request(), true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
}
