//! The integration tests: one binary, one module per topic (the layout of
//! ripgrep and cargo), sharing the harness in [`common`]. Every test starts
//! the real server (in-process, or the real binary) on an ephemeral
//! loopback port with real TLS, and talks to it as the platform would.
//!
//! The contract topics (every endpoint, status codes, isolation, ordering,
//! batches, expiry, restart, hostile tokens, interop vectors) are compiled
//! twice, once per storage engine: `on_sled::…` with a temporary sled
//! directory, `on_postgres::…` with a fresh database of a real PostgreSQL
//! (`common::postgres`). Each copy reads its engine as `super::ENGINE`.

// Loading each contract topic twice, once per engine, is the point.
#![allow(clippy::duplicate_mod)]

mod common;

/// The contract, on the sled engine.
#[path = "."]
mod on_sled {
    const ENGINE: crate::common::Engine = crate::common::Engine::Sled;
    mod algorithms;
    mod auth;
    mod delete;
    mod expiry;
    mod health;
    mod http2;
    mod interop;
    mod isolation;
    mod limits;
    mod load;
    mod restart;
    mod routing;
    mod save;
}

/// The contract, on the PostgreSQL engine.
#[path = "."]
mod on_postgres {
    const ENGINE: crate::common::Engine = crate::common::Engine::Postgres;
    mod algorithms;
    mod auth;
    mod delete;
    mod expiry;
    mod health;
    mod http2;
    mod interop;
    mod isolation;
    mod limits;
    mod load;
    mod restart;
    mod routing;
    mod save;
}

mod backup;
mod config;
mod docs;
mod durability;
mod harness;
mod lifecycle;
mod metrics;
mod migrate;
mod notify;
mod postgres;
mod reload;
mod suites;
mod sweeper;
