//! Our initramfs, assembled from the plan: the static init, the boot
//! public key, and the kernel modules the init loads, in `modules.dep`
//! order, taken from the rootfs's own kernel.
//!
//! Why our own and not Debian's: the stock initramfs-tools image cannot
//! open a dm-verity root (it has neither `dm-verity` nor `squashfs`), is
//! 35 MB, and drops to a shell when the root is missing. Ours holds one
//! program that either hands over a verified root or reboots, and nothing
//! an attacker at the console could use: no shell, no tools.
//!
//! The archive is deterministic: entries sorted, every mtime the epoch,
//! root-owned (`slotsmith_rootfs::initramfs`).

use std::collections::BTreeSet;
use std::io::Read;

use anyhow::{bail, Context};

use crate::plan::{BootSource, Plan};
use slotsmith_rootfs::initramfs::{write_newc, Entry, EntryKind, ModulesDep};
use slotsmith_rootfs::path::RelPath;
use slotsmith_rootfs::tree::{Kind, Tree};

use super::BuildOptions;

/// Largest module file taken into the initramfs (the largest Debian 6.1
/// module is under 10 MiB).
const MAX_MODULE: u64 = 64 << 20;
/// Largest init binary accepted.
const MAX_INIT: u64 = 64 << 20;

/// Whether the plan asks for our initramfs.
pub(super) fn wanted(plan: &Plan) -> bool {
    plan.boot
        .files
        .iter()
        .any(|f| f.source == BootSource::Initramfs)
}

/// The init binary's bytes, read from where the driver built it.
fn init_binary(opts: &BuildOptions) -> anyhow::Result<Vec<u8>> {
    let Some(path) = &opts.init_binary else {
        bail!("the image has a boot chain but no init binary was given (cargo xtask builds crates/init and passes it)");
    };
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening the init binary {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_INIT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the init binary {}", path.display()))?;
    if bytes.len() as u64 > MAX_INIT || !bytes.starts_with(b"\x7fELF") {
        bail!(
            "the init binary {} is not an ELF executable under 64 MiB",
            path.display()
        );
    }
    Ok(bytes)
}

/// What the initramfs depends on besides the rootfs, for the rootfs
/// stage's cache key: the init binary's sha256 and the public key.
pub(super) fn key_parts(
    plan: &Plan,
    opts: &BuildOptions,
    public_key_pem: &str,
) -> anyhow::Result<serde_json::Value> {
    if !wanted(plan) {
        return Ok(serde_json::Value::Null);
    }
    use sha2::Digest;
    let init = init_binary(opts)?;
    Ok(serde_json::json!({
        "init": hex::encode(sha2::Sha256::digest(&init)),
        "public_key": public_key_pem,
        "chain": plan.chain,
    }))
}

fn file_bytes(tree: &Tree, p: &RelPath, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut node = tree
        .get(p)
        .with_context(|| format!("/{p} is not in the rootfs"))?;
    if let Kind::Hardlink { target } = &node.kind {
        node = tree
            .get(target)
            .with_context(|| format!("/{p} links to missing /{target}"))?;
    }
    let Kind::File { content, size } = &node.kind else {
        bail!("/{p} is not a regular file");
    };
    if *size > max {
        bail!("/{p} is {size} bytes, more than the {max} an initramfs member may be");
    }
    let mut bytes = Vec::with_capacity(*size as usize);
    content
        .open(*size)
        .with_context(|| format!("opening /{p}"))?
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading /{p}"))?;
    Ok(bytes)
}

/// The one kernel version under `/lib/modules` that has a `modules.dep`.
fn kernel_version(tree: &Tree) -> anyhow::Result<String> {
    let versions: BTreeSet<String> = tree
        .iter()
        .filter_map(|(p, _)| {
            let rest = p
                .as_str()
                .strip_prefix("usr/lib/modules/")
                .or_else(|| p.as_str().strip_prefix("lib/modules/"))?;
            let (v, file) = rest.split_once('/')?;
            (file == "modules.dep").then(|| v.to_string())
        })
        .collect();
    match versions.len() {
        1 => Ok(versions.into_iter().next().unwrap_or_default()),
        0 => bail!("the rootfs has no kernel modules (no /lib/modules/*/modules.dep): the boot chain needs the kernel's modules"),
        _ => bail!(
            "the rootfs has modules for several kernels ({}); keep one",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Where `/lib/modules` really is in the tree (Debian 12 keeps it in
/// `/lib`; a merged-/usr tree links `/lib` to `usr/lib`).
fn modules_dir(tree: &Tree, version: &str) -> anyhow::Result<String> {
    for base in ["usr/lib/modules", "lib/modules"] {
        let dep = RelPath::parse(&format!("{base}/{version}/modules.dep"))?;
        if matches!(
            tree.get(&dep).map(|n| &n.kind),
            Some(Kind::File { .. } | Kind::Hardlink { .. })
        ) {
            return Ok(format!("{base}/{version}"));
        }
    }
    bail!("modules.dep of kernel {version} not found")
}

/// Builds the initramfs archive.
pub(super) fn build(
    plan: &Plan,
    opts: &BuildOptions,
    tree: &Tree,
    public_key_pem: &str,
) -> anyhow::Result<Vec<u8>> {
    let chain = plan
        .chain
        .as_ref()
        .context("the plan asks for an initramfs but has no boot chain")?;
    let init = init_binary(opts)?;
    let version = kernel_version(tree)?;
    let dir = modules_dir(tree, &version)?;
    let dep_bytes = file_bytes(
        tree,
        &RelPath::parse(&format!("{dir}/modules.dep"))?,
        16 << 20,
    )?;
    let dep_text = String::from_utf8(dep_bytes).context("modules.dep is not UTF-8")?;
    let deps = ModulesDep::parse(&dep_text)?;
    let order = deps
        .load_order(&chain.initramfs.modules)
        .with_context(|| format!("resolving the initramfs modules of kernel {version}"))?;

    let dir_entry = |p: &str| Entry {
        path: p.into(),
        mode: 0o755,
        kind: EntryKind::Dir,
    };
    let mut entries = vec![
        dir_entry("dev"),
        Entry {
            path: "dev/console".into(),
            mode: 0o600,
            kind: EntryKind::CharDev(5, 1),
        },
        dir_entry("proc"),
        dir_entry("sys"),
        dir_entry("run"),
        // The data partition, mounted early to read the anti-rollback
        // minimum, then moved under the new root.
        dir_entry("data"),
        dir_entry("sysroot"),
        Entry {
            path: "init".into(),
            mode: 0o755,
            kind: EntryKind::File(init),
        },
    ];
    let mut dirs = BTreeSet::new();
    let mut add_parents = |path: &str, entries: &mut Vec<Entry>| {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for c in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if dirs.insert(acc.clone()) {
                entries.push(dir_entry(&acc));
            }
        }
    };
    let key_path = chain.initramfs.public_key.clone();
    add_parents(&key_path, &mut entries);
    entries.push(Entry {
        path: key_path,
        mode: 0o644,
        kind: EntryKind::File(public_key_pem.as_bytes().to_vec()),
    });
    let list_path = chain.initramfs.modules_list.clone();
    add_parents(&list_path, &mut entries);
    let mut list = format!("# kernel {version}: load order from modules.dep\n");
    for m in &order {
        list.push_str(m);
        list.push('\n');
    }
    entries.push(Entry {
        path: list_path,
        mode: 0o644,
        kind: EntryKind::File(list.into_bytes()),
    });
    for m in &order {
        let src = RelPath::parse(&format!("{dir}/{m}"))?;
        let bytes = file_bytes(tree, &src, MAX_MODULE)?;
        let dest = format!("lib/modules/{version}/{m}");
        add_parents(&dest, &mut entries);
        entries.push(Entry {
            path: dest,
            mode: 0o644,
            kind: EntryKind::File(bytes),
        });
    }
    // Parents come before children because they are added first; sorting
    // by path keeps that (a prefix sorts first) and fixes the order.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let epoch = u32::try_from(plan.source_date_epoch).context("source-date-epoch exceeds u32")?;
    write_newc(Vec::new(), &entries, epoch).context("writing the initramfs")
}
