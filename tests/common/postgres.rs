//! A real PostgreSQL for the tests: Debian's `initdb` and `pg_ctl` (from
//! `/usr/lib/postgresql/*/bin`) run a cluster in a temporary directory on a
//! free loopback port, as `nobody` when the tests run as root (PostgreSQL
//! refuses to run as root). Password authentication (SCRAM) over TCP, as
//! in production. [`PgServer::shared`] is one cluster for the whole test
//! binary (each test takes its own database); [`PgServer::start`] a
//! private one for a test that stops and restarts it.
//!
//! A cluster is stopped when dropped, and a watchdog process stops it when
//! the test binary exits (a `static` is never dropped). Without the
//! binaries every PostgreSQL test prints a loud SKIP line and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use flow_store::config::{Config, StorageEngine};
use flow_store::store::postgres::PostgresOptions;

use super::tls::TestCert;

/// The superuser the tests (and flow-store) connect as.
pub const PG_USER: &str = "flow_store";
const PG_PASSWORD: &str = "test-password-not-a-secret";

/// A running PostgreSQL cluster.
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `runuser -u nobody --` when running as root.
    run_as: Option<&'static str>,
    /// Serves TLS only (with this certificate), refusing plain TCP.
    tls: bool,
    /// fsync on, as in production (benchmarks); off for the tests.
    fsync: bool,
}

impl PgServer {
    /// The cluster every test of the binary shares, started on first use;
    /// `None` (after a SKIP line) when PostgreSQL is not installed.
    pub fn shared() -> Option<&'static PgServer> {
        static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
        SHARED.get_or_init(PgServer::start).as_ref()
    }

    /// A private cluster; `None` (after a SKIP line) without PostgreSQL.
    pub fn start() -> Option<PgServer> {
        PgServer::start_with(None, false)
    }

    /// A private cluster with fsync on, as in production, for benchmarks.
    // Used by benches/engines.rs, which includes this file; no test needs it.
    #[allow(dead_code)]
    pub fn start_durable() -> Option<PgServer> {
        PgServer::start_with(None, true)
    }

    /// A private cluster that accepts TLS connections only, presenting
    /// `cert`; `None` (after a SKIP line) without PostgreSQL.
    pub fn start_tls_only(cert: &TestCert) -> Option<PgServer> {
        PgServer::start_with(Some(cert), false)
    }

    fn start_with(tls: Option<&TestCert>, fsync: bool) -> Option<PgServer> {
        let Some(bin) = binaries() else {
            skip_line();
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("flow-store-pg-")
            .tempdir()
            .expect("tempdir");
        let run_as = is_root().then_some("nobody");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PG_PASSWORD).expect("password file");
        if let Some(cert) = tls {
            cert.write_to(dir.path());
            std::fs::set_permissions(
                dir.path().join("key.pem"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod key");
        }
        if let Some(user) = run_as {
            run(Command::new("chown").args(["-R", user]).arg(dir.path()));
        }
        let server = PgServer {
            bin,
            port: free_port(),
            dir,
            run_as,
            tls: tls.is_some(),
            fsync,
        };
        run(server
            .pg_command("initdb")
            .arg("-D")
            .arg(server.data())
            .args([
                "-U",
                PG_USER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["-E", "UTF8", "--no-locale", "--no-sync"]));
        if server.tls {
            // Password logins over TLS only: a client that does not
            // encrypt is refused.
            std::fs::write(
                server.data().join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("pg_hba.conf");
        }
        server.start_again();
        server.watch_for_exit();
        Some(server)
    }

    /// A URL of `database` for flow-store: no password inside.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{PG_USER}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Points `cfg` at `database`, with the password in a file in `dir`.
    pub fn configure(&self, cfg: &mut Config, database: &str, dir: &Path) {
        let password_file = dir.join("postgres-password");
        std::fs::write(&password_file, format!("{PG_PASSWORD}\n")).expect("password file");
        cfg.storage.engine = StorageEngine::Postgres;
        cfg.storage.postgres.url = Some(self.url(database));
        cfg.storage.postgres.password_file = Some(password_file);
        // Short, so that the database-down tests see 503 quickly.
        cfg.storage.postgres.statement_timeout_seconds = 5;
    }

    /// The engine's options for `database`, the password in a file in `dir`
    /// (for tests that open `PostgresStore` directly).
    pub fn options(&self, database: &str, dir: &Path) -> PostgresOptions {
        let mut cfg = Config::default();
        self.configure(&mut cfg, database, dir);
        flow_store::app::postgres_options(&cfg).expect("postgres options")
    }

    /// A connection to `database` as the superuser, for test set-up.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let config = format!(
            "host=127.0.0.1 port={} user={PG_USER} password={PG_PASSWORD} dbname={database}",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
        tokio::spawn(connection);
        client
    }

    /// A new, empty database; its name.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.connect("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        name
    }

    /// Stops the server (fast shutdown: sessions are ended).
    pub fn stop(&self) {
        run(self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]));
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&self) {
        let mut options = format!(
            // fsync off for the tests: none crashes the database's machine,
            // and fsync on a disk shared by three builds makes every test
            // crawl. On for benchmarks. synchronous_commit stays on.
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=300",
            self.port,
            self.dir.path().display(),
            if self.fsync { "on" } else { "off" }
        );
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/cert.pem -c ssl_key_file={dir}/key.pem"
            ));
        }
        run(self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command running the PostgreSQL program `program` as the
    /// cluster's owner, in the cluster's directory.
    fn pg_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path());
        command
    }

    /// A detached shell that stops the cluster once this process is gone.
    // Never waited for: it is meant to outlive the test binary.
    #[allow(clippy::zombie_processes)]
    fn watch_for_exit(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {runas} '{pg_ctl}' -D '{data}' -m immediate stop; rm -rf '{dir}'",
            pid = std::process::id(),
            runas = self
                .run_as
                .map(|u| format!("runuser -u {u} --"))
                .unwrap_or_default(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the PostgreSQL watchdog");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl.
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn skip_line() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        eprintln!(
            "\n!!!!!!!! SKIP: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             every PostgreSQL-engine test passes WITHOUT RUNNING. `apt-get install postgresql` \
             (as .ci/run does) to run them. !!!!!!!!\n"
        );
    });
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
