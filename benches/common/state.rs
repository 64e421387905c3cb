//! The state the storage benches save: 1 KiB of content and the metadata
//! the platform sends, a new id each time. Shared by `engines.rs` and
//! `storage_cost.rs` through `#[path]`.

use flow_store::model::{State, StateMeta, Timestamp};
use uuid::Uuid;

/// State number `n` of `tenant` (its `updatedAt` grows with `n`).
pub fn state_1kib(tenant: Uuid, n: usize, expires_at: Option<Timestamp>) -> State {
    State {
        tenant,
        id: Uuid::new_v4(),
        meta: StateMeta {
            parent: None,
            flow: Some(Uuid::new_v4()),
            flow_version: Some(Uuid::new_v4()),
            current_map_element: Some(Uuid::new_v4()),
            current_user: None,
            is_done: false,
            created_at: None,
            updated_at: Timestamp::parse(&format!("2024-01-01T00:00:00.{n:07}Z"))
                .expect("timestamp"),
            expires_at,
        },
        content: format!("{{\"blob\":\"{}\"}}", "x".repeat(1000)),
    }
}
