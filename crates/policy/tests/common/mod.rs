//! Shared test fixtures: the shipped baseline policies and a rootfs laid out
//! like Debian 12 (merged /usr, the files and links that the hardening
//! settings interact with), so tests exercise the same precedence traps a
//! real image has.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use slotsmith_policy::model::Rule;
use slotsmith_policy::rootfs::MemRootfs;

/// The workspace root (holding `policies/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The names of the shipped policy files.
pub fn baseline_names() -> Vec<String> {
    ["network", "kernel", "services", "ssh", "accounts", "files"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The shipped baseline, loaded.
pub fn baseline() -> Vec<Rule> {
    slotsmith_policy::load_policies(&workspace(), &baseline_names())
        .unwrap_or_else(|d| panic!("baseline does not load:\n{d}"))
}

/// Finds a program on PATH or fails naming the Debian package to install.
pub fn need(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is not installed: install the Debian package {package} (apt-get install -y {package})");
}

pub const SHADOW: &str = "root:*:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
messagebus:*:19000::::::\n\
service:$y$j9T$abcdefghijkl$0123456789abcdefghijklmnopqrstuvwxyzABCDEF:19000:0:99999:7:::\n";

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
messagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n\
service:x:1000:1000:Service:/home/service:/bin/bash\n";

/// The start of Debian 12's stock sshd_config: the Include comes before
/// any setting.
pub const SSHD_CONFIG: &str = "\n# This is the sshd server system-wide configuration file.\n\
Include /etc/ssh/sshd_config.d/*.conf\n\n#Port 22\nKbdInteractiveAuthentication no\nUsePAM yes\n\
X11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n";

/// A rootfs with Debian 12's layout where it matters.
pub fn debian_like() -> MemRootfs {
    let mut fs = MemRootfs::new();
    fs.symlink("/lib", "usr/lib")
        .symlink("/bin", "usr/bin")
        .symlink("/sbin", "usr/sbin")
        .dir("/tmp", 0o1777)
        .dir("/var/tmp", 0o1777)
        .dir("/dev", 0o755)
        .file("/etc/passwd", 0o644, PASSWD)
        .file_owned("/etc/shadow", 0o640, 0, 42, SHADOW)
        .file("/etc/group", 0o644, "root:x:0:\nshadow:x:42:\n")
        .file("/usr/bin/false", 0o755, "ELF")
        .file("/usr/sbin/nft", 0o755, "ELF")
        // setuid/setgid programs of a Debian base system
        .file("/usr/bin/su", 0o4755, "ELF su")
        .file("/usr/bin/passwd", 0o4755, "ELF passwd")
        .file("/usr/bin/mount", 0o4755, "ELF mount")
        .file_owned("/usr/bin/chage", 0o2755, 0, 42, "ELF chage")
        .file_owned("/usr/sbin/unix_chkpwd", 0o2755, 0, 42, "ELF unix_chkpwd")
        .file_owned("/usr/lib/dbus-1.0/dbus-daemon-launch-helper", 0o4754, 0, 101, "ELF helper")
        // sysctl: procps's protect-links file and systemd's sysctl.conf link
        .file("/etc/sysctl.conf", 0o644, "#kernel.domainname = example.com\n")
        .symlink("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
        .file(
            "/usr/lib/sysctl.d/99-protect-links.conf",
            0o644,
            "fs.protected_fifos = 1\nfs.protected_hardlinks = 1\nfs.protected_regular = 2\nfs.protected_symlinks = 1\n",
        )
        .file("/usr/lib/sysctl.d/50-default.conf", 0o644, "kernel.sysrq = 0x01b6\nnet.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.all.rp_filter\n")
        // nftables: the stock accept-everything ruleset and the unit
        .file(
            "/etc/nftables.conf",
            0o755,
            "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n\tchain forward {\n\t\ttype filter hook forward priority filter;\n\t}\n\tchain output {\n\t\ttype filter hook output priority filter;\n\t}\n}\n",
        )
        .file("/usr/lib/systemd/system/nftables.service", 0o644, "[Unit]\nDescription=nftables\n[Install]\nWantedBy=sysinit.target\n")
        .file("/usr/lib/systemd/system/getty@.service", 0o644, "[Unit]\n")
        .file("/usr/lib/systemd/system/serial-getty@.service", 0o644, "[Unit]\n")
        .file("/usr/lib/systemd/system/debug-shell.service", 0o644, "[Unit]\n")
        .symlink("/etc/systemd/system/getty.target.wants/getty@tty1.service", "/lib/systemd/system/getty@.service")
        .symlink("/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
        .file("/usr/lib/systemd/system/ssh.service", 0o644, "[Unit]\n")
        // OpenSSH
        .file("/usr/sbin/sshd", 0o755, "ELF sshd")
        .file("/etc/ssh/sshd_config", 0o644, SSHD_CONFIG)
        .dir("/etc/ssh/sshd_config.d", 0o755)
        .dir("/etc/modprobe.d", 0o755);
    fs
}

/// The command line a production image built with the baseline has.
pub fn good_cmdline(generated: &[String]) -> String {
    let mut c = vec!["root=PARTUUID=x".to_string(), "ro".into(), "quiet".into()];
    c.extend(generated.iter().cloned());
    c.join(" ")
}
