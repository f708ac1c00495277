//! The one door to external programs.
//!
//! Every external tool slotsmith runs (mmdebstrap, tar2sqfs, mke2fs,
//! debugfs, mksquashfs, ...) goes through this module and `duct`, so that:
//! - the environment is pinned: `LC_ALL=C` and `TZ=UTC` so messages and
//!   timestamps do not depend on the builder's locale, and
//!   `SOURCE_DATE_EPOCH` so tools that honour it are reproducible;
//! - a missing program is reported with the Debian package that provides it;
//! - a failure names the full argv and the tail of the tool's stderr.
//!
//! `std::process::Command` is banned elsewhere by `clippy.toml`.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Programs slotsmith may run and the Debian package providing each.
const PACKAGES: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("dpkg-deb", "dpkg"),
    ("tar2sqfs", "squashfs-tools-ng"),
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("mke2fs", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("veritysetup", "cryptsetup-bin"),
    ("openssl", "openssl"),
    ("swupdate", "swupdate"),
    ("tar", "tar"),
    ("sbsign", "sbsigntool"),
    ("sbverify", "sbsigntool"),
    ("faketime", "faketime"),
    ("cert-to-efi-sig-list", "efitools"),
    ("sign-efi-sig-list", "efitools"),
    ("sig-list-to-certs", "efitools"),
    ("virt-fw-vars", "virt-firmware (pip)"),
    ("pyspdxtools", "spdx-tools (pip)"),
    (
        "qemu-system-x86_64",
        "qemu-system-x86 (and ovmf for the firmware)",
    ),
    ("objcopy", "binutils"),
];

/// The Debian package that provides `program`, when known.
pub fn package_of(program: &str) -> Option<&'static str> {
    PACKAGES
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, pkg)| *pkg)
}

/// Finds `program` on `PATH` (plus the sbin directories, which are not on
/// an unprivileged user's PATH on Debian but hold mke2fs and debugfs).
pub fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [OsString::from("/usr/sbin"), OsString::from("/sbin")];
    for dir in std::env::split_paths(&path).chain(extra.iter().map(PathBuf::from)) {
        let candidate = dir.join(program);
        if let Ok(md) = candidate.metadata() {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    match package_of(program) {
        Some(pkg) => {
            bail!("{program} not found: install the Debian package {pkg} (apt-get install {pkg})")
        }
        None => bail!("{program} not found on PATH"),
    }
}

/// A prepared invocation of an external program.
pub struct Tool {
    program: String,
    path: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    sde: Option<u64>,
}

/// What a finished tool printed.
#[derive(Debug)]
pub struct Output {
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
    /// The tool's peak resident memory in KiB (VmHWM), sampled while it ran;
    /// benchmarks report it.
    pub peak_rss_kib: u64,
}

impl Tool {
    /// Prepares `program`; fails at once when it is not installed.
    pub fn new(program: &str) -> anyhow::Result<Tool> {
        let path = if program.contains('/') {
            // An explicit path (a configured signer hook) is used as given.
            PathBuf::from(program)
        } else {
            which(program)?
        };
        Ok(Tool {
            program: program.to_string(),
            path,
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            sde: None,
        })
    }

    /// Prepares a planned invocation: its program, its arguments with every
    /// `{name}` placeholder replaced by `fill`'s values for `name` (an
    /// argument that is a placeholder may become several arguments, or
    /// none), its environment, and `SOURCE_DATE_EPOCH`. A placeholder the
    /// build does not fill is an error, never passed on as text.
    pub fn from_invocation(
        inv: &crate::plan::Invocation,
        fill: &[(&str, Vec<OsString>)],
        epoch: u64,
    ) -> anyhow::Result<Tool> {
        let mut t = Tool::new(&inv.program)?.epoch(epoch);
        for a in &inv.args {
            if a.starts_with('{') && a.ends_with('}') {
                let values = fill
                    .iter()
                    .find(|(k, _)| *k == a)
                    .map(|(_, v)| v)
                    .with_context(|| {
                        format!("{}: nothing fills the placeholder {a}", inv.program)
                    })?;
                t = t.args(values);
            } else {
                t = t.arg(a);
            }
        }
        for (k, v) in &inv.env {
            t = t.env(k, v);
        }
        Ok(t)
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Adds several arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Tool {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an extra environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Tool {
        self.envs
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Sets `SOURCE_DATE_EPOCH` for the tool.
    pub fn epoch(mut self, sde: u64) -> Tool {
        self.sde = Some(sde);
        self
    }

    /// Runs in `dir`.
    pub fn dir(mut self, dir: &Path) -> Tool {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// The argv as one shell-like line, for messages.
    pub fn argv(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
            } else {
                s.push(' ');
                s.push_str(&a);
            }
        }
        s
    }

    fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.path, &self.args)
            .env("LC_ALL", "C")
            .env("TZ", "UTC");
        if let Some(sde) = self.sde {
            e = e.env("SOURCE_DATE_EPOCH", sde.to_string());
        }
        for (k, v) in &self.envs {
            e = e.env(k, v);
        }
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        e.stdout_capture().stderr_capture().unchecked()
    }

    /// Runs to completion; a non-zero exit is an error with argv and stderr.
    pub fn run(self) -> anyhow::Result<Output> {
        let handle = self
            .expression()
            .stdin_null()
            .start()
            .with_context(|| format!("starting {}", self.argv()))?;
        let sampler = PeakSampler::start(handle.pids());
        let out = handle
            .into_output()
            .with_context(|| format!("waiting for {}", self.argv()))?;
        self.check(out, sampler.stop())
    }

    /// Runs while `feed` writes the tool's standard input through a pipe,
    /// so large inputs (a whole rootfs as tar) stream without a temporary
    /// copy. If the tool dies early, its own error is reported rather than
    /// the broken pipe.
    pub fn run_with_stdin(
        self,
        feed: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<Output> {
        let (reader, mut writer) = std::io::pipe().context("creating a pipe")?;
        let handle = self
            .expression()
            .stdin_file(reader)
            .start()
            .with_context(|| format!("starting {}", self.argv()))?;
        let sampler = PeakSampler::start(handle.pids());
        let fed = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut writer);
            feed(&mut w).and_then(|()| w.flush().context("flushing the pipe"))
        };
        drop(writer);
        let out = handle
            .into_output()
            .with_context(|| format!("waiting for {}", self.argv()))?;
        let checked = self.check(out, sampler.stop());
        match (fed, checked) {
            (Ok(()), r) => r,
            (Err(e), Err(tool_err)) => Err(tool_err.context(format!("{e:#}"))),
            (Err(e), Ok(_)) => Err(e.context(format!("feeding {}", self.argv()))),
        }
    }

    /// Starts the tool in the background with its standard input closed and
    /// its output discarded (a virtual machine writing its console to a
    /// file); the caller waits for or kills it.
    pub fn spawn(self) -> anyhow::Result<duct::Handle> {
        let mut e = duct::cmd(&self.path, &self.args)
            .env("LC_ALL", "C")
            .env("TZ", "UTC");
        for (k, v) in &self.envs {
            e = e.env(k, v);
        }
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        e.stdin_null()
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .start()
            .with_context(|| format!("starting {}", self.argv()))
    }

    /// Runs attached to this terminal (an interactive virtual machine
    /// console); a non-zero exit is an error naming the argv.
    pub fn run_attached(self) -> anyhow::Result<()> {
        let mut e = duct::cmd(&self.path, &self.args);
        for (k, v) in &self.envs {
            e = e.env(k, v);
        }
        let out = e
            .unchecked()
            .run()
            .with_context(|| format!("running {}", self.argv()))?;
        if !out.status.success() {
            bail!("{} exited with {}", self.argv(), out.status);
        }
        Ok(())
    }

    fn check(&self, out: std::process::Output, peak_rss_kib: u64) -> anyhow::Result<Output> {
        if out.status.success() {
            return Ok(Output {
                stdout: out.stdout,
                stderr: out.stderr,
                peak_rss_kib,
            });
        }
        let code = out
            .status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
        bail!(
            "{} failed with {code}\n  command: {}\n  stderr: {}",
            self.program,
            self.argv(),
            tail(&out.stderr)
        )
    }
}

/// Samples the peak resident memory of running processes from
/// `/proc/<pid>/status` (VmHWM is the kernel's own high-water mark, so
/// sampling only has to catch the process before it exits).
struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pids: Vec<u32>) -> PeakSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                for pid in &pids {
                    if let Some(kib) = vm_hwm_kib(&format!("/proc/{pid}/status")) {
                        peak = peak.max(kib);
                    }
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        PeakSampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// VmHWM in KiB from a `/proc/<pid>/status` file.
pub fn vm_hwm_kib(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last lines of a tool's output, trimmed to about 2 KiB.
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let start = text.len().saturating_sub(2048);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    let t = &text[start..];
    if t.is_empty() {
        "(empty)".to_string()
    } else {
        t.replace('\n', "\n          ")
    }
}

/// The first line a tool prints about its version (`--version`, or `-V`
/// for e2fsprogs), remembered for the process. Cache keys include it, so a
/// new tool version rebuilds what it writes.
pub fn version(program: &str) -> anyhow::Result<String> {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(v) = seen.lock().ok().and_then(|m| m.get(program).cloned()) {
        return Ok(v);
    }
    let flag = if matches!(program, "mke2fs" | "debugfs" | "e2fsck") {
        "-V"
    } else {
        "--version"
    };
    let tool = Tool::new(program)?.arg(flag);
    let out = tool
        .expression()
        .stdin_null()
        .run()
        .with_context(|| format!("running {program} {flag}"))?;
    // e2fsprogs print it on stderr, and exit 0 or 1 depending on version.
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string();
    if line.is_empty() {
        bail!("{program} {flag} printed nothing");
    }
    if let Ok(mut m) = seen.lock() {
        m.insert(program.to_string(), line.clone());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let e = which("mke2fs-does-not-exist").unwrap_err().to_string();
        assert_eq!(e, "mke2fs-does-not-exist not found on PATH");
        assert_eq!(package_of("tar2sqfs"), Some("squashfs-tools-ng"));
    }

    #[test]
    fn failure_carries_argv_and_stderr() {
        let e = Tool::new("mke2fs")
            .unwrap()
            .arg("-t")
            .arg("no such fs")
            .arg("/nonexistent/x")
            .run()
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("command: mke2fs -t 'no such fs' /nonexistent/x"),
            "{msg}"
        );
        assert!(msg.contains("stderr: "), "{msg}");
        assert!(!msg.contains("stderr: (empty)"), "{msg}");
    }

    #[test]
    fn stdin_is_streamed() {
        let out = Tool::new("debugfs")
            .unwrap()
            .arg("-f")
            .arg("-")
            .run_with_stdin(|w| {
                w.write_all(b"help\n")?;
                Ok(())
            });
        // debugfs without a filesystem still reads commands from stdin and
        // prints its help: proof the pipe carried our bytes.
        let out = out.unwrap();
        let all = [out.stdout, out.stderr].concat();
        assert!(String::from_utf8_lossy(&all).contains("show_debugfs_params"));
    }
}
