//! `GET {base}/states/{tenant}/{id}`: 404 for unknown states, and the reply
//! token exactly as the contract's load section gives it (checked by
//! `Platform::open_response`: ECDH-ES+A192KW / A192CBC-HS384 / cty JWT /
//! zip DEF or none / kid = platform kid; inner ES384, kid = receiver kid,
//! iss tenant, aud manywho, sub id, iat now, nbf now-120, exp now+600,
//! jti). Small and compressible replies are deflated, large incompressible
//! ones are not.

use crate::common::{start_or_skip, uuid, Setup, StoreKeys};
use fault_tests::harness::Rng;
use serde_json::Value;

const CONTENT: &str = r#"{"hello":"wörld"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_state_is_404() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    let resp = server.load(&t, &id).await;
    resp.expect_error(404);
    assert!(resp.json().get("token").is_none());
    // Also a known tenant with another id.
    server
        .save_ok(&t, &uuid(), CONTENT, "2024-01-01T00:00:00Z")
        .await;
    server.load(&t, &id).await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_token_is_built_as_the_contract_says() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    let resp = server.load(&t, &id).await;
    resp.expect_status(200);
    let body = resp.json();
    let obj = body.as_object().expect("object body");
    assert!(
        obj.get("token").and_then(Value::as_str).is_some(),
        "body: {body}"
    );
    let loaded = server.load_ok(&t, &id).await;
    assert_eq!(loaded.content, CONTENT);
    assert_eq!(loaded.claims["iat"], server.now());
    assert_eq!(loaded.claims["nbf"], server.now() - 120);
    assert_eq!(loaded.claims["exp"], server.now() + 600);
    assert!(
        loaded.outer_header.get("epk").is_some(),
        "ephemeral key in the header"
    );
    assert_eq!(
        loaded.outer_header["zip"], "DEF",
        "a small reply is deflated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_are_deflated_only_where_it_pays() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    // Random base64, as a file or ciphertext inside a state is.
    let random = format!("\"{}\"", Rng::new(Rng::seed()).text(100_000));
    let json = format!(
        "[{}]",
        (0..2_000)
            .map(|i| format!(r#"{{"developerName":"field{i}","contentValue":"v{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (content, deflated) in [(random, false), (json, true)] {
        let id = uuid();
        server
            .save_ok(&t, &id, &content, "2024-01-01T00:00:00Z")
            .await;
        let loaded = server.load_ok(&t, &id).await;
        assert_eq!(loaded.content, content, "{} bytes", content.len());
        assert_eq!(
            loaded.outer_header.get("zip").is_some(),
            deflated,
            "{} bytes: {:?}",
            content.len(),
            loaded.outer_header
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_times_follow_the_store_clock() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    server.advance(12_345);
    let loaded = server.load_ok(&t, &id).await;
    assert_eq!(loaded.claims["iat"], crate::common::T0 + 12_345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jti_is_fresh_on_every_load() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    let a = server.load_ok(&t, &id).await;
    let b = server.load_ok(&t, &id).await;
    assert_ne!(a.jti, b.jti, "jti repeated across two loads");
    assert_eq!(a.content, b.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_id_headers_are_400_and_disclose_nothing() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    let path = server.state_path(&t, &id);
    for header in ["X-ManyWho-Platform-Key-ID", "X-ManyWho-Receiver-Key-ID"] {
        let resp = server
            .send(server.signed("GET", &path, &t).header(header, &uuid()))
            .await;
        assert_eq!(resp.status, 400, "unknown {header}: {}", resp.text());
        resp.expect_error(400).expect_no_echo(&[CONTENT]);
        assert!(resp.json().get("token").is_none());
    }
    // Keys the store holds, but in the other role: no token either.
    let keys = server.keys().clone();
    let swapped = server
        .signed("GET", &path, &t)
        .header("X-ManyWho-Platform-Key-ID", &keys.receiver_kid())
        .header("X-ManyWho-Receiver-Key-ID", &keys.platform_kid());
    let resp = server.send(swapped).await;
    assert!(
        resp.status == 400 || resp.status == 401,
        "swapped key ids: expected 400/401, got {} {}",
        resp.status,
        resp.text()
    );
    resp.expect_error(resp.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_several_stores() {
    let server = start_or_skip!(Setup {
        stores: vec![StoreKeys::generate(), StoreKeys::generate()],
        ..Setup::on(super::ENGINE)
    });
    let (a, b) = (&server.clients[0], &server.clients[1]);
    let (ta, tb, id) = (uuid(), uuid(), uuid());
    a.save_ok(&ta, &id, "\"store a\"", "2024-01-01T00:00:00Z")
        .await;
    b.save_ok(&tb, &id, "\"store b\"", "2024-01-01T00:00:00Z")
        .await;
    // Each reply is signed with that store's receiver key and encrypted to
    // its platform key (open_response checks both kids).
    assert_eq!(a.content(&ta, &id).await, "\"store a\"");
    assert_eq!(b.content(&tb, &id).await, "\"store b\"");
    // A token encrypted for store b's receiver key, signed by store a's
    // platform key: the inner kid names a platform key the store has, so it
    // opens and verifies.
    let mixed = b.platform.state_token(
        &b.claims(&tb, &uuid(), "{}", "2024-01-01T00:00:00Z"),
        &crate::common::TokenOpts {
            sign_with: Some(a.keys().platform.clone()),
            ..Default::default()
        },
    );
    let resp = b.save(&tb, &[mixed]).await;
    assert!(
        resp.status == 204 || resp.status == 401,
        "cross-store token: expected 204 or 401, got {} {}",
        resp.status,
        resp.text()
    );
}
