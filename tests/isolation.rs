//! Tenant isolation: a state is identified by (tenant, id). Two tenants
//! with the same state id never see, overwrite or delete each other's
//! state — the weakness of the Java reference store that this one must not
//! repeat.

use crate::common::{start_or_skip, uuid, Setup};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_in_two_tenants_are_two_states() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t1, t2, id) = (uuid(), uuid(), uuid());
    server
        .save_ok(&t1, &id, "\"one\"", "2024-01-01T00:00:00Z")
        .await;
    // Not visible to the other tenant.
    server.expect_absent(&t2, &id).await;
    // The other tenant saves the same id, with an OLDER updatedAt: it is
    // its own state, so it is stored, and tenant 1's is untouched.
    server
        .save_ok(&t2, &id, "\"two\"", "2020-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t1, &id).await, "\"one\"");
    assert_eq!(server.content(&t2, &id).await, "\"two\"");
    // A newer save in tenant 2 does not touch tenant 1.
    server
        .save_ok(&t2, &id, "\"two-b\"", "2030-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t1, &id).await, "\"one\"");
    // Deleting in tenant 1 leaves tenant 2.
    server.delete(&t1, &[&id]).await.expect_status(204);
    server.expect_absent(&t1, &id).await;
    assert_eq!(server.content(&t2, &id).await, "\"two-b\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_tenant_cannot_be_saved_under_another() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t1, t2, id) = (uuid(), uuid(), uuid());
    server
        .save_ok(&t2, &id, "\"victim\"", "2024-01-01T00:00:00Z")
        .await;
    // Tenant 1's URL and signature, a token claiming tenant 2.
    let token = server.token(&server.claims(&t2, &id, "\"attacker\"", "2030-01-01T00:00:00Z"));
    let resp = server.save(&t1, &[token]).await;
    resp.expect_error(400);
    // Tenant claim 1 but audience 2, and the reverse.
    let mut c = server.claims(&t1, &id, "\"attacker\"", "2030-01-01T00:00:00Z");
    c["aud"] = json!(t2);
    server
        .save(&t1, &[server.token(&c)])
        .await
        .expect_error(400);
    let mut c = server.claims(&t1, &id, "\"attacker\"", "2030-01-01T00:00:00Z");
    c["tenant"] = json!(t2);
    server
        .save(&t1, &[server.token(&c)])
        .await
        .expect_error(400);
    assert_eq!(server.content(&t2, &id).await, "\"victim\"");
    server.expect_absent(&t1, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_one_id() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let id = uuid();
    let tenants: Vec<String> = (0..5).map(|_| uuid()).collect();
    for (i, t) in tenants.iter().enumerate() {
        server
            .save_ok(t, &id, &format!("{i}"), "2024-01-01T00:00:00Z")
            .await;
    }
    server.delete(&tenants[2], &[&id]).await.expect_status(204);
    for (i, t) in tenants.iter().enumerate() {
        if i == 2 {
            server.expect_absent(t, &id).await;
        } else {
            assert_eq!(server.content(t, &id).await, format!("{i}"));
        }
    }
}
