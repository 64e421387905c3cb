//! The appliance end to end: `packaging/e2e.sh` builds the static binary and
//! the .deb, installs it into a freshly booted Debian bookworm container
//! (debootstrap + systemd-nspawn) and plays the platform against the real
//! systemd service. See the script for every step it proves. Then it puts
//! that same static binary under concurrent load (the quick fault suite's
//! memory and writers parts): a static build once linked an OpenSSL without
//! thread support, which passed every sequential step and corrupted its
//! heap under load (see `packaging/build-static.sh`).
//!
//! Runs when it can: as root, with debootstrap and systemd-nspawn present
//! (`.ci/run` installs them). Elsewhere it says loudly that it was skipped.
//! `FLOW_STORE_E2E=0` skips it on purpose (e.g. for a quick local run).

use std::path::Path;
use std::process::Command;

fn skip(why: &str) {
    eprintln!("\n*** SKIPPED package_e2e: {why} ***\n");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn deb_installs_boots_and_serves_in_a_debian_container() {
    if std::env::var("FLOW_STORE_E2E").as_deref() == Ok("0") {
        return skip("FLOW_STORE_E2E=0");
    }
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return skip("needs root (debootstrap, systemd-nspawn, mounts)");
    }
    for tool in ["debootstrap", "systemd-nspawn", "nsenter"] {
        if !have(tool) {
            return skip(&format!(
                "{tool} is not installed (apt-get install debootstrap systemd-container)"
            ));
        }
    }
    let _alone = crate::common::gate::exclusive();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo test` holds the lock on target/ while tests run: the static
    // build inside the script gets a target directory of its own.
    let status = Command::new("bash")
        .arg(repo.join("packaging/e2e.sh"))
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", repo.join("target/static"))
        .env("FLOW_STORE_E2E_CACHE", repo.join("target/e2e-cache"))
        // Always build from this source tree: the load below uses that build.
        .env_remove("FLOW_STORE_DEB")
        .status()
        .expect("run packaging/e2e.sh");
    assert!(
        status.success(),
        "packaging/e2e.sh failed: {status:?} (its output is above)"
    );
    static_binary_survives_concurrent_load(
        &repo.join("target/static/x86_64-unknown-linux-gnu/release/flow-store"),
    );
}

/// 64 clients saving 1 MiB states and 16 racing writers against the binary
/// the .deb was made from; the suite's verdict checks every request was
/// answered correctly and the process stayed up.
fn static_binary_survives_concurrent_load(binary: &Path) {
    assert!(
        binary.is_file(),
        "packaging/e2e.sh left no static binary at {}",
        binary.display()
    );
    crate::common::assert_fault_suite_passes(binary, &["memory", "writers"]);
}
