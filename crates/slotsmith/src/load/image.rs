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
    "boot",
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
const LAYOUT_KEYS: &[&str] = &["alignment", "esp", "boot", "slot", "data", "fill-slot-b"];

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
    let chain = match r.raw(&mut m, "boot") {
        Some(v) => super::chain::read_boot(r, v).map(Some),
        None => Some(None),
    };
    let keys = read_signing(
        r,
        r.doc.value.get("signing"),
        release,
        r.doc.value.get("boot").is_some(),
    );
    r.raw(&mut m, "signing");
    let update = read_update(r, r.doc.value.get("update"));
    r.raw(&mut m, "update");
    r.finish(m);
    Some(ImageSpec {
        release,
        security_version,
        kernel: kernel?,
        chain: chain?,
        boot_key: keys.clone()?.0,
        update_key: keys.clone()?.1,
        secureboot_key: keys.clone()?.2,
        provenance_key: keys?.3,
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
    let boot = size(r, &mut m, "boot", Some(64 << 20));
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
    if let Some(b) = boot {
        if b < 16 << 20 {
            r.error(
                "layout.boot",
                format!(
                    "{} is too small for a slot's boot partition (minimum 16MiB)",
                    human(b)
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
        boot: boot?,
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
        let known = crate::layout::slot_partitions();
        for (k, dev) in d {
            let key = join_key("update.devices", &k);
            if !known.iter().any(|n| *n == *k) {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{image, image_at, only_diag, MINIMAL};
    use super::*;

    /// `MINIMAL` with the line `old` replaced by `new`.
    fn with(old: &str, new: &str) -> String {
        assert!(MINIMAL.contains(old), "{old}");
        MINIMAL.replacen(old, new, 1)
    }

    fn at(d: &crate::diag::Diagnostic) -> (usize, &str) {
        (d.line, d.key.as_str())
    }

    #[test]
    fn the_boot_chain_section_is_read_and_its_mistakes_are_positioned() {
        let (img, diags) = image(&format!("{MINIMAL}boot:\n  loader: efibootguard\n"));
        assert!(diags.is_empty(), "{diags:#?}");
        let c = img.unwrap().chain.unwrap();
        assert_eq!(c.loader, Loader::Efibootguard);
        assert_eq!(c.watchdog_sec, 0);
        assert!(c.initramfs_modules.iter().any(|m| m == "dm-verity"));
        assert!(c.healthy_units.is_empty());
        assert_eq!(c.trial_timeout_sec, 600);
        let text = format!(
            "{MINIMAL}boot:\n  loader: grub\n  watchdog: 99999\n  initramfs-modules: [ok, \"bad/../name\", \"\\e[31m\"]\n  colour: red\n  healthy-units: [ssh.service, \"x;reboot.service\", ssh]\n  trial-timeout: 5\n"
        );
        let (img, diags) = image(&text);
        assert!(img.is_none());
        let shown: Vec<String> = diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.key, d.message))
            .collect();
        let line = MINIMAL.lines().count();
        for want in [
            format!("{}:boot.loader: unknown loader 'grub' (supported: efibootguard)", line + 2),
            format!("{}:boot.watchdog: 99999 seconds is more than an hour; use at most 3600 (0 turns it off)", line + 3),
            "boot.initramfs-modules[1]: 'bad/../name' is not a module name".to_string(),
            "boot.initramfs-modules[2]: '\\x1b[31m' is not a module name".to_string(),
            format!("{}:boot.colour: unknown key 'colour'", line + 5),
            "boot.healthy-units[1]: 'x;reboot.service' is not a systemd unit name".to_string(),
            "boot.healthy-units[2]: 'ssh' is not a systemd unit name".to_string(),
            format!("{}:boot.trial-timeout: 5 seconds is outside 60..=86400", line + 7),
        ] {
            assert!(shown.iter().any(|s| s.contains(&want)), "{want}\n{shown:#?}");
        }
        // The boot partition size has a floor.
        let (_, diags) = image(&with("  data: 64MiB", "  data: 64MiB\n  boot: 1MiB"));
        assert!(
            diags
                .iter()
                .any(|d| d.key == "layout.boot" && d.message.contains("minimum 16MiB")),
            "{diags:#?}"
        );
    }

    #[test]
    fn a_minimal_image_parses_with_the_defaults() {
        let (image, diags) = image(MINIMAL);
        assert!(diags.is_empty(), "{diags:#?}");
        let i = image.unwrap();
        assert_eq!((i.name.as_str(), i.version.as_str()), ("t", "1.0.0"));
        assert_eq!(i.arch, Arch::X86_64);
        assert_eq!(i.file, "images/t.yaml");
        assert_eq!(
            i.base,
            BaseSpec::Debian {
                suite: "bookworm".into(),
                variant: "apt".into(),
                packages: vec![],
                mirror: None,
            }
        );
        assert_eq!(
            (i.filesystem, i.compression),
            (Filesystem::Squashfs, Compression::Zstd)
        );
        let l = &i.layout;
        assert_eq!(
            (l.alignment, l.esp, l.slot, l.data),
            (1 << 20, 64 << 20, 64 << 20, 64 << 20)
        );
        assert!(l.fill_slot_b);
        assert_eq!(i.kernel.source, KernelSource::FromRootfs);
        assert_eq!(i.boot_key.source, KeySource::Development);
        assert_eq!(i.update_key.source, KeySource::Development);
        assert_eq!(i.profile, slotsmith_policy::Profile::Production);
        assert_eq!(
            (i.release, i.security_version, i.source_date_epoch),
            (false, 0, None)
        );
        assert_eq!(i.update.modes, ["copy1".to_string(), "copy2".to_string()]);
        assert!(i.layers.is_empty() && i.policies.is_empty());
    }

    #[test]
    fn unknown_keys_are_reported_at_the_key() {
        let d = only_diag(&format!("{MINIMAL}colour: red\n"));
        assert_eq!((d.line, d.col, d.key.as_str()), (13, 1, "colour"));
        assert!(
            d.message
                .starts_with("unknown key 'colour' (expected one of: name, version,"),
            "{d}"
        );
        let d = only_diag(&with("  data: 64MiB", "  data: 64MiB\n  swap: 1GiB"));
        assert_eq!((d.line, d.col, d.key.as_str()), (13, 3, "layout.swap"));
        assert_eq!(
            d.message,
            "unknown key 'swap' (expected one of: alignment, esp, boot, slot, data, fill-slot-b)"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let d = only_diag(&format!("{MINIMAL}security-version: many\n"));
        assert_eq!(at(&d), (13, "security-version"));
        assert!(d.message.contains("expected u64"), "{d}");
        let d = only_diag(&with(
            "hardware-compatibility: [\"1.0\"]",
            "hardware-compatibility: 1.0",
        ));
        assert_eq!(at(&d), (5, "hardware-compatibility"));
        assert!(d.message.contains("expected a sequence"), "{d}");
        let layout = "layout:\n  esp: 64MiB\n  slot: 64MiB\n  data: 64MiB\n";
        let d = only_diag(&with(layout, "layout: big\n"));
        assert_eq!(at(&d), (9, "layout"));
        assert_eq!(d.message, "this key must be a mapping, found a string");
    }

    #[test]
    fn a_bad_size_names_the_key_and_line() {
        for (value, message) in [
            (
                "64MB",
                "'64MB' is not a size (use bytes or KiB, MiB, GiB, TiB)",
            ),
            ("-1", "'-1' is not a size (use bytes or KiB, MiB, GiB, TiB)"),
            ("0", "size must not be zero"),
            ("[1]", "expected a size such as 64MiB, found a list"),
            ("1MiB", "1MiB is too small for a rootfs slot (minimum 4MiB)"),
            (
                "99999999999999999999TiB",
                "'99999999999999999999TiB' is not a size (use bytes or KiB, MiB, GiB, TiB)",
            ),
        ] {
            let d = only_diag(&with("slot: 64MiB", &format!("slot: {value}")));
            assert_eq!(
                (d.line, d.col, d.key.as_str()),
                (11, 9, "layout.slot"),
                "{value}"
            );
            assert_eq!(d.message, message, "{value}");
        }
        let d = only_diag(&with("  esp: 64MiB\n", ""));
        assert_eq!(at(&d), (9, "layout.esp"));
        assert_eq!(d.message, "missing required key 'esp'");
    }

    #[test]
    fn a_layout_over_the_bound_is_refused_and_the_bound_itself_is_not() {
        let (image, diags) = image(&with("slot: 64MiB", "slot: 64TiB"));
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(image.unwrap().layout.slot, MAX_LAYOUT_SIZE);
        for over in ["65TiB", "70368744177665"] {
            let d = only_diag(&with("slot: 64MiB", &format!("slot: {over}")));
            assert_eq!(at(&d), (11, "layout.slot"));
            assert_eq!(
                d.message,
                format!("'{over}' is larger than the largest supported partition (64TiB)")
            );
        }
        let d = only_diag(&with("data: 64MiB", "data: 128TiB"));
        assert_eq!(at(&d), (12, "layout.data"));
        for (a, shown) in [("2GiB", 2u64 << 30), ("3", 3), ("2048", 2048)] {
            let d = only_diag(&with("layout:", &format!("layout:\n  alignment: {a}")));
            assert_eq!(at(&d), (10, "layout.alignment"));
            assert_eq!(
                d.message,
                format!("{shown} must be a power of two from 4096 bytes to 1GiB")
            );
        }
    }

    #[test]
    fn a_source_date_epoch_past_u32_is_refused() {
        let (image, diags) = image(&format!("{MINIMAL}source-date-epoch: 4294967295\n"));
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(
            image.unwrap().source_date_epoch,
            Some(MAX_SOURCE_DATE_EPOCH)
        );
        let d = only_diag(&format!("{MINIMAL}source-date-epoch: 4294967296\n"));
        assert_eq!(
            (d.line, d.col, d.key.as_str()),
            (13, 20, "source-date-epoch")
        );
        assert_eq!(
            d.message,
            "4294967296 is past 4294967295 (2106-02-07), the last second squashfs, ext4 and cpio timestamps can hold"
        );
        let d = only_diag(&format!("{MINIMAL}source-date-epoch: -1\n"));
        assert_eq!(at(&d), (13, "source-date-epoch"));
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let text = MINIMAL
            .replace("name: t", "name: T")
            .replace("version: 1.0.0", "version: v1")
            .replace("board: b", "board: a b")
            .replace("suite: bookworm", "suite: Bookworm");
        // Each is reported; none stops the others from being read.
        let (_, diags) = image(&text);
        let keys: Vec<_> = diags.iter().map(at).collect();
        assert_eq!(
            keys,
            [
                (1, "name"),
                (2, "version"),
                (4, "board"),
                (8, "base.debian.suite")
            ]
        );
    }

    #[test]
    fn exactly_one_base_kind() {
        let d = only_diag(&with("base:", "base:\n  directory: x"));
        // At the value of `base`, the mapping that holds both.
        assert_eq!(at(&d), (7, "base"));
        assert_eq!(
            d.message,
            "set exactly one of tarball, directory or debian (found directory and debian)"
        );
        let d = only_diag(&with(
            "  debian:\n    suite: bookworm\n",
            "  ownership: root\n",
        ));
        assert_eq!(
            d.message,
            "set exactly one of tarball, directory or debian (found none)"
        );
        let d = only_diag(&with(
            "    suite: bookworm",
            "    suite: bookworm\n  ownership: root",
        ));
        assert_eq!(at(&d), (9, "base.ownership"));
        assert_eq!(d.message, "ownership applies only to a directory base");
    }

    #[test]
    fn input_files_are_resolved_under_the_root_and_hashed() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir(p.join("in")).unwrap();
        std::fs::write(p.join("in/base.tar"), b"abc").unwrap();
        std::fs::write(p.join("in/vmlinuz"), b"").unwrap();
        std::fs::write(p.join("in/base.zip"), b"").unwrap();
        let base = "base:\n  debian:\n    suite: bookworm\n";
        let text = MINIMAL.replace(base, "base:\n  tarball: in/base.tar\n")
            + "kernel:\n  image: in/vmlinuz\n  cmdline: quiet\n";
        let (image, _, diags) = image_at(p, &text);
        assert!(diags.is_empty(), "{diags:#?}");
        let i = image.unwrap();
        let BaseSpec::Tarball {
            path,
            abs,
            sha256,
            size,
        } = &i.base
        else {
            panic!("{:?}", i.base)
        };
        assert_eq!((path.as_str(), *size), ("in/base.tar", 3));
        assert_eq!(abs, &p.join("in/base.tar"));
        assert!(sha256.starts_with("ba7816bf"), "{sha256}");
        let KernelSource::Files { image, initrd, dtb } = &i.kernel.source else {
            panic!("{:?}", i.kernel)
        };
        assert_eq!((image.path.as_str(), image.size), ("in/vmlinuz", 0));
        assert!(initrd.is_none() && dtb.is_none());
        assert_eq!(i.kernel.cmdline, "quiet");

        // A missing file, a path out of the project and a non-tarball name:
        // each at its key.
        let text = MINIMAL.replace(base, "base:\n  tarball: in/base.zip\n")
            + "kernel:\n  image: in/missing\n  dtb: ../etc/passwd\n";
        let (image, _, diags) = image_at(p, &text);
        assert!(image.is_none());
        let keys: Vec<_> = diags.iter().map(at).collect();
        assert_eq!(
            keys,
            [
                (7, "base.tarball"),
                (13, "kernel.image"),
                (14, "kernel.dtb")
            ],
            "{diags:#?}"
        );
        assert_eq!(
            diags[0].message,
            "'in/base.zip' is not a .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2"
        );
        let [_, missing, out] = &diags[..] else {
            unreachable!()
        };
        assert!(
            missing.message.starts_with("cannot read 'in/missing': "),
            "{missing}"
        );
        assert!(
            out.message
                .starts_with("'../etc/passwd' leaves the project"),
            "{out}"
        );
    }

    #[test]
    fn a_directory_base_must_be_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir(p.join("tree")).unwrap();
        std::fs::write(p.join("file"), b"").unwrap();
        let base = "base:\n  debian:\n    suite: bookworm\n";
        let text = MINIMAL.replace(base, "base:\n  directory: tree\n  ownership: preserve\n");
        let (image, _, diags) = image_at(p, &text);
        assert!(diags.is_empty(), "{diags:#?}");
        assert_eq!(
            image.unwrap().base,
            BaseSpec::Directory {
                path: "tree".into(),
                abs: p.join("tree"),
                ownership: DirOwnership::Preserve,
            }
        );
        let text = MINIMAL.replace(base, "base:\n  directory: file\n");
        let (_, _, diags) = image_at(p, &text);
        assert_eq!(
            diags.iter().map(at).collect::<Vec<_>>(),
            [(7, "base.directory")]
        );
        assert!(
            diags[0].message.ends_with("file' is not a directory"),
            "{diags:#?}"
        );
    }

    #[test]
    fn policies_must_exist_and_layers_be_listed_once() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir(p.join("policies")).unwrap();
        std::fs::write(p.join("policies/ssh.yaml"), b"").unwrap();
        let text = format!("{MINIMAL}policies: [ssh, nope, ../x]\nlayers: [a, b, a, ..]\n");
        let (image, _, diags) = image_at(p, &text);
        assert!(image.is_some(), "names are checked, the image still reads");
        let got: Vec<_> = diags
            .iter()
            .map(|d| (d.key.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("policies[1]", "no policy file policies/nope.yaml"),
                ("policies[2]", "no policy file policies/../x.yaml"),
                ("layers[2]", "layer 'a' is listed twice"),
                (
                    "layers[3]",
                    "'..' is not a layer directory name under layers/"
                ),
            ]
        );
        assert!(diags.iter().all(|d| d.line == 13 || d.line == 14));
    }

    #[test]
    fn update_settings_are_checked_key_by_key() {
        let text = format!(
            "{MINIMAL}update:\n  bootloader: grub\n  modes: [a, a]\n  devices:\n    root-a: /dev/mmcblk0p2\n    root-c: /dev/x\n    root-b: relative\n"
        );
        let (read, diags) = image(&text);
        assert!(read.is_some());
        let got: Vec<_> = diags.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (15, "update.modes"),
                (18, "update.devices.root-c"),
                (19, "update.devices.root-b"),
            ],
            "{diags:#?}"
        );
        assert_eq!(diags[1].col, 5, "an unknown device is shown at its key");
        let text = format!("{MINIMAL}update:\n  bootloader: grub\n  compression: zstd\n");
        let i = image(&text).0.unwrap();
        assert_eq!(
            (i.update.bootloader, i.update.compression),
            (Bootloader::Grub, UpdateCompression::Zstd)
        );
    }
}
