//! `DELETE {base}/states/{tenant}`: removes each (tenant, id), ignores ids
//! that do not exist, 204; malformed bodies 400.

use crate::common::{start_or_skip, uuid, Setup};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_only_the_named_states() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let (a, b, c) = (uuid(), uuid(), uuid());
    for id in [&a, &b, &c] {
        server
            .save_ok(&t, id, &format!("\"{id}\""), "2024-01-01T00:00:00Z")
            .await;
    }
    server.delete(&t, &[&a, &c]).await.expect_status(204);
    server.expect_absent(&t, &a).await;
    server.expect_absent(&t, &c).await;
    assert_eq!(server.content(&t, &b).await, format!("\"{b}\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_ignored() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let known = uuid();
    server
        .save_ok(&t, &known, "\"k\"", "2024-01-01T00:00:00Z")
        .await;
    // Only unknown ids, in a tenant with states and in one without.
    server
        .delete(&t, &[&uuid(), &uuid()])
        .await
        .expect_status(204);
    server.delete(&uuid(), &[&uuid()]).await.expect_status(204);
    // Mixed known and unknown.
    server
        .delete(&t, &[&uuid(), &known, &uuid()])
        .await
        .expect_status(204);
    server.expect_absent(&t, &known).await;
    // Deleting again is still fine.
    server.delete(&t, &[&known]).await.expect_status(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_state_can_be_saved_again_with_any_updated_at() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, "\"newer\"", "2025-01-01T00:00:00Z")
        .await;
    server.delete(&t, &[&id]).await.expect_status(204);
    server
        .save_ok(&t, &id, "\"older\"", "2020-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t, &id).await, "\"older\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_delete_bodies_are_400() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, "\"keep\"", "2024-01-01T00:00:00Z")
        .await;
    let path = server.states_path(&t);
    for (name, body) in [
        ("empty body", String::new()),
        ("not JSON", "nope".to_string()),
        ("an object", json!({ "ids": [id] }).to_string()),
        ("a bare string", json!(id).to_string()),
        ("numbers", "[1, 2]".to_string()),
        ("null item", "[null]".to_string()),
        ("object items", json!([{ "id": id }]).to_string()),
        ("truncated", format!("[\"{id}\"")),
    ] {
        let req = server
            .signed("DELETE", &path, &t)
            .header("content-type", "application/json")
            .body(body);
        let resp = server.send(req).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        resp.expect_error(400);
    }
    assert_eq!(server.content(&t, &id).await, "\"keep\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_uuid_ids_never_delete_anything_else() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, "\"keep\"", "2024-01-01T00:00:00Z")
        .await;
    for junk in ["", "*", "%", &id.to_uppercase()[..8], "../x"] {
        let resp = server.delete(&t, &[junk]).await;
        assert!(
            resp.status == 204 || resp.status == 400,
            "id {junk:?}: expected 204 or 400, got {} {}",
            resp.status,
            resp.text()
        );
    }
    assert_eq!(server.content(&t, &id).await, "\"keep\"");
}
