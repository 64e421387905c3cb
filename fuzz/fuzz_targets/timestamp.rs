//! RFC 3339 timestamps: never panic; an accepted one keeps its text,
//! orders by instant, and survives a serde round trip.
#![no_main]

use flow_store::model::Timestamp;
use libfuzzer_sys::fuzz_target;
use time::format_description::well_known::Rfc3339;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Timestamp::parse(text) else {
        return;
    };
    assert_eq!(t.as_str(), text);
    assert_eq!(t.unix_nanos(), t.instant().unix_timestamp_nanos());
    let json = serde_json::to_string(&t).unwrap();
    let back: Timestamp = serde_json::from_str(&json).unwrap();
    assert_eq!(back.as_str(), text);
    assert_eq!(back, t);
    // The same instant written by `time` parses to an equal timestamp.
    if let Ok(canonical) = t.instant().format(&Rfc3339) {
        let again = Timestamp::parse(&canonical).expect("time's own RFC 3339 output parses");
        assert_eq!(again, t);
        assert_eq!(again.cmp(&t), std::cmp::Ordering::Equal);
    }
});
