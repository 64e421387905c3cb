//! Whole-system suites that need the machine to themselves (they hold the
//! gate exclusively, see `common::gate`): the quick fault suite, the fuzz
//! smoke run, and the .deb in a booted Debian container. Their names sort
//! after every other topic, so libtest starts them last, once the ordinary
//! tests have run two at a time.

mod fault_quick;
mod fuzz_smoke;
mod package_e2e;
