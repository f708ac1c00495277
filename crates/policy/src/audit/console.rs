//! Console login prompts: no getty where the policy says none.
//!
//! On the device, a getty comes from one of two places: an instance unit
//! (`serial-getty@ttyS0.service`, `getty@tty1.service`, or
//! `autovt@ttyN.service`, which logind starts on a VT switch), or
//! systemd-getty-generator, which at boot adds a serial getty for every
//! `console=` device unless the command line turns it off with
//! `systemd.getty_auto=` and a systemd boolean false (`0`, `no`, `false`,
//! `off`; the last occurrence counts).
//!
//! The check asks the `units` check whether each instance the policy lists
//! is masked and not enabled, and, when the policy turns the generator off,
//! reads the last `systemd.getty_auto=` of the command line as systemd
//! would.

use super::cmdline::cmdline_has;
use super::units::unit_masked;
use super::{outcome, Ctx, Evidence, Outcome};
use crate::apply::GETTY_AUTO_OFF;
use crate::model::Console;

/// How the check reads the image, for the report.
pub(super) const CHECK: &str = "getty units masked and kernel command line";

/// The listed getty instances masked, and the generator off when the
/// policy says so.
pub(super) fn check(c: &Console, ctx: &Ctx<'_>) -> Outcome {
    let mut fails = Vec::new();
    let mut ev = Vec::new();
    for u in c.masked_units() {
        unit_masked(&u, ctx, &mut fails, &mut ev);
    }
    if !c.getty_auto {
        let (_, got) = cmdline_has(&ctx.cmdline, GETTY_AUTO_OFF);
        let val = got.strip_prefix("systemd.getty_auto=").unwrap_or("");
        // systemd parses booleans: 0, no, false, off.
        let ok = matches!(val, "0" | "no" | "false" | "off");
        if !ok {
            fails.push(format!("kernel command line lacks {GETTY_AUTO_OFF} (found {got}): systemd-getty-generator starts a getty on every console= device"));
        }
        ev.push(Evidence {
            path: "kernel-cmdline".into(),
            sha256: None,
            value: got,
            expected: GETTY_AUTO_OFF.into(),
        });
    }
    outcome(
        fails,
        "no login prompt is started on the listed consoles".into(),
        ev,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GettyPolicy;
    use crate::rootfs::MemRootfs;

    fn console(getty_auto: bool) -> Console {
        Console {
            serial_getty: GettyPolicy::Masked,
            getty_auto,
            serial_ttys: vec!["ttyS0".into()],
            vts: vec!["tty1".into()],
        }
    }

    /// An image with every getty instance the policy lists masked.
    fn masked() -> MemRootfs {
        let mut fs = MemRootfs::new();
        for u in console(false).masked_units() {
            fs.symlink(&format!("/etc/systemd/system/{u}"), "/dev/null");
        }
        fs
    }

    #[test]
    fn masked_gettys_and_the_generator_off_pass() {
        let fs = masked();
        for off in ["0", "no", "false", "off"] {
            let o = check(
                &console(false),
                &Ctx::new(&fs, &format!("console=ttyS0 systemd.getty_auto={off}")),
            );
            assert!(o.ok, "{off}: {}", o.message);
            assert_eq!(
                o.message,
                "no login prompt is started on the listed consoles"
            );
        }
        let o = check(&console(false), &Ctx::new(&fs, "systemd.getty_auto=0"));
        // autovt@, getty@ and serial-getty@, then the command line.
        assert_eq!(o.evidence.len(), 4);
        assert_eq!(o.evidence[3].value, "systemd.getty_auto=0");
    }

    #[test]
    fn the_last_getty_auto_wins_and_absence_fails() {
        let fs = masked();
        let o = check(
            &console(false),
            &Ctx::new(&fs, "systemd.getty_auto=0 systemd.getty_auto=1"),
        );
        assert!(!o.ok);
        assert!(
            o.message.starts_with(
                "kernel command line lacks systemd.getty_auto=0 (found systemd.getty_auto=1)"
            ),
            "{}",
            o.message
        );
        let o = check(&console(false), &Ctx::new(&fs, "console=ttyS0"));
        assert!(
            o.message.contains("(found systemd.getty_auto absent)"),
            "{}",
            o.message
        );
        // When the policy lets the generator run, the command line is not read.
        let o = check(&console(true), &Ctx::new(&fs, "console=ttyS0"));
        assert!(o.ok, "{}", o.message);
        assert_eq!(o.evidence.len(), 3);
    }

    #[test]
    fn an_unmasked_instance_fails_and_allowed_serial_gettys_are_not_checked() {
        let mut fs = masked();
        fs.remove("/etc/systemd/system/autovt@tty1.service");
        let o = check(&console(false), &Ctx::new(&fs, "systemd.getty_auto=0"));
        assert_eq!(
            o.message,
            "autovt@tty1.service is not masked: /etc/systemd/system/autovt@tty1.service is absent"
        );
        let mut fs = masked();
        fs.remove("/etc/systemd/system/serial-getty@ttyS0.service");
        let mut c = console(false);
        c.serial_getty = GettyPolicy::Allowed;
        assert!(check(&c, &Ctx::new(&fs, "systemd.getty_auto=0")).ok);
    }
}
