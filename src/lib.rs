//! flow-store: an on-premises state store for the Boomi Flow External
//! Storage API (version 1).
//!
//! A request travels top to bottom through the modules: [`server`] accepts
//! the TCP connection and terminates TLS; [`http`] routes `(method, path)`,
//! checks optional Basic credentials and the key-ID headers, and asks the
//! [`service`] to authenticate the `X-ManyWho-Signature` ([`crypto::request`]).
//! A save opens each nested-JWT state token ([`crypto::token`]) and hands
//! the states to the [`store`] (an engine behind one interface: sled by
//! default, or PostgreSQL for several nodes; one transaction, durable before
//! the 204); a load reads the state back and seals a reply token for the
//! platform. Errors become statuses in exactly one place, [`http::error`].
//!
//! Around that path: [`config`] loads and validates settings, [`keys`] holds
//! every store's JWKs by kid, [`clock`] makes "now" injectable, [`app`]
//! assembles everything, and [`dev`], [`platform`] and [`simulate`] let a
//! newcomer or an operator play the platform against a running store, over
//! the one HTTPS [`client`].
//!
//! Layers, bottom up; a module imports only from layers below its own:
//!
//! 1. [`model`], [`clock`], [`config`], [`notify`], [`logging`]: plain
//!    types, settings and process plumbing.
//! 2. [`keys`], [`crypto`], [`store`]: JOSE and storage; no HTTP.
//! 3. [`service`]: the use cases over crypto and store; no HTTP.
//! 4. [`server`]: accept loop, TLS, timeouts and drain for any
//!    [`server::Handler`]; knows no route.
//! 5. [`metrics`]: the Prometheus instruments the layers above record into
//!    (the accept loop through [`server::ConnectionEvents`]) and the
//!    `/metrics` handler of their own listener; then [`http`]: the storage
//!    API, the handler the platform talks to; and the operators' channel:
//!    [`backup`]'s file format and stream, the admin socket and its handler
//!    ([`admin::socket`], [`admin::api`]).
//! 6. [`app`]: configuration in, running listeners out.
//! 7. [`client`], [`platform`], [`simulate`], [`dev`], [`admin`] (`check`,
//!    `keys`, `status`), [`backup::command`] (`backup`, `restore`), [`cli`]:
//!    the commands and the tools around the server.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod app;
pub mod backup;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod http;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod platform;
pub mod server;
pub mod service;
pub mod simulate;
pub mod store;
