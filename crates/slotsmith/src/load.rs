//! The load stage: the only reader of `images/*.yaml` and `layers/*/`.
//!
//! It turns files into [`crate::spec`] values and collects every diagnostic,
//! with file, line and key, before failing. It also hashes the inputs the
//! plan depends on (a base tarball, each layer file), so that the plan, and
//! its hash in `build.json`, changes whenever an input does.
//!
//! Layer rules follow Yocto: missing dependencies, an incompatible series
//! and two layers of equal priority writing the same path are load errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::diag::Diagnostics;
use crate::spec::*;
use crate::yaml::{join_key, Doc, MapView, Reader};
use slotsmith_yaml::input::{refuse_symlink, resolve_input, resolve_input_file};
use slotsmith_rootfs::path::RelPath;

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
const SIGNING_KEYS: &[&str] = &["boot", "update"];
const UPDATE_KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "cert"];
const UPDATE_KEYS: &[&str] = &[
    "bootloader",
    "compression",
    "set",
    "modes",
    "boot-mount",
    "devices",
];
const KEY_KEYS: &[&str] = &["key", "key-env", "external-signer", "public-key"];
const BASE_KEYS: &[&str] = &["tarball", "directory", "ownership", "debian"];
const DEBIAN_KEYS: &[&str] = &["suite", "variant", "packages", "mirror"];
const ROOTFS_KEYS: &[&str] = &["filesystem", "compression"];
const LAYOUT_KEYS: &[&str] = &["alignment", "esp", "slot", "data", "fill-slot-b"];
const LAYER_KEYS: &[&str] = &[
    "collection",
    "priority",
    "version",
    "depends",
    "series-compat",
    "description",
    "files",
    "remove",
];
const ENTRY_KEYS: &[&str] = &[
    "type", "mode", "owner", "group", "xattrs", "target", "major", "minor",
];

/// Resolves what the user typed (`demo`, `images/demo.yaml`, or any path)
/// to an image file.
pub fn resolve_image_arg(root: &Path, arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if is_image_name(arg) {
        return root.join("images").join(format!("{arg}.yaml"));
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Whether the user named an image under the project's `images/` (`demo`)
/// rather than giving a path (`images/demo.yaml`, `/srv/x.yaml`).
pub fn is_image_name(arg: &str) -> bool {
    !arg.contains('/') && !arg.ends_with(".yaml")
}

/// Loads an image file and its layers. The project root is the parent of
/// the directory holding the image file (`<root>/images/<name>.yaml`).
pub fn load_image(image_path: &Path) -> Result<Loaded, Diagnostics> {
    let abs = absolute(image_path);
    let root = abs
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let shown = display_path(&root, &abs);
    let text = read_text(&abs, &shown)?;
    parse_image(&root, &shown, &text)
}

/// Parses the text of an image file shown as `shown` (its path relative to
/// `root`) and loads the layers and policies it names under `root`: all of
/// [`load_image`] but reading the image file, so tests and fuzzers can
/// give text directly.
pub fn parse_image(root: &Path, shown: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let doc = Doc::parse(Path::new(shown), text)?;
    let mut r = Reader::new(&doc);
    let image = read_image(&mut r, root, shown);
    let mut diags = r.diags;
    let Some(mut image) = image else {
        return Err(diags.sorted());
    };
    let layers = load_layers(&image, &doc, &mut diags);
    // Policies only when every named file exists (already reported).
    if image.policies.iter().all(|p| {
        image
            .root
            .join("policies")
            .join(format!("{p}.yaml"))
            .is_file()
    }) {
        match slotsmith_policy::load_policies(&image.root, &image.policies) {
            Ok(rules) => {
                for (i, w) in image.waivers.iter().enumerate() {
                    if !rules.iter().any(|r| r.id == w.rule) {
                        diags.push(doc.diag(
                            &format!("waivers[{i}].rule"),
                            format!(
                                "no rule '{}' in the image's policies ({})",
                                w.rule,
                                image.policies.join(", ")
                            ),
                        ));
                    }
                }
                image.rules = rules;
            }
            Err(d) => diags.extend(d),
        }
    }
    diags.into_result(Loaded { image, layers })
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A path relative to the project root when it is inside it, else as given.
/// Plans show these, so a plan does not depend on where the checkout lives.
pub fn display_path(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => p.to_string_lossy().into_owned(),
    }
}

/// Reads an image or layer file: at most
/// [`slotsmith_yaml::read::MAX_YAML_BYTES`] (1 MiB), as UTF-8; a larger
/// file, an endless device or invalid UTF-8 is a diagnostic naming the file
/// (and the limit, or the position of the first bad byte).
fn read_text(abs: &Path, shown: &str) -> Result<String, Diagnostics> {
    slotsmith_yaml::read::read_yaml(abs, Path::new(shown))
}

fn read_image(r: &mut Reader<'_>, root: &Path, shown: &str) -> Option<ImageSpec> {
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
    let base = r.raw(&mut m, "base").and_then(|v| read_base(r, root, v));
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
        if !valid_dir_name(p) || !root.join("policies").join(format!("{p}.yaml")).is_file() {
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
        Some(v) => read_kernel(r, root, v),
        None => Some(KernelSpec {
            source: KernelSource::FromRootfs,
            cmdline: String::new(),
        }),
    };
    let keys = read_signing(r, r.doc.value.get("signing"), release);
    r.raw(&mut m, "signing");
    let update = read_update(r, r.doc.value.get("update"), true);
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
        root: root.to_path_buf(),
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

fn read_base(r: &mut Reader<'_>, root: &Path, v: &Value) -> Option<BaseSpec> {
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
            let abs = match resolve_input_file(root, &p) {
                Ok(a) => a,
                Err(e) => {
                    r.error("base.tarball", e);
                    return None;
                }
            };
            match hash_file(&abs) {
                Ok((sha256, size)) => {
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
                        path: display_path(root, &abs),
                        abs,
                        sha256,
                        size,
                    })
                }
                Err(e) => {
                    r.error(
                        "base.tarball",
                        format!("cannot read '{}': {e}", abs.display()),
                    );
                    None
                }
            }
        }
        "directory" => {
            let p: String = r.req(&mut m, "directory")?;
            // The directory itself is walked: it may not be a symlink, and
            // the path to it may not leave the project through one.
            let written = root.join(&p);
            let abs = match refuse_symlink(&written, "base directory")
                .and_then(|()| resolve_input(root, &p))
            {
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
            if !abs.is_dir() {
                r.error(
                    "base.directory",
                    format!("'{}' is not a directory", abs.display()),
                );
                None
            } else {
                Some(BaseSpec::Directory {
                    path: display_path(root, &abs),
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

fn read_kernel(r: &mut Reader<'_>, root: &Path, v: &Value) -> Option<KernelSpec> {
    let mut m = r.map("kernel", v, KERNEL_KEYS)?;
    let from_rootfs: Option<bool> = r.opt(&mut m, "from-rootfs");
    let file = |r: &mut Reader<'_>, m: &mut MapView<'_>, key: &str| -> Option<Option<FileInput>> {
        let p: Option<String> = r.opt(m, key);
        let Some(p) = p else { return Some(None) };
        let abs = match resolve_input_file(root, &p) {
            Ok(a) => a,
            Err(e) => {
                r.error(&join_key("kernel", key), e);
                return None;
            }
        };
        match hash_file(&abs) {
            Ok((sha256, size)) => Some(Some(FileInput {
                path: display_path(root, &abs),
                sha256,
                size,
            })),
            Err(e) => {
                r.error(
                    &join_key("kernel", key),
                    format!("cannot read '{}': {e}", abs.display()),
                );
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

fn read_signing(
    r: &mut Reader<'_>,
    v: Option<&Value>,
    release: bool,
) -> Option<(BootKeySpec, UpdateKeySpec)> {
    let mut boot = None;
    let mut update = None;
    if let Some(v) = v {
        let mut m = r.map("signing", v, SIGNING_KEYS)?;
        boot = r.raw(&mut m, "boot");
        update = r.raw(&mut m, "update");
        r.finish(m);
    }
    let boot = match boot {
        None if release => {
            r.error(
                "signing.boot",
                "a release image must name its boot key; development keys are refused",
            );
            None
        }
        None => Some((KeySource::Development, None)),
        Some(v) => read_key(r, "signing.boot", v, release, "public-key"),
    };
    let update = match update {
        None if release => {
            r.error("signing.update", "a release image must name its update key and certificate; development keys are refused");
            None
        }
        None => Some((KeySource::Development, None)),
        Some(v) => read_key(r, "signing.update", v, release, "cert"),
    };
    let (boot, update) = (boot?, update?);
    Some((
        BootKeySpec {
            source: boot.0,
            public_key: boot.1,
        },
        UpdateKeySpec {
            source: update.0,
            cert: update.1,
        },
    ))
}

/// Reads one role's key: exactly one of `key`, `key-env` and
/// `external-signer`, plus the public half (`public_key_field`).
fn read_key(
    r: &mut Reader<'_>,
    path: &str,
    v: &Value,
    release: bool,
    public_key_field: &'static str,
) -> Option<(KeySource, Option<String>)> {
    let allowed: &'static [&'static str] = if public_key_field == "cert" {
        UPDATE_KEY_KEYS
    } else {
        KEY_KEYS
    };
    let mut m = r.map(path, v, allowed)?;
    let key: Option<String> = r.opt(&mut m, "key");
    let key_env: Option<String> = r.opt(&mut m, "key-env");
    let external: Option<Vec<String>> = r.opt(&mut m, "external-signer");
    let public: Option<String> = r.opt(&mut m, public_key_field);
    r.finish(m);
    let set = [key.is_some(), key_env.is_some(), external.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        r.error(path, "set exactly one of key, key-env or external-signer");
        return None;
    }
    let Some(public) = public else {
        r.error(
            &join_key(path, public_key_field),
            format!("missing required key '{public_key_field}' (what the device trusts)"),
        );
        return None;
    };
    let source = if let Some(p) = key {
        if release && is_dev_key_path(&p) {
            r.error(
                &join_key(path, "key"),
                "a release image refuses keys from keys/dev/",
            );
            return None;
        }
        KeySource::File { path: p }
    } else if let Some(var) = key_env {
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            r.error(
                &join_key(path, "key-env"),
                "must be an environment variable name",
            );
            return None;
        }
        KeySource::Env { var }
    } else {
        let argv = external.unwrap_or_default();
        if argv.is_empty()
            || !argv.iter().any(|a| a.contains("{in}"))
            || !argv.iter().any(|a| a.contains("{out}"))
        {
            r.error(
                &join_key(path, "external-signer"),
                "give the command as a list that uses {in} and {out}",
            );
            return None;
        }
        KeySource::External { argv }
    };
    if release && is_dev_key_path(&public) {
        r.error(
            &join_key(path, public_key_field),
            "a release image refuses keys from keys/dev/",
        );
        return None;
    }
    Some((source, Some(public)))
}

fn read_update(r: &mut Reader<'_>, v: Option<&Value>, layout_ok: bool) -> Option<UpdateSpec> {
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
    let _ = layout_ok;
    Some(spec)
}

/// Whether a configured key path points into a development key directory
/// (`keys/dev/` of this or any project), after lexical normalisation, so
/// that `keys/./dev/x`, `keys//dev/x` and `a/../keys/dev/x` are caught too.
///
/// This is only the early, load-time half of the development-key rule, for
/// an exit-2 diagnostic on the key's line; it cannot see copies, links or
/// `key-env`. The build refuses a development key by its public key,
/// wherever the file is (`signing::DevKeys`).
pub fn is_dev_key_path(p: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    // `keys/dev` followed by a file name.
    parts.windows(3).any(|w| w[0] == "keys" && w[1] == "dev")
}

/// Parses `4096`, `64KiB`, `64MiB`, `1GiB`, `1TiB` (also `K`, `M`, `G`, `T`
/// with the same binary meaning, as `truncate` reads them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a byte count the way sizes are written in image files.
pub fn human(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    if (1 << 10..1 << 20).contains(&n) && n.is_multiple_of(1 << 10) {
        return format!("{}KiB", n >> 10);
    }
    if n >= 1 << 20 {
        return format!("{:.1}MiB ({n} bytes)", n as f64 / (1u64 << 20) as f64);
    }
    format!("{n} bytes")
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_version(v: &str) -> bool {
    let (core, suffix) = v.split_once('-').unwrap_or((v, ""));
    let parts: Vec<&str> = core.split('.').collect();
    (1..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
        && suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && suffix.is_empty() != v.contains('-')
}

fn valid_dir_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// sha256 and size of a file, streamed.
pub fn hash_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn load_layers(image: &ImageSpec, image_doc: &Doc, diags: &mut Diagnostics) -> Vec<LayerSpec> {
    let mut layers = Vec::new();
    for (i, name) in image.layers.iter().enumerate() {
        // A layer directory may link within the project (to a checkout
        // under sources/, say), never out of it; its conf/ and files/ are
        // walked and may not be links at all (crates/yaml/src/input.rs).
        let dir = match resolve_input(&image.root, &format!("layers/{name}")) {
            Ok(d) => d,
            Err(e) if fs::symlink_metadata(image.root.join("layers").join(name)).is_ok() => {
                diags.push(image_doc.diag(&format!("layers[{i}]"), e));
                continue;
            }
            Err(_) => image.root.join("layers").join(name),
        };
        let structural = [
            (dir.join("conf"), "layer conf/"),
            (dir.join("conf/layer.yaml"), "layer conf/layer.yaml"),
            (dir.join("files"), "layer files/"),
        ];
        if let Some(e) = structural
            .iter()
            .find_map(|(p, what)| refuse_symlink(p, what).err())
        {
            diags.push(image_doc.diag(&format!("layers[{i}]"), e));
            continue;
        }
        let conf = dir.join("conf/layer.yaml");
        if !conf.is_file() {
            diags.push(image_doc.diag(
                &format!("layers[{i}]"),
                format!("no layer at layers/{name} (missing conf/layer.yaml)"),
            ));
            continue;
        }
        // Shown paths are relative to the real root, since `dir` is
        // resolved: the plan stays independent of where the checkout is.
        let root_real = image.root.canonicalize().unwrap_or_else(|_| image.root.clone());
        match load_layer(&root_real, name, &dir, &conf) {
            Ok(l) => layers.push(l),
            Err(d) => diags.extend(d),
        }
    }
    for l in &layers {
        check_layer_limits(image, l, diags);
    }
    check_layer_set(image, image_doc, &layers, diags);
    // Application order: ascending priority; a stable sort keeps the listed
    // order between equal priorities (which cannot write the same path).
    layers.sort_by_key(|l| l.priority);
    layers
}

/// Loads one layer: its `conf/layer.yaml` and its `files/` tree.
pub fn load_layer(
    root: &Path,
    name: &str,
    dir: &Path,
    conf: &Path,
) -> Result<LayerSpec, Diagnostics> {
    let shown = display_path(root, conf);
    let text = read_text(conf, &shown)?;
    parse_layer(root, name, dir, &shown, &text)
}

/// Parses the text of a layer's `conf/layer.yaml`, shown as `shown`, and
/// reads the layer's `files/` tree under `dir`: all of [`load_layer`] but
/// reading the conf file, so tests and fuzzers can give text directly.
pub fn parse_layer(
    root: &Path,
    name: &str,
    dir: &Path,
    shown: &str,
    text: &str,
) -> Result<LayerSpec, Diagnostics> {
    let doc = Doc::parse(Path::new(shown), text)?;
    let mut r = Reader::new(&doc);
    let layer = read_layer(&mut r, root, name, dir);
    r.diags.into_result(())?;
    let mut layer = layer.ok_or_else(Diagnostics::default)?;
    layer.conf = std::sync::Arc::new(doc);
    Ok(layer)
}

fn read_layer(r: &mut Reader<'_>, root: &Path, name: &str, dir: &Path) -> Option<LayerSpec> {
    let doc = r.doc;
    let mut m = r.map("", &doc.value, LAYER_KEYS)?;
    let collection: Option<String> = r.req(&mut m, "collection");
    if let Some(c) = &collection {
        if !valid_dir_name(c) {
            r.error(
                "collection",
                format!("'{c}' is not a collection name (A-Z, a-z, 0-9, '.', '_', '-')"),
            );
        }
    }
    let priority: Option<i64> = r.req(&mut m, "priority");
    let version: Option<u32> = r.opt(&mut m, "version");
    let depends_raw: Vec<String> = r.opt(&mut m, "depends").unwrap_or_default();
    let mut depends = Vec::new();
    for (i, d) in depends_raw.iter().enumerate() {
        // Yocto's LAYERDEPENDS syntax: "name" or "name:version".
        let (n, v) = match d.split_once(':') {
            Some((n, v)) => match v.parse::<u32>() {
                Ok(v) => (n, Some(v)),
                Err(_) => {
                    r.error(
                        &format!("depends[{i}]"),
                        format!("'{d}': the version after ':' must be a number"),
                    );
                    continue;
                }
            },
            None => (d.as_str(), None),
        };
        depends.push((n.to_string(), v));
    }
    let series_compat: Vec<String> = r.req(&mut m, "series-compat").unwrap_or_default();
    if m.has("series-compat") && !series_compat.iter().any(|s| s == SERIES) {
        r.error(
            "series-compat",
            format!(
                "layer is compatible with series [{}], but this slotsmith is series '{SERIES}'",
                series_compat.join(", ")
            ),
        );
    }
    let _: Option<String> = r.opt(&mut m, "description");
    // Declared entries: attributes for files in files/, or nodes git cannot hold.
    let mut declared: BTreeMap<String, (String, &Value)> = BTreeMap::new();
    if let Some(v) = r.raw(&mut m, "files") {
        if let Some(fm) = r.map("files", v, &[]) {
            for k in fm.keys() {
                let key = join_key("files", &k);
                match RelPath::parse(&k) {
                    Ok(p) if !p.as_str().is_empty() && k.starts_with('/') => {
                        let v = v
                            .as_mapping()
                            .and_then(|mm| mm.get(k.as_str()))
                            .unwrap_or(&Value::Null);
                        declared.insert(p.as_str().to_string(), (key, v));
                    }
                    Ok(_) => r.key_error(&key, "paths must be absolute, such as /etc/motd"),
                    Err(e) => r.key_error(&key, format!("{e:#}")),
                }
            }
        }
    }
    let mut remove = Vec::new();
    let mut remove_at = BTreeMap::new();
    let remove_raw: Vec<String> = r.opt(&mut m, "remove").unwrap_or_default();
    for (i, p) in remove_raw.iter().enumerate() {
        match RelPath::parse(p) {
            Ok(rp) if p.starts_with('/') && !rp.as_str().is_empty() => {
                let path = format!("/{}", rp.as_str());
                remove_at
                    .entry(path.clone())
                    .or_insert_with(|| Origin(Some(doc.diag(&format!("remove[{i}]"), ""))));
                remove.push(path)
            }
            Ok(_) => r.error(
                &format!("remove[{i}]"),
                "paths must be absolute and not the root",
            ),
            Err(e) => r.error(&format!("remove[{i}]"), format!("{e:#}")),
        }
    }
    remove.sort();
    remove.dedup();
    r.finish(m);

    let entries = read_layer_tree(r, root, dir, declared);
    Some(LayerSpec {
        name: name.to_string(),
        dir: display_path(root, dir),
        collection: collection?,
        priority: priority?,
        version,
        depends,
        series_compat,
        entries,
        remove,
        remove_at,
        conf: std::sync::Arc::new(Doc::empty()),
    })
}

/// Walks `files/` without following symlinks and merges the declared
/// attributes. Git keeps only the executable bit, so every file is 0644 or
/// 0755 and owned by root unless `conf/layer.yaml` says otherwise.
fn read_layer_tree(
    r: &mut Reader<'_>,
    root: &Path,
    dir: &Path,
    mut declared: BTreeMap<String, (String, &Value)>,
) -> Vec<LayerEntry> {
    let files = dir.join("files");
    let mut entries = Vec::new();
    if files.is_dir() {
        for e in walkdir::WalkDir::new(&files)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
        {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    r.error("", format!("cannot walk {}: {err}", files.display()));
                    continue;
                }
            };
            let rel = e.path().strip_prefix(&files).unwrap_or(e.path());
            let rel_s = rel.to_string_lossy();
            let path = match RelPath::parse(&rel_s) {
                Ok(p) => p,
                Err(err) => {
                    r.error("", format!("layer file {}: {err:#}", e.path().display()));
                    continue;
                }
            };
            let shown = display_path(root, e.path());
            let md = match e.path().symlink_metadata() {
                Ok(md) => md,
                Err(err) => {
                    r.error("", format!("cannot stat {shown}: {err}"));
                    continue;
                }
            };
            let ft = md.file_type();
            let (kind, mode) = if ft.is_symlink() {
                match fs::read_link(e.path()) {
                    Ok(t) => (
                        LayerEntryKind::Symlink {
                            target: t.to_string_lossy().into_owned(),
                        },
                        0o777,
                    ),
                    Err(err) => {
                        r.error("", format!("cannot read link {shown}: {err}"));
                        continue;
                    }
                }
            } else if ft.is_dir() {
                (LayerEntryKind::Directory, 0o755)
            } else if ft.is_file() {
                match hash_file(e.path()) {
                    Ok((sha256, size)) => {
                        let mode = if md.permissions().mode() & 0o111 != 0 {
                            0o755
                        } else {
                            0o644
                        };
                        (
                            LayerEntryKind::File {
                                source: shown.clone(),
                                sha256,
                                size,
                            },
                            mode,
                        )
                    }
                    Err(err) => {
                        r.error("", format!("cannot read {shown}: {err}"));
                        continue;
                    }
                }
            } else {
                r.error("", format!("{shown}: only files, directories and symlinks belong in files/; declare devices and fifos in conf/layer.yaml"));
                continue;
            };
            let mut entry = LayerEntry {
                path: format!("/{}", path.as_str()),
                kind,
                mode,
                uid: 0,
                gid: 0,
                xattrs: BTreeMap::new(),
            };
            if let Some((key, v)) = declared.remove(path.as_str()) {
                apply_declared(r, &key, v, &mut entry, true);
            }
            entries.push(entry);
        }
    }
    // Declared entries with no file in files/: they must say what they are.
    for (path, (key, v)) in declared {
        let mut entry = LayerEntry {
            path: format!("/{path}"),
            kind: LayerEntryKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        };
        if apply_declared(r, &key, v, &mut entry, false) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// Applies a `files:` entry. `exists` tells whether files/ holds the path.
fn apply_declared(
    r: &mut Reader<'_>,
    key: &str,
    v: &Value,
    entry: &mut LayerEntry,
    exists: bool,
) -> bool {
    let Some(mut m) = r.map(key, v, ENTRY_KEYS) else {
        return false;
    };
    let ty: Option<String> = r.opt(&mut m, "type");
    let major: Option<u32> = r.opt(&mut m, "major");
    let minor: Option<u32> = r.opt(&mut m, "minor");
    let target: Option<String> = r.opt(&mut m, "target");
    let mut ok = true;
    match (exists, ty.as_deref()) {
        (true, Some(_)) => {
            r.error(
                &join_key(key, "type"),
                "the path exists in files/, so its type comes from there",
            );
            ok = false;
        }
        (true, None) => {}
        (false, None) => {
            r.error(key, "no such path in files/; add the file or give a 'type' (directory, symlink, char, block, fifo)");
            ok = false;
        }
        (false, Some(t)) => {
            entry.kind = match t {
                "directory" => LayerEntryKind::Directory,
                "fifo" => LayerEntryKind::Fifo,
                "symlink" => match &target {
                    Some(t) if !t.is_empty() => LayerEntryKind::Symlink { target: t.clone() },
                    _ => {
                        r.error(key, "a symlink needs a 'target'");
                        ok = false;
                        LayerEntryKind::Fifo
                    }
                },
                "char" | "block" => match (major, minor) {
                    (Some(major), Some(minor)) if t == "char" => {
                        LayerEntryKind::Char { major, minor }
                    }
                    (Some(major), Some(minor)) => LayerEntryKind::Block { major, minor },
                    _ => {
                        r.error(key, "a device needs 'major' and 'minor'");
                        ok = false;
                        LayerEntryKind::Fifo
                    }
                },
                other => {
                    r.error(&join_key(key, "type"), format!("unknown type '{other}' (expected directory, symlink, char, block or fifo)"));
                    ok = false;
                    LayerEntryKind::Fifo
                }
            };
            entry.mode = match entry.kind {
                LayerEntryKind::Symlink { .. } => 0o777,
                LayerEntryKind::Directory => 0o755,
                _ => 0o644,
            };
        }
    }
    if target.is_some() && !matches!(entry.kind, LayerEntryKind::Symlink { .. }) {
        r.error(&join_key(key, "target"), "only a symlink has a target");
    }
    if (major.is_some() || minor.is_some())
        && !matches!(
            entry.kind,
            LayerEntryKind::Char { .. } | LayerEntryKind::Block { .. }
        )
    {
        r.error(key, "only a device has major and minor numbers");
    }
    if let Some(raw) = r.raw(&mut m, "mode") {
        let mk = join_key(key, "mode");
        match raw {
            Value::String(s) if s.len() >= 3 && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c)) => {
                entry.mode = u32::from_str_radix(s, 8).unwrap_or(0);
            }
            Value::Number(_) => r.error(&mk, "write modes as quoted octal strings, such as \"0644\" (YAML reads 0644 as a number)"),
            _ => r.error(&mk, "must be an octal string such as \"0644\" or \"4755\""),
        }
    }
    if let Some(uid) = r.opt::<u32>(&mut m, "owner") {
        entry.uid = uid;
    }
    if let Some(gid) = r.opt::<u32>(&mut m, "group") {
        entry.gid = gid;
    }
    if let Some(x) = r.opt::<BTreeMap<String, String>>(&mut m, "xattrs") {
        for (name, value) in x {
            let xk = join_key(&join_key(key, "xattrs"), &name);
            let known = ["security.", "user.", "trusted."];
            if !known.iter().any(|p| name.starts_with(p)) || name.len() > 255 {
                r.error(&xk, "xattr names start with security., user. or trusted.");
                continue;
            }
            match value.strip_prefix("0x").map(hex::decode) {
                Some(Ok(bytes)) => {
                    entry.xattrs.insert(name, hex::encode(bytes));
                }
                _ => r.error(
                    &xk,
                    "xattr values are hex strings with a 0x prefix, such as 0x0100000200200000",
                ),
            }
        }
    }
    r.finish(m);
    ok
}

/// Checks every layer entry against what the image's filesystem can hold
/// (`slotsmith_rootfs::limits`: name and path lengths, symlink targets,
/// device numbers, xattrs), so such an entry is an input error at load,
/// with its position, rather than a build failure. Declared entries are
/// reported at their `files.<path>` key, others at the layer file.
fn check_layer_limits(image: &ImageSpec, layer: &LayerSpec, diags: &mut Diagnostics) {
    use slotsmith_rootfs::limits::{self, Target};
    let target = match image.filesystem {
        Filesystem::Squashfs => Target::Squashfs,
        Filesystem::Ext4 => Target::Ext4,
    };
    for e in &layer.entries {
        let rel = e.path.trim_start_matches('/');
        let res = RelPath::parse(rel).map_err(anyhow::Error::from).and_then(|p| {
            limits::check_path(&p, target)?;
            match &e.kind {
                LayerEntryKind::Symlink { target: t } => limits::check_symlink_target(t)?,
                LayerEntryKind::Char { major, minor } | LayerEntryKind::Block { major, minor } => {
                    limits::check_device(*major, *minor, target)?
                }
                _ => {}
            }
            for (name, hex_value) in &e.xattrs {
                let value = hex::decode(hex_value).unwrap_or_default();
                limits::check_xattr(name, &value, target)?;
            }
            Ok(())
        });
        if let Err(err) = res {
            // At `files.<path>` when declared, else where `files` (or the
            // document) starts; the message names the layer file either way.
            let key = join_key("files", &e.path);
            diags.push(layer.conf.diag(
                &key,
                format!(
                    "{}/files{}: {err:#}",
                    slotsmith_yaml::escape::shown(&layer.dir),
                    slotsmith_yaml::escape::shown(&e.path)
                ),
            ));
        }
    }
}

fn check_layer_set(image: &ImageSpec, doc: &Doc, layers: &[LayerSpec], diags: &mut Diagnostics) {
    let by_collection: BTreeMap<&str, &LayerSpec> =
        layers.iter().map(|l| (l.collection.as_str(), l)).collect();
    for l in layers {
        for (dep, ver) in &l.depends {
            match by_collection.get(dep.as_str()) {
                None => diags.push(l.conf.diag(
                    "depends",
                    format!("layer {} depends on collection '{dep}', which no layer of image {} provides", l.name, image.name),
                )),
                Some(d) => {
                    if let Some(want) = ver {
                        if d.version != Some(*want) {
                            diags.push(l.conf.diag(
                                "depends",
                                format!(
                                    "layer {} needs collection '{dep}' version {want}, but {} has version {}",
                                    l.name,
                                    d.name,
                                    d.version.map_or("none".to_string(), |v| v.to_string())
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut collections: BTreeMap<&str, &str> = BTreeMap::new();
    for l in layers {
        if let Some(other) = collections.insert(&l.collection, &l.name) {
            let i = image.layers.iter().position(|n| n == &l.name).unwrap_or(0);
            diags.push(doc.diag(
                &format!("layers[{i}]"),
                format!(
                    "layers {other} and {} both provide collection '{}'",
                    l.name, l.collection
                ),
            ));
        }
    }
    // Equal priorities cannot settle who owns a path, so writing (or
    // removing) the same path from two such layers is an error, as in Yocto.
    let mut writers: BTreeMap<(i64, &str), &str> = BTreeMap::new();
    for l in layers {
        let paths = l
            .entries
            .iter()
            .filter(|e| e.kind != LayerEntryKind::Directory)
            .map(|e| e.path.as_str());
        for p in paths.chain(l.remove.iter().map(String::as_str)) {
            if let Some(other) = writers.insert((l.priority, p), &l.name) {
                if other != l.name {
                    diags.push(l.conf.diag(
                        "priority",
                        format!(
                            "layers {other} and {} both write {p} with the same priority {}; give one a higher priority",
                            l.name, l.priority
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("1GB"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999TiB"), None);
        assert_eq!(human(64 << 20), "64MiB");
    }

    #[test]
    fn versions() {
        for ok in ["1", "1.0.0", "1.2.3.4", "2.0.0-rc1"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in [
            "",
            "v1",
            "1..2",
            "1.2.3.4.5",
            "1.0-",
            "1.0 beta",
            "123456.1",
        ] {
            assert!(!valid_version(bad), "{bad}");
        }
    }
}
