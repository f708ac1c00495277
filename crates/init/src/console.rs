//! What the init says on the console, and how it fails.
//!
//! On success the init prints exactly one line (the timing line the boot
//! benchmark reads). On any failure it prints exactly one line,
//! `slotsmith-init: refusing to boot: <reason>`, syncs, waits two seconds
//! so the line can be read on a screen, and reboots. While a slot is being
//! tried (EFI Boot Guard's TESTING, after an update), that is a failed
//! boot: the loader marks the slot FAILED and falls back to the other one.
//! A slot already confirmed (OK) is booted again; falling back from it
//! too is issue 11's work. It never starts a shell and never continues past an error; a
//! panic ends the same way through the hook installed by
//! [`install_panic_hook`]. The reason is escaped ([`shown`]), so text from
//! a partition name or a manifest cannot inject terminal control
//! sequences or a second, forged console line.

use slotsmith_yaml::escape::shown;
use std::io::Write as _;
use std::time::Duration;

/// The prefix of every console line.
pub const PREFIX: &str = "slotsmith-init:";

/// The refusal line for `reason`, newline included, on one line whatever
/// `reason` contains.
pub fn refusal_line(reason: &str) -> String {
    format!("{PREFIX} refusing to boot: {}\n", shown(reason))
}

/// The success line, printed just before switch_root.
pub fn timing_line(slot: &str, init_ms: u128, uptime_ms: u128, secure_boot: &str) -> String {
    // The benchmark's unverified build says so on every boot.
    let what = if cfg!(feature = "bench-unverified-root") {
        "UNVERIFIED (bench build)"
    } else {
        "verified"
    };
    format!(
        "{PREFIX} slot {slot} {what} root ready in {init_ms} ms (uptime {uptime_ms} ms); \
         kernel: secure boot {secure_boot}\n"
    )
}

/// What the kernel logged about Secure Boot (`secureboot: Secure boot
/// enabled` or `... disabled`), read from `/dev/kmsg`: `enabled`,
/// `disabled` or `unknown`. With `quiet`, neither the EFI stub nor the
/// kernel print it on the console, so the init repeats the kernel's own
/// words in its one line: a production console still shows what the
/// firmware enforced.
pub fn secure_boot_state(kmsg: &str) -> &'static str {
    for line in kmsg.lines() {
        if line.contains("Secure boot enabled") {
            return "enabled";
        }
        if line.contains("Secure boot disabled") {
            return "disabled";
        }
    }
    "unknown"
}

/// Reads the kernel log buffer as far as it goes now, without waiting
/// (at most 4 MiB).
pub fn read_kmsg() -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open("/dev/kmsg")
    else {
        return String::new();
    };
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; EAGAIN ends the buffer; EPIPE (a record
    // overwritten while reading) just moves on.
    for _ in 0..100_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {}
            Err(_) => break,
        }
        if out.len() > 4 << 20 {
            break;
        }
    }
    out
}

/// Writes `line` to the console (the init's stderr, which the kernel
/// opened on /dev/console). A failed write cannot be reported anywhere.
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
}

/// Milliseconds since boot (CLOCK_BOOTTIME), for the timing line.
pub fn uptime_ms() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u128::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u128::try_from(t.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

/// Prints the refusal line for `reason` and reboots. As PID 1 this never
/// returns; anywhere else (a test, a mistaken run) it only prints and
/// exits with status 1, so it can never reboot a development machine.
pub fn refuse(reason: &str) -> ! {
    say(&refusal_line(reason));
    if rustix::process::getpid().is_init() {
        rustix::fs::sync();
        std::thread::sleep(Duration::from_secs(2));
        let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
        // Unreachable in practice (PID 1 holds CAP_SYS_BOOT). Exiting as
        // PID 1 makes the kernel panic, and `panic=5` reboots: still a
        // failed boot, never a continued one.
    }
    std::process::exit(1)
}

/// Routes every panic to [`refuse`] with the panic's message and location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        refuse(&format!("internal error: {msg}{at}"));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_stays_on_one_line() {
        let line = refusal_line("bad name `x\nslotsmith-init: slot a verified\u{1b}[2J`");
        assert_eq!(
            line,
            "slotsmith-init: refusing to boot: bad name `x\\nslotsmith-init: slot a verified\\x1b[2J`\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn timing_line_is_exact() {
        assert_eq!(
            timing_line("b", 812, 17_345, "enabled"),
            "slotsmith-init: slot b verified root ready in 812 ms (uptime 17345 ms); kernel: secure boot enabled\n"
        );
        assert_eq!(
            secure_boot_state("6,123,456,-;secureboot: Secure boot enabled\n"),
            "enabled"
        );
        assert_eq!(
            secure_boot_state("6,1,2,-;secureboot: Secure boot disabled\n"),
            "disabled"
        );
        assert_eq!(secure_boot_state("6,1,2,-;Linux version 6.1\n"), "unknown");
    }
}
