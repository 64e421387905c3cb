//! Issue 4: the quick variant of the fault suite (`fault-tests --quick`)
//! against the debug `flow-store` binary. It asserts the suite's own
//! verdict, which checks invariants only (nothing lost or resurrected, no
//! 500, every request answered, the good client served within 5 s,
//! abusive connections closed), never speeds. Parts that need root (tmpfs,
//! `chattr`) skip loudly without it. The report is printed either way.

use std::process::Command;

#[test]
fn fault_suite_quick_variant_passes() {
    let output = Command::new(env!("CARGO_BIN_EXE_fault-tests"))
        .arg("--quick")
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_flow-store"))
        .output()
        .expect("running fault-tests");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "fault-tests --quick failed ({}); see the report above",
        output.status
    );
}
