//! The standard `process_*` metrics of Prometheus client libraries (CPU
//! seconds, resident and virtual memory, open and maximum descriptors),
//! read from `/proc/self` at each scrape, and the start time. A figure that
//! cannot be read (not Linux, a locked-down `/proc`) is left out, not made
//! up.
//!
//! Only `/proc/self` is read: the unit's `ProcSubset=pid` hides the rest of
//! `/proc` (`/proc/stat`'s boot time among it), so the start time is the
//! instant the collector was made, when the store started.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Clock ticks per second in `/proc/<pid>/stat`: `USER_HZ`, which the Linux
/// ABI fixes at 100 whatever the kernel's own tick rate (reading it with
/// `sysconf` would need `unsafe`, which the crate forbids).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`.
    pub fn read() -> ProcessSample {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat");
        let status = read("/proc/self/status");
        let kib = |name: &str| status.as_deref().and_then(|s| status_kib(s, name));
        ProcessSample {
            cpu_seconds: stat.as_deref().and_then(cpu_seconds),
            resident_bytes: kib("VmRSS:").map(|k| k * 1024),
            virtual_bytes: kib("VmSize:").map(|k| k * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(open_files_limit),
        }
    }
}

/// Field `number` (1-based, as in proc(5)) of `/proc/<pid>/stat`. The
/// command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so counting starts after the last `)`.
/// User + system CPU seconds, all threads, from the text of a
/// `/proc/<pid>/stat` (fields 14 and 15).
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let (user, system) = stat_field(stat, 14).zip(stat_field(stat, 15))?;
    Some((user + system) as f64 / USER_HZ)
}

fn stat_field(stat: &str, number: usize) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3.
    rest.split_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn open_files_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Exports a fresh [`ProcessSample`] on every scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    started: f64,
}

impl ProcessCollector {
    /// A collector for a process that started now.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            started: now.as_secs_f64(),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = ProcessSample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?)?;
        }
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let gauges: [(&str, &str, Option<&Unit>, Option<i64>); 4] = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                sample.resident_bytes.map(count),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(&Unit::Bytes),
                sample.virtual_bytes.map(count),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                sample.open_fds.map(count),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit)",
                None,
                sample.max_fds.map(count),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    unit,
                    MetricType::Gauge,
                )?)?;
            }
        }
        ConstGauge::new(self.started).encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        // Fields 14 and 15 (utime, stime), 22 (starttime), of a process
        // named "a) b (c".
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "50".into();
        let stat = format!("4242 (a) b (c) {}", fields.join(" "));
        assert_eq!(stat_field(&stat, 14), Some(250));
        assert_eq!(stat_field(&stat, 15), Some(50));
        assert_eq!(stat_field(&stat, 22), Some(22));
        assert_eq!(stat_field(&stat, 2), None);
        assert_eq!(cpu_seconds(&stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
        assert_eq!(stat_field("garbage", 14), None);
    }

    #[test]
    fn status_and_limits() {
        let status = "Name:\tflow-store\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmHWM:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(open_files_limit(limits), Some(1024));
    }

    #[test]
    fn this_process_reads_as_alive() {
        let sample = ProcessSample::read();
        assert!(sample.resident_bytes.is_some_and(|b| b > 0), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n > 0), "{sample:?}");
        assert!(sample.max_fds.is_some_and(|n| n > 0), "{sample:?}");
        assert!(sample.cpu_seconds.is_some(), "{sample:?}");
    }
}
