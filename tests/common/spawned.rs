//! The real `flow-store` binary: [`Deployment`] lays out a store directory
//! (the test certificate under `tls/`, a store's keys under `keys/`, and a
//! `config.toml` written by the crate's one config writer), and starts the
//! binary with the one spawner the fault suite uses too
//! ([`fault_tests::process`]), as a [`Running`] whose client plays the
//! platform.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use fault_tests::process::{ServerProcess, SpawnError};
use flow_store::config::Config;

use super::client::{Client, Http, Now};
use super::gate;
use super::keys::{jwk_json, StoreKeys};
use super::server::BASE;
use super::tls::{test_cert, TestCert};
use super::tokens::Platform;

/// A directory with TLS files, key files and a config for the binary.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub keys: StoreKeys,
    pub cert: &'static TestCert,
    config: Mutex<Config>,
}

impl Deployment {
    /// Certificates under `tls/`, keys under `keys/` (receiver mode 600),
    /// and `config.toml` with relative paths, listening on an ephemeral port.
    pub fn new() -> Self {
        Self::with_keys(StoreKeys::generate())
    }

    /// [`Deployment::new`] with the keys of `keys`: several nodes of one
    /// store (on one PostgreSQL database) share them.
    pub fn with_keys(keys: StoreKeys) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = test_cert();
        cert.write_to(&dir.path().join("tls"));
        let kdir = dir.path().join("keys");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(kdir.join("platform.jwk"), jwk_json(&keys.platform_public())).unwrap();
        let receiver = kdir.join("receiver.jwk");
        std::fs::write(&receiver, jwk_json(&keys.receiver)).unwrap();
        set_mode(&receiver, 0o600);
        let d = Self {
            dir,
            keys,
            cert,
            config: Mutex::new(Config::local("127.0.0.1:0", "integration test store")),
        };
        d.configure(|_| {});
        d
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Changes the configuration and rewrites `config.toml` from it.
    pub fn configure(&self, change: impl FnOnce(&mut Config)) {
        let mut config = self.config.lock().unwrap();
        change(&mut config);
        let text = config.to_toml().expect("config as TOML");
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Edits `config.toml` as text, the way an operator might break it:
    /// replaces `from` (which must be there) with `to`.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).expect("read config");
        assert!(text.contains(from), "config has no {from:?}:\n{text}");
        std::fs::write(self.config_path(), text.replacen(from, to, 1)).expect("write config");
    }

    /// Start `flow-store serve --config FILE` from an unrelated working
    /// directory (relative paths must resolve against the file's directory).
    /// Ok once it says `listening on`, Err if it exits first.
    pub fn spawn(&self) -> Result<Running, Failed> {
        self.spawn_with_env(&[])
    }

    /// As [`Deployment::spawn`], with extra environment variables.
    pub fn spawn_with_env(&self, env: &[(&str, &str)]) -> Result<Running, Failed> {
        self.spawn_program(Path::new(env!("CARGO_BIN_EXE_flow-store")), env)
    }

    /// As [`Deployment::spawn`], with the binary allowed one CPU only (the
    /// first this test may use), through `taskset`, as an operator pins it.
    pub fn spawn_on_one_cpu(&self) -> Result<Running, Failed> {
        let cpu = first_allowed_cpu();
        let wrapper = self.dir.path().join("flow-store-on-one-cpu");
        let script = format!(
            "#!/bin/sh\nexec taskset -c {cpu} '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_flow-store")
        );
        std::fs::write(&wrapper, script).unwrap();
        set_mode(&wrapper, 0o755);
        self.spawn_program(&wrapper, &[])
    }

    /// Starts `program serve --config …` (the binary, or a wrapper that
    /// execs it, so the process is the server's).
    fn spawn_program(&self, program: &Path, env: &[(&str, &str)]) -> Result<Running, Failed> {
        let gate = gate::shared();
        let process = match ServerProcess::spawn(program, &self.config_path(), env) {
            Ok(process) => process,
            Err(SpawnError::Exited { status, log }) => {
                return Err(Failed {
                    status,
                    stderr: log,
                })
            }
            Err(e) => panic!("{e}"),
        };
        let client = Client {
            http: Http::new(process.addr(), &self.cert.cert_der),
            base: BASE.to_string(),
            platform: Platform::new(self.keys.clone()),
            now: Now::System,
            basic: None,
        };
        Ok(Running {
            process,
            client,
            _gate: gate,
        })
    }
}

impl Deployment {
    /// The admin socket `serve` binds (`admin.sock` next to the config).
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// The database directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `flow-store ARGS --config FILE`, from an unrelated working
    /// directory, ready to run.
    pub fn cli_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = tool_command(args);
        command.arg("--config").arg(self.config_path());
        command
    }

    /// Runs [`Deployment::cli_command`] to completion (bounded).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run_bounded(&mut self.cli_command(args))
    }
}

/// `flow-store ARGS` (no configuration), from an unrelated directory.
pub fn tool_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flow-store"));
    command.args(args).current_dir(std::env::temp_dir());
    command
}

/// Runs `command` with no standard input, failing the test if it takes
/// more than a minute.
pub fn run_bounded(command: &mut std::process::Command) -> std::process::Output {
    run_bounded_into(command, std::process::Stdio::piped())
}

/// [`run_bounded`] with its standard output sent to `stdout` (the
/// output's `stdout` is then empty unless `stdout` is a pipe).
pub fn run_bounded_into(
    command: &mut std::process::Command,
    stdout: std::process::Stdio,
) -> std::process::Output {
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("wait for the command"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not finish within a minute");
        }
    }
}

/// The lowest-numbered CPU this process may run on (`Cpus_allowed_list`
/// in `/proc/self/status`, e.g. `0-1` or `2,5-7`).
fn first_allowed_cpu() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status");
    let first = list.trim().split([',', '-']).next().unwrap_or_default();
    first
        .parse()
        .unwrap_or_else(|_| panic!("unexpected Cpus_allowed_list {list:?}"))
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The binary exited before it served.
#[derive(Debug)]
pub struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running `flow-store serve`. Derefs to its [`Client`].
pub struct Running {
    process: ServerProcess,
    pub client: Client,
    _gate: gate::Shared,
}

impl std::ops::Deref for Running {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Running {
    pub fn signal(&self, sig: &str) {
        self.process
            .signal(sig)
            .unwrap_or_else(|e| panic!("kill -{sig}: {e}"));
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.try_wait().is_none()
    }

    /// Wait for exit, failing the test after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.process.wait_exit(limit).await {
            Some(status) => status,
            None => {
                self.process.kill();
                panic!(
                    "flow-store did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// SIGTERM and require a clean exit 0.
    pub async fn terminate(mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM must exit 0, got {status}; stderr:\n{}",
            self.stderr_text()
        );
    }

    pub fn stderr_text(&self) -> String {
        self.process.log_text()
    }

    /// Where the binary serves `/metrics`, from its `metrics at
    /// http://ADDR/metrics` line (logged before it listens for the API).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.stderr_text().lines().find_map(|line| {
            let rest = line.split("metrics at http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
    }
}
