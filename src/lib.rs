//! flow-store: an on-premises state store for the Boomi Flow External
//! Storage API (version 1).
//!
//! A request travels top to bottom through the modules: [`server`] accepts
//! the TCP connection and terminates TLS; [`http`] routes `(method, path)`,
//! checks optional Basic credentials and the key-ID headers, and asks the
//! [`service`] to authenticate the `X-ManyWho-Signature` ([`crypto::request`]).
//! A save opens each nested-JWT state token ([`crypto::token`]) and hands
//! the states to the [`store`] (sled, one transaction, flushed before the
//! 204); a load reads the state back and seals a reply token for the
//! platform. Errors become statuses in exactly one place, [`http::error`].
//!
//! Around that path: [`config`] loads and validates settings, [`keys`] holds
//! every store's JWKs by kid, [`clock`] makes "now" injectable, [`app`]
//! assembles everything, and [`dev`], [`platform`] and [`simulate`] let a
//! newcomer or an operator play the platform against a running store.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod http;
pub mod keys;
pub mod logging;
pub mod model;
pub mod notify;
pub mod platform;
pub mod server;
pub mod service;
pub mod simulate;
pub mod store;
