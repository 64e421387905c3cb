//! The `flow-store` binary. All the work is in the library; this file only
//! hands over to the command line parser (after, in the static build,
//! pinning glibc's name service to its built-in sources).

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
    static_nss::use_builtin_sources_only();
    flow_store::cli::main()
}

/// Name-service lookups in the static build (`packaging/build-static.sh`).
///
/// A statically linked glibc still follows `/etc/nsswitch.conf`, and for
/// every source beyond its built-in `files` and `dns` (`mymachines`,
/// `mdns4_minimal`, `resolve`, `systemd`…) it `dlopen()`s the host's module,
/// which drags the host's shared `libc.so.6` into the process beside the
/// static one: two C libraries, two heaps, and a crash waiting for the first
/// host whose glibc differs from the build machine's. Only `simulate --url
/// https://<name>` resolves names (`serve` listens on a literal address and
/// reads `/etc/passwd` and `/etc/group` itself), but the rule holds for the
/// whole process: glibc's own `__nss_configure_lookup` (declared in
/// `<nss.h>`) replaces the configured sources with the built-in ones. `packaging/e2e.sh` checks no shared object gets opened.
#[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
mod static_nss {
    use std::ffi::{c_char, c_int, CStr};

    extern "C" {
        fn __nss_configure_lookup(dbname: *const c_char, service_line: *const c_char) -> c_int;
    }

    /// The databases anything in this process could consult, and the
    /// sources compiled into glibc (2.34 and later) for each.
    const BUILTIN: [(&CStr, &CStr); 3] = [
        (c"hosts", c"files dns"),
        (c"passwd", c"files"),
        (c"group", c"files"),
    ];

    pub fn use_builtin_sources_only() {
        for (db, sources) in BUILTIN {
            // SAFETY: called first thing in `main`, before any other thread
            // exists (glibc's NSS configuration is process-global and
            // unsynchronised); both arguments are NUL-terminated literals
            // with a static lifetime (glibc parses them into a list of its own).
            let rc = unsafe { __nss_configure_lookup(db.as_ptr(), sources.as_ptr()) };
            if rc != 0 {
                // Not fatal: lookups then follow /etc/nsswitch.conf.
                eprintln!(
                    "flow-store: warning: could not pin name service {:?} to {:?}; \
                     host name lookups follow /etc/nsswitch.conf",
                    db, sources
                );
            }
        }
    }
}
