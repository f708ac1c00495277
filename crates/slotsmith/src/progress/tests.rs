//! Mode selection, plain-line throttling and formats, with a captured
//! writer and a manual clock (no sleeping).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::bytes::{duration, plain_line, summary_line, BAR_TEMPLATE, SPINNER_TEMPLATE};
use super::*;

const MIB: u64 = 1 << 20;

fn plain() -> (Progress, SharedBuffer, Arc<ManualClock>) {
    captured(Mode::Plain)
}

fn captured(mode: Mode) -> (Progress, SharedBuffer, Arc<ManualClock>) {
    let buf = SharedBuffer::new();
    let clock = ManualClock::new();
    let p = Progress::capture(mode, buf.clone(), clock.clone());
    (p, buf, clock)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn mode_matrix() {
    for quiet in [false, true] {
        for json in [false, true] {
            for tty in [false, true] {
                for ci in [false, true] {
                    for dumb in [false, true] {
                        let env = Env {
                            stderr_is_terminal: tty,
                            ci,
                            dumb_terminal: dumb,
                        };
                        let want = if quiet {
                            Mode::Quiet
                        } else if tty && !ci && !json && !dumb {
                            Mode::Terminal
                        } else {
                            Mode::Plain
                        };
                        assert_eq!(
                            Mode::select(quiet, json, env),
                            want,
                            "quiet={quiet} json={json} tty={tty} ci={ci} dumb={dumb}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn plain_tick_is_throttled_and_lazy() {
    let (mut p, buf, clock) = plain();
    p.stage("base", "importing");
    let mut calls = 0;
    for _ in 0..100 {
        clock.advance(secs(0.04));
        p.tick(|| {
            calls += 1;
            "early".into()
        });
    }
    assert_eq!(calls, 0, "nothing is formatted before {PLAIN_EVERY:?}");
    clock.advance(secs(1.0));
    p.tick(|| "5 s in".into());
    p.tick(|| "same instant".into());
    clock.advance(secs(4.9));
    p.tick(|| "too soon".into());
    clock.advance(secs(0.1));
    p.tick(|| "10 s in".into());
    assert_eq!(
        buf.text(),
        "==> base: importing\n    ... 5 s in\n    ... 10 s in\n"
    );
}

#[test]
fn a_note_restarts_the_tick_interval() {
    let (mut p, buf, clock) = plain();
    p.stage("base", "x");
    clock.advance(secs(4.0));
    p.note("halfway");
    clock.advance(secs(4.0));
    p.tick(|| "not yet".into());
    clock.advance(secs(1.0));
    p.tick(|| "now".into());
    assert_eq!(buf.text(), "==> base: x\n    halfway\n    ... now\n");
}

#[test]
fn stages_are_timed_by_the_clock() {
    let (mut p, buf, clock) = plain();
    p.stage("base", "one");
    clock.advance(secs(3.0));
    p.stage("rootfs", "two");
    clock.advance(secs(1.25));
    p.finish();
    p.finish();
    assert_eq!(
        buf.text(),
        "==> base: one\n    base done in 3.0s\n==> rootfs: two\n    rootfs done in 1.2s\n"
    );
    let got: Vec<(&str, f64)> = p
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.seconds))
        .collect();
    assert_eq!(got, [("base", 3.0), ("rootfs", 1.25)]);
}

#[test]
fn byte_lines_are_throttled_with_throughput_and_time_left() {
    let (p, buf, clock) = plain();
    let b = p.bytes("rootfs input", Some(100 * MIB));
    for _ in 0..4 {
        clock.advance(secs(1.0));
        b.inc(10 * MIB);
    }
    assert_eq!(buf.text(), "", "no line before {PLAIN_EVERY:?}");
    clock.advance(secs(1.0));
    b.inc(10 * MIB);
    b.inc(0);
    clock.advance(secs(4.0));
    b.set(90 * MIB);
    clock.advance(secs(1.0));
    b.set(100 * MIB);
    let sum = b.finish();
    assert_eq!(
        buf.text(),
        "    ... rootfs input: 50.0 MiB of 100.0 MiB (50%), 10.0 MiB/s, 5s left\n    \
         ... rootfs input: 100.0 MiB of 100.0 MiB (100%), 10.0 MiB/s, 0s left\n    \
         rootfs input: 100.0 MiB in 10.0s, 10.0 MiB/s\n"
    );
    assert_eq!(
        sum,
        ByteSummary {
            bytes: 100 * MIB,
            seconds: 10.0
        }
    );
}

#[test]
fn byte_lines_without_a_total() {
    let (p, buf, clock) = plain();
    let b = p.bytes("swu", None);
    clock.advance(secs(5.0));
    b.inc(25 * MIB);
    drop(b);
    assert_eq!(
        buf.text(),
        "    ... swu: 25.0 MiB, 5.0 MiB/s\n",
        "an unfinished counter prints no summary"
    );
}

#[test]
fn plain_line_edges() {
    // Empty total, overshoot, no time elapsed: no division by zero, no
    // percentage above 100, no negative time left.
    assert_eq!(
        plain_line("x", 0, Some(0), Duration::ZERO),
        "    ... x: 0.0 MiB of 0.0 MiB (100%), 0.0 MiB/s, time left unknown"
    );
    assert_eq!(
        plain_line("x", 3 * MIB, Some(2 * MIB), secs(1.0)),
        "    ... x: 3.0 MiB of 2.0 MiB (100%), 3.0 MiB/s, 0s left"
    );
    assert!(plain_line("x", u64::MAX, Some(u64::MAX), secs(1.0)).contains("(100%)"));
    assert_eq!(summary_line("x", MIB, 0.0), "    x: 1.0 MiB");
}

#[test]
fn durations() {
    let got: Vec<String> = [0.0, 0.4, 59.4, 60.0, 184.0, 3599.0, 3600.0, 7320.0, -3.0]
        .iter()
        .map(|&s| duration(s))
        .collect();
    assert_eq!(
        got,
        ["0s", "0s", "59s", "1m00s", "3m04s", "59m59s", "1h00m", "2h02m", "0s"]
    );
}

#[test]
fn quiet_prints_nothing_but_keeps_times_warnings_and_counts() {
    let (mut p, buf, clock) = captured(Mode::Quiet);
    p.stage("sign", "boot manifests");
    p.warn("signing with the DEVELOPMENT boot key");
    clock.advance(secs(6.0));
    p.tick(|| panic!("quiet never formats a tick"));
    let b = p.bytes("verity", Some(MIB));
    clock.advance(secs(6.0));
    b.inc(MIB);
    let sum = b.finish();
    p.finish();
    assert_eq!(buf.text(), "");
    assert_eq!(p.warnings, ["signing with the DEVELOPMENT boot key"]);
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.stages[0].seconds, 12.0);
    assert_eq!(sum.bytes, MIB);
    assert_eq!(sum.seconds, 6.0);
}

#[test]
fn warnings_print_outside_quiet() {
    let (mut p, buf, _) = plain();
    p.warn("dev key");
    assert_eq!(buf.text(), "WARNING: dev key\n");
    assert_eq!(p.warnings, ["dev key"]);
}

#[test]
fn templates_parse() {
    for t in [BAR_TEMPLATE, SPINNER_TEMPLATE, SPINNER_LINE] {
        assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
    }
}

#[test]
fn terminal_mode_draws_a_bar_and_keeps_the_lines() {
    let (mut p, buf, clock) = captured(Mode::Terminal);
    assert_eq!(p.mode(), Mode::Terminal);
    p.stage("disk", "writing");
    let b = p.bytes("disk image", Some(8 * MIB));
    b.inc(4 * MIB);
    clock.advance(secs(2.0));
    b.inc(4 * MIB);
    b.finish();
    p.finish();
    let text = buf.text();
    assert!(text.contains("==> disk: writing\n"), "{text:?}");
    assert!(text.contains("disk image ["), "a bar was drawn: {text:?}");
    assert!(
        text.contains("    disk image: 8.0 MiB in 2.0s, 4.0 MiB/s\n"),
        "{text:?}"
    );
    assert!(text.contains("    disk done in 2.0s\n"), "{text:?}");
}

#[test]
fn terminal_tick_shows_a_spinner_that_the_stage_end_clears() {
    let (mut p, buf, clock) = captured(Mode::Terminal);
    p.stage("base", "importing");
    clock.advance(secs(0.2));
    p.tick(|| "1200 entries".into());
    assert!(p.spinner.is_some());
    p.finish();
    assert!(p.spinner.is_none());
    let text = buf.text();
    assert!(text.contains("1200 entries"), "{text:?}");
    assert!(text.ends_with("    base done in 0.2s\n"), "{text:?}");
}

#[test]
fn counting_adapters_and_threads() {
    let (p, _, _) = plain();
    let b = p.bytes("copy", None);
    let mut sink = Vec::new();
    std::io::copy(&mut b.reader(&[7u8; 1000][..]), &mut b.writer(&mut sink)).unwrap();
    assert_eq!(b.position(), 2000, "read and written bytes both counted");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    b.inc(1);
                }
            });
        }
    });
    assert_eq!(b.position(), 6000);
    b.set(u64::MAX);
    b.inc(1);
    assert_eq!(b.position(), u64::MAX, "saturates");
    let mut w = b.writer(Vec::new());
    w.write_all(b"abc").unwrap();
    assert_eq!(w.into_inner(), b"abc");
    let mut r = b.reader(&b"xy"[..]);
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "xy");
}
