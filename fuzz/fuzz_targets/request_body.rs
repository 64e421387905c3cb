//! Save and delete request bodies: never panic, refuse with 400 only, and
//! keep error messages short (they never quote the body).
#![no_main]

use flow_store::http::handlers::{parse_delete_body, parse_save_body};
use flow_store::model::parse_canonical_uuid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_save_body(data) {
        Ok(tokens) => assert!(!tokens.is_empty()),
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.len() < 256, "{}", e.message);
        }
    }
    match parse_delete_body(data) {
        Ok(ids) => {
            for id in ids {
                assert_eq!(parse_canonical_uuid(&id.to_string()), Some(id));
            }
        }
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.len() < 256, "{}", e.message);
        }
    }
});
