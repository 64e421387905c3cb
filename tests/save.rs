//! `POST {base}/states/{tenant}`: every token check of the contract (400
//! for malformed or undecryptable, 401 for signatures that do not verify),
//! all-or-nothing batches, last writer wins by `updatedAt` instant, and
//! content kept byte for byte.

use crate::common::{
    p256_jwk, p384_jwk, start_or_skip, uuid, Client, Platform, Server, Setup, TokenOpts,
};
use josekit::jws;
use serde_json::{json, Value};

const OLD: &str = "2024-01-01T00:00:00Z";

fn opts() -> TokenOpts {
    TokenOpts::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_state_loads_back() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    let content = r#"{"id":"x","values":[1,2,3]}"#;
    server.save_ok(&t, &id, content, OLD).await;
    let loaded = server.load_ok(&t, &id).await;
    assert_eq!(loaded.content, content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_three_is_stored_whole() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let ids: Vec<String> = (0..3).map(|_| uuid()).collect();
    let tokens: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| server.token(&server.claims(&t, id, &format!("{{\"n\":{i}}}"), OLD)))
        .collect();
    server.save(&t, &tokens).await.expect_status(204);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(server.content(&t, id).await, format!("{{\"n\":{i}}}"));
    }
}

/// Bad tokens of each class, for the state `id` of tenant `t`.
fn bad_tokens(server: &Client, t: &str, id: &str) -> Vec<(&'static str, u16, String)> {
    let c = server.claims(t, id, "{\"bad\":true}", OLD);
    let stranger = p384_jwk();
    vec![
        (
            "authentication tag tampered",
            400,
            crate::common::tamper_last_segment(&server.token(&c)),
        ),
        (
            "ciphertext tampered",
            400,
            crate::common::tamper_ciphertext(&server.token(&c)),
        ),
        (
            "encrypted to a key the store does not hold",
            400,
            server.token_with(
                &c,
                &TokenOpts {
                    encrypt_to: Some(crate::common::public_jwk(&stranger)),
                    kid: Some(stranger.key_id().unwrap().to_string()),
                    ..opts()
                },
            ),
        ),
        (
            "inner JWS signed by an unknown key",
            401,
            server.token_with(
                &c,
                &TokenOpts {
                    sign_with: Some(stranger.clone()),
                    ..opts()
                },
            ),
        ),
        ("tenant claim differs from the URL tenant", 400, {
            let mut c = c.clone();
            c["tenant"] = json!(uuid());
            server.token(&c)
        }),
        ("token expired", 400, {
            let mut c = c.clone();
            c["exp"] = json!(server.now() - 1);
            server.token(&c)
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_token_in_a_batch_of_three_stores_none() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let existing = uuid();
    server.save_ok(&t, &existing, "\"v1\"", OLD).await;
    for (position, (name, status, bad)) in bad_tokens(&server, &t, &uuid()).into_iter().enumerate()
    {
        let fresh = uuid();
        let update = server.token(&server.claims(&t, &existing, "\"v2\"", "2025-01-01T00:00:00Z"));
        let new = server.token(&server.claims(&t, &fresh, "\"new\"", OLD));
        let mut batch = vec![update, new];
        batch.insert(position % 3, bad.clone());
        let resp = server.save(&t, &batch).await;
        assert_eq!(
            resp.status,
            status,
            "{name} at {}: {}",
            position % 3,
            resp.text()
        );
        resp.expect_error(status);
        server.expect_absent(&t, &fresh).await;
        assert_eq!(
            server.content(&t, &existing).await,
            "\"v1\"",
            "{name}: the valid update in the failed batch was applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_token_alone_gets_its_status_and_stores_nothing() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let id = uuid();
    for (name, status, bad) in bad_tokens(&server, &t, &id) {
        let resp = server.save(&t, &[bad]).await;
        assert_eq!(resp.status, status, "{name}: {}", resp.text());
        resp.expect_error(status);
        server.expect_absent(&t, &id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let id = uuid();
    let token = server.token(&server.claims(&t, &id, "{}", OLD));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", b"".to_vec()),
        ("not JSON", b"this is not json".to_vec()),
        (
            "truncated JSON",
            format!("[{{\"token\": \"{token}\"").into_bytes(),
        ),
        (
            "an object, not an array",
            json!({"token": token}).to_string().into_bytes(),
        ),
        ("an empty array", b"[]".to_vec()),
        ("array of strings", json!([token]).to_string().into_bytes()),
        ("item without token", b"[{}]".to_vec()),
        (
            "token misspelt",
            json!([{"tokn": token}]).to_string().into_bytes(),
        ),
        ("token is a number", b"[{\"token\": 5}]".to_vec()),
        ("token is null", b"[{\"token\": null}]".to_vec()),
        ("token is empty", b"[{\"token\": \"\"}]".to_vec()),
        ("token is garbage", b"[{\"token\": \"garbage\"}]".to_vec()),
        (
            "token has five junk segments",
            b"[{\"token\": \"a.b.c.d.e\"}]".to_vec(),
        ),
        (
            "token is a JWS, not a JWE",
            json!([{"token": server.platform.sign_claims(&json!({}))}])
                .to_string()
                .into_bytes(),
        ),
        ("not UTF-8", vec![b'[', 0xff, 0xfe, b']']),
        (
            "one good item then a bad one",
            format!("[{{\"token\": \"{token}\"}}, {{\"token\": 7}}]").into_bytes(),
        ),
    ];
    for (name, body) in bodies {
        let resp = server.save_raw(&t, body).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        resp.expect_error(400).expect_no_echo(&[&token]);
    }
    server.expect_absent(&t, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_failures_are_400() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let id = uuid();
    let good = server.claims(&t, &id, "{}", OLD);
    let now = server.now();
    let set = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let unset = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let cases: Vec<(&str, Value)> = vec![
        ("missing id", unset("id")),
        ("id is not a UUID", set("id", json!("not-a-uuid"))),
        ("id is null", set("id", Value::Null)),
        ("missing tenant", unset("tenant")),
        (
            "tenant claim of another tenant",
            set("tenant", json!(uuid())),
        ),
        ("missing updatedAt", unset("updatedAt")),
        (
            "updatedAt is not a timestamp",
            set("updatedAt", json!("yesterday")),
        ),
        (
            "updatedAt without offset",
            set("updatedAt", json!("2024-01-01T00:00:00")),
        ),
        ("updatedAt is null", set("updatedAt", Value::Null)),
        (
            "expiresAt is not a timestamp",
            set("expiresAt", json!("soon")),
        ),
        ("missing content", unset("content")),
        ("content is not a string", set("content", json!({"a": 1}))),
        ("wrong issuer", set("iss", json!("someone-else"))),
        ("missing issuer", unset("iss")),
        ("audience of another tenant", set("aud", json!(uuid()))),
        ("missing audience", unset("aud")),
        ("missing subject", unset("sub")),
        ("missing exp", unset("exp")),
        ("exp passed", set("exp", json!(now - 1))),
        ("exp an hour ago", set("exp", json!(now - 3600))),
        (
            "exp more than 300 minutes ahead",
            set("exp", json!(now + 300 * 60 + 120)),
        ),
        ("exp a week ahead", set("exp", json!(now + 7 * 86_400))),
    ];
    for (name, claims) in cases {
        let token = server.token(&claims);
        let resp = server.save(&t, &[token]).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        resp.expect_error(400);
        server.expect_absent(&t, &id).await;
    }
}

/// A change to a token's claims.
type Edit = Box<dyn Fn(&mut Value)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_variants_the_contract_allows() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let now = server.now();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "audience as an array",
            Box::new(|c| c["aud"] = json!([c["tenant"].clone()])),
        ),
        (
            "exp exactly 300 minutes ahead",
            Box::new(move |c| c["exp"] = json!(now + 300 * 60)),
        ),
        (
            "exp a minute ahead",
            Box::new(move |c| c["exp"] = json!(now + 60)),
        ),
        (
            "all optional ids set",
            Box::new(|c| {
                c["parent"] = json!(uuid());
                c["currentUser"] = json!(uuid());
                c["isDone"] = json!(true);
            }),
        ),
        (
            "optional ids null",
            Box::new(|c| {
                for k in [
                    "parent",
                    "flow",
                    "flowVersion",
                    "currentMapElement",
                    "currentUser",
                ] {
                    c[k] = Value::Null;
                }
            }),
        ),
        ("expiresAt empty", Box::new(|c| c["expiresAt"] = json!(""))),
        (
            "expiresAt in the future",
            Box::new(move |c| c["expiresAt"] = json!(crate::common::rfc3339(now + 86_400))),
        ),
        (
            "9 fractional digits",
            Box::new(|c| c["updatedAt"] = json!("2024-01-01T00:00:00.123456789Z")),
        ),
        (
            "offset instead of Z",
            Box::new(|c| c["updatedAt"] = json!("2024-01-01T05:30:00.1234567+05:30")),
        ),
        (
            "no fractional digits",
            Box::new(|c| c["updatedAt"] = json!("2024-01-01T00:00:00+00:00")),
        ),
        (
            "unknown extra claim",
            Box::new(|c| c["somethingNew"] = json!({"x": 1})),
        ),
    ];
    for (name, edit) in cases {
        let id = uuid();
        let mut claims = server.claims(&t, &id, &format!("\"{name}\""), OLD);
        edit(&mut claims);
        let resp = server.save(&t, &[server.token(&claims)]).await;
        assert_eq!(resp.status, 204, "{name}: {}", resp.text());
        assert_eq!(
            server.content(&t, &id).await,
            format!("\"{name}\""),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_signature_failures_are_rejected() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let id = uuid();
    let c = server.claims(&t, &id, "{}", OLD);
    let pk = server.keys().platform_kid();
    let stranger = p384_jwk();
    let good_inner = server.platform.sign_claims(&c);

    // A signature that does not verify, or an unknown platform key: 401.
    let must_401: Vec<(&str, String)> = vec![
        (
            "inner signed by an unknown key",
            Platform::sign_es384(&stranger, stranger.key_id().unwrap(), &c),
        ),
        (
            "inner signed by another key under the platform kid",
            Platform::sign_es384(&stranger, &pk, &c),
        ),
        (
            "inner signature tampered",
            crate::common::tamper_last_segment(&good_inner),
        ),
    ];
    for (name, inner) in must_401 {
        let resp = server
            .save(&t, &[server.platform.wrap(&inner, &opts())])
            .await;
        assert_eq!(resp.status, 401, "{name}: {}", resp.text());
        resp.expect_error(401);
    }

    // Another algorithm: rejected; 400 or 401 are both readings of the contract.
    let public_text = crate::common::jwk_json(&server.keys().platform_public());
    let hs = jws::HS384
        .signer_from_bytes(public_text.as_bytes())
        .unwrap();
    let es256 = jws::ES256.signer_from_jwk(&p256_jwk()).unwrap();
    let b64 = |v: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    };
    let either: Vec<(&str, String)> = vec![
        (
            "inner HS384 keyed with the public JWK text",
            Platform::sign_with(&hs, "HS384", &pk, &c),
        ),
        (
            "inner ES256 under the platform kid",
            Platform::sign_with(&es256, "ES256", &pk, &c),
        ),
        (
            "inner alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": pk}).to_string()),
                b64(&c.to_string())
            ),
        ),
        ("inner is not a JWS", "definitely not a jws".to_string()),
        ("inner is JSON claims, unsigned", c.to_string()),
    ];
    for (name, inner) in either {
        let resp = server
            .save(&t, &[server.platform.wrap(&inner, &opts())])
            .await;
        assert!(
            resp.status == 400 || resp.status == 401,
            "{name}: expected 400 or 401, got {} {}",
            resp.status,
            resp.text()
        );
        resp.expect_error(resp.status);
    }
    server.expect_absent(&t, &id).await;
}

async fn save_at(server: &Server, t: &str, id: &str, content: &str, updated_at: &str) {
    let token = server.token(&server.claims(t, id, content, updated_at));
    let resp = server.save(t, &[token]).await;
    assert_eq!(
        resp.status,
        204,
        "save with updatedAt {updated_at} must be 204 even when ignored: {}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_save_is_ignored_but_still_204() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_at(&server, &t, &id, "\"new\"", "2024-06-01T00:00:00Z").await;
    save_at(&server, &t, &id, "\"old\"", "2024-05-31T23:59:59.9999999Z").await;
    assert_eq!(server.content(&t, &id).await, "\"new\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_save_replaces() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_at(&server, &t, &id, "\"first\"", "2024-06-01T00:00:00Z").await;
    save_at(
        &server,
        &t,
        &id,
        "\"second\"",
        "2024-06-01T00:00:00.0000001Z",
    )
    .await;
    assert_eq!(server.content(&t, &id).await, "\"second\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_save_is_applied_comparing_instants_not_strings() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_at(
        &server,
        &t,
        &id,
        "\"a\"",
        "2018-07-17T11:32:00.7117030+01:00",
    )
    .await;
    // The same instant, written differently: applied.
    save_at(&server, &t, &id, "\"b\"", "2018-07-17T10:32:00.711703Z").await;
    assert_eq!(server.content(&t, &id).await, "\"b\"");
    save_at(
        &server,
        &t,
        &id,
        "\"c\"",
        "2018-07-17T12:32:00.711703000+02:00",
    )
    .await;
    assert_eq!(server.content(&t, &id).await, "\"c\"");
    // 100 ns earlier, in yet another offset: ignored.
    save_at(
        &server,
        &t,
        &id,
        "\"d\"",
        "2018-07-17T05:32:00.7117029-05:00",
    )
    .await;
    assert_eq!(server.content(&t, &id).await, "\"c\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_uses_instants_where_strings_disagree() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_at(&server, &t, &id, "\"later\"", "2024-06-01T10:33:00Z").await;
    // Sorts after "10:33:00Z" as a string, but is 10:32Z: older, ignored.
    save_at(&server, &t, &id, "\"earlier\"", "2024-06-01T11:32:00+01:00").await;
    assert_eq!(server.content(&t, &id).await, "\"later\"");
    // Sorts before as a string, but is 10:34Z: newer, applied.
    save_at(&server, &t, &id, "\"latest\"", "2024-06-01T09:34:00-01:00").await;
    assert_eq!(server.content(&t, &id).await, "\"latest\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_keeps_full_fractional_precision() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    save_at(&server, &t, &id, "\"7\"", "2024-06-01T00:00:00.7117031Z").await;
    // One tick (100 ns) older: ignored. A millisecond-truncating store
    // would call them equal and apply it.
    save_at(&server, &t, &id, "\"6\"", "2024-06-01T00:00:00.7117030Z").await;
    assert_eq!(server.content(&t, &id).await, "\"7\"");
    // Nine digits, 1 ns newer: applied.
    save_at(&server, &t, &id, "\"9\"", "2024-06-01T00:00:00.711703101Z").await;
    assert_eq!(server.content(&t, &id).await, "\"9\"");
    // Nine digits, 1 ns older than that: ignored.
    save_at(&server, &t, &id, "\"8\"", "2024-06-01T00:00:00.711703100Z").await;
    assert_eq!(server.content(&t, &id).await, "\"9\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_harmless() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let (t, id) = (uuid(), uuid());
    let token = server.token(&server.claims(&t, &id, "\"once\"", OLD));
    for _ in 0..3 {
        server
            .save(&t, std::slice::from_ref(&token))
            .await
            .expect_status(204);
    }
    assert_eq!(server.content(&t, &id).await, "\"once\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_kept_byte_for_byte() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let contents = [
        r#"{"id":"4b8b27d3","values":[{"developerName":"Name","contentValue":"Zoë — ✓ 東京"}]}"#
            .to_string(),
        "{ \"spaced\" :  [ 1 , 2 ] ,\n\t\"order\": \"kept\", \"a\": 1 }".to_string(),
        r#"{"escapes":"quote \" backslash \\ slash \/ nl \n tab \t u \u00e9 \u0000 \ud83d\ude00"}"#
            .to_string(),
        "{\"raw\":\"emoji 😀 rtl \u{202e}txet\u{202c} nbsp\u{a0} zwj \u{200d} bom \u{feff}\"}"
            .to_string(),
        "{\"dup\":1,\"dup\":2}".to_string(),
        "  {\"leading and trailing whitespace\":true}  \n".to_string(),
        "[]".to_string(),
        "1.50".to_string(),
    ];
    for (i, content) in contents.iter().enumerate() {
        let id = uuid();
        for zip in [false, true] {
            let token = server.token_with(
                &server.claims(
                    &t,
                    &id,
                    content,
                    &format!("2024-01-01T00:00:0{}Z", zip as u8),
                ),
                &TokenOpts { zip, ..opts() },
            );
            server.save(&t, &[token]).await.expect_status(204);
            let got = server.content(&t, &id).await;
            assert_eq!(
                got.as_bytes(),
                content.as_bytes(),
                "content #{i} (zip {zip})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_content_round_trips() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    // 1 MiB of varied text: JSON with unicode and escapes, not one repeated byte.
    let mut content = String::from("{\"big\":[");
    let mut i = 0u64;
    while content.len() < (1 << 20) - 64 {
        content.push_str(&format!("\"{i:x} é東😀\\n\\\"\","));
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    content.push_str("\"end\"]}");
    assert!(content.len() >= (1 << 20) - 64);
    for zip in [false, true] {
        let id = uuid();
        let token = server.token_with(
            &server.claims(&t, &id, &content, OLD),
            &TokenOpts { zip, ..opts() },
        );
        server.save(&t, &[token]).await.expect_status(204);
        let got = server.content(&t, &id).await;
        assert!(
            got == content,
            "1 MiB content differs (zip {zip}): {} vs {} bytes",
            got.len(),
            content.len()
        );
    }
}
