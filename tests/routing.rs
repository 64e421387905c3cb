//! Routing: unknown routes are 404, known routes with another method 405,
//! both with the contract's JSON error body and never a 500.

use crate::common::{start_or_skip, uuid, Req, Setup, BASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    for path in [
        "/".to_string(),
        "/nope".to_string(),
        BASE.to_string(),
        format!("{BASE}/"),
        format!("{BASE}/nope"),
        format!("{BASE}/states"),
        format!("{BASE}/states/{t}/{id}/extra"),
        format!("/api/storage/2/states/{t}/{id}"),
        "/api/storage/1x/health".to_string(),
    ] {
        let resp = server.send(Req::new("GET", &path)).await;
        assert_eq!(resp.status, 404, "GET {path}: {}", resp.text());
        resp.expect_error(404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_with_valid_auth_is_still_404() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let path = format!("{BASE}/tenants/{t}");
    server
        .send(server.signed("GET", &path, &t))
        .await
        .expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    let states = server.states_path(&t);
    let state = server.state_path(&t, &id);
    for (method, path) in [
        ("GET", &states),
        ("PUT", &states),
        ("PATCH", &states),
        ("POST", &state),
        ("PUT", &state),
        ("DELETE", &state),
        ("PATCH", &state),
    ] {
        let resp = server
            .send(server.signed(method, path, &t).body("[]"))
            .await;
        assert_eq!(resp.status, 405, "{method} {path}: {}", resp.text());
        resp.expect_error(405);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_uuid_tenant_or_id_is_rejected_not_served() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    for (tenant, path) in [
        ("not-a-uuid", format!("{BASE}/states/not-a-uuid/{}", uuid())),
        (t.as_str(), format!("{BASE}/states/{t}/not-a-uuid")),
        ("x", format!("{BASE}/states/x")),
    ] {
        let resp = server.send(server.signed("GET", &path, tenant)).await;
        assert!(
            resp.status == 400 || resp.status == 404 || resp.status == 405,
            "GET {path}: expected 400/404/405, got {} {}",
            resp.status,
            resp.text()
        );
        resp.expect_error(resp.status);
    }
}
