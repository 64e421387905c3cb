//! `GET {base}/health`: open to anyone, JSON, over HTTP/1.1 and HTTP/2.

use crate::common::{start_or_skip, Engine, Req, Setup, BASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_200_json_without_any_auth() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let resp = server.health().await;
    resp.expect_status(200);
    assert!(
        resp.content_type().starts_with("application/json"),
        "health content-type {:?}",
        resp.content_type()
    );
    assert!(
        resp.json().is_object(),
        "health body is a JSON object: {}",
        resp.text()
    );
    // The engine under test is the one serving.
    let engine = match super::ENGINE {
        Engine::Sled => "sled",
        Engine::Postgres => "postgres",
    };
    assert_eq!(resp.json()["engine"], engine, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ignores_garbage_auth_headers() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let req = Req::new("GET", &format!("{BASE}/health"))
        .header("X-ManyWho-Signature", "not-a-jws")
        .header("X-ManyWho-Platform-Key-ID", "")
        .header("Authorization", "Basic Zm9vOmJhcg==");
    server.send(req).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_open_when_basic_auth_is_configured() {
    let server = start_or_skip!(Setup {
        basic: Some(("flow".into(), "s3cret-pass".into())),
        ..Setup::on(super::ENGINE)
    });
    server.health().await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_over_http2_by_alpn() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let resp = server
        .http
        .send_h2(Req::new("GET", &format!("{BASE}/health")))
        .await;
    resp.expect_status(200);
    assert!(resp.json().is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_load_over_http2() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (crate::common::uuid(), crate::common::uuid());
    let token = server.token(&server.claims(&t, &id, r#"{"h2":true}"#, "2024-01-01T00:00:00Z"));
    let req = server
        .signed("POST", &server.states_path(&t), &t)
        .header("content-type", "application/json")
        .body(crate::common::save_body(&[token]));
    server.http.send_h2(req).await.expect_status(204);
    let path = server.state_path(&t, &id);
    let resp = server.http.send_h2(server.signed("GET", &path, &t)).await;
    resp.expect_status(200);
    let token = resp.json()["token"].as_str().unwrap().to_string();
    let loaded = server
        .platform
        .open_response(&token, &t, &id, server.now(), 0);
    assert_eq!(loaded.content, r#"{"h2":true}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_wrong_method_is_405() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    for m in ["POST", "PUT", "DELETE"] {
        server
            .send(Req::new(m, &format!("{BASE}/health")))
            .await
            .expect_error(405);
    }
}
