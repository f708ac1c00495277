//! Runs the same stage script through a Progress in each mode, as the build
//! drives it, and checks what each mode writes: nothing in quiet mode,
//! escape-free lines in plain mode, bars plus the same lines on a terminal.

use std::sync::Arc;
use std::time::Duration;

use slotsmith::progress::{ManualClock, Mode, Progress, SharedBuffer};

const MIB: u64 = 1 << 20;

/// A build in miniature: a ticking import, a warning, a byte-counted
/// write fed from another thread, a note, and the stage ends.
fn run(mode: Mode) -> (Progress, String) {
    let buf = SharedBuffer::new();
    let clock = ManualClock::new();
    let mut p = Progress::capture(mode, buf.clone(), clock.clone() as Arc<_>);
    p.stage("base", "importing tarball base.tar");
    for n in 0..200 {
        clock.advance(Duration::from_millis(50));
        p.tick(|| format!("{n} entries"));
    }
    p.warn("signing with the DEVELOPMENT boot key keys/dev/boot.key.pem");
    p.stage("rootfs", "squashfs (zstd) from 200 entries");
    let bytes = p.bytes("tar2sqfs input", Some(64 * MIB));
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..64 {
                clock.advance(Duration::from_millis(250));
                bytes.inc(MIB);
            }
        });
    });
    let summary = bytes.finish();
    assert_eq!(summary.bytes, 64 * MIB);
    assert_eq!(summary.seconds, 16.0);
    p.note("rootfs.img: 40.0 MiB");
    p.finish();
    (p, buf.text())
}

#[test]
fn every_mode_times_the_stages_and_keeps_the_warnings() {
    for mode in [Mode::Quiet, Mode::Plain, Mode::Terminal] {
        let (p, _) = run(mode);
        assert_eq!(p.mode(), mode);
        let got: Vec<(&str, f64)> = p
            .stages
            .iter()
            .map(|s| (s.stage.as_str(), s.seconds))
            .collect();
        assert_eq!(got, [("base", 10.0), ("rootfs", 16.0)], "{mode:?}");
        assert_eq!(
            p.warnings,
            ["signing with the DEVELOPMENT boot key keys/dev/boot.key.pem"],
            "{mode:?}"
        );
    }
}

#[test]
fn quiet_writes_nothing() {
    let (_, text) = run(Mode::Quiet);
    assert_eq!(
        text, "",
        "--quiet means errors only, and warnings are no errors"
    );
}

#[test]
fn plain_writes_throttled_lines_without_escapes() {
    let (_, text) = run(Mode::Plain);
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "==> base: importing tarball base.tar",
            "    ... 99 entries",
            "    ... 199 entries",
            "WARNING: signing with the DEVELOPMENT boot key keys/dev/boot.key.pem",
            "    base done in 10.0s",
            "==> rootfs: squashfs (zstd) from 200 entries",
            "    ... tar2sqfs input: 20.0 MiB of 64.0 MiB (31%), 4.0 MiB/s, 11s left",
            "    ... tar2sqfs input: 40.0 MiB of 64.0 MiB (62%), 4.0 MiB/s, 6s left",
            "    ... tar2sqfs input: 60.0 MiB of 64.0 MiB (93%), 4.0 MiB/s, 1s left",
            "    tar2sqfs input: 64.0 MiB in 16.0s, 4.0 MiB/s",
            "    rootfs.img: 40.0 MiB",
            "    rootfs done in 16.0s",
        ]
    );
}

#[test]
fn terminal_draws_bars_and_keeps_every_plain_line_but_the_throttled_ones() {
    let (_, text) = run(Mode::Terminal);
    assert!(text.contains("tar2sqfs input ["), "a byte bar: {text:?}");
    assert!(text.contains(" left"), "time left on the bar: {text:?}");
    assert!(text.contains("199 entries"), "the tick spinner: {text:?}");
    assert!(
        !text.contains("    ... "),
        "no throttled plain lines: {text:?}"
    );
    for line in [
        "==> base: importing tarball base.tar\n",
        "WARNING: signing with the DEVELOPMENT boot key keys/dev/boot.key.pem\n",
        "    base done in 10.0s\n",
        "    tar2sqfs input: 64.0 MiB in 16.0s, 4.0 MiB/s\n",
        "    rootfs done in 16.0s\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text:?}");
    }
    assert!(
        text.ends_with("    rootfs done in 16.0s\n"),
        "bars cleared: {text:?}"
    );
}
