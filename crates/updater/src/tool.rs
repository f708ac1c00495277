//! The only module that runs other programs: SWUpdate, EFI Boot Guard's
//! `bg_setenv`, `systemctl`, `mount` and `umount`, each with arguments as
//! a list (never through a shell) and absolute paths, so `$PATH` does not
//! decide which program runs.

use anyhow::{Context, Result};

/// What a finished program said.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output and error, interleaved as written.
    pub text: String,
}

impl Output {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `program` with `args`, capturing its output; a non-zero exit is
/// reported in [`Output::code`], not as an error.
pub fn capture(program: &str, args: &[&str]) -> Result<Output> {
    capture_in(program, args, None)
}

/// [`capture`] with `TMPDIR` set (SWUpdate's scratch directory).
pub fn capture_with_tmpdir(
    program: &str,
    args: &[&str],
    tmpdir: &std::path::Path,
) -> Result<Output> {
    capture_in(program, args, Some(tmpdir))
}

fn capture_in(program: &str, args: &[&str], tmpdir: Option<&std::path::Path>) -> Result<Output> {
    let mut cmd = duct::cmd(program, args);
    if let Some(t) = tmpdir {
        cmd = cmd.env("TMPDIR", t);
    }
    let out = cmd
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(Output {
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// Runs `program` and fails, quoting its output, unless it exits 0.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = capture(program, args)?;
    anyhow::ensure!(
        out.ok(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.code.map_or("killed".into(), |c| format!("exit {c}")),
        slotsmith_yaml::escape::shown(out.text.trim())
    );
    Ok(out.text)
}

/// SWUpdate.
pub const SWUPDATE: &str = "/usr/bin/swupdate";
/// EFI Boot Guard's environment tool.
pub const BG_SETENV: &str = "/usr/bin/bg_setenv";
/// systemd's control tool.
pub const SYSTEMCTL: &str = "/usr/bin/systemctl";
/// util-linux mount and umount.
pub const MOUNT: &str = "/usr/bin/mount";
/// util-linux umount.
pub const UMOUNT: &str = "/usr/bin/umount";

/// `systemctl is-active UNIT`: its one-word answer.
pub fn unit_state(unit: &str) -> Result<String> {
    Ok(capture(SYSTEMCTL, &["is-active", "--", unit])?
        .text
        .trim()
        .to_string())
}

/// `systemctl show -p PROP --value`.
pub fn manager_property(prop: &str) -> Result<String> {
    Ok(run(SYSTEMCTL, &["show", "-p", prop, "--value"])?
        .trim()
        .to_string())
}

/// The units systemd reports failed.
pub fn failed_units() -> Result<Vec<String>> {
    let text = run(
        SYSTEMCTL,
        &[
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ],
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Asks systemd to reboot (the loader then decides what boots).
pub fn reboot() -> Result<()> {
    run(SYSTEMCTL, &["reboot"]).map(|_| ())
}
