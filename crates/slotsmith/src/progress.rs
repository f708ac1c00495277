//! Progress and stage timing on standard error.
//!
//! Long stages (base import, filesystem, verity, `.swu`, disk) report what
//! they are doing and every stage reports its time when it ends, so a CI
//! log shows where a slow build spends its time. Standard output stays
//! free for `--json`.
//!
//! Three [`Mode`]s: `Quiet` prints nothing at all (errors are the caller's
//! to print; warnings are only collected in [`Progress::warnings`]),
//! `Plain` prints lines, throttled to one every few seconds inside a stage,
//! and `Terminal` draws live indicatif bars with throughput and time left.
//! [`Mode::detect`] picks bars only when standard error is a terminal and
//! `CI` is unset.

mod bytes;
mod output;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub use bytes::{ByteProgress, ByteSummary, CountingReader, CountingWriter};
pub use output::{Clock, ManualClock, SharedBuffer, SystemClock};

use output::Out;

/// At most one plain progress line per stage (or byte bar) this often, so
/// a CI log stays readable.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How often a terminal spinner's message is recomputed: `tick` may be
/// called once per file, and formatting its message each time would cost
/// more than the import itself.
const SPINNER_EVERY: Duration = Duration::from_millis(100);

/// Layout of the [`Progress::tick`] spinner.
const SPINNER_LINE: &str = "    {spinner} {msg}";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing at all (`--quiet`): errors only, printed by the caller.
    Quiet,
    /// Plain lines (CI, a pipe, a file, `--json`).
    Plain,
    /// Live bars on a terminal.
    Terminal,
}

/// The facts of the environment [`Mode::select`] decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Env {
    /// Standard error is a terminal.
    pub stderr_is_terminal: bool,
    /// `CI` is set (to anything but empty, `0` or `false`).
    pub ci: bool,
    /// `TERM=dumb`: no cursor movement, so no bars.
    pub dumb_terminal: bool,
}

impl Env {
    /// This process's environment.
    pub fn current() -> Env {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
        Env {
            stderr_is_terminal: std::io::stderr().is_terminal(),
            ci,
            dumb_terminal: std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
        }
    }
}

impl Mode {
    /// Decides the mode: `quiet` wins; bars need a real terminal outside
    /// CI; `--json` asks for plain lines, because a caller that parses
    /// standard output usually logs standard error too, and redrawn bars
    /// make such a log unreadable.
    pub fn select(quiet: bool, json: bool, env: Env) -> Mode {
        if quiet {
            Mode::Quiet
        } else if json || env.ci || !env.stderr_is_terminal || env.dumb_terminal {
            Mode::Plain
        } else {
            Mode::Terminal
        }
    }

    /// [`Mode::select`] on this process's environment.
    pub fn detect(quiet: bool, json: bool) -> Mode {
        Mode::select(quiet, json, Env::current())
    }
}

/// One finished stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageTime {
    /// Stage name.
    pub stage: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Prints progress and collects stage times and warnings.
pub struct Progress {
    mode: Mode,
    out: Out,
    current: Option<(String, Instant)>,
    last_tick: Instant,
    /// The terminal spinner `tick` draws, until the stage ends.
    spinner: Option<Spinner>,
    /// Every finished stage, in order.
    pub stages: Vec<StageTime>,
    /// Every warning, in order, also in quiet mode (for `--json`).
    pub warnings: Vec<String>,
}

impl Progress {
    /// A reporter on standard error; `quiet` prints nothing, otherwise
    /// [`Mode::detect`] chooses bars or lines.
    pub fn new(quiet: bool) -> Progress {
        Progress::with_mode(Mode::detect(quiet, false))
    }

    /// A reporter on standard error in the given mode.
    pub fn with_mode(mode: Mode) -> Progress {
        Progress::on(mode, Out::stderr(mode == Mode::Terminal))
    }

    /// A reporter writing to `writer` with `clock` (tests); in terminal
    /// mode the bars draw into `writer` as an 80-column terminal.
    pub fn capture(
        mode: Mode,
        writer: impl Write + Send + 'static,
        clock: Arc<dyn Clock>,
    ) -> Progress {
        Progress::on(
            mode,
            Out::capture(Box::new(writer), clock, mode == Mode::Terminal),
        )
    }

    fn on(mode: Mode, out: Out) -> Progress {
        let now = out.now();
        Progress {
            mode,
            out,
            current: None,
            last_tick: now,
            spinner: None,
            stages: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The mode this reporter runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts a stage (ending the previous one).
    pub fn stage(&mut self, name: &str, what: &str) {
        self.finish();
        self.line(&format!("==> {name}: {what}"));
        let now = self.out.now();
        self.current = Some((name.to_string(), now));
        self.last_tick = now;
    }

    /// Reports an intermediate state: a spinner on a terminal, otherwise
    /// one line every [`PLAIN_EVERY`]. `what` runs only when shown.
    pub fn tick(&mut self, what: impl FnOnce() -> String) {
        let every = match self.mode {
            Mode::Quiet => return,
            Mode::Plain => PLAIN_EVERY,
            Mode::Terminal => SPINNER_EVERY,
        };
        let now = self.out.now();
        if now.duration_since(self.last_tick) < every {
            return;
        }
        self.last_tick = now;
        if self.mode == Mode::Plain {
            self.line(&format!("    ... {}", what()));
            return;
        }
        let out = &self.out;
        let spinner = &self
            .spinner
            .get_or_insert_with(|| {
                let bar = out.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(SPINNER_LINE)
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                Spinner {
                    bar,
                    out: out.clone(),
                }
            })
            .bar;
        spinner.set_message(what());
        spinner.tick();
    }

    /// Prints a note inside the current stage.
    pub fn note(&mut self, what: &str) {
        self.last_tick = self.out.now();
        self.line(&format!("    {what}"));
    }

    /// Records a warning and prints it, except in quiet mode: `--quiet`
    /// means errors only, so a caller that must not miss warnings (such
    /// as signing with a development key) reads [`Progress::warnings`].
    pub fn warn(&mut self, what: &str) {
        self.warnings.push(what.to_string());
        self.line(&format!("WARNING: {what}"));
    }

    /// Counts the bytes of one long step: on a terminal a bar with
    /// throughput and time left (a spinner when `total` is unknown),
    /// otherwise a line every [`PLAIN_EVERY`]; `finish` prints a summary.
    pub fn bytes(&self, label: &str, total: Option<u64>) -> ByteProgress {
        ByteProgress::new(self.mode, &self.out, label, total)
    }

    /// Ends the current stage, recording its time.
    pub fn finish(&mut self) {
        self.spinner = None;
        if let Some((name, start)) = self.current.take() {
            let seconds = self.out.now().duration_since(start).as_secs_f64();
            self.line(&format!("    {name} done in {seconds:.1}s"));
            self.stages.push(StageTime {
                stage: name,
                seconds: (seconds * 1000.0).round() / 1000.0,
            });
        }
    }

    fn line(&self, text: &str) {
        if self.mode != Mode::Quiet {
            self.out.line(text);
        }
    }
}

/// The spinner of [`Progress::tick`]; dropping it (stage end, or a build
/// failing mid-stage) clears it, so no stale spinner sits above an error.
struct Spinner {
    bar: ProgressBar,
    out: Out,
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.out.remove(&self.bar);
    }
}

/// Formats bytes as MiB for progress lines.
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}
