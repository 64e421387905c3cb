//! Request authentication: the key-ID headers (400 when missing or empty),
//! the `X-ManyWho-Signature` JWS (401 for every failure the contract lists,
//! with nothing stored, returned or deleted), and optional Basic auth.

use crate::common::{
    p256_jwk, p384_jwk, start_or_skip, uuid, Platform, Req, Resp, Server, Setup, BASE,
};
use josekit::jws;
use serde_json::{json, Value};

const CONTENT: &str = r#"{"secret":"state content that must never leak"}"#;

/// A server with one stored state, and its tenant and id; `None` when the
/// engine cannot run here (skipped).
async fn server_with_state() -> Option<(Server, String, String)> {
    let server = crate::common::Setup::on(super::ENGINE)
        .start_or_skip()
        .await?;
    let (t, id) = (uuid(), uuid());
    server
        .save_ok(&t, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    Some((server, t, id))
}

async fn get_with(server: &Server, t: &str, id: &str, sig: &str) -> Resp {
    let path = server.state_path(t, id);
    server.send(server.with_sig("GET", &path, sig)).await
}

fn claims(server: &Server, t: &str, path: &str) -> Value {
    Platform::request_claims(t, path, server.now())
}

fn b64(v: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// Compact JWS with a hand-written header and any signature bytes.
fn hand_jws(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_empty_key_id_headers_are_400_on_every_endpoint() {
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    let other = uuid();
    let token = server.token(&server.claims(&t, &other, "{}", "2024-01-01T00:00:00Z"));
    let requests = [
        server.signed("GET", &server.state_path(&t, &id), &t),
        server
            .signed("POST", &server.states_path(&t), &t)
            .body(crate::common::save_body(&[token])),
        server
            .signed("DELETE", &server.states_path(&t), &t)
            .json(&json!([id])),
    ];
    for req in requests {
        for header in ["X-ManyWho-Platform-Key-ID", "X-ManyWho-Receiver-Key-ID"] {
            let missing = server.send(req.clone().without(header)).await;
            assert_eq!(
                missing.status,
                400,
                "{} without {header}: {}",
                req.method,
                missing.text()
            );
            missing.expect_error(400).expect_no_echo(&[CONTENT]);
            let empty = server.send(req.clone().header(header, "")).await;
            assert_eq!(
                empty.status,
                400,
                "{} with empty {header}: {}",
                req.method,
                empty.text()
            );
            empty.expect_error(400).expect_no_echo(&[CONTENT]);
        }
    }
    // Nothing was stored or deleted by any of those.
    server.expect_absent(&t, &other).await;
    assert_eq!(server.content(&t, &id).await, CONTENT);
}

/// Every way the contract lists for a request signature to be wrong.
fn bad_signatures(server: &Server, t: &str, id: &str) -> Vec<(String, String)> {
    let path = server.state_path(t, id);
    let pk = server.keys().platform_kid();
    let good = claims(server, t, &path);
    let now = server.now();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        server.platform.sign_claims(&c)
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        server.platform.sign_claims(&c)
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, sig: String| out.push((name.to_string(), sig));

    add("not a JWS", "not-a-jws".into());
    add("three empty segments", "..".into());
    add("JWE instead of JWS", server.token(&good));
    add(
        "alg none",
        hand_jws(&json!({"alg": "none", "kid": pk}), &good, b""),
    );
    add(
        "alg NONE with a signature part",
        hand_jws(&json!({"alg": "NONE", "kid": pk}), &good, b"x"),
    );
    let public_text = crate::common::jwk_json(&server.keys().platform_public());
    let hs = jws::HS384
        .signer_from_bytes(public_text.as_bytes())
        .unwrap();
    add(
        "HS384 keyed with the public JWK text",
        Platform::sign_with(&hs, "HS384", &pk, &good),
    );
    let hs256 = jws::HS256
        .signer_from_bytes(public_text.as_bytes())
        .unwrap();
    add(
        "HS256 keyed with the public JWK text",
        Platform::sign_with(&hs256, "HS256", &pk, &good),
    );
    let p256 = p256_jwk();
    let es256 = jws::ES256.signer_from_jwk(&p256).unwrap();
    add(
        "ES256 with platform kid",
        Platform::sign_with(&es256, "ES256", &pk, &good),
    );
    let rsa = jws::RS384
        .generate_key_pair(2048)
        .unwrap()
        .to_jwk_key_pair();
    let rs384 = jws::RS384.signer_from_jwk(&rsa).unwrap();
    add(
        "RS384 with platform kid",
        Platform::sign_with(&rs384, "RS384", &pk, &good),
    );
    let stranger = p384_jwk();
    add(
        "unknown kid",
        Platform::sign_es384(&stranger, stranger.key_id().unwrap(), &good),
    );
    add(
        "another key under the platform kid",
        Platform::sign_es384(&stranger, &pk, &good),
    );
    add(
        "receiver key (a key the store holds, but not a platform key)",
        Platform::sign_es384(
            &server.keys().receiver,
            &server.keys().receiver_kid(),
            &good,
        ),
    );
    let sig = server.platform.sign_claims(&good);
    add(
        "signature tampered",
        crate::common::tamper_last_segment(&sig),
    );
    let mut forged = good.clone();
    forged["exp"] = json!(now + 200);
    let parts: Vec<&str> = sig.split('.').collect();
    add(
        "payload swapped under a valid signature",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        ),
    );
    add("wrong issuer", with("iss", json!("someone-else")));
    add("no issuer", without("iss"));
    add("wrong audience", with("aud", json!(uuid())));
    add(
        "audience array without the tenant",
        with("aud", json!([uuid(), "manywho"])),
    );
    add("no audience", without("aud"));
    add("no subject", without("sub"));
    add("no exp", without("exp"));
    add("expired a second ago", with("exp", json!(now - 1)));
    add("expired an hour ago", with("exp", json!(now - 3600)));
    add("exp six minutes ahead", with("exp", json!(now + 360)));
    add("exp a day ahead", with("exp", json!(now + 86_400)));
    add("nbf two minutes ahead", with("nbf", json!(now + 120)));
    add(
        "path of another state",
        with("path", json!(server.state_path(t, &uuid()))),
    );
    add(
        "path of the tenant collection",
        with("path", json!(server.states_path(t))),
    );
    add(
        "path without base path",
        with("path", json!(format!("/states/{t}/{id}"))),
    );
    add(
        "path with a query",
        with("path", json!(format!("{path}?x=1"))),
    );
    add(
        "path with a trailing slash",
        with("path", json!(format!("{path}/"))),
    );
    add(
        "path in upper case",
        with("path", json!(path.to_uppercase())),
    );
    add("no path", without("path"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_signature_is_401_on_load_and_discloses_nothing() {
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    for (name, sig) in bad_signatures(&server, &t, &id) {
        let resp = get_with(&server, &t, &id, &sig).await;
        assert_eq!(
            resp.status,
            401,
            "{name}: expected 401, got {} {}",
            resp.status,
            resp.text()
        );
        resp.expect_error(401).expect_no_echo(&[CONTENT, &sig]);
        assert!(
            resp.json().get("token").is_none(),
            "{name}: a token was returned"
        );
    }
    let path = server.state_path(&t, &id);
    let resp = server
        .send(
            server
                .signed("GET", &path, &t)
                .without("X-ManyWho-Signature"),
        )
        .await;
    assert_eq!(resp.status, 401, "no signature header: {}", resp.text());
    resp.expect_error(401);
    // The state is still there and intact.
    assert_eq!(server.content(&t, &id).await, CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_on_save_stores_nothing() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    let token = server.token(&server.claims(&t, &id, CONTENT, "2024-01-01T00:00:00Z"));
    let path = server.states_path(&t);
    let good = claims(&server, &t, &path);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!(uuid());
    let mut expired = good.clone();
    expired["exp"] = json!(server.now() - 1);
    let stranger = p384_jwk();
    for (name, sig) in [
        ("wrong audience", server.platform.sign_claims(&wrong_aud)),
        ("expired", server.platform.sign_claims(&expired)),
        (
            "unknown key",
            Platform::sign_es384(&stranger, stranger.key_id().unwrap(), &good),
        ),
        (
            "signature for the load path",
            server
                .platform
                .request_signature(&t, &server.state_path(&t, &id), server.now()),
        ),
    ] {
        let req = server
            .with_sig("POST", &path, &sig)
            .header("content-type", "application/json")
            .body(crate::common::save_body(std::slice::from_ref(&token)));
        let resp = server.send(req).await;
        assert_eq!(resp.status, 401, "{name}: {}", resp.text());
        resp.expect_error(401).expect_no_echo(&[&token]);
    }
    let resp = server
        .send(
            server
                .signed("POST", &path, &t)
                .without("X-ManyWho-Signature")
                .body(crate::common::save_body(std::slice::from_ref(&token))),
        )
        .await;
    resp.expect_error(401);
    server.expect_absent(&t, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_on_delete_deletes_nothing() {
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    let path = server.states_path(&t);
    let mut c = claims(&server, &t, &path);
    c["iss"] = json!("not-manywho");
    let sig = server.platform.sign_claims(&c);
    let resp = server
        .send(server.with_sig("DELETE", &path, &sig).json(&json!([id])))
        .await;
    resp.expect_error(401);
    let resp = server
        .send(
            server
                .signed("DELETE", &path, &t)
                .without("X-ManyWho-Signature")
                .json(&json!([id])),
        )
        .await;
    resp.expect_error(401);
    assert_eq!(server.content(&t, &id).await, CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_variants_the_contract_allows() {
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    let path = server.state_path(&t, &id);
    let good = claims(&server, &t, &path);
    let now = server.now();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut c = good.clone();
    c["aud"] = json!(["manywho", t.clone()]);
    cases.push(("audience as an array containing the tenant", c));
    let mut c = good.clone();
    c["exp"] = json!(now + 300);
    cases.push(("exp exactly five minutes ahead", c));
    let mut c = good.clone();
    c["exp"] = json!(now + 1);
    cases.push(("exp a second ahead", c));
    let mut c = good.clone();
    for k in ["nbf", "iat", "jti"] {
        c.as_object_mut().unwrap().remove(k);
    }
    cases.push(("only iss, aud, sub, exp, path", c));
    let mut c = good.clone();
    c["sub"] = json!("anything");
    cases.push(("any subject", c));
    for (name, claims) in cases {
        let sig = server.platform.sign_claims(&claims);
        let resp = get_with(&server, &t, &id, &sig).await;
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_within_the_configured_clock_skew_is_accepted() {
    // Default clock_skew_seconds = 30: a platform clock 10 s ahead is fine,
    // two minutes ahead is not (checked in the 401 list).
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    let path = server.state_path(&t, &id);
    let mut c = claims(&server, &t, &path);
    c["nbf"] = json!(server.now() + 10);
    let sig = server.platform.sign_claims(&c);
    get_with(&server, &t, &id, &sig).await.expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_for_one_tenant_does_not_open_another() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t1, t2, id) = (uuid(), uuid(), uuid());
    server
        .save_ok(&t2, &id, CONTENT, "2024-01-01T00:00:00Z")
        .await;
    // Signed for t1's URL, sent to t2's URL.
    let sig = server
        .platform
        .request_signature(&t1, &server.state_path(&t1, &id), server.now());
    get_with(&server, &t2, &id, &sig).await.expect_error(401);
    // Right path, audience of the other tenant.
    let sig = server
        .platform
        .request_signature(&t1, &server.state_path(&t2, &id), server.now());
    get_with(&server, &t2, &id, &sig).await.expect_error(401);
}

async fn basic_server() -> Option<Server> {
    Setup {
        basic: Some(("flow-user".into(), "s3cret-pass".into())),
        ..Setup::on(super::ENGINE)
    }
    .start_or_skip()
    .await
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_when_configured_guards_every_endpoint() {
    let Some(server) = basic_server().await else {
        return;
    };
    let (t, id) = (uuid(), uuid());
    let token = server.token(&server.claims(&t, &id, CONTENT, "2024-01-01T00:00:00Z"));
    let save = server
        .signed("POST", &server.states_path(&t), &t)
        .header("content-type", "application/json")
        .body(crate::common::save_body(&[token]));
    let load = server.signed("GET", &server.state_path(&t, &id), &t);
    let delete = server
        .signed("DELETE", &server.states_path(&t), &t)
        .json(&json!([id]));

    let wrong: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("wrong password", Some(basic("flow-user", "wrong"))),
        ("wrong user", Some(basic("someone", "s3cret-pass"))),
        (
            "password with a trailing newline",
            Some(basic("flow-user", "s3cret-pass\n")),
        ),
        ("empty credentials", Some(basic("", ""))),
        ("not base64", Some("Basic !!!not-base64!!!".to_string())),
        (
            "bearer instead of basic",
            Some("Bearer s3cret-pass".to_string()),
        ),
    ];
    for req in [&save, &load, &delete] {
        for (name, value) in &wrong {
            let r = match value {
                None => req.clone().without("Authorization"),
                Some(v) => req.clone().header("Authorization", v),
            };
            let resp = server.send(r).await;
            assert_eq!(
                resp.status,
                401,
                "{} with {name}: {}",
                req.method,
                resp.text()
            );
            resp.expect_error(401);
        }
    }
    server.expect_absent(&t, &id).await;

    // The right credentials (sent by `signed`) work; the signature is still
    // required on top of them.
    server.send(save.clone()).await.expect_status(204);
    assert_eq!(server.content(&t, &id).await, CONTENT);
    server
        .send(load.clone().without("X-ManyWho-Signature"))
        .await
        .expect_error(401);
    server.send(delete).await.expect_status(204);
    server.expect_absent(&t, &id).await;
    // Health needs none of it.
    server
        .send(Req::new("GET", &format!("{BASE}/health")))
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_header_is_ignored_when_not_configured() {
    let Some((server, t, id)) = server_with_state().await else {
        return;
    };
    let load = server
        .signed("GET", &server.state_path(&t, &id), &t)
        .header("Authorization", &basic("who", "ever"));
    server.send(load).await.expect_status(200);
}
