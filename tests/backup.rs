//! Operations with the real binary: `status`, an online `backup` from a
//! running store (consistent under concurrent writers, checked record by
//! record), `backup verify`, `restore` into a fresh data directory that a
//! store then serves byte for byte; corrupted and truncated files refused
//! with their offset and nothing written; a non-empty target or a running
//! store refused; and the admin socket refusing an unprivileged peer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_store::backup::format::Reader;
use serde_json::Value;

use crate::common::{run_bounded, run_bounded_into, tool_command, uuid, Deployment, Running};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn start(d: &Deployment) -> Running {
    d.spawn().unwrap_or_else(|f| panic!("did not start: {f:?}"))
}

/// `flow-store backup -o FILE`, required to succeed.
fn backup_to(d: &Deployment, file: &Path) {
    let out = d.cli(&["backup", "--output", &file.to_string_lossy()]);
    assert!(out.status.success(), "backup failed: {}", text(&out.stderr));
}

/// Every state in a backup file: id -> content.
fn contents(file: &Path) -> HashMap<String, String> {
    let mut reader = Reader::new(std::fs::File::open(file).unwrap()).unwrap();
    let mut out = HashMap::new();
    while let Some(state) = reader.next_state().unwrap() {
        out.insert(state.id.to_string(), state.content);
    }
    out
}

/// A listing of every file under `dir` with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

// Contents a store must give back exactly: unicode, escapes, a large one.
fn content(i: usize) -> String {
    match i % 4 {
        0 => format!("{{\"n\":{i},\"text\":\"é ü 漢字 \\\"quoted\\\" \\n\"}}"),
        1 => format!("[{i}, 1.50, true, null]"),
        2 => format!("\"{}\"", "x".repeat(200 * 1024 + i)),
        _ => format!("{{\"n\":{i}}}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_verify_restore_serves_every_state_byte_identical() {
    let d = Deployment::new();
    let run = start(&d);
    let tenant = uuid();
    let ids: Vec<String> = (0..60).map(|_| uuid()).collect();
    for chunk in ids.chunks(10).enumerate() {
        let (c, chunk) = chunk;
        let tokens: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let claims = run.claims(&tenant, id, &content(c * 10 + j), "2024-01-01T00:00:00Z");
                run.token(&claims)
            })
            .collect();
        run.save(&tenant, &tokens).await.expect_status(204);
    }
    let gone = uuid();
    run.save_ok(&tenant, &gone, "\"deleted\"", "2024-01-01T00:00:00Z")
        .await;
    run.delete(&tenant, &[&gone]).await.expect_status(204);

    let status = d.cli(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["states"], 60);
    assert_eq!(report["engine"], "sled");
    assert!(report["certificate"]["days_left"].as_i64().unwrap() > 0);
    assert!(report["stores"][0]["key_ids"].as_array().unwrap().len() == 2);
    assert!(!text(&status.stdout).contains("\"d\""), "no key material");

    let file = d.dir.path().join("full.backup");
    backup_to(&d, &file);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds content: mode 0600");
    let status = d.cli(&["status", "--json"]);
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["last_backup"]["states"], 60);
    assert!(report["last_backup"]["file"]
        .as_str()
        .unwrap()
        .ends_with("full.backup"));

    let verify = run_bounded(tool_command(&["backup", "verify"]).arg(&file));
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("60 states"),
        "{}",
        text(&verify.stdout)
    );

    run.terminate().await;
    std::fs::rename(d.data_dir(), d.dir.path().join("data.old")).unwrap();
    let restore = d.cli(&["restore", &file.to_string_lossy()]);
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    let run = start(&d);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(run.content(&tenant, id).await, content(i), "state {i}");
    }
    run.expect_absent(&tenant, &gone).await;
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_concurrent_writers_holds_exactly_the_acknowledged_batches() {
    let d = Deployment::new();
    let run = Arc::new(start(&d));
    let stop = Arc::new(AtomicBool::new(false));
    let tenant = uuid();
    // Filler so the backup takes a while.
    for _ in 0..20 {
        let tokens: Vec<String> = (0..20)
            .map(|i| run.token(&run.claims(&tenant, &uuid(), &content(i), "2024-01-01T00:00:00Z")))
            .collect();
        run.save(&tenant, &tokens).await.expect_status(204);
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (run, stop, tenant) = (Arc::clone(&run), Arc::clone(&stop), tenant.clone());
            tokio::spawn(async move {
                let (a, b) = (uuid(), uuid());
                // One (started, acknowledged) per version, from 1.
                let mut log: Vec<(Instant, Instant)> = Vec::new();
                let mut v = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    let body = format!("\"w{w}-v{v}\"");
                    let at = format!(
                        "2024-01-01T{:02}:{:02}:{:02}Z",
                        v / 3600,
                        v / 60 % 60,
                        v % 60
                    );
                    let tokens = [
                        run.token(&run.claims(&tenant, &a, &body, &at)),
                        run.token(&run.claims(&tenant, &b, &body, &at)),
                    ];
                    let started = Instant::now();
                    run.save(&tenant, &tokens).await.expect_status(204);
                    log.push((started, Instant::now()));
                }
                (a, b, log)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let file = d.dir.path().join("busy.backup");
    let began = Instant::now();
    let taker = {
        let mut cli = d.cli_command(&["backup"]);
        cli.arg("--output").arg(&file);
        tokio::task::spawn_blocking(move || run_bounded(&mut cli))
    };
    let out = taker.await.unwrap();
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(out.status.success(), "backup failed: {}", text(&out.stderr));
    let backed_up = contents(&file);
    let mut served_during = 0;
    for (w, writer) in writers.into_iter().enumerate() {
        let (a, b, log) = writer.await.unwrap();
        let version = |id: &str| -> usize {
            let c = backed_up.get(id).unwrap_or_else(|| {
                panic!("writer {w}: a state acknowledged before the backup is missing")
            });
            c.trim_matches('"')
                .strip_prefix(&format!("w{w}-v"))
                .unwrap()
                .parse()
                .unwrap()
        };
        let (va, vb) = (version(&a), version(&b));
        assert_eq!(va, vb, "writer {w}: a batch is split in the backup");
        let acked_before = log.iter().filter(|(_, acked)| *acked < began).count();
        let started_before_end = log.iter().filter(|(s, _)| *s < finished).count();
        assert!(
            va >= acked_before && va <= started_before_end,
            "writer {w}: version {va} in the backup; {acked_before} acknowledged before it began, {started_before_end} started before it ended"
        );
        assert!(
            log.len() > started_before_end,
            "writer {w} wrote after the backup"
        );
        served_during += log
            .iter()
            .filter(|(s, acked)| *s >= began && *acked <= finished)
            .count();
    }
    assert!(
        served_during > 0,
        "saves must be served while the backup runs"
    );
    let run = Arc::into_inner(run).expect("writers are done");
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_and_truncated_backups_are_refused_with_the_offset_and_nothing_written() {
    let d = Deployment::new();
    let run = start(&d);
    let tenant = uuid();
    let tokens: Vec<String> = (0..30)
        .map(|i| run.token(&run.claims(&tenant, &uuid(), &content(i), "2024-01-01T00:00:00Z")))
        .collect();
    run.save(&tenant, &tokens).await.expect_status(204);
    let good = d.dir.path().join("good.backup");
    backup_to(&d, &good);
    run.terminate().await;
    std::fs::rename(d.data_dir(), d.dir.path().join("data.old")).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let at = bytes.len() / 2;
    let mut flipped = bytes.clone();
    flipped[at] ^= 0x01;
    let corrupt = d.dir.path().join("corrupt.backup");
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = d.dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..at]).unwrap();

    for (file, says) in [
        (&corrupt, "corrupt at byte offset"),
        (&truncated, "truncated at byte offset"),
    ] {
        for args in [["backup", "verify"], ["restore", "--config"]] {
            let mut command = tool_command(&args);
            if args[0] == "restore" {
                command.arg(d.config_path());
            }
            let out = run_bounded(command.arg(file));
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{args:?} accepted a bad file");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
            let offset: u64 = stderr
                .split(says)
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no offset in {stderr}"));
            assert!(
                offset as usize >= at.min(bytes.len() - 1),
                "{args:?}: offset {offset} before the damage at {at}"
            );
            assert!(!d.data_dir().exists(), "{args:?} wrote a data directory");
            let leftovers: Vec<_> = std::fs::read_dir(d.dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains("restoring"))
                .collect();
            assert!(leftovers.is_empty(), "{args:?} left {leftovers:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_running_store_and_a_non_empty_target_leaving_it_untouched() {
    let d = Deployment::new();
    let run = start(&d);
    let (tenant, id) = (uuid(), uuid());
    run.save_ok(&tenant, &id, "\"kept\"", "2024-01-01T00:00:00Z")
        .await;
    let file = d.dir.path().join("one.backup");
    backup_to(&d, &file);

    let out = d.cli(&["restore", &file.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the store is running")
            && text(&out.stderr).contains("systemctl stop"),
        "{}",
        text(&out.stderr)
    );
    run.terminate().await;

    let before = tree(&d.data_dir());
    let out = d.cli(&["restore", &file.to_string_lossy()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is not empty") && stderr.contains("mv "),
        "{stderr}"
    );
    assert_eq!(tree(&d.data_dir()), before, "the target was changed");

    let status = d.cli(&["status"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(
        text(&status.stderr).contains("the store is not running"),
        "{}",
        text(&status.stderr)
    );
}

/// `flow-store status --json | grep -q healthy` once failed when `grep`
/// had gone before the last line was written: exit code 101 and a panic
/// on stderr. Here the pipe's reader is gone before the first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_unmoved_by_a_reader_that_left_and_fails_on_a_full_disk() {
    let d = Deployment::new();
    let run = start(&d);
    for args in [&["status", "--json"][..], &["status"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = run_bounded_into(&mut d.cli_command(args), writer.into());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}: nothing said on stderr");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = run_bounded_into(&mut d.cli_command(&["status", "--json"]), full.into());
    assert_eq!(
        out.status.code(),
        Some(1),
        "a report that was not written is a failure"
    );
    assert!(
        text(&out.stderr).contains("cannot write to standard output: No space left on device"),
        "{}",
        text(&out.stderr)
    );
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_refuses_an_unprivileged_peer() {
    if !flow_store::admin::running_as_root() {
        eprintln!("SKIPPED the_admin_socket_refuses_an_unprivileged_peer: needs root to run a client as `nobody`");
        return;
    }
    let d = Deployment::new();
    let run = start(&d);
    // Let `nobody` reach the socket file: only the peer check stands.
    crate::common::set_mode(d.dir.path(), 0o755);
    crate::common::set_mode(&d.admin_socket(), 0o666);
    let binary = env!("CARGO_BIN_EXE_flow-store");
    let socket = d.admin_socket();
    let out = run_bounded(
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", binary, "status", "--socket"])
            .arg(&socket)
            .current_dir("/"),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("permission denied: run as root or as a member of flow-store"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing of the status leaks");
    // Root is served on the same socket.
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(run
        .stderr_text()
        .contains("refused: neither root nor a member"));
    run.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_keys_rebuilds_a_lost_server_and_never_overwrites() {
    let d = Deployment::new();
    let run = start(&d);
    let (tenant, id) = (uuid(), uuid());
    run.save_ok(&tenant, &id, "\"rebuilt\"", "2024-01-01T00:00:00Z")
        .await;
    let file = d.dir.path().join("keys.backup");
    let out = d.cli(&[
        "backup",
        "--include-keys",
        "--output",
        &file.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("PRIVATE KEYS"),
        "{}",
        text(&out.stderr)
    );
    let verify = run_bounded(tool_command(&["backup", "verify"]).arg(&file));
    assert!(
        text(&verify.stdout).contains("5 configuration, TLS and key files (PRIVATE KEYS)"),
        "{}",
        text(&verify.stdout)
    );
    run.terminate().await;

    // The server is lost: configuration, TLS, keys and data all gone.
    let lost = d.dir.path().join("lost");
    std::fs::create_dir(&lost).unwrap();
    let moved = ["config.toml", "tls", "keys", "data"];
    for name in moved {
        std::fs::rename(d.dir.path().join(name), lost.join(name)).unwrap();
    }
    let restore = |args: &[&str]| {
        run_bounded(
            tool_command(args)
                .arg(&file)
                .env("FLOW_STORE_CONFIG", d.config_path()),
        )
    };
    let out = restore(&["restore", "--with-keys"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        ("config.toml", 0o640),
        ("tls/cert.pem", 0o640),
        ("tls/key.pem", 0o640),
        ("keys/platform.jwk", 0o640),
        ("keys/receiver.jwk", 0o600),
    ] {
        let restored = d.dir.path().join(path);
        assert_eq!(
            std::fs::read(&restored).unwrap(),
            std::fs::read(lost.join(path)).unwrap(),
            "{path} is not byte-identical"
        );
        let got = std::fs::metadata(&restored).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{path} mode");
    }
    let run = start(&d);
    assert_eq!(run.content(&tenant, &id).await, "\"rebuilt\"");
    run.terminate().await;

    // Again over the restored files: refused, nothing written.
    std::fs::rename(d.data_dir(), d.dir.path().join("data.2")).unwrap();
    let out = restore(&["restore", "--with-keys"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("never overwritten"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !d.data_dir().exists(),
        "a refused restore wrote the database"
    );
}
