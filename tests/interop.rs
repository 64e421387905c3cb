//! Interoperability: `../shared/vectors/interop.json` holds keys and tokens
//! made by another JOSE implementation (jwcrypto) acting as the platform.
//! Every case is checked against the real server "as of" the file's `now`
//! (a ManualClock), with the vector's keys as the store's keys.

use std::path::PathBuf;

use crate::common::{state_claims, uuid, Platform, Server, Setup, StoreKeys, TokenOpts};
use josekit::jwe::{self, JweContext};
use josekit::jwk::Jwk;
use josekit::jws;
use serde_json::Value;

fn vectors() -> Option<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/interop.json");
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("interop.json is JSON")),
        Err(e) => {
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! INTEROP VECTORS NOT FOUND at {}: {e}", path.display());
            eprintln!("!!! The interoperability test is SKIPPED: nothing was proven here.");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!();
            None
        }
    }
}

fn jwk(v: &Value) -> Jwk {
    Jwk::from_bytes(v.to_string().as_bytes()).expect("vector JWK")
}

struct Vectors {
    now: i64,
    base: String,
    keys: StoreKeys,
    platform_public: Jwk,
    receiver_private: Jwk,
    tenant: String,
    state_id: String,
    cases: Vec<Value>,
}

fn load() -> Option<Vectors> {
    let v = vectors()?;
    let keys = StoreKeys {
        platform: jwk(&v["platform_key_private"]),
        receiver: jwk(&v["receiver_key_private"]),
    };
    Some(Vectors {
        now: v["now"].as_i64().expect("now"),
        base: v["base_path"].as_str().expect("base_path").to_string(),
        platform_public: jwk(&v["platform_key_public"]),
        receiver_private: jwk(&v["receiver_key_private"]),
        keys,
        tenant: v["tenant"].as_str().expect("tenant").to_string(),
        state_id: v["state_id"].as_str().expect("state_id").to_string(),
        cases: v["cases"].as_array().expect("cases").clone(),
    })
}

/// A fresh server for one case: the vector's clock and keys (the store gets
/// the public platform key and the private receiver key, as in production).
async fn server_for(v: &Vectors) -> Option<Server> {
    assert_eq!(v.base, crate::common::BASE, "vectors use another base path");
    let server = Setup {
        now: v.now,
        stores: vec![v.keys.clone()],
        ..Setup::on(super::ENGINE)
    }
    .start_or_skip()
    .await?;
    // The store must be configured from the *public* platform JWK of the
    // file, not one derived here: check they agree.
    assert_eq!(
        v.keys.platform_public().as_ref(),
        v.platform_public.as_ref(),
        "platform_key_public is the public half of platform_key_private"
    );
    Some(server)
}

fn expected_status(case: &Value) -> Option<u16> {
    match case["expect"].as_str().expect("expect") {
        "ok" => None,
        s => Some(s.parse().expect("expect is ok or a status")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_signature_vectors() {
    let Some(v) = load() else { return };
    let mut checked = 0;
    for case in v.cases.iter().filter(|c| c["kind"] == "request_signature") {
        let name = case["name"].as_str().unwrap();
        let tenant = case["tenant"].as_str().unwrap();
        let path = case["path"].as_str().unwrap();
        let sig = case["signature"].as_str().unwrap();
        let Some(server) = server_for(&v).await else {
            return;
        };
        let is_post = path
            .trim_end_matches('/')
            .ends_with(&format!("/states/{tenant}"));
        let resp = if is_post {
            let claims = state_claims(
                tenant,
                &v.state_id,
                "{\"interop\":true}",
                "2024-01-01T00:00:00Z",
                v.now,
            );
            let token = server.token(&claims);
            let req = server
                .with_sig("POST", path, sig)
                .header("content-type", "application/json")
                .body(crate::common::save_body(&[token]));
            server.send(req).await
        } else {
            server.send(server.with_sig("GET", path, sig)).await
        };
        match expected_status(case) {
            None => {
                let want = if is_post { 204 } else { 404 };
                assert_eq!(
                    resp.status,
                    want,
                    "case {name:?}: accepted signature should give {want}, got {} {}",
                    resp.status,
                    resp.text()
                );
            }
            Some(status) => {
                assert_eq!(
                    resp.status,
                    status,
                    "case {name:?}: expected {status}, got {} {}",
                    resp.status,
                    resp.text()
                );
                resp.expect_error(status);
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no request_signature cases in the vectors");
    eprintln!("checked {checked} request_signature vectors");
}

/// Open a vector token with the store's keys, here in the test, to check
/// that the file and this harness agree before blaming the server.
fn open_vector_token(v: &Vectors, token: &str) -> Value {
    let header = crate::common::compact_header(token);
    let decrypter: Box<dyn jwe::JweDecrypter> = match header["alg"].as_str().unwrap() {
        "ECDH-ES+A192KW" => Box::new(
            jwe::ECDH_ES_A192KW
                .decrypter_from_jwk(&v.receiver_private)
                .unwrap(),
        ),
        "ECDH-ES+A256KW" => Box::new(
            jwe::ECDH_ES_A256KW
                .decrypter_from_jwk(&v.receiver_private)
                .unwrap(),
        ),
        other => panic!("vector alg {other}"),
    };
    let (inner, _) = JweContext::new()
        .deserialize_compact(token, &*decrypter)
        .expect("ok vector decrypts with the receiver key");
    let verifier = jws::ES384.verifier_from_jwk(&v.platform_public).unwrap();
    let (payload, _) = jws::deserialize_compact(&inner, &verifier).expect("ok vector verifies");
    serde_json::from_slice(&payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_token_vectors() {
    let Some(v) = load() else { return };
    let mut checked = 0;
    for case in v.cases.iter().filter(|c| c["kind"] == "state_token") {
        let name = case["name"].as_str().unwrap();
        let tenant = case["tenant"].as_str().unwrap();
        let token = case["token"].as_str().unwrap().to_string();
        let Some(server) = server_for(&v).await else {
            return;
        };
        let resp = server.save(tenant, std::slice::from_ref(&token)).await;
        match expected_status(case) {
            None => {
                let claims = &case["claims"];
                assert_eq!(
                    &open_vector_token(&v, &token),
                    claims,
                    "case {name:?}: vector claims"
                );
                assert_eq!(resp.status, 204, "case {name:?}: {}", resp.text());
                let id = claims["id"].as_str().unwrap();
                let loaded = server.load_ok(tenant, id).await;
                assert_eq!(
                    loaded.content.as_bytes(),
                    claims["content"].as_str().unwrap().as_bytes(),
                    "case {name:?}: content"
                );
            }
            Some(status) => {
                assert_eq!(
                    resp.status,
                    status,
                    "case {name:?}: expected {status}, got {} {}",
                    resp.status,
                    resp.text()
                );
                resp.expect_error(status);
                server.expect_absent(tenant, &v.state_id).await;
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no state_token cases in the vectors");
    eprintln!("checked {checked} state_token vectors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_harness_speaks_to_a_store_holding_the_vector_keys() {
    // Tokens built here with the vector's keys round-trip too: the keys
    // from the file work in both directions.
    let Some(v) = load() else { return };
    let Some(server) = server_for(&v).await else {
        return;
    };
    let id = uuid();
    let claims = state_claims(
        &v.tenant,
        &id,
        "{\"from\":\"harness\"}",
        "2024-01-01T00:00:00Z",
        v.now,
    );
    let token = Platform::new(v.keys.clone()).state_token(
        &claims,
        &TokenOpts {
            zip: true,
            ..TokenOpts::default()
        },
    );
    server.save(&v.tenant, &[token]).await.expect_status(204);
    assert_eq!(
        server.content(&v.tenant, &id).await,
        "{\"from\":\"harness\"}"
    );
}
