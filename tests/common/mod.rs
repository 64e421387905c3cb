//! What every integration test shares: it plays the Boomi Flow platform
//! against the real server. One module per concern:
//!
//! - [`keys`]: P-384 JWK pairs with UUID kids ([`StoreKeys`]);
//! - [`tokens`]: the platform's JOSE side, built with josekit directly and
//!   never with the crate's own `crypto` or `platform` modules, so the
//!   tests cannot share a bug with the code they check;
//! - [`tls`]: one self-signed certificate per test process;
//! - [`client`]: requests and responses of the contract over the crate's
//!   one HTTPS client, and raw byte-level connections;
//! - [`server`]: the library server in-process ([`Setup`] / [`Server`])
//!   on either storage engine, with a manual clock;
//! - [`postgres`]: a real PostgreSQL cluster ([`PgServer`]) for the
//!   PostgreSQL engine;
//! - [`prometheus`]: Debian's `promtool` and a real `prometheus` server;
//! - [`scrape`]: plain HTTP to the metrics listener, and the text
//!   exposition read back as samples;
//! - [`spawned`]: the real binary ([`Deployment`] / [`Running`]) through
//!   the one spawner the fault suite uses too;
//! - [`faults`]: the fault suite, run from a test;
//! - [`gate`]: lets the few tests that need the machine alone have it.

pub mod client;
pub mod faults;
pub mod gate;
pub mod keys;
pub mod postgres;
pub mod prometheus;
pub mod scrape;
pub mod server;
pub mod spawned;
pub mod syscalls;
pub mod tls;
pub mod tokens;

pub use client::*;
pub use faults::*;
pub use keys::*;
pub use postgres::PgServer;
pub use prometheus::*;
pub use scrape::*;
pub use server::*;
pub use spawned::*;
pub use tls::*;
pub use tokens::*;
