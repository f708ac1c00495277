//! Byte-counting progress of one long step (rootfs input, verity, `.swu`,
//! disk): a live bar with throughput and time left on a terminal, a
//! throttled plain line elsewhere, and a summary line at the end.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::output::{lock, Out};
use super::{mib, Mode, PLAIN_EVERY};

/// Bar layout when the total is known: throughput and time left. The bar
/// takes what the text leaves of the terminal's width, so the line never
/// wraps (a wrapped bar redraws as a scrolling mess).
pub(crate) const BAR_TEMPLATE: &str =
    "    {prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} \
     {binary_bytes_per_sec} {eta} left";
/// Layout when the total is unknown: a spinner with throughput.
pub(crate) const SPINNER_TEMPLATE: &str =
    "    {spinner} {prefix} {binary_bytes} {binary_bytes_per_sec} {elapsed}";

/// What a finished [`ByteProgress`] counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteSummary {
    /// Bytes counted.
    pub bytes: u64,
    /// Seconds from creation to `finish`.
    pub seconds: f64,
}

/// Counts the bytes of one step; made by [`super::Progress::bytes`].
///
/// `inc` and `set` take `&self` and the type is `Sync`, so a reader thread
/// can count while the stage goes on printing notes. Dropping it without
/// `finish` (an error) clears the bar and prints nothing.
pub struct ByteProgress {
    label: String,
    total: Option<u64>,
    pos: AtomicU64,
    start: Instant,
    /// When the last plain line was printed.
    last_line: Mutex<Instant>,
    mode: Mode,
    out: Out,
    /// Terminal mode only.
    bar: Option<ProgressBar>,
    finished: bool,
}

impl ByteProgress {
    pub(crate) fn new(mode: Mode, out: &Out, label: &str, total: Option<u64>) -> ByteProgress {
        let start = out.now();
        let bar = (mode == Mode::Terminal).then(|| {
            let (bar, template) = match total {
                Some(t) => (ProgressBar::new(t), BAR_TEMPLATE),
                None => (ProgressBar::new_spinner(), SPINNER_TEMPLATE),
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = out.add(bar);
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar
        });
        ByteProgress {
            label: label.to_string(),
            total,
            pos: AtomicU64::new(0),
            start,
            last_line: Mutex::new(start),
            mode,
            out: out.clone(),
            bar,
            finished: false,
        }
    }

    /// Adds `n` bytes (saturating).
    pub fn inc(&self, n: u64) {
        let prev = self
            .pos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_add(n))
            })
            .unwrap_or_else(|p| p);
        self.update(prev.saturating_add(n));
    }

    /// Sets the count (for callbacks that report a running total).
    pub fn set(&self, n: u64) {
        self.pos.store(n, Ordering::Relaxed);
        self.update(n);
    }

    /// Bytes counted so far.
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }

    /// A writer that counts what passes through it into this bar.
    pub fn writer<W: Write>(&self, inner: W) -> CountingWriter<'_, W> {
        CountingWriter {
            inner,
            progress: self,
        }
    }

    /// A reader that counts what passes through it into this bar.
    pub fn reader<R: Read>(&self, inner: R) -> CountingReader<'_, R> {
        CountingReader {
            inner,
            progress: self,
        }
    }

    /// Ends the step: clears the bar and prints one summary line.
    pub fn finish(mut self) -> ByteSummary {
        self.finished = true;
        let bytes = self.position();
        let seconds = self.out.now().duration_since(self.start).as_secs_f64();
        if let Some(bar) = &self.bar {
            self.out.remove(bar);
        }
        if self.mode != Mode::Quiet {
            self.out.line(&summary_line(&self.label, bytes, seconds));
        }
        ByteSummary {
            bytes,
            seconds: (seconds * 1000.0).round() / 1000.0,
        }
    }

    fn update(&self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
            return;
        }
        if self.mode == Mode::Quiet {
            return;
        }
        let now = self.out.now();
        {
            let mut last = lock(&self.last_line);
            if now.duration_since(*last) < PLAIN_EVERY {
                return;
            }
            *last = now;
        }
        let elapsed = now.duration_since(self.start);
        self.out
            .line(&plain_line(&self.label, pos, self.total, elapsed));
    }
}

impl Drop for ByteProgress {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(bar) = &self.bar {
                self.out.remove(bar);
            }
        }
    }
}

/// A [`Write`] that counts into a [`ByteProgress`].
pub struct CountingWriter<'a, W> {
    inner: W,
    progress: &'a ByteProgress,
}

impl<W> CountingWriter<'_, W> {
    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Read`] that counts into a [`ByteProgress`].
pub struct CountingReader<'a, R> {
    inner: R,
    progress: &'a ByteProgress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// `    ... label: 512.0 MiB of 2048.0 MiB (25%), 85.3 MiB/s, 18s left`
pub(crate) fn plain_line(label: &str, pos: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { pos as f64 / secs } else { 0.0 };
    let speed = format!("{}/s", mib_f(rate));
    match total {
        Some(total) => {
            let pct = if total == 0 {
                100
            } else {
                // u128: pos * 100 cannot overflow.
                (u128::from(pos.min(total)) * 100 / u128::from(total)) as u64
            };
            let left = if rate > 0.0 {
                let remaining = total.saturating_sub(pos) as f64 / rate;
                format!("{} left", duration(remaining))
            } else {
                "time left unknown".to_string()
            };
            format!(
                "    ... {label}: {} of {} ({pct}%), {speed}, {left}",
                mib(pos),
                mib(total)
            )
        }
        None => format!("    ... {label}: {}, {speed}", mib(pos)),
    }
}

/// `    label: 2048.0 MiB in 24.1s, 85.0 MiB/s`
pub(crate) fn summary_line(label: &str, bytes: u64, seconds: f64) -> String {
    if seconds > 0.0 {
        format!(
            "    {label}: {} in {seconds:.1}s, {}/s",
            mib(bytes),
            mib_f(bytes as f64 / seconds)
        )
    } else {
        format!("    {label}: {}", mib(bytes))
    }
}

fn mib_f(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
}

/// `7s`, `3m04s`, `1h02m`: coarse enough for an estimate.
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
