//! Hardening in the build: applying the image's policies to the staged
//! rootfs tree, and auditing the built rootfs image.
//!
//! Policies are applied right after the base import and before the layers,
//! so a product layer can still override a hardened file; the audit, which
//! reads the finished filesystem image back (not the tree), then catches
//! it and names the rule. A production build fails when a rule fails
//! without a waiver; the report is kept in the work directory for review.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use slotsmith_policy::{Entry, EntryKind, Report, RootfsRead};
use slotsmith_rootfs::overlay::{self, Op};
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Content, Kind, Meta, Node, Tree};

use crate::plan::Plan;

/// Read access to the in-memory tree, for generating settings that depend
/// on the base (such as a locked `/etc/shadow`).
pub struct TreeView<'a>(pub &'a Tree);

fn abs(p: &RelPath) -> String {
    format!("/{}", p.as_str())
}

impl RootfsRead for TreeView<'_> {
    fn entries(&self) -> Vec<(String, Entry)> {
        let mut out: Vec<(String, Entry)> = self
            .0
            .iter()
            .map(|(p, n)| {
                let (kind, size) = match &n.kind {
                    Kind::Dir => (EntryKind::Dir, 0),
                    Kind::File { size, .. } => (EntryKind::File, *size),
                    Kind::Hardlink { target } => {
                        let size = match self.0.get(target).map(|t| &t.kind) {
                            Some(Kind::File { size, .. }) => *size,
                            _ => 0,
                        };
                        (EntryKind::File, size)
                    }
                    Kind::Symlink { target } => (
                        EntryKind::Symlink {
                            target: target.clone(),
                        },
                        0,
                    ),
                    Kind::CharDev { .. } => (EntryKind::Char, 0),
                    Kind::BlockDev { .. } => (EntryKind::Block, 0),
                    Kind::Fifo => (EntryKind::Fifo, 0),
                };
                (
                    abs(p),
                    Entry {
                        kind,
                        mode: n.meta.mode & 0o7777,
                        uid: n.meta.uid,
                        gid: n.meta.gid,
                        size,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn read(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let p = RelPath::parse(path)?;
        let Some(mut node) = self.0.get(&p) else {
            return Ok(None);
        };
        if let Kind::Hardlink { target } = &node.kind {
            match self.0.get(target) {
                Some(t) => node = t,
                None => return Ok(None),
            }
        }
        match &node.kind {
            Kind::File { content, size } => {
                let mut f = content.open(*size)?;
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut buf)
                    .with_context(|| format!("reading {path} from the tree"))?;
                Ok(Some(buf))
            }
            _ => Ok(None),
        }
    }
}

/// Applies the plan's hardening to the tree. The kernel arguments the
/// rules add are in the plan's command lines
/// ([`slotsmith_policy::kernel_args`]), not applied here.
pub fn apply(plan: &Plan, tree: &mut Tree, store: &Path) -> anyhow::Result<()> {
    let h = &plan.hardening;
    if h.rules.is_empty() {
        return Ok(());
    }
    let waived = slotsmith_policy::audit::waived_ids(&h.waivers);
    let generated = slotsmith_policy::generate(&h.rules, h.profile, &waived, &TreeView(tree))
        .context("generating the hardening settings")?;
    let sde = plan.source_date_epoch as i64;
    let mut ops = Vec::new();
    for r in &generated.remove {
        let p = RelPath::parse(&r.path)?;
        if tree.get(&p).is_some() {
            ops.push(Op::Remove { path: p });
        }
    }
    for (i, f) in generated.files.iter().enumerate() {
        // Generated contents live in the content store like imported files.
        let stored = store.join(format!("policy-{i}"));
        fs::write(&stored, &f.content).with_context(|| format!("writing {}", stored.display()))?;
        let node = Node {
            kind: Kind::File {
                content: Content::Store(stored),
                size: f.content.len() as u64,
            },
            meta: Meta {
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
                mtime: sde,
                xattrs: Default::default(),
            },
        };
        ops.push(Op::Put {
            path: RelPath::parse(&f.path)?,
            node,
        });
    }
    for l in &generated.symlinks {
        let node = Node {
            kind: Kind::Symlink {
                target: l.target.clone(),
            },
            meta: Meta {
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime: sde,
                xattrs: Default::default(),
            },
        };
        ops.push(Op::Put {
            path: RelPath::parse(&l.path)?,
            node,
        });
    }
    overlay::apply(tree, &ops).context("applying the hardening settings")?;
    for c in &generated.chmod {
        let p = RelPath::parse(&c.path)?;
        if let Some(n) = tree.get_mut(&p) {
            n.meta.mode = c.mode;
        }
    }
    Ok(())
}

/// Audits the built rootfs image (squashfs or ext4, read back from the
/// file, never the staging tree) against the plan's rules.
pub fn audit(plan: &Plan, rootfs_image: &Path, cmdline: &str) -> anyhow::Result<Report> {
    let h = &plan.hardening;
    let report = match plan.rootfs.filesystem {
        crate::spec::Filesystem::Squashfs => {
            let fs = slotsmith_policy::SquashfsRootfs::open(rootfs_image).with_context(|| {
                format!("reading the rootfs image {} back", rootfs_image.display())
            })?;
            slotsmith_policy::audit(&h.rules, h.profile, &h.waivers, &fs, cmdline)
        }
        crate::spec::Filesystem::Ext4 => {
            let fs = slotsmith_policy::Ext4Rootfs::open(rootfs_image).with_context(|| {
                format!("reading the rootfs image {} back", rootfs_image.display())
            })?;
            slotsmith_policy::audit(&h.rules, h.profile, &h.waivers, &fs, cmdline)
        }
    };
    Ok(report.for_image(&plan.image.name, &plan.image.version))
}

/// Writes report.md, report.json and report.sarif into `dir`.
pub fn write_reports(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in [
        ("report.md", slotsmith_policy::to_markdown(report)),
        ("report.json", slotsmith_policy::to_json(report)),
        ("report.sarif", slotsmith_policy::to_sarif(report)),
    ] {
        let p = dir.join(name);
        // Temporary file then rename: a reader never sees half a report.
        let tmp = dir.join(format!(".{name}.partial"));
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    Ok(written)
}

/// Fails when a rule fails without a waiver in the production profile.
pub fn gate(plan: &Plan, report: &Report, kept: &Path) -> anyhow::Result<()> {
    let failed: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.status == slotsmith_policy::Status::Fail)
        .map(|r| format!("{}: {}", r.id, r.message))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    if plan.hardening.profile == slotsmith_policy::Profile::Production {
        bail!(
            "the hardening audit failed {} rule(s) without a waiver (report: {}):\n  {}",
            failed.len(),
            kept.display(),
            failed.join("\n  ")
        );
    }
    Ok(())
}
