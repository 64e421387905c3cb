//! The sync calls a running server makes, recorded by `strace` attached to
//! it: which file or directory each one synced, and when it started and
//! returned (wall clock, the same clock the test reads), so a test can
//! check that a write was on disk before its 204.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The calls recorded: every way a process can ask for data to reach the
/// disk, so that one the test does not expect shows up too, and renames,
/// which a directory's sync must follow to be durable.
const SYNC_CALLS: &str =
    "fsync,fdatasync,sync_file_range,syncfs,sync,msync,rename,renameat,renameat2";

/// One completed sync call (or rename).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCall {
    /// `fsync`, `fdatasync`, `sync_file_range`, `renameat2`…
    pub name: String,
    /// What its first descriptor names (`strace -y`); empty for `sync`.
    pub path: PathBuf,
    /// Wall-clock seconds when it was entered and when it returned.
    pub entered: f64,
    pub returned: f64,
    /// Its return value (0 is success).
    pub result: i64,
}

impl SyncCall {
    /// A call that makes a file's data (and the metadata needed to read
    /// it) durable, flushing the drive's cache: `fsync` or `fdatasync`.
    pub fn is_durable(&self) -> bool {
        (self.name == "fsync" || self.name == "fdatasync") && self.result == 0
    }

    /// Entered at or after `from` and returned by `to`.
    pub fn within(&self, from: f64, to: f64) -> bool {
        self.entered >= from && self.returned <= to
    }
}

/// Wall-clock seconds, as `strace -ttt` prints them.
pub fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Runs `command` to completion (bounded) under `strace -f`, and returns
/// its output and every sync call it made.
pub fn run_traced(command: &Command) -> (std::process::Output, Vec<SyncCall>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("trace");
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-qq", "-y", "-ttt", "-T", "-e"])
        .arg(format!("trace={SYNC_CALLS}"))
        .arg("-o")
        .arg(&output)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        traced.current_dir(dir);
    }
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => traced.env(name, value),
            None => traced.env_remove(name),
        };
    }
    let result = super::run_bounded(&mut traced);
    let text = std::fs::read_to_string(&output).expect("strace's output");
    (result, parse(&text))
}

/// `strace` attached to every thread of a process.
pub struct SyncTrace {
    strace: Child,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl SyncTrace {
    /// Attaches to `pid` (and every thread it starts later) and returns
    /// once every thread it has now is traced.
    pub fn attach(pid: u32) -> SyncTrace {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = dir.path().join("trace");
        let messages = dir.path().join("messages");
        let strace = Command::new("strace")
            .args(["-f", "-y", "-ttt", "-T", "-e"])
            .arg(format!("trace={SYNC_CALLS}"))
            .arg("-o")
            .arg(&output)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&messages).expect("strace's messages file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run strace (apt-get install strace): {e}"));
        let mut trace = SyncTrace {
            strace,
            output,
            _dir: dir,
        };
        trace.wait_until_attached(pid, &messages);
        trace
    }

    /// Returns once strace says it traces as many threads as the process
    /// has.
    fn wait_until_attached(&mut self, pid: u32, messages: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let said = std::fs::read_to_string(messages).unwrap_or_default();
            let attached = attached_threads(&said);
            let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map_or(usize::MAX, |tasks| tasks.count());
            if attached >= threads {
                return;
            }
            if let Ok(Some(status)) = self.strace.try_wait() {
                panic!("strace exited ({status}) before it attached to {pid}: {said}");
            }
            assert!(
                Instant::now() < deadline,
                "strace attached to {attached} of {threads} threads of {pid} in 20 s: {said}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Detaches (the process runs on) and returns every call recorded.
    pub fn stop(mut self) -> Vec<SyncCall> {
        let pid = self.strace.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -INT {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.strace.try_wait().expect("strace's status").is_none() {
            if Instant::now() >= deadline {
                let _ = self.strace.kill();
                panic!("strace did not detach within 20 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.output).expect("strace's output");
        parse(&text)
    }
}

/// How many threads strace's messages say it attached to: `Process N
/// attached with K threads` for a process, `Process N attached` for one
/// thread.
fn attached_threads(messages: &str) -> usize {
    messages
        .lines()
        .filter_map(|line| line.split_once(" attached").map(|(_, rest)| rest))
        .map(|rest| {
            rest.strip_prefix(" with ")
                .and_then(|count| count.split_whitespace().next())
                .and_then(|count| count.parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// The calls in `strace -f -y -ttt -T` output. A call another thread's
/// output interrupted comes in two lines, `… <unfinished ...>` and
/// `<... name resumed>…`, matched by thread id.
pub fn parse(text: &str) -> Vec<SyncCall> {
    let mut calls = Vec::new();
    let mut unfinished = std::collections::HashMap::new();
    for line in text.lines() {
        // strace pads the thread id to a width ("2496  1796…").
        let Some((thread, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, outcome)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some((entered, path)) = unfinished.remove(&(thread.to_string(), name)) {
                calls.push(SyncCall {
                    name: name.to_string(),
                    path,
                    entered,
                    returned: time,
                    result: result_of(outcome),
                });
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue; // "+++ exited with 0 +++", signals
        };
        let path = PathBuf::from(
            args.split_once('<')
                .and_then(|(_, after)| after.split_once('>'))
                .map_or("", |(path, _)| path),
        );
        if args.contains("<unfinished ...>") {
            unfinished.insert((thread.to_string(), name), (time, path));
        } else {
            calls.push(SyncCall {
                name: name.to_string(),
                path,
                entered: time,
                returned: time + duration_of(args),
                result: result_of(args),
            });
        }
    }
    calls
}

/// The value after `) = ` (-1 when it cannot be read).
fn result_of(outcome: &str) -> i64 {
    outcome
        .rsplit_once(") = ")
        .and_then(|(_, after)| after.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(-1)
}

/// The `<seconds>` strace -T appends.
fn duration_of(line: &str) -> f64 {
    line.rsplit_once('<')
        .and_then(|(_, after)| after.strip_suffix('>'))
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(0.0)
}
