//! The image schema: `images/<name>.yaml` from its parsed document to an
//! [`ImageSpec`], with a diagnostic at the line and key of every problem.
//!
//! The readers here touch no file themselves: what the schema needs from
//! the project (an input file's hash, whether a directory or a policy
//! exists) comes through [`Inputs`], so the schema can be read, tested and
//! fuzzed from text.

use std::collections::BTreeSet;

use serde_norway::Value;

use super::keys::read_signing;
use super::util::{human, parse_size, valid_dir_name, valid_name, valid_version};
use super::Inputs;
use crate::spec::*;
use crate::yaml::{join_key, MapView, Reader};

const IMAGE_KEYS: &[&str] = &[
    "name",
    "version",
    "arch",
    "board",
    "hardware-compatibility",
    "source-date-epoch",
    "base",
    "layers",
    "policies",
    "rootfs",
    "layout",
    "release",
    "security-version",
    "kernel",
    "signing",
    "update",
    "profile",
    "waivers",
];
const KERNEL_KEYS: &[&str] = &["from-rootfs", "image", "initrd", "dtb", "cmdline"];
const UPDATE_KEYS: &[&str] = &[
    "bootloader",
    "compression",
    "set",
    "modes",
    "boot-mount",
    "devices",
];
const BASE_KEYS: &[&str] = &["tarball", "directory", "ownership", "debian"];
const DEBIAN_KEYS: &[&str] = &["suite", "variant", "packages", "mirror"];
const ROOTFS_KEYS: &[&str] = &["filesystem", "compression"];
const LAYOUT_KEYS: &[&str] = &["alignment", "esp", "slot", "data", "fill-slot-b"];

/// The latest `SOURCE_DATE_EPOCH`: squashfs and cpio store times as
/// unsigned 32-bit seconds, so every clamped mtime must fit in one.
pub const MAX_SOURCE_DATE_EPOCH: u64 = u32::MAX as u64;

/// The largest partition a layout may ask for: 64 TiB. With six partitions,
/// their alignment and the verity trees, the disk size stays far below
/// 2^64, so the plan's offset arithmetic cannot overflow on any layout the
/// loader accepts (the plan still checks every sum).
pub const MAX_LAYOUT_SIZE: u64 = 1 << 46;

/// The largest partition alignment: 1 GiB.
pub const MAX_ALIGNMENT: u64 = 1 << 30;

/// Reads the whole image document; `None` when any required part is bad
/// (the reasons are in `r.diags`).
pub(super) fn read_image(
    r: &mut Reader<'_>,
    inputs: &Inputs<'_>,
    shown: &str,
) -> Option<ImageSpec> {
    let doc = r.doc;
    let mut m = r.map("", &doc.value, IMAGE_KEYS)?;
    let name: Option<String> = r.req(&mut m, "name");
    if let Some(n) = &name {
        if !valid_name(n) {
            r.error(
                "name",
                "must be 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            );
        }
    }
    let version: Option<String> = r.req(&mut m, "version");
    if let Some(v) = &version {
        if !valid_version(v) {
            r.error("version", "must look like 1.2.3 (digits and dots, optionally -suffix with a-z, 0-9, '.', '-')");
        }
    }
    let arch = r.req::<String>(&mut m, "arch").and_then(|a| {
        let parsed = Arch::parse(&a);
        if parsed.is_none() {
            r.error(
                "arch",
                format!("unknown architecture '{a}' (expected x86-64 or arm64)"),
            );
        }
        parsed
    });
    let board: Option<String> = r.req(&mut m, "board");
    if let Some(b) = &board {
        if b.is_empty()
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            r.error(
                "board",
                "must be non-empty and use only A-Z, a-z, 0-9, '.', '_' and '-'",
            );
        }
    }
    let hw: Option<Vec<String>> = r.req(&mut m, "hardware-compatibility");
    if let Some(hw) = &hw {
        if hw.is_empty() {
            r.error(
                "hardware-compatibility",
                "list at least one hardware revision",
            );
        }
        for (i, s) in hw.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) || s.contains('"') {
                r.error(
                    &format!("hardware-compatibility[{i}]"),
                    "must be non-empty, without spaces or quotes",
                );
            }
        }
    }
    let sde: Option<u64> = r.opt(&mut m, "source-date-epoch");
    let sde = match sde {
        Some(t) if t > MAX_SOURCE_DATE_EPOCH => {
            r.error(
                "source-date-epoch",
                format!("{t} is past {MAX_SOURCE_DATE_EPOCH} (2106-02-07), the last second squashfs, ext4 and cpio timestamps can hold"),
            );
            None
        }
        other => other,
    };
    let base = r.raw(&mut m, "base").and_then(|v| read_base(r, inputs, v));
    if !m.has("base") {
        r.error("base", "missing required key 'base'");
    }
    let layers: Vec<String> = r.opt(&mut m, "layers").unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, l) in layers.iter().enumerate() {
        if !valid_dir_name(l) {
            r.error(
                &format!("layers[{i}]"),
                format!("'{l}' is not a layer directory name under layers/"),
            );
        } else if !seen.insert(l.clone()) {
            r.error(
                &format!("layers[{i}]"),
                format!("layer '{l}' is listed twice"),
            );
        }
    }
    let policies: Vec<String> = r.opt(&mut m, "policies").unwrap_or_default();
    for (i, p) in policies.iter().enumerate() {
        if !valid_dir_name(p) || !inputs.has_policy(p) {
            r.error(
                &format!("policies[{i}]"),
                format!("no policy file policies/{p}.yaml"),
            );
        }
    }
    let profile = match r.opt::<String>(&mut m, "profile").as_deref() {
        None | Some("production") => Some(slotsmith_policy::Profile::Production),
        Some("development") => Some(slotsmith_policy::Profile::Development),
        Some(o) => {
            r.error(
                "profile",
                format!("unknown profile '{o}' (expected production or development)"),
            );
            None
        }
    };
    let waivers = match r.raw(&mut m, "waivers") {
        Some(v) => slotsmith_policy::read_waivers(r, v),
        None => Vec::new(),
    };
    let (filesystem, compression) = match r.raw(&mut m, "rootfs") {
        Some(v) => read_rootfs(r, v),
        None => (Some(Filesystem::Squashfs), Some(Compression::Zstd)),
    };
    let layout = match r.raw(&mut m, "layout") {
        Some(v) => read_layout(r, v),
        None => {
            r.error("layout", "missing required key 'layout'");
            None
        }
    };
    let release: bool = r.opt(&mut m, "release").unwrap_or(false);
    let security_version: u64 = r.opt(&mut m, "security-version").unwrap_or(0);
    let kernel = match r.raw(&mut m, "kernel") {
        Some(v) => read_kernel(r, inputs, v),
        None => Some(KernelSpec {
            source: KernelSource::FromRootfs,
            cmdline: String::new(),
        }),
    };
    let keys = read_signing(r, r.doc.value.get("signing"), release);
    r.raw(&mut m, "signing");
    let update = read_update(r, r.doc.value.get("update"));
    r.raw(&mut m, "update");
    r.finish(m);
    Some(ImageSpec {
        release,
        security_version,
        kernel: kernel?,
        boot_key: keys.clone()?.0,
        update_key: keys?.1,
        update: update?,
        profile: profile?,
        rules: Vec::new(),
        waivers,
        file: shown.to_string(),
        root: inputs.root.to_path_buf(),
        name: name?,
        version: version?,
        arch: arch?,
        board: board?,
        hardware_compatibility: hw?,
        source_date_epoch: sde,
        base: base?,
        layers,
        policies,
        filesystem: filesystem?,
        compression: compression?,
        layout: layout?,
    })
}

/// Reads `base:`: exactly one of a tarball (hashed, so the plan changes
/// with it), a directory or a Debian suite.
fn read_base(r: &mut Reader<'_>, inputs: &Inputs<'_>, v: &Value) -> Option<BaseSpec> {
    let mut m = r.map("base", v, BASE_KEYS)?;
    let kinds: Vec<String> = ["tarball", "directory", "debian"]
        .iter()
        .filter(|k| m.has(k))
        .map(|k| k.to_string())
        .collect();
    if kinds.len() != 1 {
        let found = if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(" and ")
        };
        r.error(
            "base",
            format!("set exactly one of tarball, directory or debian (found {found})"),
        );
        // Mark all as read so they are not also reported as unknown.
        for k in BASE_KEYS {
            r.raw(&mut m, k);
        }
        r.finish(m);
        return None;
    }
    let base = match kinds[0].as_str() {
        "tarball" => {
            let p: String = r.req(&mut m, "tarball")?;
            let abs = match inputs.resolve_file(&p) {
                Ok(a) => a,
                Err(e) => {
                    r.error("base.tarball", e);
                    return None;
                }
            };
            match inputs.hash(&abs) {
                Ok(file) => {
                    let name = abs
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let known = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".tar.bz2"];
                    if !known.iter().any(|s| name.ends_with(s)) {
                        r.error(
                            "base.tarball",
                            format!("'{p}' is not a .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2"),
                        );
                    }
                    Some(BaseSpec::Tarball {
                        path: file.path,
                        abs,
                        sha256: file.sha256,
                        size: file.size,
                    })
                }
                Err(e) => {
                    r.error("base.tarball", e);
                    None
                }
            }
        }
        "directory" => {
            let p: String = r.req(&mut m, "directory")?;
            let abs = match inputs.directory(&p) {
                Ok(a) => a,
                Err(e) => {
                    r.error("base.directory", e);
                    return None;
                }
            };
            let ownership = match r.opt::<String>(&mut m, "ownership").as_deref() {
                None | Some("root") => DirOwnership::Root,
                Some("preserve") => DirOwnership::Preserve,
                Some(o) => {
                    r.error(
                        "base.ownership",
                        format!("unknown ownership '{o}' (expected root or preserve)"),
                    );
                    DirOwnership::Root
                }
            };
            if !inputs.is_dir(&abs) {
                r.error(
                    "base.directory",
                    format!("'{}' is not a directory", abs.display()),
                );
                None
            } else {
                Some(BaseSpec::Directory {
                    path: inputs.shown(&abs),
                    abs,
                    ownership,
                })
            }
        }
        _ => {
            let v = r.raw(&mut m, "debian")?;
            read_debian(r, v)
        }
    };
    if m.has("ownership") && !matches!(base, Some(BaseSpec::Directory { .. })) {
        r.error(
            "base.ownership",
            "ownership applies only to a directory base",
        );
    }
    r.raw(&mut m, "ownership");
    r.finish(m);
    base
}

/// Reads `base.debian:`, what mmdebstrap installs.
fn read_debian(r: &mut Reader<'_>, v: &Value) -> Option<BaseSpec> {
    let mut m = r.map("base.debian", v, DEBIAN_KEYS)?;
    let suite: Option<String> = r.req(&mut m, "suite");
    if let Some(s) = &suite {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            r.error(
                "base.debian.suite",
                format!("'{s}' is not a Debian suite name"),
            );
        }
    }
    let variant: String = r
        .opt(&mut m, "variant")
        .unwrap_or_else(|| "apt".to_string());
    let variants = [
        "extract",
        "custom",
        "essential",
        "apt",
        "required",
        "minbase",
        "buildd",
        "important",
        "standard",
    ];
    if !variants.contains(&variant.as_str()) {
        r.error(
            "base.debian.variant",
            format!("unknown mmdebstrap variant '{variant}'"),
        );
    }
    let mut packages: Vec<String> = r.opt(&mut m, "packages").unwrap_or_default();
    for (i, p) in packages.iter().enumerate() {
        let ok = p.len() >= 2
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            r.error(
                &format!("base.debian.packages[{i}]"),
                format!("'{p}' is not a Debian package name"),
            );
        }
    }
    packages.sort();
    packages.dedup();
    let mirror: Option<String> = r.opt(&mut m, "mirror");
    if let Some(u) = &mirror {
        if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/"))
            || u.contains(' ')
        {
            r.error(
                "base.debian.mirror",
                "must be an http://, https:// or file:/ URL without spaces",
            );
        }
    }
    r.finish(m);
    Some(BaseSpec::Debian {
        suite: suite?,
        variant,
        packages,
        mirror,
    })
}

/// Reads `rootfs:`, the slot filesystem and its compression.
fn read_rootfs(r: &mut Reader<'_>, v: &Value) -> (Option<Filesystem>, Option<Compression>) {
    let Some(mut m) = r.map("rootfs", v, ROOTFS_KEYS) else {
        return (None, None);
    };
    let fs = match r.opt::<String>(&mut m, "filesystem").as_deref() {
        None | Some("squashfs") => Some(Filesystem::Squashfs),
        Some("ext4") => Some(Filesystem::Ext4),
        Some(o) => {
            r.error(
                "rootfs.filesystem",
                format!("unknown filesystem '{o}' (expected squashfs or ext4)"),
            );
            None
        }
    };
    let comp = match r.opt::<String>(&mut m, "compression").as_deref() {
        None | Some("zstd") => Some(Compression::Zstd),
        Some("xz") => Some(Compression::Xz),
        Some("gzip") => Some(Compression::Gzip),
        Some("lz4") => Some(Compression::Lz4),
        Some(o) => {
            r.error(
                "rootfs.compression",
                format!("unknown compression '{o}' (expected zstd, xz, gzip or lz4)"),
            );
            None
        }
    };
    if fs == Some(Filesystem::Ext4) && m.has("compression") {
        r.error("rootfs.compression", "compression applies only to squashfs");
    }
    r.finish(m);
    (fs, comp)
}

/// Reads `layout:`, the partition sizes, each bounded so the plan's
/// offset arithmetic cannot overflow.
fn read_layout(r: &mut Reader<'_>, v: &Value) -> Option<LayoutSpec> {
    let mut m = r.map("layout", v, LAYOUT_KEYS)?;
    let size =
        |r: &mut Reader<'_>, m: &mut MapView<'_>, key: &str, default: Option<u64>| -> Option<u64> {
            let path = join_key("layout", key);
            let raw = match r.raw(m, key) {
                Some(v) => v.clone(),
                None => match default {
                    Some(d) => return Some(d),
                    None => {
                        r.error(&path, format!("missing required key '{key}'"));
                        return None;
                    }
                },
            };
            let text = match &raw {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    r.error(
                        &path,
                        format!(
                            "expected a size such as 64MiB, found {}",
                            crate::yaml::describe(other)
                        ),
                    );
                    return None;
                }
            };
            match parse_size(&text) {
                Some(0) => {
                    r.error(&path, "size must not be zero");
                    None
                }
                Some(n) if n > MAX_LAYOUT_SIZE => {
                    r.error(
                        &path,
                        format!(
                            "'{text}' is larger than the largest supported partition ({})",
                            human(MAX_LAYOUT_SIZE)
                        ),
                    );
                    None
                }
                Some(n) => Some(n),
                None => {
                    r.error(
                        &path,
                        format!("'{text}' is not a size (use bytes or KiB, MiB, GiB, TiB)"),
                    );
                    None
                }
            }
        };
    let alignment = size(r, &mut m, "alignment", Some(1 << 20));
    let esp = size(r, &mut m, "esp", None);
    let slot = size(r, &mut m, "slot", None);
    let data = size(r, &mut m, "data", None);
    let fill_slot_b: bool = r.opt(&mut m, "fill-slot-b").unwrap_or(true);
    if let Some(a) = alignment {
        if !a.is_power_of_two() || !(4096..=MAX_ALIGNMENT).contains(&a) {
            r.error(
                "layout.alignment",
                format!(
                    "{a} must be a power of two from 4096 bytes to {}",
                    human(MAX_ALIGNMENT)
                ),
            );
        }
    }
    if let Some(e) = esp {
        // FAT16 needs at least 4085 clusters; below ~8 MiB the ESP cannot
        // hold a kernel anyway.
        if e < 8 << 20 {
            r.error(
                "layout.esp",
                format!(
                    "{} is too small for a boot partition (minimum 8MiB)",
                    human(e)
                ),
            );
        }
    }
    if let Some(d) = data {
        if d < 8 << 20 {
            r.error(
                "layout.data",
                format!(
                    "{} is too small for an ext4 data partition (minimum 8MiB)",
                    human(d)
                ),
            );
        }
    }
    if let Some(s) = slot {
        if s < 4 << 20 {
            r.error(
                "layout.slot",
                format!("{} is too small for a rootfs slot (minimum 4MiB)", human(s)),
            );
        }
    }
    r.finish(m);
    Some(LayoutSpec {
        alignment: alignment?,
        esp: esp?,
        slot: slot?,
        data: data?,
        fill_slot_b,
        slot_at: Origin(Some(r.doc.diag("layout.slot", ""))),
    })
}

/// Reads `kernel:`: from the rootfs, or explicit files (hashed), and the
/// command line the image adds.
fn read_kernel(r: &mut Reader<'_>, inputs: &Inputs<'_>, v: &Value) -> Option<KernelSpec> {
    let mut m = r.map("kernel", v, KERNEL_KEYS)?;
    let from_rootfs: Option<bool> = r.opt(&mut m, "from-rootfs");
    let file = |r: &mut Reader<'_>, m: &mut MapView<'_>, key: &str| -> Option<Option<FileInput>> {
        let p: Option<String> = r.opt(m, key);
        let Some(p) = p else { return Some(None) };
        let abs = match inputs.resolve_file(&p) {
            Ok(a) => a,
            Err(e) => {
                r.error(&join_key("kernel", key), e);
                return None;
            }
        };
        match inputs.hash(&abs) {
            Ok(f) => Some(Some(f)),
            Err(e) => {
                r.error(&join_key("kernel", key), e);
                None
            }
        }
    };
    let image = file(r, &mut m, "image");
    let initrd = file(r, &mut m, "initrd");
    let dtb = file(r, &mut m, "dtb");
    let cmdline: String = r.opt(&mut m, "cmdline").unwrap_or_default();
    if cmdline.len() > 4096 || !cmdline.chars().all(|c| (' '..='~').contains(&c)) {
        r.error(
            "kernel.cmdline",
            "must be printable ASCII, at most 4096 characters",
        );
    }
    r.finish(m);
    let (image, initrd, dtb) = (image?, initrd?, dtb?);
    let source = match (from_rootfs, image) {
        (Some(true), Some(_)) => {
            r.error("kernel", "set either from-rootfs: true or image, not both");
            return None;
        }
        (Some(true) | None, None) => {
            if initrd.is_some() || dtb.is_some() {
                r.error("kernel", "initrd and dtb need an explicit kernel image");
                return None;
            }
            KernelSource::FromRootfs
        }
        (Some(false), None) => {
            r.error(
                "kernel",
                "from-rootfs is false but no kernel image is given",
            );
            return None;
        }
        (_, Some(image)) => KernelSource::Files { image, initrd, dtb },
    };
    Some(KernelSpec { source, cmdline })
}

/// Reads `update:`, the `.swu` and SWUpdate settings (defaults when absent).
fn read_update(r: &mut Reader<'_>, v: Option<&Value>) -> Option<UpdateSpec> {
    let mut spec = UpdateSpec {
        bootloader: Bootloader::UBoot,
        compression: UpdateCompression::None,
        set: "stable".into(),
        modes: ["copy1".into(), "copy2".into()],
        boot_mount: "/boot/efi".into(),
        devices: std::collections::BTreeMap::new(),
    };
    let Some(v) = v else { return Some(spec) };
    let mut m = r.map("update", v, UPDATE_KEYS)?;
    match r.opt::<String>(&mut m, "bootloader").as_deref() {
        None | Some("u-boot") => {}
        Some("grub") => spec.bootloader = Bootloader::Grub,
        Some(o) => r.error(
            "update.bootloader",
            format!("unknown bootloader '{o}' (expected u-boot or grub)"),
        ),
    }
    match r.opt::<String>(&mut m, "compression").as_deref() {
        None | Some("none") => {}
        Some("zstd") => spec.compression = UpdateCompression::Zstd,
        Some(o) => r.error(
            "update.compression",
            format!("unknown compression '{o}' (expected none or zstd)"),
        ),
    }
    // libconfig setting names: SWUpdate selects them with -e set,mode.
    let setting_name = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if let Some(set) = r.opt::<String>(&mut m, "set") {
        if !setting_name(&set) {
            r.error(
                "update.set",
                "must start with a letter and use only A-Z, a-z, 0-9, '-' and '_'",
            );
        }
        spec.set = set;
    }
    if let Some(modes) = r.opt::<Vec<String>>(&mut m, "modes") {
        if modes.len() != 2 || modes[0] == modes[1] || !modes.iter().all(|s| setting_name(s)) {
            r.error(
                "update.modes",
                "give two different mode names, for slot a then slot b, such as [copy1, copy2]",
            );
        } else {
            spec.modes = [modes[0].clone(), modes[1].clone()];
        }
    }
    if let Some(b) = r.opt::<String>(&mut m, "boot-mount") {
        if !b.starts_with('/')
            || b.contains(char::is_whitespace)
            || b.contains('"')
            || b.split('/').any(|c| c == "..")
        {
            r.error(
                "update.boot-mount",
                "must be an absolute path without spaces, quotes or '..'",
            );
        }
        spec.boot_mount = b;
    }
    if let Some(d) = r.opt::<std::collections::BTreeMap<String, String>>(&mut m, "devices") {
        let known = ["root-a", "root-a-verity", "root-b", "root-b-verity"];
        for (k, dev) in d {
            let key = join_key("update.devices", &k);
            if !known.contains(&k.as_str()) {
                r.key_error(
                    &key,
                    format!(
                        "unknown partition '{k}' (expected one of: {})",
                        known.join(", ")
                    ),
                );
            } else if !dev.starts_with('/')
                || dev.contains(char::is_whitespace)
                || dev.contains('"')
            {
                r.error(
                    &key,
                    "must be an absolute device path without spaces or quotes",
                );
            } else {
                spec.devices.insert(k, dev);
            }
        }
    }
    r.finish(m);
    Some(spec)
}
