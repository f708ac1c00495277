//! Progress and stage timing on standard error.
//!
//! Long stages (base import, filesystem, disk) report what they are doing
//! at most every few seconds, and every stage reports its time when it ends,
//! so a CI log shows where a slow build spends its time. Standard output
//! stays free for `--json`.

use std::time::{Duration, Instant};

/// One finished stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageTime {
    /// Stage name.
    pub stage: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Prints progress lines and collects stage times.
pub struct Progress {
    quiet: bool,
    current: Option<(String, Instant)>,
    last_tick: Instant,
    /// Every finished stage, in order.
    pub stages: Vec<StageTime>,
}

impl Progress {
    /// A reporter; `quiet` silences everything but the collected times.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            current: None,
            last_tick: Instant::now(),
            stages: Vec::new(),
        }
    }

    /// Starts a stage (ending the previous one).
    pub fn stage(&mut self, name: &str, what: &str) {
        self.finish();
        if !self.quiet {
            eprintln!("==> {name}: {what}");
        }
        self.current = Some((name.to_string(), Instant::now()));
        self.last_tick = Instant::now();
    }

    /// Reports an intermediate state, throttled to one line every 5 seconds.
    pub fn tick(&mut self, what: impl FnOnce() -> String) {
        if self.quiet || self.last_tick.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_tick = Instant::now();
        eprintln!("    ... {}", what());
    }

    /// Prints a note inside the current stage.
    pub fn note(&mut self, what: &str) {
        self.last_tick = Instant::now();
        if !self.quiet {
            eprintln!("    {what}");
        }
    }

    /// Prints a warning that must not be missed, even with --quiet.
    pub fn warn(&mut self, what: &str) {
        eprintln!("WARNING: {what}");
    }

    /// Ends the current stage, recording its time.
    pub fn finish(&mut self) {
        if let Some((name, start)) = self.current.take() {
            let seconds = start.elapsed().as_secs_f64();
            if !self.quiet {
                eprintln!("    {name} done in {seconds:.1}s");
            }
            self.stages.push(StageTime {
                stage: name,
                seconds: (seconds * 1000.0).round() / 1000.0,
            });
        }
    }
}

/// Formats bytes as MiB for progress lines.
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}
