//! Opening a state token (JWE around an ES384 JWS): never panics, stays
//! within the inflation cap, and whatever it accepts belongs to the URL's
//! tenant.
//!
//! Input modes (first byte), so the fuzzer gets past the cryptography:
//! - 0x01: the JWE plaintext (the inner JWS text), sealed by the harness;
//! - 0x02: the claims JSON, signed with the platform key and sealed;
//! - 0x03: `header NUL payload` of the inner JWS, raw, signed and sealed;
//! - 0x04: a raw DEFLATE stream, sealed under `zip: DEF` without compressing
//!   (the store inflates exactly these bytes, under its cap);
//! - 0x05: a replacement protected header (JSON bytes) for a valid token:
//!   hostile `epk` points, algorithms, members, reach key agreement;
//! - 0x06: `ek NUL iv NUL ciphertext NUL tag`, raw bytes, replacing those
//!   segments of a valid token (wrong lengths, truncated keys);
//! - anything else: the token text itself.
#![no_main]

use std::borrow::Cow;

use flow_store::crypto::TokenError;
use flow_store_fuzz::{b64, fixture, split_nul, MAX_INFLATED_BYTES};
use libfuzzer_sys::fuzz_target;

/// A valid token of the interop vectors (A192KW, A192CBC-HS384, zip DEF).
const VALID_TOKEN: &str = include_str!("../src/valid_token.txt");

fn with_segments(replace: &[(usize, String)]) -> String {
    let mut parts: Vec<String> = VALID_TOKEN.trim().split('.').map(str::to_string).collect();
    for (i, s) in replace {
        parts[*i] = s.clone();
    }
    parts.join(".")
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let rest = data.get(1..).unwrap_or_default();
    let token: Cow<str> = match data.first() {
        Some(1) => f.seal(rest, false, false).into(),
        Some(2) => {
            let jws = f.sign_raw(f.platform_jws_header().as_bytes(), rest);
            f.seal(jws.as_bytes(), rest.len() % 2 == 1, false).into()
        }
        Some(3) => {
            let (header, payload) = split_nul(rest);
            f.seal(f.sign_raw(header, payload).as_bytes(), false, false).into()
        }
        Some(4) => f.seal(rest, false, true).into(),
        Some(5) => with_segments(&[(0, b64(rest))]).into(),
        Some(6) => {
            let mut replace = Vec::new();
            let mut tail = rest;
            for i in 1..=4 {
                let (segment, next) = split_nul(tail);
                replace.push((i, b64(segment)));
                tail = next;
            }
            with_segments(&replace).into()
        }
        _ => String::from_utf8_lossy(data),
    };
    match f.opener.open(&token, &f.ring, f.tenant, f.now) {
        Ok(state) => {
            assert_eq!(state.tenant, f.tenant);
            assert!(state.content.len() as u64 <= MAX_INFLATED_BYTES);
        }
        Err(TokenError::TooLarge(cap)) => assert_eq!(cap, MAX_INFLATED_BYTES),
        Err(e) => {
            let _ = (e.to_string(), e.is_authentication_failure());
        }
    }
});
