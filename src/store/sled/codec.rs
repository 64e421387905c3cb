//! On-disk layout, version 1.
//!
//! - `states` tree: key `tenant ‖ id` (16 + 16 bytes, so a tenant's states
//!   are one contiguous range and tenants can never collide), value
//!   `0x01 ‖ meta length (u32, big-endian) ‖ meta JSON ‖ content bytes`.
//!   The content is stored raw after the metadata so it comes back byte for
//!   byte, without escaping or re-encoding.
//! - `expiry` tree: key `expiresAt instant (order-preserving i128) ‖ tenant ‖
//!   id`, empty value: the sweeper reads it in order up to "now".
//! - `meta` tree: `format_version` and the health probe.
//!
//! Every value starts with its format byte so a later release can migrate.

use uuid::Uuid;

use crate::model::{State, StateMeta};
use crate::store::StoreError;

/// The value format this release writes and reads.
pub const VALUE_FORMAT: u8 = 1;

/// The database layout version, stored under `meta/format_version`.
pub const DB_FORMAT_VERSION: u32 = 1;

/// A stored value this release cannot read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub &'static str);

impl From<DecodeError> for StoreError {
    fn from(error: DecodeError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// The `states` key of (tenant, id).
pub fn state_key(tenant: Uuid, id: Uuid) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(tenant.as_bytes());
    key[16..].copy_from_slice(id.as_bytes());
    key
}

/// Splits a `states` key into (tenant, id).
pub fn state_key_parts(key: &[u8]) -> Option<(Uuid, Uuid)> {
    if key.len() != 32 {
        return None;
    }
    let tenant = Uuid::from_slice(&key[..16]).ok()?;
    let id = Uuid::from_slice(&key[16..]).ok()?;
    Some((tenant, id))
}

/// The `expiry` index key of a state expiring at `nanos`.
pub fn expiry_key(nanos: i128, tenant: Uuid, id: Uuid) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(&order_preserving(nanos));
    key[16..].copy_from_slice(&state_key(tenant, id));
    key
}

/// The smallest `expiry` key after every entry expiring at or before `nanos`.
pub fn expiry_upper_bound(nanos: i128) -> [u8; 16] {
    order_preserving(nanos.saturating_add(1))
}

/// Splits an `expiry` key into (tenant, id).
pub fn expiry_key_state(key: &[u8]) -> Option<(Uuid, Uuid)> {
    if key.len() != 48 {
        return None;
    }
    let tenant = Uuid::from_slice(&key[16..32]).ok()?;
    let id = Uuid::from_slice(&key[32..48]).ok()?;
    Some((tenant, id))
}

// Flipping the sign bit makes big-endian byte order match numeric order.
fn order_preserving(nanos: i128) -> [u8; 16] {
    ((nanos as u128) ^ (1u128 << 127)).to_be_bytes()
}

/// Encodes a state's value.
pub fn encode(state: &State) -> Vec<u8> {
    // Serializing plain data (strings, UUIDs, bools) cannot fail.
    let meta = serde_json::to_vec(&state.meta).unwrap_or_default();
    let mut out = Vec::with_capacity(5 + meta.len() + state.content.len());
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(state.content.as_bytes());
    out
}

/// Decodes only the metadata of a value (cheap: skips the content).
pub fn decode_meta(value: &[u8]) -> Result<StateMeta, DecodeError> {
    let (meta, _) = split(value)?;
    serde_json::from_slice(meta).map_err(|_| DecodeError("metadata is not valid"))
}

/// Decodes a whole value for (tenant, id).
pub fn decode(tenant: Uuid, id: Uuid, value: &[u8]) -> Result<State, DecodeError> {
    let (meta, content) = split(value)?;
    let meta = serde_json::from_slice(meta).map_err(|_| DecodeError("metadata is not valid"))?;
    let content =
        String::from_utf8(content.to_vec()).map_err(|_| DecodeError("content is not UTF-8"))?;
    Ok(State {
        tenant,
        id,
        meta,
        content,
    })
}

fn split(value: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    match value.first() {
        Some(&VALUE_FORMAT) => {}
        Some(_) => return Err(DecodeError("unknown value format")),
        None => return Err(DecodeError("empty value")),
    }
    let len_bytes: [u8; 4] = value
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError("truncated header"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let meta = value
        .get(5..5 + len)
        .ok_or(DecodeError("truncated metadata"))?;
    Ok((meta, &value[5 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn state(content: &str) -> State {
        State {
            tenant: Uuid::new_v4(),
            id: Uuid::new_v4(),
            meta: StateMeta {
                parent: None,
                flow: Some(Uuid::new_v4()),
                flow_version: None,
                current_map_element: None,
                current_user: None,
                is_done: true,
                created_at: None,
                updated_at: Timestamp::parse("2018-07-17T11:32:00.7117030+01:00").unwrap(),
                expires_at: None,
            },
            content: content.into(),
        }
    }

    #[test]
    fn round_trip_is_byte_exact() {
        let s = state("{\"a\": \"Zoë \\u00e9 \\\" ✓ 東京\"}\n");
        let back = decode(s.tenant, s.id, &encode(&s)).unwrap();
        assert_eq!(back.content.as_bytes(), s.content.as_bytes());
        assert_eq!(back.meta, s.meta);
        assert_eq!(
            back.meta.updated_at.as_str(),
            "2018-07-17T11:32:00.7117030+01:00"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_meta(&[]).is_err());
        assert!(decode_meta(&[2, 0, 0]).is_err());
        assert!(decode_meta(&[1, 0, 0, 0, 9, b'{']).is_err());
        assert!(decode_meta(&[1, 255, 255, 255, 255]).is_err());
    }

    #[test]
    fn expiry_keys_sort_by_instant() {
        let (t, i) = (Uuid::new_v4(), Uuid::new_v4());
        let early = expiry_key(-5, t, i);
        let late = expiry_key(7, t, i);
        assert!(early < late);
        assert!(late[..16] < expiry_upper_bound(7)[..]);
        assert!(expiry_upper_bound(6)[..] <= late[..16]);
        assert_eq!(expiry_key_state(&late), Some((t, i)));
    }
}
