//! The domain values: tenant and state ids, timestamps, and a state.
//!
//! Timestamps keep the platform's text (returned as given) and the instant
//! it denotes at full nanosecond precision: ordering compares instants,
//! never strings, so `…+01:00` and the same moment in `Z` are equal.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

/// Parses a UUID in the canonical 8-4-4-4-12 hex form, and only that form.
pub fn parse_canonical_uuid(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    let hyphens_ok = bytes.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| bytes[i] == b'-')
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| [8, 13, 18, 23].contains(&i) || b.is_ascii_hexdigit());
    if !hyphens_ok {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// An RFC 3339 timestamp: its text and its instant.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp {
    text: String,
    instant: OffsetDateTime,
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp with an offset (e.g. 2018-07-17T11:32:00.7117030+01:00)")]
pub struct TimestampError;

impl Timestamp {
    /// Parses `text`: RFC 3339, an offset or `Z`, up to 9 fractional digits.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        // The `time` crate accepts any number of fractional digits and would
        // silently drop the tenth; refuse what cannot be kept exactly.
        if fraction_digits(text) > 9 {
            return Err(TimestampError);
        }
        let instant = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TimestampError)?;
        Ok(Timestamp {
            text: text.to_string(),
            instant,
        })
    }

    /// The text as the platform sent it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant.
    pub fn instant(&self) -> OffsetDateTime {
        self.instant
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        self.instant.unix_timestamp_nanos()
    }
}

fn fraction_digits(text: &str) -> usize {
    match text.find('.') {
        Some(dot) => text[dot + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count(),
        None => 0,
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Timestamp::parse(&text)
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.text
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.instant == other.instant
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.instant.cmp(&other.instant)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text)
    }
}

/// A state's metadata: everything but its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateMeta {
    /// Parent state.
    pub parent: Option<Uuid>,
    /// Flow id.
    pub flow: Option<Uuid>,
    /// Flow version id.
    pub flow_version: Option<Uuid>,
    /// Where the flow stands.
    pub current_map_element: Option<Uuid>,
    /// Who is running it.
    pub current_user: Option<Uuid>,
    /// Whether the flow has finished.
    pub is_done: bool,
    /// When the state was created.
    pub created_at: Option<Timestamp>,
    /// When this version was written.
    pub updated_at: Timestamp,
    /// When the state may be thrown away; `None` means never.
    pub expires_at: Option<Timestamp>,
}

/// One flow state, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// The tenant that owns it.
    pub tenant: Uuid,
    /// The state id, unique within the tenant.
    pub id: Uuid,
    /// Metadata claims.
    pub meta: StateMeta,
    /// The state itself, byte for byte as the platform sent it.
    pub content: String,
}

impl State {
    /// Whether the state has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.meta
            .expires_at
            .as_ref()
            .is_some_and(|e| e.instant() <= now)
    }
}

impl fmt::Debug for State {
    // Content is customer data: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("meta", &self.meta)
            .field("content_bytes", &self.content.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuid_only() {
        assert!(parse_canonical_uuid("918f5a24-290e-4659-9cd6-c8d95aee92c6").is_some());
        assert!(parse_canonical_uuid("918F5A24-290E-4659-9CD6-C8D95AEE92C6").is_some());
        assert!(parse_canonical_uuid("918f5a24290e46599cd6c8d95aee92c6").is_none());
        assert!(parse_canonical_uuid("{918f5a24-290e-4659-9cd6-c8d95aee92c6}").is_none());
        assert!(parse_canonical_uuid("918f5a24-290e-4659-9cd6-c8d95aee92cg").is_none());
        assert!(parse_canonical_uuid("").is_none());
    }

    #[test]
    fn seven_fraction_digits_keep_full_precision() {
        let t = Timestamp::parse("2018-07-17T11:32:00.7117030+01:00").unwrap();
        assert_eq!(t.as_str(), "2018-07-17T11:32:00.7117030+01:00");
        assert_eq!(t.instant().nanosecond(), 711_703_000);
        let z = Timestamp::parse("2018-07-17T10:32:00.711703Z").unwrap();
        assert_eq!(t, z);
        let later = Timestamp::parse("2018-07-17T10:32:00.7117031Z").unwrap();
        assert!(later > t);
    }

    #[test]
    fn nine_digits_yes_ten_no() {
        assert!(Timestamp::parse("2018-07-17T10:32:00.123456789Z").is_ok());
        assert!(Timestamp::parse("2018-07-17T10:32:00.1234567891Z").is_err());
    }

    #[test]
    fn offsets_are_required() {
        assert!(Timestamp::parse("2018-07-17T10:32:00").is_err());
        assert!(Timestamp::parse("2018-07-17").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2018-07-17T10:32:00-05:30").is_ok());
    }
}
