//! The use cases: authenticate a request, save, load and delete states,
//! check health. Glue between JOSE ([`crate::crypto`]) and storage
//! ([`crate::store`]); knows nothing about HTTP, so handlers stay thin.

use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::Clock;
use crate::crypto::request::RequestTarget;
use crate::crypto::{self, SignatureError, StateTokenOpener, TokenError};
use crate::keys::{KeyRing, KeyRole};
use crate::store::{SaveOutcome, Store, StoreError};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request signature was refused.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A state token was refused; `index` is its position in the body.
    #[error("token {index}: {error}")]
    Token {
        /// Zero-based position in the request body.
        index: usize,
        /// Why it was refused.
        error: TokenError,
    },
    /// Building the reply token failed.
    #[error(transparent)]
    Seal(TokenError),
    /// The request names a key (by its id) that the store does not hold.
    #[error("the request names a {0} this store does not hold")]
    UnknownKey(KeyRole),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The platform key and receiver key a request names (by kid).
#[derive(Debug, Clone)]
pub struct KeyIds {
    /// The platform key the reply must be encrypted to.
    pub platform: String,
    /// The receiver key the reply must be signed with.
    pub receiver: String,
}

/// A request that passed authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The tenant of the URL, vouched for by the signature.
    pub tenant: Uuid,
    /// The key ids the request named.
    pub key_ids: KeyIds,
}

/// What a save did, and to which states (for the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// Applied and ignored counts.
    pub outcome: SaveOutcome,
    /// The ids of the states in the request, in order.
    pub ids: Vec<Uuid>,
}

/// The store's use cases, shared by every request.
pub struct Service {
    store: Arc<dyn Store>,
    keys: RwLock<Arc<KeyRing>>,
    opener: StateTokenOpener,
    clock: Arc<dyn Clock>,
    skew_seconds: i64,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store)
            .finish()
    }
}

impl Service {
    /// A service over `store` and `keys`.
    pub fn new(
        store: Arc<dyn Store>,
        keys: KeyRing,
        clock: Arc<dyn Clock>,
        skew_seconds: u64,
        max_inflated_bytes: u64,
    ) -> Self {
        let skew_seconds = i64::try_from(skew_seconds).unwrap_or(i64::MAX);
        Self {
            store,
            keys: RwLock::new(Arc::new(keys)),
            opener: StateTokenOpener::new(max_inflated_bytes, skew_seconds),
            clock,
            skew_seconds,
        }
    }

    /// The current key ring.
    pub fn keys(&self) -> Arc<KeyRing> {
        // A poisoned lock still holds a complete ring (replaced atomically).
        match self.keys.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the key ring (on reload); requests in flight keep the old one.
    pub fn replace_keys(&self, keys: KeyRing) {
        let mut guard = match self.keys.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(keys);
    }

    /// The database.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The current instant.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Checks the request signature for `tenant` and `path`, and that both
    /// key ids name keys this store holds.
    pub fn authenticate(
        &self,
        signature: Option<&str>,
        key_ids: KeyIds,
        tenant: Uuid,
        path: &str,
    ) -> Result<Authenticated, ServiceError> {
        let keys = self.keys();
        let signature = signature.ok_or(SignatureError::Missing)?;
        let target = RequestTarget { tenant, path };
        crypto::verify_request_signature(signature, &keys, target, self.now(), self.skew_seconds)?;
        if keys.platform(&key_ids.platform).is_none() {
            return Err(ServiceError::UnknownKey(KeyRole::Platform));
        }
        if keys.receiver(&key_ids.receiver).is_none() {
            return Err(ServiceError::UnknownKey(KeyRole::Receiver));
        }
        Ok(Authenticated { tenant, key_ids })
    }

    /// Opens every token, then saves all of them or none.
    pub async fn save(
        &self,
        auth: &Authenticated,
        tokens: Vec<String>,
    ) -> Result<SaveReport, ServiceError> {
        let keys = self.keys();
        let now = self.now();
        let states = tokens
            .iter()
            .enumerate()
            .map(|(index, token)| {
                self.opener
                    .open(token, &keys, auth.tenant, now)
                    .map_err(|error| ServiceError::Token { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids = states.iter().map(|s| s.id).collect();
        let outcome = self.store.save_all(states).await?;
        Ok(SaveReport { outcome, ids })
    }

    /// The reply token for (tenant, id), or `None` when absent or expired.
    pub async fn load(
        &self,
        auth: &Authenticated,
        id: Uuid,
    ) -> Result<Option<String>, ServiceError> {
        let now = self.now();
        let tenant = auth.tenant;
        let Some(state) = self.store.get(tenant, id, now).await? else {
            return Ok(None);
        };
        let keys = self.keys();
        let receiver = keys
            .receiver(&auth.key_ids.receiver)
            .ok_or(ServiceError::UnknownKey(KeyRole::Receiver))?;
        let platform = keys
            .platform(&auth.key_ids.platform)
            .ok_or(ServiceError::UnknownKey(KeyRole::Platform))?;
        crypto::seal_state_token(&state.content, tenant, id, receiver, platform, now)
            .map(Some)
            .map_err(ServiceError::Seal)
    }

    /// Deletes (tenant, id) for every id; unknown ids are ignored.
    pub async fn delete(
        &self,
        auth: &Authenticated,
        ids: Vec<Uuid>,
    ) -> Result<usize, ServiceError> {
        Ok(self.store.delete_all(auth.tenant, ids).await?)
    }

    /// Whether the database is wedged for good: only a restart helps, so
    /// the systemd watchdog must not be fed. A full disk or a passing I/O
    /// error is not wedged (restarting would not fix it).
    pub fn is_wedged(result: &Result<(), ServiceError>) -> bool {
        matches!(result, Err(ServiceError::Store(StoreError::Stuck(_))))
    }

    /// Writes, reads back and makes durable a probe.
    pub async fn health(&self) -> Result<(), ServiceError> {
        Ok(self.store.health_check(self.now()).await?)
    }

    /// Purges expired states; returns how many.
    pub async fn purge_expired(&self) -> Result<usize, ServiceError> {
        Ok(self.store.purge_expired(self.now()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stuck_database_stops_the_watchdog() {
        let stuck = Err(ServiceError::Store(StoreError::Stuck(
            std::time::Duration::from_secs(20),
        )));
        assert!(Service::is_wedged(&stuck));
        assert!(!Service::is_wedged(&Err(ServiceError::Store(
            StoreError::DiskFull
        ))));
        let io = Err(ServiceError::Store(StoreError::Unavailable("EIO".into())));
        assert!(!Service::is_wedged(&io));
        assert!(!Service::is_wedged(&Ok(())));
    }
}
