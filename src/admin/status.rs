//! `flow-store status`: asks the running daemon over the admin socket and
//! prints its [`Status`] for a person, or as JSON (`--json`) for scripts.

use http_body_util::BodyExt;

use super::api::Status;
use super::socket::{self, AdminError};

/// Fetches the status from the daemon on `socket`.
pub async fn fetch(socket_path: &std::path::Path) -> Result<Status, AdminError> {
    let response = socket::request(socket_path, socket::get("/status")).await?;
    let failed = |detail: String| AdminError::Failed {
        path: socket_path.to_path_buf(),
        detail,
    };
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| failed(format!("unexpected answer: {e}")))
}

/// The report as a person reads it.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<14} {value}\n"));
    line(
        "health",
        match &status.problem {
            None => "healthy".into(),
            Some(problem) => format!("UNHEALTHY: {problem}"),
        },
    );
    line("version", status.version.clone());
    line("uptime", duration(status.uptime_seconds));
    line("engine", status.engine.clone());
    line(
        "listen",
        format!("{} (base path {})", status.listen, status.base_path),
    );
    line("states", optional(status.states.map(|n| n.to_string())));
    line("database", optional(status.database_bytes.map(bytes)));
    line("disk free", optional(status.disk_free_bytes.map(bytes)));
    line(
        "certificate",
        match &status.certificate {
            None => "none (TLS off)".into(),
            Some(c) => format!(
                "{}, expires {} ({} days left)",
                c.subject.as_deref().unwrap_or("(unreadable subject)"),
                optional(c.not_after.clone()),
                optional(c.days_left.map(|d| d.to_string()))
            ),
        },
    );
    line(
        "last sweep",
        optional(
            status
                .last_sweep
                .as_ref()
                .map(|s| format!("{} ({} purged)", s.at, s.purged)),
        ),
    );
    line(
        "last backup",
        optional(status.last_backup.as_ref().map(|b| {
            format!(
                "{} {} ({}, {} states)",
                b.at,
                b.file,
                bytes(b.bytes),
                b.states
            )
        })),
    );
    for store in &status.stores {
        line(
            "store",
            format!("{} (key ids {})", store.name, store.key_ids.join(", ")),
        );
    }
    out
}

fn optional(value: Option<String>) -> String {
    value.unwrap_or_else(|| "unknown".into())
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n as f64 >= 1024.0 * MIB {
        format!("{:.1} GiB", n as f64 / MIB / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / MIB)
    }
}

fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_plainly() {
        assert_eq!(duration(59), "0h 0m 59s");
        assert_eq!(duration(90061), "1d 1h 1m");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
