//! `flow-store check`: everything `serve` needs, verified without serving.
//!
//! [`check`] returns a [`Report`], one [`Finding`] per check (config syntax
//! and unknown keys, `validate()`, the listen address, every key file, kid
//! uniqueness, the TLS certificate and key and the certificate's expiry, the
//! storage directory or the PostgreSQL database, the Basic-auth password
//! file); the CLI prints it one
//! line per check. A `Fail` means `serve` would not start; a `Warn` is worth
//! a look but does not stop it.
//!
//! A sled database itself is never opened: the unit runs `check` as
//! `ExecStartPre`, and an operator runs it while the store serves, when sled's
//! lock would make an open fail. Instead the storage directory is probed by
//! creating and removing a file in it (or, if it does not exist yet, in the
//! directory `serve` would create it in). A PostgreSQL database is connected
//! to (reachable, credentials accepted, TLS verified) and its schema version
//! read, without changing anything. When run as root, `check` also
//! warns about files the `flow-store` service account could not read,
//! because root reads everything and would otherwise hide that.

use std::fmt;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use time::OffsetDateTime;

use crate::admin::{load_config, running_as_root, ServiceAccount, SERVICE_USER};
use crate::cli::output::out;
use crate::config::{Config, ConfigError, KeySource, StorageEngine};
use crate::keys::{load_key, KeyRing, KeyRole};
use crate::server::tls::load_certified_key;
use crate::store::postgres::schema::SCHEMA_VERSION;
use crate::store::postgres::PostgresStore;

/// A certificate that expires within this many days gets a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Ok,
    /// Worth a look; `serve` would still start.
    Warn,
    /// `serve` would not start (or would not work).
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padded to one width so the subjects line up.
        f.write_str(match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The verdict.
    pub verdict: Verdict,
    /// What was checked: "config", "receiver key", "tls certificate"…
    pub subject: String,
    /// What was found; never key material or secrets.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.verdict, self.subject, self.message)
    }
}

/// Every finding of one run, in the order the checks ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
    /// Whether the configuration could be loaded at all.
    pub config_loaded: bool,
}

impl Report {
    fn push(&mut self, verdict: Verdict, subject: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            verdict,
            subject: subject.to_string(),
            message: message.into(),
        });
    }

    /// Whether `serve` would start: the configuration loads and nothing failed.
    pub fn passed(&self) -> bool {
        self.config_loaded && self.count(Verdict::Fail) == 0
    }

    /// Findings with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// The findings with this subject, for tests and callers that look for one.
    pub fn about<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.subject == subject)
    }

    /// 0 when `serve` would start, 2 when the configuration cannot be
    /// loaded, 1 for any other failure.
    pub fn exit_code(&self) -> u8 {
        match (self.config_loaded, self.passed()) {
            (false, _) => 2,
            (true, true) => 0,
            (true, false) => 1,
        }
    }

    /// One line per finding, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.to_string());
            out.push('\n');
        }
        let (fails, warns) = (self.count(Verdict::Fail), self.count(Verdict::Warn));
        let warnings = match warns {
            0 => String::new(),
            1 => ", 1 warning".to_string(),
            n => format!(", {n} warnings"),
        };
        if self.passed() {
            out.push_str(&format!("flow-store check: serve would start{warnings}\n"));
        } else {
            let problems = if fails == 1 { "problem" } else { "problems" };
            out.push_str(&format!(
                "flow-store check: {fails} {problems}{warnings}; serve would not start\n"
            ));
        }
        out
    }
}

/// `flow-store check`: prints the report to standard output (the journal,
/// under systemd) and turns it into the exit status.
pub fn command(config_path: &Path) -> ExitCode {
    let report = check(config_path);
    out!("{}", report.render());
    ExitCode::from(report.exit_code())
}

/// Runs every check against `config_path` with the process environment, the
/// current time and, when running as root, the service account.
pub fn check(config_path: &Path) -> Report {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let account = if running_as_root() {
        ServiceAccount::lookup().filter(|a| a.uid.is_some())
    } else {
        None
    };
    check_with(
        config_path,
        &env,
        OffsetDateTime::now_utc(),
        account.as_ref(),
    )
}

/// [`check`] with explicit inputs, for tests: the environment to layer over
/// the file, "now" for certificate expiry, and the account whose access to
/// the files to verify (`None` to skip that).
pub fn check_with(
    config_path: &Path,
    env: &[(String, String)],
    now: OffsetDateTime,
    account: Option<&ServiceAccount>,
) -> Report {
    let (mut report, config) = static_checks(config_path, env);
    let Some(config) = config else {
        return report;
    };
    match config.require_stores() {
        Ok(()) => report.push(
            Verdict::Ok,
            "stores",
            format!("{} store(s) configured", config.stores.len()),
        ),
        Err(e) => report.push(Verdict::Fail, "stores", e.to_string()),
    }
    check_keys(&config, &mut report);
    check_tls(&config, now, &mut report);
    match config.storage.engine {
        StorageEngine::Sled => check_storage(&config.storage.path, &mut report),
        StorageEngine::Postgres => check_database(&config, &mut report),
    }
    check_password_file(&config, &mut report);
    if let Some(account) = account {
        check_service_access(&config, account, &mut report);
    }
    report
}

/// The checks that need nothing but the file: it loads (syntax, unknown
/// keys, the environment layered over it), every setting is valid and the
/// listen address parses. The shipped templates must pass these before any
/// store is imported into them. Returns the report so far and the
/// configuration, if it loaded.
pub fn static_checks(config_path: &Path, env: &[(String, String)]) -> (Report, Option<Config>) {
    let mut report = Report::default();
    let config = match load_config(config_path, env) {
        Ok(config) => config,
        Err(e) => {
            let message = match e {
                // Already names the file.
                ConfigError::Missing(_) => e.to_string(),
                _ => format!("{}: {e}", config_path.display()),
            };
            report.push(Verdict::Fail, "config", message);
            return (report, None);
        }
    };
    report.config_loaded = true;
    report.push(
        Verdict::Ok,
        "config",
        format!("{} parses, no unknown keys", config_path.display()),
    );
    match config.validate_settings() {
        Ok(()) => report.push(Verdict::Ok, "config", "settings are valid"),
        Err(e) => report.push(Verdict::Fail, "config", e.to_string()),
    }
    match config.listen_addr() {
        Ok(addr) => report.push(Verdict::Ok, "listen", format!("server.listen = {addr}")),
        Err(_) => report.push(
            Verdict::Fail,
            "listen",
            format!(
                "server.listen = {:?} is not an address:port such as \"0.0.0.0:8443\"",
                config.server.listen
            ),
        ),
    }
    // An invalid value is already the "config" line's failure.
    match config.metrics_addr() {
        Ok(Some(addr)) => report.push(
            Verdict::Ok,
            "metrics",
            format!("metrics.listen = {addr}: Prometheus scrapes http://{addr}/metrics"),
        ),
        Ok(None) => report.push(
            Verdict::Ok,
            "metrics",
            "metrics.listen = \"\": no metrics listener",
        ),
        Err(_) => {}
    }
    (report, Some(config))
}

fn check_keys(config: &Config, report: &mut Report) {
    let mut all_loaded = true;
    for store in &config.stores {
        for (role, source) in [
            (KeyRole::Platform, &store.platform_key),
            (KeyRole::Receiver, &store.receiver_key),
        ] {
            let subject = role.to_string();
            match load_key(source, role) {
                Ok(jwk) => {
                    let private = if role == KeyRole::Receiver {
                        " with its private part"
                    } else {
                        ""
                    };
                    let mode = match source {
                        KeySource::File(path) => fs::metadata(path)
                            .map(|m| format!(", mode {:04o}", m.permissions().mode() & 0o7777))
                            .unwrap_or_default(),
                        KeySource::Inline(_) => String::new(),
                    };
                    report.push(
                        Verdict::Ok,
                        &subject,
                        format!(
                            "{source}: P-384, kid {}{private}{mode} (store {:?})",
                            jwk.kid, store.name
                        ),
                    );
                }
                Err(e) => {
                    all_loaded = false;
                    report.push(
                        Verdict::Fail,
                        &subject,
                        format!("{e} (store {:?})", store.name),
                    );
                }
            }
        }
    }
    // Duplicates only matter once every key reads; a broken key is reported above.
    if all_loaded && !config.stores.is_empty() {
        match KeyRing::load(&config.stores) {
            Ok(ring) => report.push(
                Verdict::Ok,
                "kids",
                format!("{} store(s), every kid unique", ring.store_count()),
            ),
            Err(e) => report.push(Verdict::Fail, "kids", e.to_string()),
        }
    }
}

fn check_tls(config: &Config, now: OffsetDateTime, report: &mut Report) {
    let tls = &config.tls;
    if !tls.enabled {
        report.push(
            Verdict::Warn,
            "tls",
            "tls.enabled = false: the platform only calls over HTTPS, so a TLS-terminating \
             proxy must sit in front of this store",
        );
        return;
    }
    let pair = load_certified_key(&tls.cert, &tls.key);
    let pair_ok = pair.is_ok();
    match pair {
        Ok(_) => report.push(
            Verdict::Ok,
            "tls",
            format!(
                "certificate {} and key {} are readable and match",
                tls.cert.display(),
                tls.key.display()
            ),
        ),
        Err(e) => report.push(Verdict::Fail, "tls", e.to_string()),
    }
    if let Ok(meta) = fs::metadata(&tls.key) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            report.push(
                Verdict::Warn,
                "tls key",
                format!(
                    "{} is readable by every user (mode {mode:04o}); `chmod 640` it",
                    tls.key.display()
                ),
            );
        }
    }
    match certificate_validity(&tls.cert) {
        Ok((not_before, not_after)) => {
            let date = not_after.date();
            let days = (not_after - now).whole_days();
            let (verdict, message) = if not_after <= now {
                (
                    Verdict::Fail,
                    format!("{} expired on {date}: replace it", tls.cert.display()),
                )
            } else if not_before > now {
                (
                    Verdict::Warn,
                    format!(
                        "{} is not valid before {}: clients will refuse it until then (check the clock)",
                        tls.cert.display(),
                        not_before.date()
                    ),
                )
            } else if days < EXPIRY_WARNING_DAYS {
                (
                    Verdict::Warn,
                    format!(
                        "expires in {days} days ({date}): renew {} and `systemctl reload flow-store`",
                        tls.cert.display()
                    ),
                )
            } else {
                (Verdict::Ok, format!("expires in {days} days ({date})"))
            };
            report.push(verdict, "tls certificate", message);
        }
        // An unreadable or empty file is already the "tls" line's failure.
        Err(problem) if pair_ok => report.push(Verdict::Fail, "tls certificate", problem),
        Err(_) => {}
    }
}

/// The leaf certificate's notBefore and notAfter.
fn certificate_validity(path: &Path) -> Result<(OffsetDateTime, OffsetDateTime), String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let leaf = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .next()
        .ok_or_else(|| format!("{} contains no PEM certificate", path.display()))?
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("{}: the certificate cannot be parsed: {e}", path.display()))?;
    let validity = cert.validity();
    let at = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .map_err(|_| format!("{}: the validity dates are out of range", path.display()))
    };
    Ok((
        at(validity.not_before.timestamp())?,
        at(validity.not_after.timestamp())?,
    ))
}

fn check_storage(path: &Path, report: &mut Report) {
    let subject = "storage";
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => match probe_writable(path) {
            Ok(()) => report.push(
                Verdict::Ok,
                subject,
                format!(
                    "{} is a writable directory (the database is left to serve: a running \
                     store holds its lock)",
                    path.display()
                ),
            ),
            Err(e) => report.push(
                Verdict::Fail,
                subject,
                format!("{} is not writable: {e}", path.display()),
            ),
        },
        Ok(_) => report.push(
            Verdict::Fail,
            subject,
            format!(
                "{} exists but is not a directory (storage.path)",
                path.display()
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(parent) = path.ancestors().skip(1).find(|p| p.exists()) else {
                report.push(
                    Verdict::Fail,
                    subject,
                    format!("{} cannot be created: no parent exists", path.display()),
                );
                return;
            };
            match probe_writable(parent) {
                Ok(()) => report.push(
                    Verdict::Ok,
                    subject,
                    format!(
                        "{} does not exist yet; serve will create it in {}",
                        path.display(),
                        parent.display()
                    ),
                ),
                Err(e) => report.push(
                    Verdict::Fail,
                    subject,
                    format!(
                        "{} does not exist and cannot be created in {}: {e}",
                        path.display(),
                        parent.display()
                    ),
                ),
            }
        }
        Err(e) => report.push(
            Verdict::Fail,
            subject,
            format!("cannot inspect {}: {e}", path.display()),
        ),
    }
}

/// Connects to the PostgreSQL database and reads its schema version.
fn check_database(config: &Config, report: &mut Report) {
    let subject = "database";
    let options = match crate::app::postgres_options(config) {
        Ok(options) => options,
        Err(e) => return report.push(Verdict::Fail, subject, format!("{e:#}")),
    };
    let probed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| {
            runtime
                .block_on(PostgresStore::probe(&options))
                .map_err(|e| e.to_string())
        });
    let (verdict, message) = match probed {
        Err(e) => (Verdict::Fail, e),
        Ok(0) => (
            Verdict::Ok,
            format!(
                "PostgreSQL reachable, credentials accepted; no flow-store schema yet \
                 (serve creates version {SCHEMA_VERSION})"
            ),
        ),
        Ok(found) if found < SCHEMA_VERSION => (
            Verdict::Ok,
            format!(
                "PostgreSQL reachable, credentials accepted; schema version {found}, \
                 serve migrates it to {SCHEMA_VERSION}"
            ),
        ),
        Ok(found) if found == SCHEMA_VERSION => (
            Verdict::Ok,
            format!("PostgreSQL reachable, credentials accepted; schema version {found}"),
        ),
        Ok(found) => (
            Verdict::Fail,
            format!(
                "the database has schema version {found}, newer than this release's \
                 {SCHEMA_VERSION}: upgrade flow-store on this node"
            ),
        ),
    };
    report.push(verdict, subject, message);
}

/// Creates and removes a file in `dir`: the only proof of writability that
/// also covers read-only mounts and sandboxes (`ProtectSystem=strict`).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".flow-store-check-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    fs::remove_file(&probe)
}

fn check_password_file(config: &Config, report: &mut Report) {
    let Some(path) = &config.auth.basic_password_file else {
        return;
    };
    let subject = "basic auth";
    match fs::read_to_string(path) {
        Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => report.push(
            Verdict::Fail,
            subject,
            format!("auth.basic_password_file {} is empty", path.display()),
        ),
        Ok(_) => {
            report.push(
                Verdict::Ok,
                subject,
                format!(
                    "auth.basic_password_file {} is readable and not empty",
                    path.display()
                ),
            );
            if let Ok(meta) = fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o004 != 0 {
                    report.push(
                        Verdict::Warn,
                        subject,
                        format!(
                            "{} is readable by every user (mode {mode:04o}); `chmod 640` it",
                            path.display()
                        ),
                    );
                }
            }
        }
        Err(e) => report.push(
            Verdict::Fail,
            subject,
            format!(
                "cannot read auth.basic_password_file {}: {e}",
                path.display()
            ),
        ),
    }
}

/// Run as root, every read above succeeds; say which files the service
/// account itself could not read or write. Only file modes are compared
/// (not the directories on the way, ACLs or the sandbox).
fn check_service_access(config: &Config, account: &ServiceAccount, report: &mut Report) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for store in &config.stores {
        for (role, source) in [
            ("platform key", &store.platform_key),
            ("receiver key", &store.receiver_key),
        ] {
            if let KeySource::File(path) = source {
                files.push((role.to_string(), path.clone()));
            }
        }
    }
    if config.tls.enabled {
        files.push(("tls certificate".into(), config.tls.cert.clone()));
        files.push(("tls key".into(), config.tls.key.clone()));
    }
    if let Some(path) = &config.auth.basic_password_file {
        files.push(("basic auth password file".into(), path.clone()));
    }
    if config.storage.engine == StorageEngine::Postgres {
        let postgres = &config.storage.postgres;
        if let Some(path) = &postgres.password_file {
            files.push(("PostgreSQL password file".into(), path.clone()));
        }
        if let Some(path) = &postgres.ca {
            files.push(("PostgreSQL CA file".into(), path.clone()));
        }
    }
    let mut problems = 0;
    for (what, path) in &files {
        // Missing files are already failures above.
        if let Ok(meta) = fs::metadata(path) {
            if !account.may(&meta, 0o4) {
                problems += 1;
                report.push(
                    Verdict::Warn,
                    "service user",
                    format!(
                        "{SERVICE_USER} cannot read the {what} {}: `chown root:{SERVICE_USER}` \
                         and `chmod 640` it (a receiver key: `chown {SERVICE_USER}:{SERVICE_USER}`, \
                         `chmod 600`)",
                        path.display()
                    ),
                );
            }
        }
    }
    let sled_dir = (config.storage.engine == StorageEngine::Sled)
        .then(|| fs::metadata(&config.storage.path).ok())
        .flatten();
    if let Some(meta) = sled_dir {
        if !account.may(&meta, 0o2) {
            problems += 1;
            report.push(
                Verdict::Warn,
                "service user",
                format!(
                    "{SERVICE_USER} cannot write {}: `chown -R {SERVICE_USER}:{SERVICE_USER}` it",
                    config.storage.path.display()
                ),
            );
        }
    }
    if problems == 0 {
        report.push(
            Verdict::Ok,
            "service user",
            format!("{SERVICE_USER} can read every key, certificate and secret file"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_p384_jwk;
    use crate::server::tls::self_signed_localhost;
    use std::os::unix::fs::MetadataExt;

    /// A complete, valid setup in a temp directory: config, TLS, one store.
    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let p = |n: &str| dir.path().join(n);
            fs::create_dir_all(p("keys")).unwrap();
            fs::create_dir_all(p("tls")).unwrap();
            let (cert, key) = self_signed_localhost().unwrap();
            fs::write(p("tls/cert.pem"), cert).unwrap();
            fs::write(p("tls/key.pem"), key).unwrap();
            fs::set_permissions(p("tls/key.pem"), fs::Permissions::from_mode(0o600)).unwrap();
            let platform = generate_p384_jwk().unwrap();
            let receiver = generate_p384_jwk().unwrap();
            fs::write(p("keys/p.jwk"), platform.to_string()).unwrap();
            fs::write(p("keys/r.jwk"), receiver.to_string()).unwrap();
            fs::set_permissions(p("keys/r.jwk"), fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(
                p("config.toml"),
                "# test\n[server]\nlisten = \"127.0.0.1:8443\"\n\n\
                 [[stores]]\nname = \"test\"\nplatform_key = \"keys/p.jwk\"\nreceiver_key = \"keys/r.jwk\"\n",
            )
            .unwrap();
            Setup { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn check(&self) -> Report {
            check_with(
                &self.path("config.toml"),
                &[],
                OffsetDateTime::now_utc(),
                None,
            )
        }
    }

    fn fails(report: &Report, subject: &str, needle: &str) -> bool {
        report
            .about(subject)
            .any(|f| f.verdict == Verdict::Fail && f.message.contains(needle))
    }

    #[test]
    fn a_good_setup_passes() {
        let setup = Setup::new();
        let report = setup.check();
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.count(Verdict::Warn), 0, "{}", report.render());
        for subject in [
            "config",
            "listen",
            "metrics",
            "platform key",
            "receiver key",
            "kids",
            "tls",
            "tls certificate",
            "storage",
        ] {
            assert!(report.about(subject).next().is_some(), "no {subject} line");
        }
        let text = report.render();
        assert!(text.contains("ok   storage"), "{text}");
        assert!(text.contains("serve would start"), "{text}");
        assert!(!text.contains("\"d\""), "{text}");
        // The storage directory did not exist: check must not have created it.
        assert!(!setup.path("data").exists());
    }

    #[test]
    fn a_world_readable_receiver_key_fails() {
        let setup = Setup::new();
        fs::set_permissions(setup.path("keys/r.jwk"), fs::Permissions::from_mode(0o644)).unwrap();
        let report = setup.check();
        assert!(
            fails(&report, "receiver key", "accessible to other users"),
            "{}",
            report.render()
        );
        assert_eq!(report.exit_code(), 1);
        assert!(report.render().contains("FAIL receiver key"));
    }

    #[test]
    fn a_mismatched_certificate_fails() {
        let setup = Setup::new();
        let (_, other_key) = self_signed_localhost().unwrap();
        fs::write(setup.path("tls/key.pem"), other_key).unwrap();
        let report = setup.check();
        assert!(
            fails(&report, "tls", "does not match"),
            "{}",
            report.render()
        );
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn an_unknown_config_key_fails_with_exit_2() {
        let setup = Setup::new();
        let text = fs::read_to_string(setup.path("config.toml")).unwrap();
        fs::write(
            setup.path("config.toml"),
            text.replace("[server]\n", "[server]\nlsiten = 1\n"),
        )
        .unwrap();
        let report = setup.check();
        assert!(fails(&report, "config", "lsiten"), "{}", report.render());
        assert_eq!(report.exit_code(), 2);
        assert!(!report.passed());
    }

    #[test]
    fn a_missing_config_exits_2() {
        let setup = Setup::new();
        let report = check_with(
            &setup.path("nope.toml"),
            &[],
            OffsetDateTime::now_utc(),
            None,
        );
        assert!(
            fails(&report, "config", "does not exist"),
            "{}",
            report.render()
        );
        assert_eq!(report.exit_code(), 2);
    }

    #[test]
    fn no_stores_and_a_bad_storage_path_fail() {
        let setup = Setup::new();
        fs::write(setup.path("file"), "").unwrap();
        fs::write(setup.path("config.toml"), "[storage]\npath = \"file\"\n").unwrap();
        let report = setup.check();
        assert!(
            fails(&report, "stores", "keys import"),
            "{}",
            report.render()
        );
        assert!(
            fails(&report, "storage", "not a directory"),
            "{}",
            report.render()
        );
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn duplicate_kids_fail() {
        let setup = Setup::new();
        let mut text = fs::read_to_string(setup.path("config.toml")).unwrap();
        text.push_str(
            "\n[[stores]]\nname = \"again\"\nplatform_key = \"keys/p.jwk\"\nreceiver_key = \"keys/r.jwk\"\n",
        );
        fs::write(setup.path("config.toml"), text).unwrap();
        let report = setup.check();
        assert!(
            fails(&report, "kids", "configured twice"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn disabled_tls_warns_and_password_file_is_checked() {
        let setup = Setup::new();
        let text = fs::read_to_string(setup.path("config.toml")).unwrap();
        fs::write(setup.path("password"), "\n").unwrap();
        fs::write(
            setup.path("config.toml"),
            format!(
                "[tls]\nenabled = false\n[auth]\nbasic_username = \"u\"\nbasic_password_file = \"password\"\n{text}"
            ),
        )
        .unwrap();
        let report = setup.check();
        assert!(report.about("tls").any(|f| f.verdict == Verdict::Warn));
        assert!(
            fails(&report, "basic auth", "is empty"),
            "{}",
            report.render()
        );
        fs::write(setup.path("password"), "secret\n").unwrap();
        fs::set_permissions(setup.path("password"), fs::Permissions::from_mode(0o600)).unwrap();
        let report = setup.check();
        assert!(report.passed(), "{}", report.render());
        assert!(!report.render().contains("secret"));
    }

    fn certificate_valid_until(not_after: OffsetDateTime) -> (String, String) {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(300);
        params.not_after = not_after;
        let cert = params.self_signed(&key_pair).unwrap();
        (cert.pem(), key_pair.serialize_pem())
    }

    #[test]
    fn expiry_warns_within_30_days_and_fails_once_expired() {
        let setup = Setup::new();
        let now = OffsetDateTime::now_utc();
        let (cert, key) =
            certificate_valid_until(now + time::Duration::days(12) + time::Duration::hours(1));
        fs::write(setup.path("tls/cert.pem"), cert).unwrap();
        fs::write(setup.path("tls/key.pem"), key).unwrap();
        let report = setup.check();
        let line = report.about("tls certificate").next().unwrap();
        assert_eq!(line.verdict, Verdict::Warn, "{}", report.render());
        assert!(line.message.contains("expires in 12 days"), "{line}");
        assert!(
            report.passed(),
            "a warning does not fail: {}",
            report.render()
        );

        let (cert, key) = certificate_valid_until(now - time::Duration::days(1));
        fs::write(setup.path("tls/cert.pem"), cert).unwrap();
        fs::write(setup.path("tls/key.pem"), key).unwrap();
        let report = setup.check();
        assert!(
            fails(&report, "tls certificate", "expired on"),
            "{}",
            report.render()
        );
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn service_account_access_is_checked_when_given() {
        let setup = Setup::new();
        let meta = fs::metadata(setup.path("keys/r.jwk")).unwrap();
        // Someone else, in no group of ours: cannot read the 0600 files.
        let stranger = ServiceAccount {
            uid: Some(meta.uid().wrapping_add(4242)),
            gid: None,
            groups: vec![],
        };
        let report = check_with(
            &setup.path("config.toml"),
            &[],
            OffsetDateTime::now_utc(),
            Some(&stranger),
        );
        let warned: Vec<_> = report
            .about("service user")
            .filter(|f| f.verdict == Verdict::Warn)
            .collect();
        assert!(
            warned.iter().any(|f| f.message.contains("receiver key")),
            "{}",
            report.render()
        );
        assert!(report.passed(), "warnings only: {}", report.render());
        let owner = ServiceAccount {
            uid: Some(meta.uid()),
            gid: Some(meta.gid()),
            groups: vec![meta.gid()],
        };
        let report = check_with(
            &setup.path("config.toml"),
            &[],
            OffsetDateTime::now_utc(),
            Some(&owner),
        );
        assert!(report
            .about("service user")
            .all(|f| f.verdict == Verdict::Ok));
    }
}
