//! Progress of a long operator command: an `indicatif` bar on a terminal,
//! a plain line every few seconds otherwise (journal, pipes, CI logs).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often plain progress lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// States.
    States,
    /// Bytes.
    Bytes,
}

/// One operation's progress, on standard error.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    unit: Unit,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts showing `label`, out of `total` when known.
    pub fn new(label: &'static str, unit: Unit, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            let counted = match unit {
                Unit::States => "{pos}/{len} states, {per_sec}, ETA {eta}",
                Unit::Bytes => "{bytes} ({bytes_per_sec})",
            };
            let template = format!("{label}: {{bar:30}} {counted}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            label,
            unit,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    /// `n` more done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}: {}", self.label, self.describe());
            }
            None => {}
        }
    }

    /// Done: clears the bar and says how it went.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: {} in {:.1?}",
            self.label,
            self.describe(),
            self.started.elapsed()
        );
    }

    fn describe(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        match self.unit {
            Unit::States => format!("{} states ({:.0}/s)", self.done, self.done as f64 / seconds),
            Unit::Bytes => format!(
                "{:.1} MiB ({:.1} MiB/s)",
                self.done as f64 / 1048576.0,
                self.done as f64 / 1048576.0 / seconds
            ),
        }
    }
}
