//! The external tools a build runs, decided in the plan as typed values:
//! program, arguments and environment. `cargo xtask plan` shows them and
//! the plan snapshot covers them, so a changed flag is a reviewed change.
//!
//! Paths that exist only while building (the staging directory, the work
//! directory) are placeholders, filled by `tool::Tool::from_invocation`:
//! an argument that is exactly `{name}` becomes the value (or values) the
//! build gives for `name`. Every other byte of the command line is here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::{BaseSpec, Compression, Filesystem};

/// One run of an external program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invocation {
    /// The program, found on `PATH`.
    pub program: String,
    /// Its arguments; `{name}` is a placeholder the build fills.
    pub args: Vec<String>,
    /// Extra environment (tool.rs always pins `LC_ALL=C`, `TZ=UTC` and
    /// `SOURCE_DATE_EPOCH`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Invocation {
    fn new(program: &str, args: &[&str]) -> Invocation {
        Invocation {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Invocation {
        self.args.push(a.into());
        self
    }

    fn env(mut self, k: &str, v: impl Into<String>) -> Invocation {
        self.env.insert(k.to_string(), v.into());
        self
    }
}

/// Placeholders the build fills.
pub mod slot {
    /// The file a tool writes (the rootfs image, the Debian tarball).
    pub const OUTPUT: &str = "{output}";
    /// The number of CPUs: tar2sqfs's output is the same for any count.
    pub const JOBS: &str = "{jobs}";
    /// The directory `mke2fs -d` copies the ext4 rootfs from.
    pub const STAGING: &str = "{staging}";
    /// The debugfs script that sets owners, modes, devices and xattrs.
    pub const SCRIPT: &str = "{script}";
    /// The golden disk image.
    pub const IMAGE: &str = "{image}";
    /// The host's apt sources files (none, one or two arguments).
    pub const HOST_APT_SOURCES: &str = "{host-apt-sources}";
    /// A locked base's source: the one-line apt source of the local
    /// repository the build makes from the `.deb` cache.
    pub const LOCAL_REPO_SOURCE: &str = "{local-repo-source}";
    /// The directory a tool runs in or writes into.
    pub const DIR: &str = "{dir}";
    /// A `.deb` file.
    pub const DEB: &str = "{deb}";
}

/// Every tool run of a build.
#[derive(Debug, Clone, Serialize)]
pub struct PlanTools {
    /// mmdebstrap, for a Debian base (run only when its tarball is not
    /// cached yet). For a locked base, from the local repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Invocation>,
    /// For a Debian base: how the base is resolved against the archive,
    /// for `lock` and for filling the `.deb` cache. mmdebstrap keeps the
    /// downloaded `.deb`s and the archive indexes in its tarball, and tar
    /// takes them out; dpkg-deb reads each package's fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolve: Vec<Invocation>,
    /// For a locked base: how the local repository and its check are made
    /// (its `Packages` index, and reading the installed package list back
    /// out of the base tarball).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock: Vec<Invocation>,
    /// What writes the slot image: tar2sqfs (fed a tar on stdin), or
    /// mke2fs then debugfs.
    pub rootfs: Vec<Invocation>,
    /// mke2fs for the data partition, in place in the disk image.
    pub data: Invocation,
}

/// What the tools need to know.
pub struct ToolInputs<'a> {
    pub base: &'a BaseSpec,
    /// Whether the Debian base is built from its lock.
    pub locked: bool,
    pub debian_arch: Option<&'a str>,
    pub filesystem: Filesystem,
    pub compression: Option<Compression>,
    pub block_size: u64,
    pub slot_size: u64,
    pub ext4_uuid: Option<String>,
    pub data_label: &'a str,
    pub data_uuid: String,
    pub data_offset: u64,
    pub data_size: u64,
    pub epoch: u64,
}

/// Decides every tool invocation.
pub fn plan_tools(t: &ToolInputs<'_>) -> PlanTools {
    let epoch = t.epoch.to_string();
    let base = match t.base {
        BaseSpec::Debian {
            suite,
            variant,
            packages,
            mirror,
        } => {
            let mut inv = Invocation::new("mmdebstrap", &[])
                .arg(format!("--variant={variant}"))
                .arg(format!(
                    "--architectures={}",
                    t.debian_arch.unwrap_or("amd64")
                ))
                .arg("--format=tar")
                .arg("--aptopt=Acquire::Languages \"none\"");
            if !packages.is_empty() {
                inv = inv.arg(format!("--include={}", packages.join(",")));
            }
            let sources = |inv: Invocation| match mirror {
                Some(m) => inv.arg(m.clone()),
                None => inv.arg(slot::HOST_APT_SOURCES),
            };
            // Resolution: the same bootstrap, keeping what was downloaded
            // (the .debs of both phases, and the indexes with their dates).
            let resolve = sources(
                inv.clone()
                    .arg("--skip=essential/unlink,cleanup/apt/cache,cleanup/apt/lists")
                    .arg(suite.clone())
                    .arg(slot::OUTPUT),
            );
            let base = if t.locked {
                // The local repository's source line names a build
                // directory; the image gets a fixed note instead, so the
                // bytes do not depend on where the build ran.
                inv.arg(LOCKED_SOURCES_HOOK)
                    .arg(suite.clone())
                    .arg(slot::OUTPUT)
                    .arg(slot::LOCAL_REPO_SOURCE)
            } else {
                sources(inv.arg(suite.clone()).arg(slot::OUTPUT))
            };
            (Some(base), resolve_steps(resolve), lock_steps(t.locked))
        }
        _ => (None, Vec::new(), Vec::new()),
    };
    let (base, resolve, lock) = base;
    let rootfs = match t.filesystem {
        Filesystem::Squashfs => {
            vec![
                Invocation::new("tar2sqfs", &["--quiet", "--no-skip", "--compressor"])
                    .arg(t.compression.map(|c| c.tool_name()).unwrap_or("zstd"))
                    .arg("--block-size")
                    .arg(t.block_size.to_string())
                    .arg("--num-jobs")
                    .arg(slot::JOBS)
                    .arg("--defaults")
                    .arg(format!("uid=0,gid=0,mode=0755,mtime={epoch}"))
                    .arg(slot::OUTPUT),
            ]
        }
        Filesystem::Ext4 => {
            let uuid = t.ext4_uuid.clone().unwrap_or_default();
            vec![
                Invocation::new(
                    "mke2fs",
                    &["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "rootfs", "-U"],
                )
                .arg(uuid.clone())
                // No journal: the slot is read-only under dm-verity.
                .arg("-O")
                .arg("^has_journal")
                .arg("-E")
                .arg(format!(
                    "hash_seed={uuid},root_owner=0:0,nodiscard,lazy_itable_init=0"
                ))
                .arg("-d")
                .arg(slot::STAGING)
                .arg(slot::OUTPUT)
                .arg(format!("{}k", t.slot_size / 1024))
                .env("E2FSPROGS_FAKE_TIME", epoch.clone()),
                Invocation::new("debugfs", &["-w", "-f", slot::SCRIPT, slot::OUTPUT])
                    .env("E2FSPROGS_FAKE_TIME", epoch.clone()),
            ]
        }
    };
    let data = Invocation::new(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-L",
            t.data_label,
            "-U",
        ],
    )
    .arg(t.data_uuid.clone())
    .arg("-E")
    .arg(format!(
        "offset={},hash_seed={},root_owner=0:0,nodiscard,lazy_itable_init=0,lazy_journal_init=0",
        t.data_offset, t.data_uuid
    ))
    .arg(slot::IMAGE)
    .arg(format!("{}k", t.data_size / 1024))
    .env("E2FSPROGS_FAKE_TIME", epoch);
    PlanTools {
        base,
        resolve,
        lock,
        rootfs,
        data,
    }
}

/// What a locked base's `/etc/apt/sources.list` says. Written inside the
/// chroot, after removing what is there: from the host side, a symlink
/// in the chroot's /etc could point the write at a host file.
pub const LOCKED_SOURCES_HOOK: &str = "--customize-hook=chroot \"$1\" sh -c \"rm -f /etc/apt/sources.list && printf '# Built from a slotsmith lock: the packages of this image change only\\\\n# through a signed update, never through apt.\\\\n' > /etc/apt/sources.list\"";

/// mmdebstrap into a tarball, then the `.deb`s and the indexes out of it,
/// then each `.deb`'s fields.
fn resolve_steps(mmdebstrap: Invocation) -> Vec<Invocation> {
    vec![
        mmdebstrap,
        Invocation::new(
            "tar",
            &[
                "-x",
                "-f",
                slot::OUTPUT,
                "-C",
                slot::DIR,
                "--wildcards",
                "./var/cache/apt/archives/*.deb",
                "./var/lib/apt/lists/*_InRelease",
            ],
        ),
        Invocation::new(
            "dpkg-deb",
            &["--field", slot::DEB, "Package", "Version", "Architecture"],
        ),
    ]
}

/// The local repository's index, and the installed packages read back.
fn lock_steps(locked: bool) -> Vec<Invocation> {
    if !locked {
        return Vec::new();
    }
    vec![
        Invocation::new("dpkg-scanpackages", &["--multiversion", ".", "/dev/null"]),
        Invocation::new(
            "tar",
            &["-x", "-O", "-f", slot::OUTPUT, "./var/lib/dpkg/status"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(fs: Filesystem) -> ToolInputs<'static> {
        static BASE: std::sync::OnceLock<BaseSpec> = std::sync::OnceLock::new();
        let base = BASE.get_or_init(|| BaseSpec::Debian {
            suite: "bookworm".into(),
            variant: "apt".into(),
            packages: vec!["systemd".into(), "nftables".into()],
            mirror: None,
        });
        ToolInputs {
            base,
            locked: false,
            debian_arch: Some("amd64"),
            filesystem: fs,
            compression: None,
            block_size: 131072,
            slot_size: 64 << 20,
            ext4_uuid: Some("11111111-2222-8333-8444-555555555555".into()),
            data_label: "data",
            data_uuid: "66666666-7777-8888-9999-000000000000".into(),
            data_offset: 1 << 30,
            data_size: 16 << 20,
            epoch: 1700000000,
        }
    }

    #[test]
    fn squashfs_is_one_tar2sqfs_with_the_epoch_and_placeholders() {
        let t = plan_tools(&inputs(Filesystem::Squashfs));
        assert_eq!(t.rootfs.len(), 1);
        let a = &t.rootfs[0].args;
        assert!(a.contains(&"uid=0,gid=0,mode=0755,mtime=1700000000".to_string()));
        assert!(a.contains(&slot::JOBS.to_string()) && a.last().unwrap() == slot::OUTPUT);
        let base = t.base.unwrap();
        assert!(base
            .args
            .contains(&"--include=systemd,nftables".to_string()));
        assert_eq!(base.args.last().unwrap(), slot::HOST_APT_SOURCES);
    }

    #[test]
    fn ext4_is_mke2fs_then_debugfs_with_fake_time() {
        let t = plan_tools(&inputs(Filesystem::Ext4));
        assert_eq!(t.rootfs.len(), 2);
        assert_eq!(t.rootfs[0].program, "mke2fs");
        assert!(t.rootfs[0].args.contains(&"65536k".to_string()));
        assert_eq!(t.rootfs[1].args, ["-w", "-f", slot::SCRIPT, slot::OUTPUT]);
        for inv in t.rootfs.iter().chain([&t.data]) {
            assert_eq!(inv.env["E2FSPROGS_FAKE_TIME"], "1700000000");
        }
        assert!(t
            .data
            .args
            .iter()
            .any(|a| a.starts_with("offset=1073741824,")));
    }
}
