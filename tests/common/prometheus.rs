//! Debian's Prometheus tools, as an operator runs them: `promtool` on
//! files and expositions, and a real `prometheus` server with a config and
//! data directory of its own on a free loopback port ([`Prometheus`]),
//! never the system service. Tests skip loudly when the package is absent
//! (`.ci/run` installs it).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::scrape::get;

pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Whether `binary` is installed; says loudly why `test` is skipped if not.
pub fn installed(binary: &str, test: &str) -> bool {
    let there = Path::new(binary).is_file();
    if !there {
        eprintln!(
            "\n*** SKIPPED {test}: {binary} is not installed (apt-get install prometheus) ***\n"
        );
    }
    there
}

/// `promtool ARGS`, with `stdin` fed in; its output.
pub fn promtool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(PROMTOOL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(stdin.as_bytes())
        .expect("feed promtool");
    child.wait_with_output().expect("run promtool")
}

/// A free loopback port, for a program that cannot be told to take port 0.
/// (Another process could take it before the program binds: on this
/// machine, nothing does.)
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A `prometheus` server scraping one target every second. Killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` as job `flow-store`, with the
    /// alert `rules` loaded, and waits until its HTTP API answers.
    pub async fn start(target: SocketAddr, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: flow-store\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, addr, dir };
        prometheus
            .wait_for(
                "its HTTP API to answer",
                Duration::from_secs(60),
                move || async move {
                    tokio::net::TcpStream::connect(addr).await.is_ok()
                        && get(addr, "/-/ready", None).await.status == 200
                },
            )
            .await;
        prometheus
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of a successful `GET path` of its HTTP API.
    pub async fn api(&self, path: &str) -> Value {
        let response = get(self.addr, path, None).await;
        let body: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", response.body));
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// The values of the instant vector `query` evaluates to now.
    pub async fn query(&self, query: &str) -> Vec<f64> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(query)))
            .await;
        data["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `ready` every 200 ms until it holds; fails the test with
    /// Prometheus's log after `limit`.
    pub async fn wait_for<F, Fut>(&self, what: &str, limit: Duration, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !ready().await {
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; Prometheus's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The shipped alert rules, the file an operator lists under `rule_files`.
    pub fn shipped_rules() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus/flow-store-rules.yml")
    }
}

/// `text` as a URL query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
