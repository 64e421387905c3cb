//! SIGHUP reload (`systemctl reload flow-store`): keys and certificate are
//! re-read without dropping open connections; a broken file keeps the old
//! ones and says why. Also `serve --dev` + `simulate --dev` end to end.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Waits until the server's stderr contains `needle`.
async fn wait_for_log(run: &Running, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run.stderr_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within 20 s:\n{}",
            run.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health_on(conn: &mut RawConn) -> u16 {
    conn.write(&raw_head("GET", &format!("{BASE}/health"), &[]))
        .await;
    conn.read_response().await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_store_without_dropping_open_connections() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let mut kept_open = RawConn::open(&run.http).await;
    assert_eq!(health_on(&mut kept_open).await, 200);

    // A second store appears in the config, as `keys import` would add it.
    let second = StoreKeys::generate();
    let kdir = d.dir.path().join("keys");
    std::fs::write(kdir.join("p2.jwk"), jwk_json(&second.platform_public())).unwrap();
    std::fs::write(kdir.join("r2.jwk"), jwk_json(&second.receiver)).unwrap();
    set_mode(&kdir.join("r2.jwk"), 0o600);
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let added = "\n[[stores]]\nname = \"second\"\nplatform_key = \"keys/p2.jwk\"\nreceiver_key = \"keys/r2.jwk\"\n";
    std::fs::write(d.config_path(), text + added).unwrap();

    let mut other = run.client.clone();
    other.platform = Platform::new(second);
    let (t, id) = (uuid(), uuid());
    other
        .save(
            &t,
            &[other.token(&other.claims(&t, &id, "\"x\"", "2024-01-01T00:00:00Z"))],
        )
        .await
        .expect_status(401);

    run.signal("HUP");
    wait_for_log(&run, "reload: keys of 2 store(s) loaded").await;
    other
        .save_ok(&t, &id, "\"second store\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(other.content(&t, &id).await, "\"second store\"");
    // The first store still works, and the connection opened before the
    // reload is still served.
    run.save_ok(&t, &id, "\"first store\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(health_on(&mut kept_open).await, 200);
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_key_keeps_the_old_keys() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let receiver = d.dir.path().join("keys/receiver.jwk");
    std::fs::write(&receiver, "{ not a key").unwrap();
    run.signal("HUP");
    wait_for_log(&run, "keeping the current keys").await;
    let (t, id) = (uuid(), uuid());
    run.save_ok(&t, &id, "\"still served\"", "2024-01-01T00:00:00Z")
        .await;
    assert_eq!(run.content(&t, &id).await, "\"still served\"");
    // No key material in the log line that explains the refusal.
    let log = run.stderr_text();
    let d_value = run
        .keys()
        .receiver
        .parameter("d")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(!log.contains(&d_value));
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_certificate_keeps_serving_tls() {
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    std::fs::write(d.dir.path().join("tls/cert.pem"), "garbage").unwrap();
    run.signal("HUP");
    wait_for_log(&run, "keeping the current certificate").await;
    run.health().await.expect_status(200);
    run.terminate().await;
}

#[test]
fn dev_mode_and_the_simulator_work_together() {
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flow-store");
    let mut serve = Command::new(bin)
        .args(["serve", "--dev"])
        .current_dir(cwd.path())
        .env("FLOW_STORE_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve --dev");
    let target = cwd.path().join("flow-store-dev/simulate.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !target.exists() {
        assert!(
            Instant::now() < deadline,
            "serve --dev wrote no simulate.json"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The file appears right after bind; give the accept loop a moment.
    let mut result = None;
    while Instant::now() < deadline {
        let out = Command::new(bin)
            .args(["simulate", "--dev"])
            .current_dir(cwd.path())
            .output()
            .expect("run simulate --dev");
        if out.status.success() {
            result = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let status = serve.wait().expect("wait for serve --dev");
    let out = result.expect("simulate --dev never passed within 30 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all steps passed"), "{stdout}");
    assert!(stdout.contains("replay the older version"), "{stdout}");
    assert!(
        status.success(),
        "serve --dev did not exit 0 on SIGTERM: {status:?}"
    );
    for private in ["keys/receiver.jwk", "keys/platform.jwk", "tls/key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cwd.path().join("flow-store-dev").join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is readable by others: {mode:o}");
    }
}

#[test]
fn simulate_fails_loudly_against_the_wrong_keys() {
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flow-store");
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    // Keys of a store this server does not know.
    let stranger = StoreKeys::generate();
    let url = format!("https://localhost:{}{BASE}", run.http.addr.port());
    let out = simulate_command(bin, cwd.path(), &url, &stranger, &d)
        .output()
        .expect("run simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("ok    health"), "{stdout}");
    assert!(stdout.contains("FAIL  save a new state"), "{stdout}");
    drop(run);
}

/// `simulate --mode save|load --pad-kib N`: the large kept state the e2e
/// test uses to reach sled's blob files comes back intact, a load that
/// expects different padding fails, and the full scenario refuses the flag.
#[test]
fn simulate_keeps_a_padded_state_across_save_and_load() {
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flow-store");
    let d = Deployment::new();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let url = format!("https://127.0.0.1:{}{BASE}", run.http.addr.port());
    let (tenant, state) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let simulate = |extra: &[&str]| {
        simulate_command(bin, cwd.path(), &url, &d.keys, &d)
            .args(["--tenant", &tenant, "--state", &state])
            .args(extra)
            .output()
            .expect("run simulate")
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let saved = simulate(&["--mode", "save", "--pad-kib", "512"]);
    assert!(saved.status.success(), "{}", text(&saved));
    let loaded = simulate(&["--mode", "load", "--pad-kib", "512"]);
    assert!(loaded.status.success(), "{}", text(&loaded));
    let unpadded = simulate(&["--mode", "load"]);
    assert!(!unpadded.status.success(), "{}", text(&unpadded));
    assert!(
        text(&unpadded).contains("differs from what was saved"),
        "{}",
        text(&unpadded)
    );
    let full = simulate(&["--pad-kib", "1"]);
    assert!(!full.status.success(), "{}", text(&full));
    assert!(
        text(&full).contains("--pad-kib applies to --mode save and --mode load only"),
        "{}",
        text(&full)
    );
    drop(run);
}

/// An operator's self-signed certificate, as `openssl req -x509` makes it
/// (it says CA:TRUE), given to `simulate --ca`: accepted because it is
/// byte for byte the server's own (pinned), while curl-like chain checks
/// alone refuse a CA used as the server's certificate. Another such
/// certificate is still refused.
#[test]
fn simulate_pins_a_self_signed_ca_certificate() {
    let d = Deployment::new();
    let self_signed = |name: &str| {
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_string(), "127.0.0.1".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    };
    let (cert, key) = self_signed("store.example.com");
    let tls = d.dir.path().join("tls");
    std::fs::write(tls.join("cert.pem"), &cert).unwrap();
    std::fs::write(tls.join("key.pem"), &key).unwrap();
    let run = d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"));
    let url = format!("https://127.0.0.1:{}{BASE}", run.http.addr.port());
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flow-store");
    let simulate = |ca: &str| {
        let mut command = simulate_command(bin, cwd.path(), &url, &d.keys, &d);
        // simulate_command wrote the test certificate as ca.pem: replace it.
        std::fs::write(cwd.path().join("ca.pem"), ca).unwrap();
        command.output().expect("run simulate")
    };
    let pinned = simulate(&cert);
    let stdout = String::from_utf8_lossy(&pinned.stdout);
    assert!(
        pinned.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
    let (other, _) = self_signed("store.example.com");
    let refused = simulate(&other);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    drop(run);
}

/// `flow-store simulate` against `url` as the platform of `keys`, trusting
/// the deployment's certificate; the key and CA files go to `dir`.
fn simulate_command(bin: &str, dir: &Path, url: &str, keys: &StoreKeys, d: &Deployment) -> Command {
    let p = dir.join("p.jwk");
    let r = dir.join("r.jwk");
    let ca = dir.join("ca.pem");
    std::fs::write(&p, jwk_json(&keys.platform)).unwrap();
    std::fs::write(&r, jwk_json(&keys.receiver_public())).unwrap();
    std::fs::write(&ca, &d.cert.cert_pem).unwrap();
    let mut command = Command::new(bin);
    command
        .args(["simulate", "--url", url, "--ca"])
        .arg(ca)
        .arg("--platform-key")
        .arg(p)
        .arg("--receiver-key")
        .arg(r);
    command
}
