//! JOSE for the Flow External Storage API, on josekit, with no HTTP types.
//!
//! - [`primitives`] puts aws-lc-rs under josekit's traits: every P-384, AES
//!   and HMAC operation of a request or reply runs there.
//! - [`request`] checks the `X-ManyWho-Signature` JWS of a request.
//! - [`token`] opens the nested JWT (JWE around JWS) of a state the platform
//!   saves, and seals the one a load returns.
//! - [`compact`] splits and pre-checks compact serializations against strict
//!   allow-lists before any key is touched, so josekit only ever sees tokens
//!   of the exact shape the contract allows.
//! - [`deflate`] is the `zip: DEF` of tokens: capped inflation, and one
//!   compressor per thread, reused.
//! - [`claims`] holds the time rules shared by both kinds of token.
//!
//! Algorithms are allow-lists, never library defaults: ES384 for every
//! signature; ECDH-ES+A192KW/A256KW with A192CBC-HS384/A256CBC-HS512 (and
//! optional `zip: DEF`, inflated under a hard cap) for encryption.

pub mod claims;
pub mod compact;
mod deflate;
pub mod error;
pub mod primitives;
pub mod request;
pub mod token;

pub use claims::TimePolicy;
pub use error::{SignatureError, TokenError};
pub use request::{verify_request_signature, RequestClaims};
pub use token::{seal_state_token, StateTokenOpener};
