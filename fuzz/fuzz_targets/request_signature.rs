//! `X-ManyWho-Signature` verification: never panics, and whatever it
//! accepts really is a fresh platform signature for this request.
//!
//! Input modes (first byte):
//! - 0x01: `header NUL payload`, both raw bytes, wrapped in a JWS the
//!   harness signs with the platform key (reaches header allow-list and
//!   claims checks past the signature);
//! - 0x02: claims only, under the platform's usual header, signed;
//! - anything else: the header value itself, as text.
#![no_main]

use std::borrow::Cow;

use flow_store::crypto::request::{RequestTarget, MAX_LIFETIME_SECONDS};
use flow_store::crypto::verify_request_signature;
use flow_store_fuzz::{fixture, split_nul, NOW, PATH_ONE, PATH_TENANT, SKEW_SECONDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let signature: Cow<str> = match data.first() {
        Some(1) => {
            let (header, payload) = split_nul(&data[1..]);
            f.sign_raw(header, payload).into()
        }
        Some(2) => f
            .sign_raw(f.platform_jws_header().as_bytes(), &data[1..])
            .into(),
        _ => String::from_utf8_lossy(data),
    };
    for path in [PATH_ONE, PATH_TENANT] {
        let target = RequestTarget {
            tenant: f.tenant,
            path,
        };
        match verify_request_signature(&signature, &f.ring, target, f.now, SKEW_SECONDS) {
            Ok(claims) => {
                assert_eq!(claims.iss, "manywho");
                assert_eq!(claims.path, path);
                assert!(claims.aud.contains_tenant(f.tenant));
                assert!(!claims.sub.is_empty());
                let now = NOW as f64;
                assert!(claims.exp > now, "accepted an expired signature");
                assert!(claims.exp <= now + (MAX_LIFETIME_SECONDS + SKEW_SECONDS) as f64);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
