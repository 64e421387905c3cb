//! Issue 4: the quick variant of the fault suite (`fault-tests --quick`)
//! against the debug `flow-store` binary. It asserts the suite's own
//! verdict, which checks invariants only (nothing lost or resurrected, no
//! 500, every request answered, the good client served within 5 s,
//! abusive connections closed), never speeds. Parts that need root (tmpfs,
//! `chattr`) skip loudly without it. The report is printed either way.

use std::path::Path;

#[test]
fn fault_suite_quick_variant_passes() {
    let _alone = crate::common::gate::exclusive();
    crate::common::assert_fault_suite_passes(Path::new(env!("CARGO_BIN_EXE_flow-store")), &[]);
}
