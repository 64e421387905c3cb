//! Prometheus metrics on their own plain-HTTP listener: the counters move
//! with real traffic, Debian's `promtool` accepts what `curl` gets and the
//! shipped alert rules (whose unit tests, `tests/prometheus/`, it runs),
//! the shipped dashboard queries only exported metrics, and a real
//! Prometheus scrapes the store and sees a save.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::*;

/// What Prometheus 2.42 sends as `Accept` when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn server_with_metrics() -> (Server, std::net::SocketAddr) {
    let server = Setup {
        metrics: true,
        ..Setup::default()
    }
    .start()
    .await;
    let addr = server.metrics_addr.expect("a metrics listener");
    (server, addr)
}

/// Traffic that moves every counter: a batch of two saves, an older save
/// (ignored), a load, a miss, a delete of one existing and one unknown id,
/// a bad signature, an unknown method. Returns the ids it used.
async fn traffic(server: &Server) -> Vec<String> {
    let (t, a, b) = (uuid(), uuid(), uuid());
    let tokens = [
        server.token(&server.claims(&t, &a, r#"{"n":1}"#, "2024-01-02T00:00:00Z")),
        server.token(&server.claims(&t, &b, r#"{"n":2}"#, "2024-01-02T00:00:00Z")),
    ];
    server.save(&t, &tokens).await.expect_status(204);
    server
        .save_ok(&t, &a, r#"{"n":0}"#, "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(server.content(&t, &a).await, r#"{"n":1}"#);
    let missing = uuid();
    server.expect_absent(&t, &missing).await;
    server.delete(&t, &[&b, &missing]).await.expect_status(204);
    let path = server.state_path(&t, &a);
    server
        .send(server.with_sig("GET", &path, "not-a-jws"))
        .await
        .expect_error(401);
    server
        .send(Req::new("BREW", &server.states_path(&t)))
        .await
        .expect_status(405);
    vec![t, a, b, missing]
}

fn labels(method: &str, route: &str, status: u16) -> [String; 3] {
    [
        format!("http_request_method=\"{method}\""),
        format!("http_route=\"{route}\""),
        format!("http_response_status_code=\"{status}\""),
    ]
}

fn count(scrape: &Scrape, method: &str, route: &str, status: u16) -> f64 {
    let labels = labels(method, route, status);
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    scrape.sum("http_server_request_duration_seconds_count", &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_real_traffic() {
    let (server, addr) = server_with_metrics().await;
    let before = Scrape::from(addr).await;
    assert_eq!(before.value("flow_store_states_saved_total"), 0.0);
    assert_eq!(before.value("flow_store_states"), 0.0);

    let ids = traffic(&server).await;
    let after = Scrape::from(addr).await;
    assert_eq!(after.value("flow_store_states_saved_total"), 2.0);
    assert_eq!(after.value("flow_store_states_ignored_total"), 1.0);
    assert_eq!(after.value("flow_store_states_loaded_total"), 1.0);
    assert_eq!(after.value("flow_store_states_deleted_total"), 1.0);
    assert_eq!(after.value("flow_store_states_purged_total"), 0.0);
    assert_eq!(
        after.sum(
            "flow_store_auth_rejections_total",
            &["credential=\"signature\"", "reason=\"malformed\""]
        ),
        1.0,
        "{}",
        after.text
    );
    assert_eq!(count(&after, "POST", "/states/{tenant}", 204), 2.0);
    assert_eq!(count(&after, "GET", "/states/{tenant}/{id}", 200), 1.0);
    assert_eq!(count(&after, "GET", "/states/{tenant}/{id}", 404), 1.0);
    assert_eq!(count(&after, "GET", "/states/{tenant}/{id}", 401), 1.0);
    assert_eq!(count(&after, "DELETE", "/states/{tenant}", 204), 1.0);
    assert_eq!(count(&after, "_OTHER", "/states/{tenant}", 405), 1.0);
    assert_eq!(after.value("http_server_active_requests"), 0.0);
    // The first scrape sampled the empty database; this one is within the
    // sampling interval, so the count is the earlier one.
    assert_eq!(after.value("flow_store_states"), 0.0);
    assert_eq!(after.value("flow_store_healthy"), 1.0);
    assert!(after.value("flow_store_database_size_bytes") > 0.0);
    let free = after.value("flow_store_disk_free_bytes");
    assert!(free > 0.0 && free <= after.value("flow_store_disk_size_bytes"));
    let in_two_weeks = (time::OffsetDateTime::now_utc().unix_timestamp() + 14 * 86_400) as f64;
    assert!(after.value("flow_store_tls_certificate_expiry_timestamp_seconds") > in_two_weeks);
    assert_eq!(
        after.value("flow_store_last_backup_success_timestamp_seconds"),
        0.0
    );
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        after.sum("flow_store_build_info", &[&version, "engine=\"sled\""]),
        1.0
    );
    assert!(after.value("process_resident_memory_bytes") > 0.0);
    assert!(after.value("process_open_fds") > 0.0);
    assert!(after.has("process_cpu_seconds_total"));
    assert!(after.has("process_start_time_seconds"));
    for id in ids {
        assert!(!after.text.contains(&id), "the id {id} is in a metric");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_count_is_sampled_from_the_database() {
    let (server, addr) = server_with_metrics().await;
    let t = uuid();
    for _ in 0..3 {
        server
            .save_ok(&t, &uuid(), "{}", "2024-01-01T00:00:00Z")
            .await;
    }
    assert_eq!(Scrape::from(addr).await.value("flow_store_states"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_counts_what_it_purges() {
    let server = Setup {
        metrics: true,
        sweep_interval_seconds: Some(1),
        ..Setup::default()
    }
    .start()
    .await;
    let addr = server.metrics_addr.expect("a metrics listener");
    let (t, id) = (uuid(), uuid());
    let mut claims = server.claims(&t, &id, "{}", &rfc3339(T0));
    claims["expiresAt"] = serde_json::json!(rfc3339(T0 + 60));
    server
        .save(&t, &[server.token(&claims)])
        .await
        .expect_status(204);
    server.advance(61);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Scrape::from(addr)
        .await
        .value("flow_store_states_purged_total")
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no purge counted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_failed_handshakes_are_counted() {
    let (server, addr) = server_with_metrics().await;
    let open = server.http.connect(false).await;
    let scrape = Scrape::from(addr).await;
    assert!(scrape.value("flow_store_open_connections") >= 1.0);
    drop(open);
    let mut raw = tokio::net::TcpStream::connect(server.http.addr)
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::from(addr).await;
        let failed = scrape.sum(
            "flow_store_tls_handshake_failures_total",
            &["reason=\"error\""],
        );
        if failed == 1.0 && scrape.value("flow_store_open_connections") == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a plain-text client: {}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_text_for_curl_openmetrics_for_prometheus() {
    let (_server, addr) = server_with_metrics().await;
    let plain = get(addr, "/metrics", None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!plain.body.contains("# EOF"), "{}", plain.body);
    let open = get(addr, "/metrics", Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(open.status, 200);
    assert!(
        open.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        open.headers
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_never_on_the_platform_port() {
    let (server, addr) = server_with_metrics().await;
    assert_ne!(addr.port(), server.http.addr.port());
    for path in ["/metrics".to_string(), format!("{BASE}/metrics")] {
        server.send(Req::new("GET", &path)).await.expect_error(404);
    }
    assert_eq!(get(addr, "/", None).await.status, 404);
    assert_eq!(get(addr, "/metrics/x", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_what_curl_gets() {
    if !installed(PROMTOOL, "promtool_accepts_what_curl_gets") {
        return;
    }
    let (server, addr) = server_with_metrics().await;
    traffic(&server).await;
    let scrape = Scrape::from(addr).await;
    let checked = promtool(&["check", "metrics"], &scrape.text);
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\nof:\n{}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        scrape.text
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    if !installed(PROMTOOL, "promtool_accepts_the_alert_rules") {
        return;
    }
    let rules = Prometheus::shipped_rules();
    let checked = promtool(&["check", "rules", &rules.display().to_string()], "");
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success() && out.contains("SUCCESS: 6 rules found"),
        "promtool check rules: {}\n{out}{}",
        checked.status,
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_alerts_fire_when_they_should_and_only_then() {
    if !installed(PROMTOOL, "the_alerts_fire_when_they_should_and_only_then") {
        return;
    }
    let tests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus/flow-store-rules.test.yml");
    let tested = promtool(&["test", "rules", &tests.display().to_string()], "");
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && out.contains("SUCCESS"),
        "promtool test rules: {}\n{out}{}",
        tested.status,
        String::from_utf8_lossy(&tested.stderr)
    );
}

/// The metric names (of flow-store's own families) that `text` mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| {
            ["flow_store_", "http_server_", "process_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
        })
        .map(str::to_string)
        .collect()
}

/// Every name a scrape exports: its samples, and the families it declares
/// (a labelled counter has no sample before its first event), with a
/// histogram's `_bucket`, `_sum` and `_count`.
fn exported(scrape: &Scrape) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = scrape
        .samples()
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    for line in scrape.text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_query_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("packaging/grafana/flow-store.json"))
        .expect("packaging/grafana/flow-store.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Request rate",
        "Error rate",
        "Latency percentiles",
        "Saves, loads, deletes",
        "Rejections by reason",
        "Disk free",
        "Certificate days left",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    let rules = std::fs::read_to_string(Prometheus::shipped_rules()).expect("the rules");

    let (server, addr) = server_with_metrics().await;
    traffic(&server).await;
    let exported = exported(&Scrape::from(addr).await);
    for (file, text) in [("dashboard", &dashboard), ("rules", &rules)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{file} uses only {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {file} queries {unknown:?}, which no scrape exports"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_store() {
    if !installed(PROMETHEUS, "a_real_prometheus_scrapes_the_store") {
        return;
    }
    let (server, addr) = server_with_metrics().await;
    let prometheus = Prometheus::start(addr, &Prometheus::shipped_rules()).await;
    let limit = Duration::from_secs(60);
    prometheus
        .wait_for("the target to be up", limit, || async {
            prometheus.query("up{job=\"flow-store\"}").await == [1.0]
        })
        .await;
    prometheus
        .wait_for("a first sample of the save counter", limit, || async {
            prometheus.query("flow_store_states_saved_total").await == [0.0]
        })
        .await;
    let t = uuid();
    for _ in 0..3 {
        server
            .save_ok(&t, &uuid(), "{}", "2024-01-01T00:00:00Z")
            .await;
    }
    prometheus
        .wait_for("the save counter to reach 3", limit, || async {
            prometheus.query("flow_store_states_saved_total").await == [3.0]
        })
        .await;
    prometheus
        .wait_for("the alert rules to be evaluated", limit, || async {
            let data = prometheus.api("/api/v1/rules").await;
            let rules: Vec<&serde_json::Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            rules.len() == 6 && rules.iter().all(|r| r["health"] == "ok")
        })
        .await;
    // Healthy, and the certificate is far from expiry: of the shipped
    // alerts only the backup one may be on its way (no backup yet), and the
    // disk one where this machine's disk is in fact nearly full. A passing
    // hiccup of a loaded machine (one scrape slower than its 1 s timeout
    // makes `up` 0) sets an alert pending that clears with it, so only one
    // that stays is a rule firing on a healthy store.
    let expected = expected_alerts(server.dir.path());
    let seen = std::sync::Mutex::new(Vec::new());
    prometheus
        .wait_for("no alert but the expected ones", limit, || async {
            let alerts = prometheus.api("/api/v1/alerts").await;
            let unexpected: Vec<&serde_json::Value> = alerts["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| {
                    let name = a["labels"]["alertname"].as_str().unwrap_or_default();
                    !expected.contains(&name)
                })
                .collect();
            // Said once per change of which alerts are on, with their values.
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let which = |a: &&serde_json::Value| {
                format!(
                    "{} ({})",
                    text(&a["labels"]["alertname"]),
                    text(&a["state"])
                )
            };
            let now: Vec<String> = unexpected.iter().map(which).collect();
            let mut seen = seen.lock().expect("the alerts seen");
            if !unexpected.is_empty() && *seen != now {
                let values: Vec<String> = unexpected
                    .iter()
                    .map(|a| format!("{} value {}", which(a), text(&a["value"])))
                    .collect();
                eprintln!("alerts on a healthy store, waiting for them to clear: {values:?}");
            }
            *seen = now;
            unexpected.is_empty()
        })
        .await;
}

/// The shipped alerts that may be pending on a healthy store whose data
/// lives in `data`: the backup one (no backup yet), and the disk one if the
/// filesystem holding `data` has less than the rule's 10% free.
fn expected_alerts(data: &Path) -> Vec<&'static str> {
    let mut expected = vec!["FlowStoreNoRecentBackup"];
    let free = fs2::available_space(data).expect("free space of the data directory");
    let size = fs2::total_space(data).expect("size of the data directory's filesystem");
    if (free as f64) < 0.10 * size as f64 {
        eprintln!("this machine's disk has {free} of {size} bytes free: the disk alert may fire");
        expected.push("FlowStoreDiskNearlyFull");
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_metrics_on_their_own_listener() {
    let deployment = Deployment::new();
    deployment.configure(|c| c.metrics.listen = "127.0.0.1:0".into());
    let running = deployment.spawn().expect("flow-store serve");
    let addr = running
        .metrics_addr()
        .unwrap_or_else(|| panic!("no metrics line in:\n{}", running.stderr_text()));
    running.health().await.expect_status(200);
    let scrape = Scrape::from(addr).await;
    assert_eq!(
        count(&scrape, "GET", "/health", 200),
        1.0,
        "{}",
        scrape.text
    );
    running.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let deployment = Deployment::new();
    deployment.configure(|c| c.metrics.listen = addr.to_string());
    let failed = match deployment.spawn() {
        Ok(running) => panic!(
            "served with its metrics port taken:\n{}",
            running.stderr_text()
        ),
        Err(failed) => failed,
    };
    assert!(
        failed
            .stderr
            .contains(&format!("cannot listen on {addr} (metrics.listen)")),
        "{}",
        failed.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_metrics_listen_serves_no_metrics() {
    let deployment = Deployment::new();
    deployment.configure(|c| c.metrics.listen = String::new());
    let running = deployment.spawn().expect("flow-store serve");
    running.health().await.expect_status(200);
    assert_eq!(running.metrics_addr(), None, "{}", running.stderr_text());
    running.terminate().await;
}
