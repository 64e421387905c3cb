//! The one way every harness starts the real `flow-store` binary: `serve
//! --config FILE` as a child process in a clean environment, its log
//! captured line by line, ready once it says where it listens. The fault
//! suites and the integration tests (`tests/common/spawned.rs`) both use it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the binary may take to say `listening on`.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables the server must not inherit from whoever runs the harness:
/// they would change its settings (`FLOW_STORE_*`), add stores (the Java
/// reference store's key variables, the runtime's worker count), send its
/// log to the journal or talk to a systemd that is not its manager. Names
/// equal to an entry or starting with an entry that ends in `_` are
/// removed.
const INHERITED_NOT: [&str; 9] = [
    "FLOW_STORE_",
    "PLATFORM_KEY",
    "PLATFORM_KEY_",
    "RECEIVER_KEY",
    "RECEIVER_KEY_",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "RUST_LOG",
    "TOKIO_WORKER_THREADS",
];

/// Why the binary did not come up.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// It could not be started at all.
    #[error("cannot start {binary}: {source}")]
    Start {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited before listening (a refused configuration, typically).
    #[error("flow-store exited with {status} before listening; its log:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Everything it wrote.
        log: String,
    },
    /// It neither listened nor exited in time; it was killed.
    #[error("flow-store did not say `listening on` within {waited:?}; its log:\n{log}")]
    Silent {
        /// How long it was given.
        waited: Duration,
        /// Everything it wrote.
        log: String,
    },
}

/// Memory and descriptors of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set so far, KiB.
    pub hwm_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// A running `flow-store serve`. Dropping it kills the process.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ServerProcess {
    /// Starts `binary serve --config config` from the temporary directory
    /// (so relative paths must resolve against the file's directory), with
    /// a clean environment plus `env`, and waits until it listens.
    /// `FAULT_TESTS_LOG=FILE` in the harness's environment also appends
    /// every server line to FILE.
    pub fn spawn(
        binary: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Result<ServerProcess, SpawnError> {
        // It runs elsewhere: paths given relative to here must still hold.
        let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.into());
        let mut command = Command::new(absolute(binary));
        command
            .arg("serve")
            .arg("--config")
            .arg(absolute(config))
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            let inherited_not = INHERITED_NOT
                .iter()
                .any(|entry| text == *entry || (entry.ends_with('_') && text.starts_with(entry)));
            if inherited_not {
                command.env_remove(&name);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().map_err(|source| SpawnError::Start {
            binary: binary.display().to_string(),
            source,
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let listening = match child.stderr.take() {
            Some(stderr) => capture(stderr, Arc::clone(&log)),
            None => mpsc::channel().1,
        };
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        server.addr = server.wait_listening(&listening)?;
        Ok(server)
    }

    fn wait_listening(
        &mut self,
        listening: &mpsc::Receiver<SocketAddr>,
    ) -> Result<SocketAddr, SpawnError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(addr) = listening.recv_timeout(Duration::from_millis(50)) {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread take in the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(SpawnError::Exited {
                    status,
                    log: self.log_text(),
                });
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(SpawnError::Silent {
                    waited: START_TIMEOUT,
                    log: self.log_text(),
                });
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `HUP`, `KILL`…) with kill(1).
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {} failed: {status}",
                self.pid()
            )))
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Number of log lines so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Log lines from `from` on.
    pub fn log_since(&self, from: usize) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().skip(from).cloned().collect())
            .unwrap_or_default()
    }

    /// The last `n` log lines, one string.
    pub fn log_tail(&self, n: usize) -> String {
        self.log
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }

    /// The whole log so far, one string.
    pub fn log_text(&self) -> String {
        self.log_tail(usize::MAX)
    }

    /// Memory and descriptors now.
    pub fn sample(&self) -> ProcSample {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        ProcSample {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            fds,
        }
    }
}

/// Reads the server's stderr on a thread of its own, keeping every line in
/// `log`; the returned channel yields the address once it is announced.
fn capture(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    let mut tee = std::env::var_os("FAULT_TESTS_LOG").and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = &mut tee {
                let _ = writeln!(file, "{line}");
            }
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            if let Ok(mut lines) = log.lock() {
                lines.push(line);
            }
        }
    });
    rx
}

/// The address in the server's `listening on ADDR (…)` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "[2026-01-01T00:00:00Z INFO  flow_store::app] listening on 127.0.0.1:4321 \
                    (https, base path /api/storage/1, 1 store(s))";
        assert_eq!(
            listening_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 4321)))
        );
        assert_eq!(
            listening_addr("listening on [::1]:80 (https"),
            "[::1]:80".parse().ok()
        );
        assert_eq!(listening_addr("starting"), None);
    }
}
