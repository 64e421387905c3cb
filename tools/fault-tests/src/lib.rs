//! The fault suite behind `docs/reliability.md`: crash safety under
//! SIGKILL, concurrent writers, abusive clients, a full disk, storage
//! failures, memory and descriptors, each run against the real `flow-store`
//! binary on loopback and ending in one report with a verdict.
//!
//! Test tooling, kept out of the product crate: the `fault-tests` binary
//! (`cargo run --release -p fault-tests -- --full`) and the integration
//! tests (the quick variant, in `cargo test`) call [`run::run`]. The
//! integration tests also start the binary through [`process`], the one
//! spawner.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod abuse;
pub mod crash;
pub mod disk;
pub mod elsewhere;
pub mod harness;
pub mod memory;
pub mod process;
pub mod run;
pub mod writers;
