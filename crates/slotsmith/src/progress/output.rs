//! Where progress goes: a shared writer, a clock, and (on a terminal) the
//! indicatif bars that lines must be printed above.
//!
//! Both the writer and the clock are injectable so tests can capture every
//! byte and move time by hand instead of sleeping.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, TermLike};

/// A source of "now"; the real one is [`SystemClock`].
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to (tests of throttling and timing).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at an arbitrary instant.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *lock(&self.offset) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *lock(&self.offset)
    }
}

/// A cloneable in-memory writer whose contents tests read back.
#[derive(Debug, Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// An empty buffer.
    pub fn new() -> SharedBuffer {
        SharedBuffer::default()
    }

    /// Everything written so far (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// The shared output of one [`super::Progress`] and its byte bars.
#[derive(Clone)]
pub(crate) struct Out {
    writer: SharedWriter,
    clock: Arc<dyn Clock>,
    /// The bars of terminal mode; `None` in plain and quiet mode.
    multi: Option<MultiProgress>,
}

impl Out {
    /// Standard error with the system clock; bars only when `bars`.
    pub(crate) fn stderr(bars: bool) -> Out {
        Out {
            writer: Arc::new(Mutex::new(Box::new(std::io::stderr()))),
            clock: Arc::new(SystemClock),
            multi: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// An injected writer and clock; bars (when `bars`) draw into the same
    /// writer through a fixed-width fake terminal.
    pub(crate) fn capture(writer: Box<dyn Write + Send>, clock: Arc<dyn Clock>, bars: bool) -> Out {
        let writer: SharedWriter = Arc::new(Mutex::new(writer));
        let multi = bars.then(|| {
            MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(CaptureTerm(
                writer.clone(),
            ))))
        });
        Out {
            writer,
            clock,
            multi,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Writes one line, above any live bar. A failed write (closed stderr)
    /// is ignored: losing a progress line must not fail a build.
    pub(crate) fn line(&self, text: &str) {
        let write = || {
            let mut w = lock(&self.writer);
            let _ = writeln!(w, "{text}");
            let _ = w.flush();
        };
        match &self.multi {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }

    /// Puts a bar under the terminal's live area (terminal mode only).
    pub(crate) fn add(&self, bar: ProgressBar) -> ProgressBar {
        match &self.multi {
            Some(multi) => multi.add(bar),
            None => bar,
        }
    }

    /// Clears a bar and takes it out of the live area.
    pub(crate) fn remove(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        if let Some(multi) = &self.multi {
            multi.remove(bar);
        }
    }
}

/// A fake 80-column terminal over the shared writer, so tests see what
/// the bars draw.
#[derive(Clone)]
struct CaptureTerm(SharedWriter);

impl fmt::Debug for CaptureTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptureTerm")
    }
}

impl CaptureTerm {
    fn put(&self, s: &str) -> std::io::Result<()> {
        lock(&self.0).write_all(s.as_bytes())
    }

    /// Moves the cursor like `console` does: a zero move writes nothing
    /// (terminals read `ESC[0A` as a move by one).
    fn cursor(&self, n: usize, dir: char) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(&format!("\x1b[{n}{dir}"))
    }
}

impl TermLike for CaptureTerm {
    fn width(&self) -> u16 {
        80
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        lock(&self.0).flush()
    }
}

/// Locks a mutex, ignoring poison: progress state stays usable after a
/// panic elsewhere, and a panic must not be hidden by a second one here.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
