//! Self-checks of the test harness: the tokens it builds are what the
//! contract describes, independently of the server. If one of these fails,
//! the other suites' verdicts cannot be trusted.

use std::io::Read;

use crate::common::{
    compact_header, deflate_bomb, state_claims, syscalls, uuid, Platform, StoreKeys, TokenOpts, T0,
};
use josekit::jwe::{self, JweContext};
use josekit::jws;
use serde_json::Value;

#[test]
fn deflate_bomb_inflates_to_what_it_says() {
    let raw = deflate_bomb(b"hello.A", 100_000);
    assert!(raw.len() < 1000, "bomb is small: {}", raw.len());
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .expect("valid raw DEFLATE");
    assert_eq!(out.len(), 7 + 100_000);
    assert!(out.starts_with(b"hello.A"));
    assert!(out[7..].iter().all(|&b| b == b'A'));
}

fn open_as_store(keys: &StoreKeys, token: &str) -> (Value, Value) {
    let header = Value::Object(compact_header(token));
    let alg = header["alg"].as_str().unwrap();
    let decrypter: Box<dyn jwe::JweDecrypter> = match alg {
        "ECDH-ES+A192KW" => Box::new(
            jwe::ECDH_ES_A192KW
                .decrypter_from_jwk(&keys.receiver)
                .unwrap(),
        ),
        "ECDH-ES+A256KW" => Box::new(
            jwe::ECDH_ES_A256KW
                .decrypter_from_jwk(&keys.receiver)
                .unwrap(),
        ),
        other => panic!("{other}"),
    };
    let (inner, _) = JweContext::new()
        .deserialize_compact(token, &*decrypter)
        .unwrap();
    let verifier = jws::ES384
        .verifier_from_jwk(&keys.platform_public())
        .unwrap();
    let (payload, _) = jws::deserialize_compact(&inner, &verifier).unwrap();
    (header, serde_json::from_slice(&payload).unwrap())
}

#[test]
fn state_tokens_are_nested_jwts_the_store_can_open() {
    let keys = StoreKeys::generate();
    let p = Platform::new(keys.clone());
    let (t, id) = (uuid(), uuid());
    let claims = state_claims(&t, &id, "{\"a\":1}", "2024-01-01T00:00:00Z", T0);
    for (alg, enc, zip) in [
        ("ECDH-ES+A192KW", "A192CBC-HS384", false),
        ("ECDH-ES+A256KW", "A256CBC-HS512", true),
    ] {
        let token = p.state_token(
            &claims,
            &TokenOpts {
                alg,
                enc,
                zip,
                ..TokenOpts::default()
            },
        );
        let (header, got) = open_as_store(&keys, &token);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["enc"], enc);
        assert_eq!(header["kid"], keys.receiver_kid().as_str());
        assert_eq!(header["cty"], "JWT");
        assert_eq!(header.get("zip").is_some(), zip);
        assert_eq!(got, claims);
    }
}

#[test]
fn request_signatures_carry_the_contract_claims() {
    let keys = StoreKeys::generate();
    let p = Platform::new(keys.clone());
    let sig = p.request_signature("t", "/api/storage/1/states/t", T0);
    let header = compact_header(&sig);
    assert_eq!(header["alg"], "ES384");
    assert_eq!(header["kid"], keys.platform_kid().as_str());
    let verifier = jws::ES384
        .verifier_from_jwk(&keys.platform_public())
        .unwrap();
    let (payload, _) = jws::deserialize_compact(&sig, &verifier).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["iss"], "manywho");
    assert_eq!(claims["aud"], "t");
    assert_eq!(claims["path"], "/api/storage/1/states/t");
    assert_eq!(claims["exp"], T0 + 240);
}

/// The strace reader the durability test relies on.
#[test]
fn parses_whole_split_and_failed_calls() {
    let text = "\
101 1700000000.100000 fdatasync(7</d/db>) = 0 <0.000250>
102  1700000000.200000 fsync(9</d/blobs/42> <unfinished ...>
101 1700000000.200100 sync_file_range(7</d/db>, 0, 4096, 7) = 0 <0.000010>
102  1700000000.201000 <... fsync resumed>) = 0 <0.001000>
103 1700000000.300000 fsync(3</d/blobs>) = -1 EIO (Input/output error) <0.000005>
101 1700000000.400000 +++ exited with 0 +++
";
    let calls = syscalls::parse(text);
    let summary: Vec<_> = calls
        .iter()
        .map(|c| (c.name.as_str(), c.path.to_str().unwrap(), c.result))
        .collect();
    assert_eq!(
        summary,
        [
            ("fdatasync", "/d/db", 0),
            ("sync_file_range", "/d/db", 0),
            ("fsync", "/d/blobs/42", 0),
            ("fsync", "/d/blobs", -1),
        ]
    );
    assert!((calls[0].returned - 1700000000.10025).abs() < 1e-6);
    assert!((calls[2].entered - 1700000000.2).abs() < 1e-6);
    assert!((calls[2].returned - 1700000000.201).abs() < 1e-6);
    assert!(calls[0].is_durable() && !calls[1].is_durable() && !calls[3].is_durable());
}
