//! Logging: to the systemd journal when systemd started us (it sets
//! `JOURNAL_STREAM`), otherwise readable lines on stderr.
//!
//! What is logged is decided elsewhere and never includes a token, a key or
//! state content; this module only decides where lines go.

use log::LevelFilter;

/// Installs the logger once; later calls are ignored.
pub fn init(level: LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    if journal {
        match systemd_journal_logger::JournalLog::new() {
            Ok(logger) => {
                if logger
                    .with_syslog_identifier("flow-store".into())
                    .install()
                    .is_ok()
                {
                    log::set_max_level(level);
                }
                return;
            }
            Err(e) => eprintln!("flow-store: cannot reach the journal ({e}); logging to stderr"),
        }
    }
    let _ = env_logger::Builder::new()
        .filter_level(level)
        // Dependencies are chatty at debug level; keep their warnings only.
        .filter_module("rustls", LevelFilter::Warn.min(level))
        .filter_module("sled", LevelFilter::Warn.min(level))
        .filter_module("h2", LevelFilter::Warn.min(level))
        .filter_module("hyper", LevelFilter::Warn.min(level))
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .try_init();
}
