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
