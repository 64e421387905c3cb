//! The outer JWE's algorithm allow-list: every accepted combination
//! (ECDH-ES+A192KW / +A256KW × A192CBC-HS384 / A256CBC-HS512 × zip DEF or
//! not, cty JWT or absent) saves and loads back; anything else is 400; the
//! inflate step has a hard cap.

use crate::common::{deflate_bomb, p256_jwk, start_or_skip, uuid, Setup, TokenOpts};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_combination_round_trips() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    for alg in ["ECDH-ES+A192KW", "ECDH-ES+A256KW"] {
        for enc in ["A192CBC-HS384", "A256CBC-HS512"] {
            for zip in [false, true] {
                for cty in [Some("JWT"), None] {
                    let id = uuid();
                    let name = format!("{alg} {enc} zip={zip} cty={cty:?}");
                    let content =
                        json!({ "combination": name, "text": "Zoë — ✓ 東京" }).to_string();
                    let opts = TokenOpts {
                        alg,
                        enc,
                        zip,
                        cty,
                        ..TokenOpts::default()
                    };
                    let token = server.token_with(
                        &server.claims(&t, &id, &content, "2024-01-01T00:00:00Z"),
                        &opts,
                    );
                    let header = crate::common::compact_header(&token);
                    assert_eq!(header["alg"], alg);
                    assert_eq!(header.contains_key("zip"), zip);
                    let resp = server.save(&t, &[token]).await;
                    assert_eq!(resp.status, 204, "{name}: {}", resp.text());
                    // The reply is always A192KW / A192CBC-HS384 / DEF
                    // (checked inside load_ok), whatever came in.
                    assert_eq!(server.content(&t, &id).await, content, "{name}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_may_mix_combinations() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let ids: Vec<String> = (0..4).map(|_| uuid()).collect();
    let combos = [
        ("ECDH-ES+A192KW", "A192CBC-HS384", false),
        ("ECDH-ES+A256KW", "A256CBC-HS512", true),
        ("ECDH-ES+A192KW", "A256CBC-HS512", true),
        ("ECDH-ES+A256KW", "A192CBC-HS384", false),
    ];
    let tokens: Vec<String> = ids
        .iter()
        .zip(combos)
        .map(|(id, (alg, enc, zip))| {
            server.token_with(
                &server.claims(&t, id, &format!("\"{alg}/{enc}\""), "2024-01-01T00:00:00Z"),
                &TokenOpts {
                    alg,
                    enc,
                    zip,
                    ..TokenOpts::default()
                },
            )
        })
        .collect();
    server.save(&t, &tokens).await.expect_status(204);
    for (id, (alg, enc, _)) in ids.iter().zip(combos) {
        assert_eq!(server.content(&t, id).await, format!("\"{alg}/{enc}\""));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_algorithms_and_headers_are_400() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    let id = uuid();
    let claims = server.claims(&t, &id, "{}", "2024-01-01T00:00:00Z");
    let base = TokenOpts::default();
    let mut cases: Vec<(&str, String)> = vec![
        (
            "alg ECDH-ES (direct)",
            server.token_with(
                &claims,
                &TokenOpts {
                    alg: "ECDH-ES",
                    ..base.clone()
                },
            ),
        ),
        (
            "alg ECDH-ES+A128KW",
            server.token_with(
                &claims,
                &TokenOpts {
                    alg: "ECDH-ES+A128KW",
                    ..base.clone()
                },
            ),
        ),
        (
            "enc A128CBC-HS256",
            server.token_with(
                &claims,
                &TokenOpts {
                    enc: "A128CBC-HS256",
                    ..base.clone()
                },
            ),
        ),
        (
            "enc A128GCM",
            server.token_with(
                &claims,
                &TokenOpts {
                    enc: "A128GCM",
                    ..base.clone()
                },
            ),
        ),
        (
            "enc A256GCM",
            server.token_with(
                &claims,
                &TokenOpts {
                    enc: "A256GCM",
                    ..base.clone()
                },
            ),
        ),
        (
            "A256KW with enc A256GCM",
            server.token_with(
                &claims,
                &TokenOpts {
                    alg: "ECDH-ES+A256KW",
                    enc: "A256GCM",
                    ..base.clone()
                },
            ),
        ),
        (
            "zip other than DEF",
            server.token_with(
                &claims,
                &TokenOpts {
                    raw_zip: Some("GZ"),
                    ..base.clone()
                },
            ),
        ),
        (
            "zip DEF over a plaintext that is not DEFLATE",
            server.token_with(
                &claims,
                &TokenOpts {
                    raw_zip: Some("DEF"),
                    ..base.clone()
                },
            ),
        ),
        (
            "cty other than JWT",
            server.token_with(
                &claims,
                &TokenOpts {
                    cty: Some("JSON"),
                    ..base.clone()
                },
            ),
        ),
        (
            "kid of a key the store does not have",
            server.token_with(
                &claims,
                &TokenOpts {
                    kid: Some(uuid()),
                    ..base.clone()
                },
            ),
        ),
        (
            "kid of the platform key (not a receiver key)",
            server.token_with(
                &claims,
                &TokenOpts {
                    kid: Some(server.keys().platform_kid()),
                    ..base.clone()
                },
            ),
        ),
    ];
    // The ephemeral key on P-256 instead of P-384 (encrypted to a P-256 key
    // but labelled with the receiver kid).
    let p256 = p256_jwk();
    cases.push((
        "ephemeral key on P-256",
        server.token_with(
            &claims,
            &TokenOpts {
                encrypt_to: Some(crate::common::public_jwk(&p256)),
                ..base.clone()
            },
        ),
    ));
    // The ephemeral public key moved off the curve.
    let good = server.token(&claims);
    let mut header = serde_json::Value::Object(crate::common::compact_header(&good));
    let x = header["epk"]["x"].as_str().unwrap().to_string();
    let mut x_bytes = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let last = x_bytes.len() - 1;
    x_bytes[last] ^= 0x01;
    header["epk"]["x"] = json!(URL_SAFE_NO_PAD.encode(&x_bytes));
    cases.push((
        "ephemeral point not on P-384",
        crate::common::with_header(&good, &header),
    ));
    // The header's alg rewritten after encryption (tag no longer verifies).
    let mut header = serde_json::Value::Object(crate::common::compact_header(&good));
    header["alg"] = json!("ECDH-ES+A256KW");
    cases.push((
        "alg rewritten to A256KW",
        crate::common::with_header(&good, &header),
    ));
    let mut header = serde_json::Value::Object(crate::common::compact_header(&good));
    header["alg"] = json!("RSA-OAEP-256");
    cases.push((
        "alg RSA-OAEP-256",
        crate::common::with_header(&good, &header),
    ));
    let mut header = serde_json::Value::Object(crate::common::compact_header(&good));
    header["alg"] = json!("dir");
    cases.push(("alg dir", crate::common::with_header(&good, &header)));
    let mut header = serde_json::Value::Object(crate::common::compact_header(&good));
    header["enc"] = json!("none");
    cases.push(("enc none", crate::common::with_header(&good, &header)));

    for (name, token) in cases {
        let resp = server.save(&t, &[token]).await;
        assert_eq!(resp.status, 400, "{name}: {}", resp.text());
        resp.expect_error(400);
    }
    server.expect_absent(&t, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflating_has_a_hard_cap() {
    let server = start_or_skip!(Setup::on(super::ENGINE));
    let t = uuid();
    // ~ 1 MB of DEFLATE that inflates to 512 MiB: a JWS-looking header then
    // a payload of 'A's. A capped inflater stops early: 400 or 413.
    let header = json!({"alg": "ES384", "kid": server.keys().platform_kid()});
    let prefix = format!("{}.A", URL_SAFE_NO_PAD.encode(header.to_string()));
    let bomb = deflate_bomb(prefix.as_bytes(), 512 << 20);
    let token = server
        .platform
        .state_token_predeflated(&bomb, &TokenOpts::default());
    let started = std::time::Instant::now();
    let resp = server.save(&t, &[token]).await;
    assert!(
        resp.status == 400 || resp.status == 413,
        "zip bomb: expected 400 or 413, got {} {}",
        resp.status,
        resp.text()
    );
    resp.expect_error(resp.status);
    eprintln!(
        "zip bomb rejected with {} in {:?}",
        resp.status,
        started.elapsed()
    );
    // The store is still serving.
    server.health().await.expect_status(200);
}
