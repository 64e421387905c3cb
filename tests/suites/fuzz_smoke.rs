//! Fuzzing in `cargo test`.
//!
//! - `fuzz_targets_run_clean`: runs `fuzz/run.sh` (every cargo-fuzz target
//!   for a short budget, 20 s each by default) when `cargo +nightly fuzz` is
//!   available, and fails on any crash, hang (10 s) or out-of-memory
//!   (1024 MB). Without nightly or cargo-fuzz it prints a loud SKIPPED line.
//!   `FLOW_STORE_FUZZ=0` skips it; `FLOW_STORE_FUZZ_SECONDS=N` changes the
//!   budget per target.
//! - `seed_corpora_replay_on_stable`: feeds every committed seed that needs
//!   no harness (the raw inputs) straight to the library, so the corpora are
//!   regression inputs even where nightly is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flow_store::config::{Config, KeySource, StoreEntry};
use flow_store::crypto::request::RequestTarget;
use flow_store::crypto::{verify_request_signature, StateTokenOpener};
use flow_store::http::handlers::{parse_delete_body, parse_save_body};
use flow_store::keys::KeyRing;
use flow_store::model::Timestamp;
use time::OffsetDateTime;
use uuid::Uuid;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// `cargo +nightly <args>` outside the test's own cargo environment.
fn nightly(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn available(args: &[&str]) -> bool {
    nightly(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn skip(reason: &str) {
    eprintln!();
    eprintln!("==================================================================");
    eprintln!("SKIPPED: fuzz smoke run: {reason}");
    eprintln!("==================================================================");
    eprintln!();
}

#[test]
fn fuzz_targets_run_clean() {
    if std::env::var("FLOW_STORE_FUZZ").is_ok_and(|v| v == "0") {
        return skip("FLOW_STORE_FUZZ=0");
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return skip("cargo-fuzz runs are set up for x86_64 Linux only");
    }
    if !available(&["--version"]) {
        return skip("no nightly toolchain (rustup toolchain install nightly)");
    }
    if !available(&["fuzz", "--version"]) {
        return skip("cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
    }
    let _alone = crate::common::gate::exclusive();
    let seconds = std::env::var("FLOW_STORE_FUZZ_SECONDS").unwrap_or_else(|_| "20".into());
    let started = Instant::now();
    let output = Command::new(fuzz_dir().join("run.sh"))
        .arg(&seconds)
        // For a 20-second run the build is the cost: 16 codegen units (and
        // run.sh building on every core) took it from 14 to 8.5 minutes on
        // a 2-core machine, for somewhat slower fuzzing (cargo-fuzz's own
        // trade-off).
        .env("FUZZ_CODEGEN_UNITS", "16")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("fuzz/run.sh starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    eprintln!(
        "fuzz/run.sh {seconds}: {:?} after {:.0?} (build included)",
        output.status,
        started.elapsed()
    );
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    assert!(
        output.status.success(),
        "fuzz/run.sh failed: a target crashed, hung or ran out of memory (artifacts and reproduce commands above)"
    );
}

// The interop-vector keys, as in fuzz/src/lib.rs (test keys, no secret).
const PLATFORM_KEY_PUBLIC: &str = r#"{"crv":"P-384","kid":"0f4e8c2a-7d1b-4c39-9a6e-2b5d8f1c3e70","kty":"EC","x":"wBEllTSkXyxx_dAriEoJALO-xszlRfwy_eQKPe04hDSzNmdPP48a_3wKBW__r7yw","y":"Tzk7byWXT0vZVH8jBYgZpPIDKmgqsjNxtszWBrzb09PUxIn1_W6kyvzw7U9DVlIL"}"#;
const RECEIVER_KEY_PRIVATE: &str = r#"{"crv":"P-384","d":"bGSClIUiNxXQF4trlnqu1dn6lNOkO8mJbjf8yuQuK5ngq1pB5pEe_uL_xqjvxGnp","kid":"a3c7e9b1-5f2d-4e8a-b6c4-9d1e7f3a5b28","kty":"EC","x":"xSaaXtI_STgkleLdP9kz8lU12qdiEy03-k0tSSFzamT-SELBAgT1oIesBlZlg45o","y":"fNClpvQYJkB4nFAw25DAOEQr-1ZHo_gPx5DvdoNV0qc1g-HJFpkD04sGtE7kVCum"}"#;
const TENANT: &str = "918f5a24-290e-4659-9cd6-c8d95aee92c6";
const NOW: i64 = 1_790_000_000;

/// The committed seeds of a target; inputs starting with a byte below 0x10
/// select a harness mode (signing/sealing in the fuzz crate) and are left
/// to the fuzz run.
fn raw_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(_, data)| data.first().is_none_or(|&b| b >= 0x10))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn seed_corpora_replay_on_stable() {
    let ring = KeyRing::load(&[StoreEntry {
        name: "fuzz".into(),
        platform_key: KeySource::Inline(PLATFORM_KEY_PUBLIC.into()),
        receiver_key: KeySource::Inline(RECEIVER_KEY_PRIVATE.into()),
    }])
    .unwrap();
    let tenant = Uuid::parse_str(TENANT).unwrap();
    let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let path = format!("/api/storage/1/states/{TENANT}");
    let mut accepted = 0;

    for (_, data) in raw_seeds("request_signature") {
        let signature = String::from_utf8_lossy(&data);
        for path in [
            path.clone(),
            format!("{path}/4b8b27d3-e4f3-4a78-8822-12476582af8a"),
        ] {
            let target = RequestTarget {
                tenant,
                path: &path,
            };
            accepted += verify_request_signature(&signature, &ring, target, now, 30).is_ok() as u32;
        }
    }
    let opener = StateTokenOpener::new(64 * 1024 * 1024, 30);
    for (_, data) in raw_seeds("state_token") {
        let token = String::from_utf8_lossy(&data);
        if let Ok(state) = opener.open(&token, &ring, tenant, now) {
            assert_eq!(state.tenant, tenant);
            accepted += 1;
        }
    }
    // The interop vectors among the seeds: 2 request signatures, 3 tokens.
    assert!(accepted >= 5, "only {accepted} valid seeds were accepted");

    for (_, data) in raw_seeds("request_body") {
        if let Err(e) = parse_save_body(&data) {
            assert_eq!(e.status.as_u16(), 400);
        }
        if let Err(e) = parse_delete_body(&data) {
            assert_eq!(e.status.as_u16(), 400);
        }
    }
    for (_, data) in raw_seeds("timestamp") {
        if let Ok(text) = std::str::from_utf8(&data) {
            if let Ok(t) = Timestamp::parse(text) {
                assert_eq!(t.as_str(), text);
            }
        }
    }
    for (_, data) in raw_seeds("config") {
        if let Ok(text) = std::str::from_utf8(&data) {
            if let Ok(config) = Config::from_toml_str(text) {
                let _ = config.validate();
            }
        }
    }
}
