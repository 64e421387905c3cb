//! systemd integration of the binary (`Type=notify`): READY=1 once it
//! listens, WATCHDOG=1 pings while the database answers (when the unit sets
//! `WatchdogSec=`), RELOADING=1 with MONOTONIC_USEC on SIGHUP, STOPPING=1 on
//! shutdown. A Unix datagram socket plays systemd's `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn receive_until(socket: &UnixDatagram, seen: &mut Vec<String>, wanted: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.contains(wanted)) {
        assert!(
            Instant::now() < deadline,
            "no {wanted:?} from the store within {limit:?}; got {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
}

#[test]
fn the_binary_speaks_sd_notify_and_feeds_the_watchdog() {
    let d = Deployment::new();
    let socket_path = d.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // `exec` keeps the shell's pid, so WATCHDOG_PID=$$ names the store.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_flow-store"))
        .arg(d.config_path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flow-store");
    let mut seen = Vec::new();
    receive_until(&socket, &mut seen, "READY=1", Duration::from_secs(30));
    // WatchdogSec=1s: pings every 0.5 s, each after a good health check.
    let first = seen.len();
    receive_until(&socket, &mut seen, "WATCHDOG=1", Duration::from_secs(10));
    assert!(
        seen[first..].iter().any(|m| m.trim() == "WATCHDOG=1"),
        "{seen:?}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    receive_until(&socket, &mut seen, "RELOADING=1", Duration::from_secs(10));
    let reloading = seen.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    receive_until(&socket, &mut seen, "STOPPING=1", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
