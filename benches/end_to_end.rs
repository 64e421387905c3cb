//! The figure operators care about: durable saves and loads per second
//! through the real server (TLS, HTTP/2, JOSE, sled, fsync before every
//! 204), next to the floor the cryptography alone sets, measured in the same
//! run with the library the server uses (aws-lc-rs; OpenSSL's figures, what
//! the server used before, are printed beside them).
//!
//! The release `flow-store` binary serves on loopback; N concurrent HTTP/2
//! clients (one connection each, one request in flight each) send requests
//! built and signed before the clock starts, so the client's own
//! cryptography does not compete. With two cores or more, the server is
//! started on core 0 (so it sizes itself for one core) and this process
//! runs on core 1 (`taskset`), so the server's figure is per core. Asserts nothing; prints figures.
//!
//! A state's content is `{"padding": "<random letters and digits>"}`,
//! which DEFLATE hardly shrinks: the case where compression only costs
//! (since 2026-12-04 the server sends the reply to such a large state
//! uncompressed; see `crypto::deflate`).
//!
//! For 256 KiB states the bench also prints the floor with the work their
//! bytes add (the contract's per-byte cryptography, one copy, and for a
//! save the inflation its `zip: DEF` demands; see `ByteWork`) and the
//! server's ratio against it: issue 11 asks that large states be bounded
//! by cryptography and one copy.
//!
//! A last phase measures the transport alone (TLS, HTTP/2, routing, the
//! access log: requests refused 401 before any cryptography or storage) and
//! prints the ceiling it and the floor together set: what a save or a load
//! could reach if nothing else cost anything.
//!
//! Run: `cargo bench --bench end_to_end` (`-- --quick` for a short run,
//! `-- --clients N` to change the concurrency, default 32). `-- --before
//! PATH` first measures PATH, a release build of an earlier commit, in the
//! same run and under the same floor as the binary just built: the
//! before/after of a change. PATH's configuration is written without the
//! settings added since commit 71d5827 (`[metrics]`, `storage.engine`,
//! `[storage.postgres]`; all at their defaults here), so builds from that
//! commit on can be compared.
//!
//! `-- --backup N` measures instead what an online backup costs the
//! platform: the database is filled with N states of 1 KiB (100 000 for
//! issue 10's figure) before the server starts, then 1 KiB saves run alone,
//! then again while `flow-store backup` copies the store; it prints the save
//! latency of both, the backup's duration and size, and how long writers
//! paused for its cut (from the server's log).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use fault_tests::process::ServerProcess;
use flow_store::client::{Client, ClientOptions, Protocol, Trust};
use flow_store::config::Config;
use flow_store::http::auth::{PLATFORM_KEY_HEADER, RECEIVER_KEY_HEADER, SIGNATURE_HEADER};
use flow_store::platform::{Encryption, PlatformKeys};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

const BASE: &str = "/api/storage/1";

/// What one run measures.
struct Plan {
    clients: usize,
    /// Rounds of each phase; the median round's rate is printed.
    rounds: usize,
    /// `--backup N`: states the database holds before the server starts,
    /// and the backup phases instead of the others.
    backup_states: Option<usize>,
    small_requests: usize,
    large_requests: usize,
    floor_seconds: f64,
    /// Seconds per primitive of the floor measured again before and after
    /// each round.
    round_floor_seconds: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let clients = args
        .iter()
        .position(|a| a == "--clients")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let backup_states = args
        .iter()
        .position(|a| a == "--backup")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let plan = Plan {
        clients,
        backup_states,
        rounds: if quick { 1 } else { 3 },
        small_requests: if quick { 640 } else { 3200 },
        large_requests: if quick { 64 } else { 320 },
        floor_seconds: if quick { 0.5 } else { 2.0 },
        round_floor_seconds: if quick { 0.25 } else { 0.5 },
    };
    let before = args
        .iter()
        .position(|a| a == "--before")
        .and_then(|i| args.get(i + 1))
        .map(|path| (PathBuf::from(path), Build::Before));
    let current = (
        PathBuf::from(env!("CARGO_BIN_EXE_flow-store")),
        Build::Current,
    );
    // Before anything runs here, so the floor is measured on the client's
    // core too, and the runtime's threads inherit the pinning.
    // Counted first: once pinned, this process sees one core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let client_pinned = cores >= 2 && pin(std::process::id(), "1");
    println!("flow-store end-to-end benchmark");
    println!(
        "  clients  {} HTTP/2 connections, one request in flight each",
        plan.clients
    );
    let floor = CryptoFloor::measure(plan.floor_seconds);
    floor.print();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(states) = plan.backup_states {
        let bench = Bench::start_filled(&current.0, states, client_pinned);
        runtime.block_on(bench.run_backup(&plan));
        return;
    }
    for (binary, build) in before.iter().chain([&current]) {
        let bench = Bench::start(binary, *build, client_pinned);
        runtime.block_on(bench.run(&plan));
    }
}

/// Which build a binary is: the one built with this bench, or an earlier
/// one, whose configuration schema may lack the newer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    Before,
    Current,
}

/// `config` without the settings added since the first measured build
/// (metrics, admin socket, storage engine).
fn without_newer_settings(config: &str) -> String {
    let mut document: toml_edit::DocumentMut = config.parse().expect("config");
    document.remove("metrics");
    document.remove("admin");
    if let Some(storage) = document.get_mut("storage").and_then(|s| s.as_table_mut()) {
        storage.remove("engine");
        storage.remove("postgres");
    }
    document.to_string()
}

/// The server under test and what the clients need to talk to it.
struct Bench {
    _dir: tempfile::TempDir,
    binary: PathBuf,
    server: ServerProcess,
    keys: Arc<PlatformKeys>,
    trust: Trust,
    pinned: bool,
}

impl Bench {
    fn start(binary: &Path, build: Build, client_pinned: bool) -> Bench {
        Bench::start_with(binary, build, client_pinned, |_| {})
    }

    /// [`Bench::start`] on a database holding `states` states of 1 KiB,
    /// written through the sled engine before the server opens it.
    fn start_filled(binary: &Path, states: usize, client_pinned: bool) -> Bench {
        Bench::start_with(binary, Build::Current, client_pinned, |data| {
            fill(data, states)
        })
    }

    fn start_with(
        binary: &Path,
        build: Build,
        client_pinned: bool,
        prepare_data: impl FnOnce(&Path),
    ) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for sub in ["keys", "tls"] {
            std::fs::create_dir_all(root.join(sub)).expect("directories");
        }
        let platform = flow_store::keys::generate_p384_jwk().expect("platform key");
        let receiver = flow_store::keys::generate_p384_jwk().expect("receiver key");
        let platform_public = flow_store::keys::public_jwk(&platform).expect("public key");
        write_private(
            &root.join("keys/platform.jwk"),
            &platform_public.to_string(),
        );
        write_private(&root.join("keys/receiver.jwk"), &receiver.to_string());
        let (cert, key) = flow_store::server::tls::self_signed_localhost().expect("certificate");
        write_private(&root.join("tls/cert.pem"), &cert);
        write_private(&root.join("tls/key.pem"), &key);
        let config = Config::local("127.0.0.1:0", "end-to-end bench");
        let text = config.to_toml().expect("config");
        std::fs::write(root.join("config.toml"), &text).expect("config");
        prepare_data(&root.join(&config.storage.path));
        // The server starts on its core (it inherits this thread's affinity),
        // so it sizes its runtime for the one core it has, as a one-core
        // deployment would; pinning it after the start would leave it with
        // a worker per core of the machine, time-sliced on one.
        let on_its_core = client_pinned && pin_this_thread("0");
        let spawn = || ServerProcess::spawn(binary, &root.join("config.toml"), &[]);
        let server = match (spawn(), build) {
            (Ok(server), _) => server,
            // An earlier build may refuse (or, for the admin socket, fail
            // on) settings it predates: it gets them left out.
            (Err(_), Build::Before) => {
                std::fs::write(root.join("config.toml"), without_newer_settings(&text))
                    .expect("config");
                spawn().unwrap_or_else(|e| panic!("{e}"))
            }
            (Err(e), Build::Current) => panic!("{e}"),
        };
        if on_its_core {
            // Every thread of this process, the one reading the server's
            // log included: it started on core 0 and, woken by every log
            // line, took the server's core from it hundreds of times a
            // second (seen in `perf record -e sched:sched_switch`).
            pin(std::process::id(), "1");
        }
        let keys = PlatformKeys::from_json(&platform.to_string(), &receiver.to_string())
            .expect("platform keys");
        let pinned = on_its_core && pin(server.pid(), "0");
        Bench {
            _dir: dir,
            binary: binary.to_path_buf(),
            server,
            keys: Arc::new(keys),
            trust: Trust::pem(cert.as_bytes()).expect("trust"),
            pinned,
        }
    }

    async fn run(&self, plan: &Plan) {
        println!(
            "\n  server   {}, pid {}, {}",
            self.binary.display(),
            self.server.pid(),
            if self.pinned {
                "pinned to core 0; this client pinned to core 1"
            } else {
                "NOT pinned (one core, or taskset missing): server and client share the machine"
            }
        );
        let idle = self.server.sample();
        println!("  server RSS idle {:.1} MiB", idle.rss_kib as f64 / 1024.0);
        let clients = self.clients(plan.clients).await;
        for (label, bytes, count) in [
            ("1 KiB", 1024, plan.small_requests),
            ("256 KiB", 256 * 1024, plan.large_requests),
        ] {
            let (mut saves, mut loads) = (Rounds::default(), Rounds::default());
            for _ in 0..plan.rounds {
                let tenant = Uuid::new_v4();
                let built = self.build_saves(tenant, bytes, count);
                let ids: Vec<Uuid> = built.iter().map(|(id, _)| *id).collect();
                let sizes = built
                    .first()
                    .filter(|_| bytes > 1024)
                    .and_then(|(_, r)| StateSizes::of(&r.body, bytes));
                let requests = built.into_iter().map(|(_, request)| request).collect();
                // Around each round: the host's speed drifts within
                // seconds (building the requests takes seconds too).
                let before = measure_aws_lc(plan.round_floor_seconds);
                let mut phase = self.drive(&clients, requests, StatusCode::NO_CONTENT).await;
                let after = measure_aws_lc(plan.round_floor_seconds);
                let work = sizes.map(|sizes| ByteWork::measure(plan.round_floor_seconds, sizes));
                let floor = before.saves_per_second().around(after.saves_per_second());
                phase.floor = Some(floor);
                phase.floor_with_bytes = work.map(|w| floor.plus(w.save));
                saves.push(phase);
                let requests = self.build_loads(tenant, &ids);
                let before = measure_aws_lc(plan.round_floor_seconds);
                let mut phase = self.drive(&clients, requests, StatusCode::OK).await;
                let after = measure_aws_lc(plan.round_floor_seconds);
                let floor = before.loads_per_second().around(after.loads_per_second());
                phase.floor = Some(floor);
                phase.floor_with_bytes = work.map(|w| floor.plus(w.load));
                loads.push(phase);
            }
            saves.print(&format!("save {label}"), bytes);
            loads.print(&format!("load {label}"), bytes);
        }
        self.run_transport(plan, &clients).await;
        let peak = self.server.sample();
        println!(
            "  server RSS after the run {:.1} MiB, peak {:.1} MiB",
            peak.rss_kib as f64 / 1024.0,
            peak.hwm_kib as f64 / 1024.0
        );
    }

    /// What a request costs the server with no cryptography and no
    /// storage: save-shaped requests (1 KiB body, the same headers) whose
    /// signature header is empty, which the server answers 401 before it
    /// reads the body or verifies anything. TLS, HTTP/2, routing, the error
    /// reply and the access log are all that run. Beside the floor, this
    /// bounds what any save or load could reach on this stack: even if
    /// everything else were free, a request would cost the floor plus this.
    async fn run_transport(&self, plan: &Plan, clients: &[Client]) {
        let mut transport = Rounds::default();
        for _ in 0..plan.rounds {
            let requests = self.build_unsigned(1024, plan.small_requests);
            transport.push(
                self.drive(clients, requests, StatusCode::UNAUTHORIZED)
                    .await,
            );
        }
        transport.print("transport 1 KiB", 1024);
        println!(
            "    (refused 401 before any crypto or storage: TLS, HTTP/2, routing, the access log)"
        );
        let Some((seconds_each, _)) = transport.median_cpu() else {
            return;
        };
        // The server's own CPU time per request, not the rate: the client
        // may be what limits the rate of requests this cheap. Costs add:
        // 1 / ceiling = 1 / floor + the transport's seconds per request.
        let ceiling = |floor: f64| 1.0 / (1.0 / floor + seconds_each);
        let floor = measure_aws_lc(plan.round_floor_seconds);
        let (saves, loads) = (floor.saves_per_second().mean, floor.loads_per_second().mean);
        println!(
            "    ceiling of the floor (now {saves:.0} saves/s, {loads:.0} loads/s) + the transport alone: save {:.0}/s = {:.2}x the floor, load {:.0}/s = {:.2}x",
            ceiling(saves),
            ceiling(saves) / saves,
            ceiling(loads),
            ceiling(loads) / loads,
        );
    }

    /// [`drive`], with the server's CPU time over the round recorded.
    async fn drive(
        &self,
        clients: &[Client],
        requests: Vec<Prepared>,
        expected: StatusCode,
    ) -> Phase {
        let before = self.server_cpu_seconds();
        let mut phase = drive(clients, requests, expected).await;
        phase.server_cpu = Some(self.server_cpu_seconds() - before);
        phase
    }

    /// CPU seconds the server process has used so far, all threads.
    fn server_cpu_seconds(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.server.pid()))
            .ok()
            .and_then(|stat| flow_store::metrics::process::cpu_seconds(&stat))
            .unwrap_or(0.0)
    }

    /// `count` save-shaped requests with `bytes` of body and an empty
    /// signature header (so the server refuses them before any crypto).
    fn build_unsigned(&self, bytes: usize, count: usize) -> Vec<Prepared> {
        let body = Bytes::from(pseudo_random_text(bytes));
        (0..count)
            .map(|_| {
                let tenant = Uuid::new_v4();
                Prepared {
                    method: Method::POST,
                    path: format!("{BASE}/states/{tenant}"),
                    headers: self.headers(String::new()),
                    body: body.clone(),
                }
            })
            .collect()
    }

    /// Saves alone, then saves while `flow-store backup` copies the store:
    /// what a backup costs the platform.
    async fn run_backup(&self, plan: &Plan) {
        let states = plan.backup_states.unwrap_or(0);
        println!(
            "\n  server   {}, pid {}, {}; {states} states of 1 KiB stored",
            self.binary.display(),
            self.server.pid(),
            if self.pinned {
                "pinned to core 0"
            } else {
                "NOT pinned"
            }
        );
        let clients = self.clients(plan.clients).await;
        let tenant = Uuid::new_v4();
        let alone: Vec<Prepared> = self
            .build_saves(tenant, 1024, plan.small_requests)
            .into_iter()
            .map(|(_, request)| request)
            .collect();
        let mut rounds = Rounds::default();
        rounds.push(drive(&clients, alone, StatusCode::NO_CONTENT).await);
        rounds.print("save, alone", 1024);
        // Enough saves to outlast the backup; only those answered while it
        // ran are counted.
        let during: Vec<Prepared> = self
            .build_saves(tenant, 1024, 4 * plan.small_requests)
            .into_iter()
            .map(|(_, request)| request)
            .collect();
        let file = self._dir.path().join("bench.backup");
        let log_from = self.server.log_len();
        let started = Instant::now();
        let backup = std::process::Command::new(&self.binary)
            .arg("backup")
            .arg("--output")
            .arg(&file)
            .arg("--config")
            .arg(self._dir.path().join("config.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("flow-store backup");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let saves = tokio::spawn(drive_until(
            clients.clone(),
            during,
            StatusCode::NO_CONTENT,
            Arc::clone(&done),
        ));
        let output = tokio::task::spawn_blocking(move || backup.wait_with_output())
            .await
            .expect("waiting for flow-store backup")
            .expect("flow-store backup");
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let phase = saves.await.expect("saves during the backup");
        assert!(
            output.status.success(),
            "flow-store backup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut rounds = Rounds::default();
        rounds.push(phase);
        rounds.print("save, backup", 1024);
        let size = std::fs::metadata(&file).map_or(0, |m| m.len());
        let pause = self
            .server
            .log_since(log_from)
            .into_iter()
            .find(|line| line.contains("for the cut"))
            .unwrap_or_else(|| "(no cut line in the server's log)".into());
        println!(
            "  backup of {states} states: {:.1} s, {:.1} MiB file; {}",
            took.as_secs_f64(),
            size as f64 / (1024.0 * 1024.0),
            pause.trim()
        );
    }

    /// One client per connection, each connected (TLS and HTTP/2 set up)
    /// before anything is timed.
    async fn clients(&self, count: usize) -> Vec<Client> {
        let url = format!("https://{}", self.server.addr());
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let options = ClientOptions {
                protocol: Protocol::Http2,
                ..ClientOptions::new(self.trust.clone())
            };
            let client = Client::new(&url, options).expect("client");
            let health = Request::get(format!("{BASE}/health"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let reply = client.send(health).await.expect("health");
            assert_eq!(reply.status, StatusCode::OK, "the server is not healthy");
            clients.push(client);
        }
        clients
    }

    /// `count` saves of one new state each, `bytes` of content, signed now.
    fn build_saves(&self, tenant: Uuid, bytes: usize, count: usize) -> Vec<(Uuid, Prepared)> {
        let started = Instant::now();
        let content = json!({ "padding": pseudo_random_text(bytes) }).to_string();
        let path = format!("{BASE}/states/{tenant}");
        let built = (0..count)
            .map(|_| {
                let id = Uuid::new_v4();
                let at = OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("timestamp");
                let state = json!({
                    "id": id, "tenant": tenant, "parent": null, "flow": null, "flowVersion": null,
                    "currentMapElement": null, "currentUser": null, "isDone": false,
                    "createdAt": at, "updatedAt": at, "expiresAt": null, "content": content,
                });
                let token = self
                    .keys
                    .state_token(
                        tenant,
                        &state,
                        OffsetDateTime::now_utc(),
                        Encryption::default(),
                    )
                    .expect("state token");
                let body = json!([{ "token": token }]).to_string();
                (
                    id,
                    self.prepare(Method::POST, &path, tenant, Bytes::from(body)),
                )
            })
            .collect();
        println!(
            "  (built {count} signed saves of {bytes} bytes in {:.1} s, not timed)",
            started.elapsed().as_secs_f64()
        );
        built
    }

    /// One load of each state, signed now.
    fn build_loads(&self, tenant: Uuid, ids: &[Uuid]) -> Vec<Prepared> {
        ids.iter()
            .map(|id| {
                let path = format!("{BASE}/states/{tenant}/{id}");
                self.prepare(Method::GET, &path, tenant, Bytes::new())
            })
            .collect()
    }

    fn prepare(&self, method: Method, path: &str, tenant: Uuid, body: Bytes) -> Prepared {
        let signature = self
            .keys
            .request_signature(tenant, path, OffsetDateTime::now_utc())
            .expect("request signature");
        Prepared {
            method,
            path: path.to_string(),
            headers: self.headers(signature),
            body,
        }
    }

    /// The platform's three headers: both key ids and `signature`.
    fn headers(&self, signature: String) -> [(&'static str, String); 3] {
        [
            (PLATFORM_KEY_HEADER, self.keys.platform_kid().to_string()),
            (RECEIVER_KEY_HEADER, self.keys.receiver_kid().to_string()),
            (SIGNATURE_HEADER, signature),
        ]
    }
}

/// A request built before the clock starts.
struct Prepared {
    method: Method,
    path: String,
    headers: [(&'static str, String); 3],
    body: Bytes,
}

impl Prepared {
    fn request(self) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header("content-type", "application/json");
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        request.body(Full::new(self.body)).expect("request")
    }
}

/// What one round of a phase measured.
struct Phase {
    latencies: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    /// The server's CPU seconds over the round, where measured.
    server_cpu: Option<f64>,
    /// The floor (requests/s of this kind) around the round: measured just
    /// before and just after it (see [`Rate::around`]).
    floor: Option<Rate>,
    /// For a large state: `floor` with the work its bytes add (see
    /// [`ByteWork`]).
    floor_with_bytes: Option<Rate>,
}

impl Phase {
    fn empty() -> Phase {
        Phase {
            latencies: Vec::new(),
            failures: 0,
            first_failure: None,
            elapsed: Duration::ZERO,
            server_cpu: None,
            floor: None,
            floor_with_bytes: None,
        }
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// The rounds of one phase: the rate printed is their median (this machine
/// is shared and noisy), the latency percentiles are over every request.
#[derive(Default)]
struct Rounds(Vec<Phase>);

impl Rounds {
    fn push(&mut self, phase: Phase) {
        self.0.push(phase);
    }

    /// The median round's rate.
    fn median_rate(&self) -> f64 {
        median(self.0.iter().map(Phase::rate).collect()).unwrap_or(0.0)
    }

    /// The median over the measured rounds of the server's CPU seconds per
    /// answered request, with how busy that kept its core (CPU seconds per
    /// second) in the same round.
    fn median_cpu(&self) -> Option<(f64, f64)> {
        let mut costs: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|p| !p.latencies.is_empty())
            .filter_map(|p| {
                let cpu = p.server_cpu?;
                Some((
                    cpu / p.latencies.len() as f64,
                    cpu / p.elapsed.as_secs_f64(),
                ))
            })
            .collect();
        costs.sort_by(|a, b| a.0.total_cmp(&b.0));
        costs.get(costs.len() / 2).copied()
    }

    /// The median over the rounds of their rate over the floor measured
    /// around each (this machine's speed drifts by 15-30% within an hour
    /// and by ±10% within seconds, so one floor for the whole run would
    /// measure the drift too),
    /// and the same by CPU time: the floor's seconds per request over the
    /// server's.
    fn median_ratios(&self, floor_of: fn(&Phase) -> Option<Rate>) -> Option<Ratios> {
        let (mut by_rate, mut by_best, mut by_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for phase in self.0.iter().filter(|p| !p.latencies.is_empty()) {
            let Some(floor) = floor_of(phase) else {
                continue;
            };
            by_rate.push(phase.rate() / floor.mean);
            by_best.push(phase.rate() / floor.best);
            if let Some(cpu) = phase.server_cpu.filter(|cpu| *cpu > 0.0) {
                by_cpu.push(phase.latencies.len() as f64 / floor.mean / cpu);
            }
        }
        Some(Ratios {
            by_rate: median(by_rate)?,
            by_best: median(by_best)?,
            by_cpu: median(by_cpu),
        })
    }

    fn print(&self, name: &str, bytes: usize) {
        let rate = self.median_rate();
        let mut sorted: Vec<Duration> = self.0.iter().flat_map(|p| p.latencies.clone()).collect();
        sorted.sort();
        let pick = |q: f64| {
            sorted
                .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let mib = rate * bytes as f64 / (1024.0 * 1024.0);
        let failures: usize = self.0.iter().map(|p| p.failures).sum();
        // In the order run, beside the floors printed below.
        let each: Vec<String> = self.0.iter().map(|p| format!("{:.0}", p.rate())).collect();
        let ratios = self.median_ratios(|p| p.floor);
        let ratio = ratios.as_ref().map_or(String::new(), |r| {
            format!(
                "  {:.2}x the floor ({:.2}x its best trials)",
                r.by_rate, r.by_best
            )
        });
        println!(
            "  {name:<13} {rate:>8.1}/s {mib:>7.1} MiB/s  p50 {:>7.1} ms  p99 {:>7.1} ms  p99.9 {:>7.1} ms  (n={}, failed {failures}){ratio}  [rounds: {}/s]",
            pick(0.5),
            pick(0.99),
            pick(0.999),
            sorted.len(),
            each.join(", "),
        );
        if let Some((cost, busy)) = self.median_cpu() {
            println!(
                "                server CPU {:.0} us each, its core {:.0}% busy",
                cost * 1e6,
                busy * 100.0
            );
        }
        if let Some(ratios) = ratios {
            let floors: Vec<String> = self
                .0
                .iter()
                .filter_map(|p| {
                    p.floor
                        .map(|f| format!("{:.0} (best {:.0})", f.mean, f.best))
                })
                .collect();
            let by_cpu = ratios
                .by_cpu
                .map_or(String::new(), |r| format!("; by CPU time {r:.2}x"));
            println!(
                "                floor around each round (before and after) {}/s{by_cpu}",
                floors.join(", ")
            );
        }
        self.print_with_bytes(bytes);
        if let Some(failure) = self.0.iter().find_map(|p| p.first_failure.as_ref()) {
            println!("                first failure: {failure}");
        }
    }

    /// For large states: the floor with the work of their bytes, and the
    /// server's ratios against it.
    fn print_with_bytes(&self, bytes: usize) {
        let Some(ratios) = self.median_ratios(|p| p.floor_with_bytes) else {
            return;
        };
        let floors: Vec<f64> = self
            .0
            .iter()
            .filter_map(|p| p.floor_with_bytes.map(|f| f.mean))
            .collect();
        let Some(floor) = median(floors) else { return };
        let by_cpu = ratios
            .by_cpu
            .map_or(String::new(), |r| format!("; by CPU time {r:.2}x"));
        println!(
            "                with its bytes (SHA-384, AES-CBC, HMAC, one copy; inflation for a save): floor {floor:.0}/s = {:.1} MiB/s; the server {:.2}x that ({:.2}x its best trials){by_cpu}",
            floor * bytes as f64 / (1024.0 * 1024.0),
            ratios.by_rate,
            ratios.by_best,
        );
    }
}

/// A phase's median ratios against the floors taken around its rounds.
struct Ratios {
    /// The rate over the floor's mean rate (the same statistic).
    by_rate: f64,
    /// The rate over the floor's best trials (a lower bound).
    by_best: f64,
    /// The floor's mean seconds per request over the server's CPU seconds.
    by_cpu: Option<f64>,
}

/// The middle value (the upper one of an even count), if there is any.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Sends every request over `clients`, one in flight per client; every
/// answer must be `expected`.
async fn drive(clients: &[Client], requests: Vec<Prepared>, expected: StatusCode) -> Phase {
    let queue = Arc::new(Mutex::new(VecDeque::from(requests)));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|client| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = Vec::new();
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(prepared) = next else { break };
                    let sent = Instant::now();
                    match client.send(prepared.request()).await {
                        Ok(reply) if reply.status == expected => latencies.push(sent.elapsed()),
                        Ok(reply) => failures.push(format!(
                            "{} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        )),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut phase = Phase::empty();
    for task in tasks {
        let (latencies, failures) = task.await.expect("client task");
        phase.latencies.extend(latencies);
        phase.failures += failures.len();
        if phase.first_failure.is_none() {
            phase.first_failure = failures.into_iter().next();
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

/// The cost of the P-384 operations one request needs, single-threaded,
/// with one library.
struct Primitives {
    library: String,
    /// The mean rates of the trials.
    mean: Speeds,
    /// The best trials' rates.
    best: Speeds,
}

impl Primitives {
    fn new(library: String, verify: Rate, sign: Rate, agree: Rate, keygen: Rate) -> Primitives {
        let speeds = |of: fn(Rate) -> f64| Speeds {
            verify: of(verify),
            sign: of(sign),
            agree: of(agree),
            keygen: of(keygen),
        };
        Primitives {
            library,
            mean: speeds(|r| r.mean),
            best: speeds(|r| r.best),
        }
    }

    fn saves_per_second(&self) -> Rate {
        Rate {
            mean: self.mean.saves_per_second(),
            best: self.best.saves_per_second(),
        }
    }

    fn loads_per_second(&self) -> Rate {
        Rate {
            mean: self.mean.loads_per_second(),
            best: self.best.loads_per_second(),
        }
    }

    fn print(&self) {
        let m = &self.mean;
        println!(
            "  {} (one core): ES384 verify {:.0}/s, sign {:.0}/s, ECDH {:.0}/s, keygen {:.0}/s",
            self.library, m.verify, m.sign, m.agree, m.keygen
        );
        let (saves, loads) = (self.saves_per_second(), self.loads_per_second());
        println!(
            "    floor: save (2 verify + 1 ECDH) {:.0}/s, load (verify + sign + keygen + ECDH) {:.0}/s \
             (best trials: {:.0}/s, {:.0}/s)",
            saves.mean, loads.mean, saves.best, loads.best
        );
    }
}

/// The four primitives' rates, in one statistic.
struct Speeds {
    verify: f64,
    sign: f64,
    agree: f64,
    keygen: f64,
}

impl Speeds {
    /// A save: the request signature and the inner JWS verified, one key
    /// agreement with the receiver's static key.
    fn saves_per_second(&self) -> f64 {
        1.0 / (2.0 / self.verify + 1.0 / self.agree)
    }

    /// A load: the request signature verified, the reply signed, an
    /// ephemeral key generated and agreed with the platform key.
    fn loads_per_second(&self) -> f64 {
        1.0 / (1.0 / self.verify + 1.0 / self.sign + 1.0 / self.keygen + 1.0 / self.agree)
    }
}

/// The floor: the primitives of the library the server uses (aws-lc-rs),
/// and OpenSSL's (what it used before, through josekit) for comparison.
struct CryptoFloor {
    server: Primitives,
    openssl: Primitives,
}

impl CryptoFloor {
    fn measure(seconds: f64) -> CryptoFloor {
        CryptoFloor {
            server: measure_aws_lc(seconds),
            openssl: measure_openssl(seconds),
        }
    }

    fn print(&self) {
        println!(
            "  crypto floor at the start; the ratios below are against the first, measured again before and after each round:"
        );
        self.server.print();
        self.openssl.print();
    }
}

/// aws-lc-rs's P-384 as the server calls it: keys parsed once, a 600-byte
/// signing input hashed per signature.
fn measure_aws_lc(seconds: f64) -> Primitives {
    use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PrivateKey, ECDH_P384};
    use aws_lc_rs::encoding::AsBigEndian;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P384_SHA384_FIXED,
        ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    let rng = SystemRandom::new();
    let message = [7u8; 600];
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).expect("key");
    let signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let verifier = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, signer.public_key().as_ref())
        .expect("public key");
    let signature = signer.sign(&rng, &message).expect("sign");
    let verify = rate(seconds, || {
        verifier
            .verify_sig(&message, signature.as_ref())
            .expect("verify");
    });
    let sign = rate(seconds, || {
        signer.sign(&rng, &message).expect("sign");
    });
    let ours = PrivateKey::generate(&ECDH_P384).expect("key");
    let theirs = PrivateKey::generate(&ECDH_P384).expect("key");
    let peer = agreement::ParsedPublicKey::try_from(agreement::UnparsedPublicKey::new(
        &ECDH_P384,
        theirs
            .compute_public_key()
            .expect("public key")
            .as_ref()
            .to_vec(),
    ))
    .expect("public key");
    let agree = rate(seconds, || {
        agreement::agree(&ours, peer.clone(), (), |z| Ok(z.len())).expect("agreement");
    });
    let keygen = rate(seconds, || {
        let key = EphemeralPrivateKey::generate(&ECDH_P384, &rng).expect("key");
        let public = key.compute_public_key().expect("public key");
        let _: aws_lc_rs::encoding::EcPublicKeyUncompressedBin<'_> =
            public.as_be_bytes().expect("point");
    });
    Primitives::new(
        "aws-lc-rs (AWS-LC), the server's".into(),
        verify,
        sign,
        agree,
        keygen,
    )
}

/// OpenSSL's bare primitives, contexts and keys reused, as `openssl speed`
/// measures them.
fn measure_openssl(seconds: f64) -> Primitives {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("P-384");
    let ours = EcKey::generate(&group).expect("key");
    let theirs = EcKey::generate(&group).expect("key");
    let digest = hash(MessageDigest::sha384(), &[7u8; 600]).expect("digest");
    let signature = EcdsaSig::sign(&digest, &ours).expect("sign");
    let verify = rate(seconds, || {
        assert!(signature.verify(&digest, &ours).expect("verify"));
    });
    let sign = rate(seconds, || {
        EcdsaSig::sign(&digest, &ours).expect("sign");
    });
    let mut context = BigNumContext::new().expect("context");
    let agree = rate(seconds, || {
        let mut shared = EcPoint::new(&group).expect("point");
        shared
            .mul2(
                &group,
                theirs.public_key(),
                ours.private_key(),
                &mut context,
            )
            .expect("agreement");
    });
    let keygen = rate(seconds, || {
        EcKey::generate(&group).expect("key");
    });
    Primitives::new(
        format!("OpenSSL {}, before", openssl::version::version()),
        verify,
        sign,
        agree,
        keygen,
    )
}

/// Like [`drive`], but stops taking requests once `done` is set; counts
/// only the requests answered by then.
async fn drive_until(
    clients: Vec<Client>,
    requests: Vec<Prepared>,
    expected: StatusCode,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Phase {
    let queue = Arc::new(Mutex::new(VecDeque::from(requests)));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
            tokio::spawn(async move {
                let mut phase = Phase::empty();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(prepared) = next else { break };
                    let sent = Instant::now();
                    let reply = client.send(prepared.request()).await;
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    match reply {
                        Ok(reply) if reply.status == expected => {
                            phase.latencies.push(sent.elapsed())
                        }
                        Ok(reply) => {
                            phase.failures += 1;
                            phase.first_failure.get_or_insert(reply.status.to_string());
                        }
                        Err(e) => {
                            phase.failures += 1;
                            phase.first_failure.get_or_insert(e.to_string());
                        }
                    }
                }
                phase
            })
        })
        .collect();
    let mut all = Phase::empty();
    for task in tasks {
        let phase = task.await.expect("client task");
        all.latencies.extend(phase.latencies);
        all.failures += phase.failures;
        if all.first_failure.is_none() {
            all.first_failure = phase.first_failure;
        }
    }
    all.elapsed = started.elapsed();
    if queue.lock().is_ok_and(|q| q.is_empty()) {
        println!("  (the saves ran out before the backup ended: it outlasted them)");
    }
    all
}

/// Writes `count` states of 1 KiB into a new sled database at `data`.
fn fill(data: &Path, count: usize) {
    use flow_store::model::{State, StateMeta, Timestamp};
    let started = Instant::now();
    let db = flow_store::store::sled::Database::open(data, flow_store::config::DEFAULT_CACHE_BYTES)
        .expect("database");
    let tenant = Uuid::new_v4();
    let updated = Timestamp::parse("2026-01-01T00:00:00Z").expect("timestamp");
    let content = json!({ "padding": pseudo_random_text(1000) }).to_string();
    let mut batch = Vec::with_capacity(1000);
    for n in 0..count {
        batch.push(State {
            tenant,
            id: Uuid::new_v4(),
            meta: StateMeta {
                parent: None,
                flow: None,
                flow_version: None,
                current_map_element: None,
                current_user: None,
                is_done: false,
                created_at: None,
                updated_at: updated.clone(),
                expires_at: None,
            },
            content: content.clone(),
        });
        if batch.len() == 1000 || n + 1 == count {
            db.save_all(&batch).expect("fill");
            batch.clear();
        }
    }
    db.flush().expect("flush");
    println!(
        "  (filled the database with {count} states in {:.1} s, not timed)",
        started.elapsed().as_secs_f64()
    );
}

/// Operations per second of one primitive, two ways.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Over all five trials (operations over seconds): the same statistic
    /// as a round's rate (requests over seconds), so the ratios use it.
    mean: f64,
    /// The best trial: on a host whose speed swings by ±10% from one tenth
    /// of a second to the next, the top of that swing, not what the server
    /// could have had over a round. Printed beside, as a bound.
    best: f64,
}

impl Rate {
    /// The floor over a round from the floors measured just before and just
    /// after it: the mean of their means (each over the same seconds), the
    /// better of their best trials. One side alone is a sample of a speed
    /// that moves by ±10% within seconds; the two bracket the round.
    fn around(self, after: Rate) -> Rate {
        Rate {
            mean: (self.mean + after.mean) / 2.0,
            best: self.best.max(after.best),
        }
    }
}

impl Rate {
    /// This rate with `extra` seconds more per operation.
    fn plus(self, extra: Seconds) -> Rate {
        Rate {
            mean: 1.0 / (1.0 / self.mean + extra.mean),
            best: 1.0 / (1.0 / self.best + extra.best),
        }
    }
}

/// Seconds per operation, from a [`Rate`]'s two statistics.
#[derive(Debug, Clone, Copy)]
struct Seconds {
    mean: f64,
    best: f64,
}

impl Seconds {
    fn of(rates: &[Rate]) -> Seconds {
        Seconds {
            mean: rates.iter().map(|r| 1.0 / r.mean).sum(),
            best: rates.iter().map(|r| 1.0 / r.best).sum(),
        }
    }
}

/// The sizes a large state's cryptography runs over, read from a save
/// request the bench built (its JWE's ciphertext) or bounded from below by
/// the content (the inner JWS's signing input is base64url of claims that
/// hold at least the content).
#[derive(Debug, Clone, Copy)]
struct StateSizes {
    ciphertext: usize,
    signing_input: usize,
}

impl StateSizes {
    fn of(body: &Bytes, content: usize) -> Option<StateSizes> {
        let items: serde_json::Value = serde_json::from_slice(body).ok()?;
        let token = items.get(0)?.get("token")?.as_str()?;
        let ciphertext = token.split('.').nth(3)?.len() * 3 / 4;
        Some(StateSizes {
            ciphertext,
            signing_input: content.div_ceil(3) * 4,
        })
    }
}

/// What a large state's bytes add to the floor, the contract's per-byte
/// work and one copy, on aws-lc-rs and the server's DEFLATE (flate2 on
/// zlib-rs). A save: the inner JWS's SHA-384 over its signing input,
/// HMAC-SHA-384 over the ciphertext, AES-192-CBC decryption of a copy of
/// it, and the inflation the request's `zip: DEF` demands (of the signing
/// input deflated at josekit's level, as the bench's requests are). A load:
/// the same hash (to sign) and AES-192-CBC encryption and HMAC of the
/// uncompressed plaintext (the contract lets a reply go uncompressed; the
/// server's level-1 DEFLATE is a choice, not part of the floor).
#[derive(Debug, Clone, Copy)]
struct ByteWork {
    save: Seconds,
    load: Seconds,
}

impl ByteWork {
    fn measure(seconds: f64, sizes: StateSizes) -> ByteWork {
        let signing_input = vec![b'e'; sizes.signing_input];
        let hash = rate(seconds, || {
            std::hint::black_box(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA384,
                &signing_input,
            ));
        });
        let inflate = inflate_rate(seconds, sizes.signing_input);
        let (request_mac, decrypt) = (
            mac_rate(seconds, sizes.ciphertext),
            decrypt_rate(seconds, sizes.ciphertext),
        );
        // An uncompressed reply encrypts the compact JWS, a little more
        // than its signing input.
        let (reply_mac, encrypt) = (
            mac_rate(seconds, sizes.signing_input),
            encrypt_rate(seconds, sizes.signing_input),
        );
        ByteWork {
            save: Seconds::of(&[hash, inflate, request_mac, decrypt]),
            load: Seconds::of(&[hash, encrypt, reply_mac]),
        }
    }
}

/// Inflations per second of `len` bytes of the bench's kind of text
/// (base64url of a state), deflated at flate2's default level (josekit's).
fn inflate_rate(seconds: f64, len: usize) -> Rate {
    use std::io::{Read, Write};
    let text = URL_SAFE_NO_PAD.encode(pseudo_random_text(len * 3 / 4));
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("deflate");
    let deflated = encoder.finish().expect("deflate");
    let mut out = Vec::with_capacity(text.len());
    rate(seconds, || {
        out.clear();
        flate2::bufread::DeflateDecoder::new(deflated.as_slice())
            .read_to_end(&mut out)
            .expect("inflate");
    })
}

/// The AES-192 key, IV and HMAC-SHA-384 key of the byte-work rates (the
/// cost does not depend on them).
const BYTE_KEY: [u8; 24] = [3; 24];
const BYTE_IV: [u8; 16] = [5; 16];

/// Encrypts `buffer` in place with AES-192-CBC (PKCS#7 padding).
fn cbc_encrypt(buffer: &mut Vec<u8>) {
    use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey};
    let cipher = UnboundCipherKey::new(&aws_lc_rs::cipher::AES_192, &BYTE_KEY).expect("key");
    PaddedBlockEncryptingKey::cbc_pkcs7(cipher)
        .expect("key")
        .less_safe_encrypt(buffer, EncryptionContext::Iv128(BYTE_IV.into()))
        .expect("encrypt");
}

/// HMAC-SHA-384s per second over `len` bytes.
fn mac_rate(seconds: f64, len: usize) -> Rate {
    use aws_lc_rs::hmac;
    let data = vec![b'c'; len];
    let key = hmac::Key::new(hmac::HMAC_SHA384, &BYTE_KEY);
    rate(seconds, || {
        std::hint::black_box(hmac::sign(&key, &data));
    })
}

/// AES-192-CBC decryptions per second of a copy of `len` bytes of
/// ciphertext (a save's request).
fn decrypt_rate(seconds: f64, len: usize) -> Rate {
    use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
    let mut ciphertext = vec![b'p'; len.saturating_sub(16)];
    cbc_encrypt(&mut ciphertext);
    let mut buffer = Vec::with_capacity(ciphertext.len());
    rate(seconds, || {
        buffer.clear();
        buffer.extend_from_slice(&ciphertext);
        let cipher = UnboundCipherKey::new(&aws_lc_rs::cipher::AES_192, &BYTE_KEY).expect("key");
        PaddedBlockDecryptingKey::cbc_pkcs7(cipher)
            .expect("key")
            .decrypt(&mut buffer, DecryptionContext::Iv128(BYTE_IV.into()))
            .expect("decrypt");
    })
}

/// AES-192-CBC encryptions per second of a copy of `len` bytes of
/// plaintext (a load's reply). CBC encryption is serial, so per byte it
/// costs several times decryption.
fn encrypt_rate(seconds: f64, len: usize) -> Rate {
    let plaintext = vec![b'p'; len];
    let mut buffer = Vec::with_capacity(len + 16);
    rate(seconds, || {
        buffer.clear();
        buffer.extend_from_slice(&plaintext);
        cbc_encrypt(&mut buffer);
    })
}

/// Operations per second of `op` over about `seconds`, in five trials.
fn rate(seconds: f64, mut op: impl FnMut()) -> Rate {
    op();
    let (mut best, mut count, mut elapsed) = (0.0f64, 0u64, 0.0f64);
    for _ in 0..5 {
        let started = Instant::now();
        let mut trial = 0u64;
        while started.elapsed().as_secs_f64() < seconds / 5.0 {
            op();
            trial += 1;
        }
        let took = started.elapsed().as_secs_f64();
        best = best.max(trial as f64 / took);
        count += trial;
        elapsed += took;
    }
    Rate {
        mean: count as f64 / elapsed,
        best,
    }
}

/// Pins the calling thread alone to `core` (`taskset` without `-a` on the
/// main thread's id, which is the process id: `Bench::start` runs there).
fn pin_this_thread(core: &str) -> bool {
    Command::new("taskset")
        .args(["-p", "-c", core, &std::process::id().to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pins every thread of `pid` to `core`, when `taskset` (util-linux) is
/// there. New threads inherit the pinning.
fn pin(pid: u32, core: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", core, &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}
/// `len` characters of text that does not compress (a state is often
/// already dense JSON).
fn pseudo_random_text(len: usize) -> String {
    let mut state = Uuid::new_v4().as_u128() as u64 | 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create file");
    file.write_all(text.as_bytes()).expect("write file");
}
