//! The integration tests: one binary, one module per topic (the layout of
//! ripgrep and cargo), sharing the harness in [`common`]. Every test starts
//! the real server (in-process, or the real binary) on an ephemeral
//! loopback port with real TLS and a temporary sled directory, and talks to
//! it as the platform would.

mod common;

mod algorithms;
mod auth;
mod backup;
mod config;
mod delete;
mod docs;
mod expiry;
mod harness;
mod health;
mod http2;
mod interop;
mod isolation;
mod lifecycle;
mod limits;
mod load;
mod metrics;
mod notify;
mod reload;
mod routing;
mod save;
mod suites;
mod sweeper;
