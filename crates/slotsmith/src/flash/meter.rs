//! Progress and throughput of a flash on standard error.

use std::io::{IsTerminal, Write as _};
use std::time::Instant;

/// Progress on standard error: a line rewritten in place on a terminal,
/// plain lines every tenth otherwise.
pub(super) struct Meter {
    quiet: bool,
    tty: bool,
    phase: &'static str,
    total: u64,
    started: Instant,
    shown: u64,
    last_draw: Option<Instant>,
}

impl Meter {
    pub(super) fn new(quiet: bool) -> Meter {
        Meter {
            quiet,
            tty: std::io::stderr().is_terminal(),
            phase: "",
            total: 0,
            started: Instant::now(),
            shown: 0,
            last_draw: None,
        }
    }

    pub(super) fn line(&mut self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    pub(super) fn start(&mut self, phase: &'static str, total: u64) {
        self.phase = phase;
        self.total = total;
        self.started = Instant::now();
        self.shown = 0;
        self.last_draw = None;
    }

    pub(super) fn tick(&mut self, done: u64) {
        if self.quiet || self.total == 0 {
            return;
        }
        let tenth = done.saturating_mul(10) / self.total;
        let draw = if self.tty {
            done == self.total
                || self
                    .last_draw
                    .is_none_or(|t| t.elapsed().as_millis() >= 200)
        } else {
            tenth > self.shown || done == self.total
        };
        if !draw {
            return;
        }
        self.shown = tenth;
        self.last_draw = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total - done.min(self.total)) as f64 / rate
        } else {
            0.0
        };
        let text = format!(
            "{}: {} of {} ({}%), {:.1} MiB/s, ETA {:.0}s",
            self.phase,
            crate::load::human(done),
            crate::load::human(self.total),
            done.saturating_mul(100) / self.total,
            rate / 1048576.0,
            eta
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let end = if done == self.total { "\n" } else { "" };
            let _ = write!(err, "\r\x1b[2K{text}{end}");
        } else {
            let _ = writeln!(err, "{text}");
        }
    }
}
