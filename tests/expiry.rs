//! `expiresAt`: a state whose instant has passed answers 404; "" and null
//! mean never. Time moves with the server's ManualClock, not with sleeps.

use crate::common::{rfc3339, rfc3339_offset, start_or_skip, uuid, Server, Setup};
use serde_json::{json, Value};

async fn save_expiring(server: &Server, t: &str, id: &str, content: &str, expires_at: Value) {
    let mut c = server.claims(t, id, content, "2024-01-01T00:00:00Z");
    c["expiresAt"] = expires_at;
    server.save(t, &[server.token(&c)]).await.expect_status(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_answers_404_once_expires_at_has_passed() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_expiring(
        &server,
        &t,
        &id,
        "\"soon gone\"",
        json!(rfc3339(server.now() + 60)),
    )
    .await;
    assert_eq!(server.content(&t, &id).await, "\"soon gone\"");
    server.advance(59);
    assert_eq!(server.content(&t, &id).await, "\"soon gone\"");
    server.advance(2);
    server.expect_absent(&t, &id).await;
    server.advance(86_400);
    server.expect_absent(&t, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_compares_instants_across_offsets() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    // One hour ahead, written at +05:00 (sorts after any "Z" time of the
    // same day as a string), and at -09:00 (sorts before).
    let id2 = uuid();
    save_expiring(
        &server,
        &t,
        &id,
        "\"east\"",
        json!(rfc3339_offset(server.now() + 3600, 5)),
    )
    .await;
    save_expiring(
        &server,
        &t,
        &id2,
        "\"west\"",
        json!(rfc3339_offset(server.now() + 3600, -9)),
    )
    .await;
    server.advance(1800);
    assert_eq!(server.content(&t, &id).await, "\"east\"");
    assert_eq!(server.content(&t, &id2).await, "\"west\"");
    server.advance(1801);
    server.expect_absent(&t, &id).await;
    server.expect_absent(&t, &id2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_null_expires_at_means_never() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let (a, b) = (uuid(), uuid());
    save_expiring(&server, &t, &a, "\"empty\"", json!("")).await;
    save_expiring(&server, &t, &b, "\"null\"", Value::Null).await;
    server.advance(20 * 365 * 86_400);
    assert_eq!(server.content(&t, &a).await, "\"empty\"");
    assert_eq!(server.content(&t, &b).await, "\"null\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_state_can_be_saved_again() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_expiring(
        &server,
        &t,
        &id,
        "\"v1\"",
        json!(rfc3339(server.now() + 10)),
    )
    .await;
    server.advance(11);
    server.expect_absent(&t, &id).await;
    let mut c = server.claims(&t, &id, "\"v2\"", "2025-01-01T00:00:00Z");
    c["expiresAt"] = json!(rfc3339(server.now() + 3600));
    server
        .save(&t, &[server.token(&c)])
        .await
        .expect_status(204);
    assert_eq!(server.content(&t, &id).await, "\"v2\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_with_fractional_seconds() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    // Expires 0.5 s after now + 10: still there at +10, gone at +11.
    let at = format!(
        "{}.5000000Z",
        rfc3339(server.now() + 10).trim_end_matches('Z')
    );
    save_expiring(&server, &t, &id, "\"half\"", json!(at)).await;
    server.advance(10);
    assert_eq!(server.content(&t, &id).await, "\"half\"");
    server.advance(1);
    server.expect_absent(&t, &id).await;
}
