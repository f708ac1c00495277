//! `sw-description` generation in libconfig syntax, plus a strict parser for
//! exactly what we generate (used to verify a finished `.swu`).
//!
//! # Layout
//!
//! ```text
//! software = {
//!     version = "1.2.3";
//!     description = "...";
//!     hardware-compatibility = [ "1.0" ];
//!     stable = {                               # set,  `-e stable,copy2`
//!         copy2 = {                            # mode
//!             slotsmith-slot = "b";
//!             images = (
//!                 { filename = "rootfs-b.img"; type = "raw"; device = "/dev/...";
//!                   installed-directly = true; size = 123; sha256 = "..."; [compressed = "zstd";] },
//!                 { filename = "kernel-b"; type = "rawfile"; path = "/boot/b/vmlinuz";
//!                   size = 45; sha256 = "...";
//!                   properties = { atomic-install = "true"; create-destination = "true"; }; }
//!             );
//!             bootenv = ( { name = "slotsmith_slot"; value = "b"; }, ... );
//!         };
//!     };
//! };
//! ```
//!
//! * Every collection always gets an `images` and a `bootenv` list, even an
//!   empty one. SWUpdate looks a node up at `software.<set>.<mode>`, then
//!   falls back to `software.<board>` and `software`; a node that exists
//!   (even empty) stops that search, so nothing outside the selected
//!   collection can ever be picked up.
//! * Raw targets (slots) are `installed-directly`: streamed from the archive
//!   without a copy in `$TMPDIR`. If the hash turns out wrong, the slot is
//!   already written, but SWUpdate then does not switch the boot env, so the
//!   device keeps booting the old slot.
//! * File targets (kernel, manifest, signature on the boot partition) use the
//!   `rawfile` handler inside `images`, which SWUpdate 2022.12 accepts. They
//!   are deliberately NOT installed-directly: the file is first extracted to
//!   `$TMPDIR` and hash-checked, so a corrupt artifact never reaches the boot
//!   partition. (2022.12's rawfile handler still fsyncs and, with
//!   atomic-install, renames a file whose streamed copy failed.)
//!   `atomic-install` writes `<path>.tmp` and renames it, so a power cut
//!   never leaves a torn kernel; `create-destination` creates the directory.
//! * `size` is the stored (cpio) size. 2022.12 ignores it; SWUpdate since
//!   late 2024 rejects an archive whose member size differs.
//! * `slotsmith-slot` is our own key, ignored by SWUpdate (unknown keys are),
//!   so the parser can recover which slot a collection targets.
//!
//! # Boot environment convention ([`bootenv_for`])
//!
//! The boot script selects the root slot from `slotsmith_slot` (`a`/`b`).
//! * U-Boot: `slotsmith_slot=<slot>`, `upgrade_available=1`, `bootcount=0`:
//!   U-Boot's standard bootcount machinery (`bootlimit`, `altbootcmd`) then
//!   counts boots of the new slot, and userspace sets `upgrade_available=0`
//!   once the new system is healthy.
//! * GRUB: `slotsmith_slot=<slot>`, `slotsmith_try=1`: grub.cfg clears
//!   `slotsmith_try` (save_env) on the first boot of the new slot and falls
//!   back if it finds it already cleared without a confirmation.
//!
//! All names are `[a-z_]`, valid in both the U-Boot env and GRUB's grubenv.
//!
//! # Escaping and validation (security)
//!
//! SWUpdate hands `bootenv` to libubootenv as a `name=value` script, one
//! variable per line, so a newline in a value injects an extra variable
//! (tested: `"x\ninjected=1"` set `injected=1`), and `=` in a name splits
//! it. Therefore every string we emit is rejected if it contains any control
//! character (C0, DEL, C1), and bootenv names are restricted further; in
//! strings only `\` and `"` need escaping. SWUpdate copies strings into fixed
//! 256-byte buffers and silently crops longer ones (a cropped device path
//! would write to another device), so lengths are capped below that.
//! Setting names (set, mode) must match libconfig's `[A-Za-z*][-A-Za-z0-9_*]*`
//! and must not collide with keys SWUpdate looks up. The output is
//! deterministic: same input, same bytes.

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::shown;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

mod parse;

use parse::{from_value, Parser};

/// Longest string SWUpdate stores uncropped (256-byte buffers, NUL incl.).
const MAX_STR: usize = 255;
/// `description` has a 512-byte buffer.
const MAX_DESCRIPTION: usize = 511;
/// rawfile builds `<path>.tmp` in a 255-byte buffer when atomic-install is on.
const MAX_FILE_PATH: usize = 250;
/// Our key for the slot a collection targets.
const SLOT_KEY: &str = "slotsmith-slot";
/// Our key for the release's security version, at `software` level.
pub const SECURITY_VERSION_KEY: &str = "slotsmith-security-version";
/// Names SWUpdate looks up at `software.*` level (2022.12 and HEAD); a set or
/// mode with one of these names would be misread.
const RESERVED: &[&str] = &[
    "version",
    "description",
    "hardware-compatibility",
    "images",
    "files",
    "scripts",
    "bootenv",
    "uboot",
    "partitions",
    "embedded-script",
    "bootloader_state_marker",
    "bootloader_transaction_marker",
    "output",
    "reboot",
    "ref",
    SLOT_KEY,
    SECURITY_VERSION_KEY,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    UBoot,
    Grub,
    /// EFI Boot Guard (`-B ebg`): SWUpdate's handler makes the oldest
    /// environment a copy of the running one with a higher revision, sets
    /// the `bootenv` fields (`kernelfile` for the slot just written) and
    /// marks it INSTALLED; the loader tries it once.
    Ebg,
}

/// How a payload is stored in the archive; SWUpdate decompresses on install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `type = "raw"`, `installed-directly = true`: a slot block device.
    Raw { device: String },
    /// `type = "rawfile"`: a file, e.g. on the mounted boot partition.
    File { path: String },
    /// `type = "rawfile"` with `device` and `filesystem`: SWUpdate mounts
    /// the partition itself and writes the file at `path` inside it (a
    /// slot's FAT boot partition, which the running system never mounts).
    PartitionFile {
        device: String,
        filesystem: String,
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// cpio member name.
    pub filename: String,
    /// sha256 of the bytes as stored (after compression).
    pub sha256: [u8; 32],
    /// Stored (cpio) size in bytes.
    pub size: u64,
    pub compressed: Compression,
    pub target: Target,
    /// Our own check, ignored by SWUpdate: the bytes the payload occupies
    /// once installed (after decompression) and the capacity of its target,
    /// so `verify` can tell from the `.swu` alone that it fits the slot.
    /// Rendered as `slotsmith-installed-size` and `slotsmith-capacity`.
    pub fit: Option<Fit>,
}

/// Installed size and target capacity of a payload, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// Bytes written to the target.
    pub installed_size: u64,
    /// Bytes the target holds.
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Software set, e.g. `stable`.
    pub set: String,
    /// Running mode, e.g. `copy1` (installs slot A) or `copy2` (slot B).
    pub mode: String,
    /// `"a"` or `"b"`.
    pub slot: String,
    /// Installed in this order; the bootenv is applied after all of them.
    pub payloads: Vec<Payload>,
    pub bootenv: Vec<(String, String)>,
}

impl Collection {
    /// The conventional A/B collection: set `stable`, mode `copy1` for slot
    /// `a` and `copy2` for slot `b`, env from [`bootenv_for`].
    pub fn ab(slot: &str, bootloader: Bootloader, payloads: Vec<Payload>) -> Result<Collection> {
        let mode = match slot {
            "a" => "copy1",
            "b" => "copy2",
            _ => bail!("slot must be \"a\" or \"b\", not \"{}\"", shown(slot)),
        };
        Ok(Collection {
            set: "stable".into(),
            mode: mode.into(),
            slot: slot.into(),
            payloads,
            bootenv: bootenv_for(bootloader, slot),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwDescription {
    /// Emitted as `description`.
    pub name: String,
    pub version: String,
    pub hardware_compatibility: Vec<String>,
    /// The release's security version (anti-rollback), emitted as our own
    /// key `slotsmith-security-version`. SWUpdate ignores it; the device's
    /// pre-update hook reads it from the verified `sw-description` and
    /// refuses a release below the device's stored minimum.
    pub security_version: Option<u64>,
    pub collections: Vec<Collection>,
}

/// Boot environment that switches to `slot` on `bootloader` (see the module
/// docs for the convention).
pub fn bootenv_for(bootloader: Bootloader, slot: &str) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = match bootloader {
        Bootloader::UBoot => &[
            ("slotsmith_slot", slot),
            ("upgrade_available", "1"),
            ("bootcount", "0"),
        ],
        Bootloader::Grub => &[("slotsmith_slot", slot), ("slotsmith_try", "1")],
        // The kernel file depends on the slot's boot partition label, which
        // only the plan knows: the caller adds `kernelfile`.
        Bootloader::Ebg => &[],
    };
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Checks a string for emission: no control characters at all (see the
/// module docs for why), bounded length.
fn check_text(s: &str, what: &str, max: usize) -> Result<()> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        bail!(
            "{what} \"{}\" contains the control character {c:?}, which is not allowed",
            shown(s)
        );
    }
    ensure!(
        s.len() <= max,
        "{what} is {} bytes long; SWUpdate crops strings over {max} bytes",
        s.len()
    );
    Ok(())
}

/// A libconfig string literal: only `\` and `"` need escaping once control
/// characters are excluded.
fn quote(s: &str, what: &str, max: usize) -> Result<String> {
    check_text(s, what, max)?;
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Ok(q)
}

fn check_setting_name(name: &str, what: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*');
    ensure!(
        first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*')),
        "{what} \"{}\" is not a valid libconfig setting name ([A-Za-z*][-A-Za-z0-9_*]*)",
        shown(name)
    );
    ensure!(
        !RESERVED.contains(&name),
        "{what} \"{}\" collides with a key SWUpdate looks up",
        shown(name)
    );
    Ok(())
}

/// Bootenv names: printable ASCII without space or `=` (libubootenv splits
/// `name=value` at the first `=`; GRUB env names are stricter still, so our
/// own names are `[a-z_]`).
fn check_env_name(name: &str) -> Result<()> {
    check_text(name, "bootenv name", MAX_STR)?;
    ensure!(!name.is_empty(), "bootenv name is empty");
    ensure!(
        !name.contains('='),
        "bootenv name \"{}\" contains '=', which would split it into name and value",
        shown(name)
    );
    ensure!(
        name.bytes().all(|b| b.is_ascii_graphic()),
        "bootenv name \"{}\" must be printable ASCII without spaces",
        shown(name)
    );
    Ok(())
}

fn check_version(v: &str) -> Result<()> {
    ensure!(
        !v.is_empty()
            && v.len() <= MAX_STR
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')),
        "version \"{}\" must be 1 to {MAX_STR} characters from [A-Za-z0-9.+-]",
        shown(v)
    );
    Ok(())
}

fn check_slot(slot: &str) -> Result<()> {
    ensure!(
        slot == "a" || slot == "b",
        "slot must be \"a\" or \"b\", not \"{}\"",
        shown(slot)
    );
    Ok(())
}

fn check_abs_path(p: &str, what: &str, max: usize) -> Result<()> {
    check_text(p, what, max)?;
    ensure!(
        p.starts_with('/'),
        "{what} \"{}\" must be an absolute path",
        shown(p)
    );
    ensure!(
        !p.split('/').any(|c| c == ".."),
        "{what} \"{}\" must not contain '..'",
        shown(p)
    );
    Ok(())
}

impl SwDescription {
    /// Validates everything and renders the libconfig text.
    pub fn to_libconfig(&self) -> Result<String> {
        check_version(&self.version)?;
        let mut o = String::new();
        o.push_str("software =\n{\n");
        let _ = writeln!(
            o,
            "\tversion = {};",
            quote(&self.version, "version", MAX_STR)?
        );
        let _ = writeln!(
            o,
            "\tdescription = {};",
            quote(&self.name, "description", MAX_DESCRIPTION)?
        );
        ensure!(
            !self.hardware_compatibility.is_empty(),
            "hardware-compatibility is empty; SWUpdate requires at least one revision"
        );
        let mut hw = Vec::new();
        for rev in &self.hardware_compatibility {
            // SWUpdate silently skips empty entries.
            ensure!(!rev.is_empty(), "empty hardware-compatibility entry");
            hw.push(quote(rev, "hardware-compatibility entry", MAX_STR)?);
        }
        let _ = writeln!(o, "\thardware-compatibility = [ {} ];", hw.join(", "));
        if let Some(svn) = self.security_version {
            // libconfig integers are 32-bit unless suffixed `L`; keep to
            // what every reader takes as a plain int.
            ensure!(
                svn <= i32::MAX as u64,
                "security version {svn} is above {}",
                i32::MAX
            );
            let _ = writeln!(o, "\t{SECURITY_VERSION_KEY} = {svn};");
        }

        // One cpio member can back payloads in several collections only if
        // they agree on what the member is.
        let mut members: BTreeMap<&str, (&[u8; 32], u64, Compression)> = BTreeMap::new();
        // libconfig rejects duplicate names in a group, so the modes of a
        // set are grouped under it, sets in order of first appearance.
        let mut sets: Vec<(&str, Vec<&Collection>)> = Vec::new();
        let mut seen = HashSet::new();
        for c in &self.collections {
            check_setting_name(&c.set, "software set")?;
            check_setting_name(&c.mode, "running mode")?;
            check_slot(&c.slot)?;
            ensure!(
                seen.insert((c.set.as_str(), c.mode.as_str())),
                "collection {}.{} appears twice",
                c.set,
                c.mode
            );
            for p in &c.payloads {
                let m = (&p.sha256, p.size, p.compressed);
                let prev = members.entry(&p.filename).or_insert(m);
                ensure!(
                    *prev == m,
                    "payload {} is used with different sha256, size or compression",
                    shown(&p.filename)
                );
            }
            match sets.iter_mut().find(|(s, _)| *s == c.set) {
                Some((_, v)) => v.push(c),
                None => sets.push((&c.set, vec![c])),
            }
        }
        for (set, modes) in sets {
            let _ = writeln!(o, "\t{set} =\n\t{{");
            for c in modes {
                render_collection(&mut o, c)
                    .with_context(|| format!("collection {}.{}", c.set, c.mode))?;
            }
            o.push_str("\t};\n");
        }
        o.push_str("};\n");
        Ok(o)
    }

    /// Parses text produced by [`SwDescription::to_libconfig`]. Strict:
    /// unknown keys, comments and other libconfig syntax are errors, and the
    /// result is validated by rendering it again.
    pub fn parse(text: &str) -> Result<SwDescription> {
        let root = Parser::new(text)
            .document()
            .context("parsing sw-description")?;
        let desc = from_value(root).context("interpreting sw-description")?;
        desc.to_libconfig().context("validating sw-description")?;
        Ok(desc)
    }
}

fn render_collection(o: &mut String, c: &Collection) -> Result<()> {
    let _ = writeln!(o, "\t\t{} =\n\t\t{{", c.mode);
    let _ = writeln!(
        o,
        "\t\t\t{SLOT_KEY} = {};",
        quote(&c.slot, "slot", MAX_STR)?
    );
    o.push_str("\t\t\timages = (");
    let mut names = HashSet::new();
    for (i, p) in c.payloads.iter().enumerate() {
        crate::cpio::validate_name(&p.filename)?;
        ensure!(
            p.filename != "sw-description" && p.filename != "sw-description.sig",
            "payload name {} is reserved",
            p.filename
        );
        // One archive member can be streamed into only one target.
        ensure!(
            names.insert(&p.filename),
            "payload {} is listed twice",
            p.filename
        );
        ensure!(
            p.size <= crate::cpio::MAX_ENTRY_SIZE,
            "payload {} is {} bytes; cpio entries must be under 4 GiB",
            p.filename,
            p.size
        );
        o.push_str(if i == 0 { "\n" } else { ",\n" });
        o.push_str("\t\t\t\t{\n");
        let _ = writeln!(o, "\t\t\t\t\tfilename = \"{}\";", p.filename);
        match &p.target {
            Target::Raw { device } => {
                check_abs_path(device, "device", MAX_STR)?;
                o.push_str("\t\t\t\t\ttype = \"raw\";\n");
                let _ = writeln!(
                    o,
                    "\t\t\t\t\tdevice = {};",
                    quote(device, "device", MAX_STR)?
                );
                o.push_str("\t\t\t\t\tinstalled-directly = true;\n");
            }
            Target::PartitionFile {
                device,
                filesystem,
                path,
            } => {
                check_abs_path(device, "device", MAX_STR)?;
                check_abs_path(path, "path", MAX_FILE_PATH)?;
                ensure!(
                    !path.ends_with('/'),
                    "path \"{}\" names a directory",
                    shown(path)
                );
                ensure!(
                    !filesystem.is_empty() && filesystem.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "filesystem \"{}\" is not a filesystem type name",
                    shown(filesystem)
                );
                o.push_str("\t\t\t\t\ttype = \"rawfile\";\n");
                let _ = writeln!(
                    o,
                    "\t\t\t\t\tdevice = {};",
                    quote(device, "device", MAX_STR)?
                );
                let _ = writeln!(o, "\t\t\t\t\tfilesystem = \"{filesystem}\";");
                let _ = writeln!(
                    o,
                    "\t\t\t\t\tpath = {};",
                    quote(path, "path", MAX_FILE_PATH)?
                );
            }
            Target::File { path } => {
                check_abs_path(path, "path", MAX_FILE_PATH)?;
                ensure!(
                    !path.ends_with('/'),
                    "path \"{}\" names a directory",
                    shown(path)
                );
                o.push_str("\t\t\t\t\ttype = \"rawfile\";\n");
                let _ = writeln!(
                    o,
                    "\t\t\t\t\tpath = {};",
                    quote(path, "path", MAX_FILE_PATH)?
                );
            }
        }
        // libconfig reads integers beyond 32 bits only with the L suffix.
        let suffix = if p.size > i32::MAX as u64 { "L" } else { "" };
        let _ = writeln!(o, "\t\t\t\t\tsize = {}{suffix};", p.size);
        let _ = writeln!(o, "\t\t\t\t\tsha256 = \"{}\";", hex::encode(p.sha256));
        if p.compressed == Compression::Zstd {
            o.push_str("\t\t\t\t\tcompressed = \"zstd\";\n");
        }
        if let Some(fit) = p.fit {
            ensure!(
                fit.installed_size <= fit.capacity,
                "payload {} needs {} bytes but its target holds {}",
                p.filename,
                fit.installed_size,
                fit.capacity
            );
            let l = |n: u64| if n > i32::MAX as u64 { "L" } else { "" };
            let _ = writeln!(
                o,
                "\t\t\t\t\tslotsmith-installed-size = {}{};",
                fit.installed_size,
                l(fit.installed_size)
            );
            let _ = writeln!(
                o,
                "\t\t\t\t\tslotsmith-capacity = {}{};",
                fit.capacity,
                l(fit.capacity)
            );
        }
        if let Target::File { .. } | Target::PartitionFile { .. } = p.target {
            o.push_str(
                "\t\t\t\t\tproperties = { atomic-install = \"true\"; create-destination = \"true\"; };\n",
            );
        }
        o.push_str("\t\t\t\t}");
    }
    o.push_str(if c.payloads.is_empty() {
        " );\n"
    } else {
        "\n\t\t\t);\n"
    });
    o.push_str("\t\t\tbootenv = (");
    let mut env_names = HashSet::new();
    for (i, (name, value)) in c.bootenv.iter().enumerate() {
        check_env_name(name)?;
        // SWUpdate applies them in reverse order into a dict, so with a
        // duplicate the first one would silently win.
        ensure!(
            env_names.insert(name),
            "bootenv variable {name} is set twice"
        );
        o.push_str(if i == 0 { "\n" } else { ",\n" });
        let _ = write!(
            o,
            "\t\t\t\t{{ name = {}; value = {}; }}",
            quote(name, "bootenv name", MAX_STR)?,
            quote(value, &format!("bootenv value of {name}"), MAX_STR)?
        );
    }
    o.push_str(if c.bootenv.is_empty() {
        " );\n"
    } else {
        "\n\t\t\t);\n"
    });
    o.push_str("\t\t};\n");
    Ok(())
}

// ---------------------------------------------------------------------------
// Strict parser for the subset above.

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(name: &str, target: Target) -> Payload {
        Payload {
            filename: name.into(),
            sha256: [0xab; 32],
            size: 4096,
            compressed: Compression::None,
            target,
            fit: None,
        }
    }

    fn sample() -> SwDescription {
        let a = Collection::ab(
            "a",
            Bootloader::UBoot,
            vec![
                payload(
                    "rootfs-a.img",
                    Target::Raw {
                        device: "/dev/mmcblk0p2".into(),
                    },
                ),
                Payload {
                    compressed: Compression::Zstd,
                    size: 3_000_000_000,
                    ..payload(
                        "kernel-a",
                        Target::File {
                            path: "/boot/a/vmlinuz".into(),
                        },
                    )
                },
            ],
        )
        .unwrap();
        let b = Collection::ab(
            "b",
            Bootloader::UBoot,
            vec![payload(
                "rootfs-b.img",
                Target::Raw {
                    device: "/dev/mmcblk0p3".into(),
                },
            )],
        )
        .unwrap();
        SwDescription {
            name: "demo \"quoted\" back\\slash ${x}".into(),
            version: "1.2.3".into(),
            hardware_compatibility: vec!["1.0".into(), "#RE:^2\\.[0-9]$".into()],
            security_version: None,
            collections: vec![a, b],
        }
    }

    #[test]
    fn renders_expected_layout() {
        let text = sample().to_libconfig().unwrap();
        let expected = r##"software =
{
	version = "1.2.3";
	description = "demo \"quoted\" back\\slash ${x}";
	hardware-compatibility = [ "1.0", "#RE:^2\\.[0-9]$" ];
	stable =
	{
		copy1 =
		{
			slotsmith-slot = "a";
			images = (
				{
					filename = "rootfs-a.img";
					type = "raw";
					device = "/dev/mmcblk0p2";
					installed-directly = true;
					size = 4096;
					sha256 = "abababababababababababababababababababababababababababababababab";
				},
				{
					filename = "kernel-a";
					type = "rawfile";
					path = "/boot/a/vmlinuz";
					size = 3000000000L;
					sha256 = "abababababababababababababababababababababababababababababababab";
					compressed = "zstd";
					properties = { atomic-install = "true"; create-destination = "true"; };
				}
			);
			bootenv = (
				{ name = "slotsmith_slot"; value = "a"; },
				{ name = "upgrade_available"; value = "1"; },
				{ name = "bootcount"; value = "0"; }
			);
		};
		copy2 =
		{
			slotsmith-slot = "b";
			images = (
				{
					filename = "rootfs-b.img";
					type = "raw";
					device = "/dev/mmcblk0p3";
					installed-directly = true;
					size = 4096;
					sha256 = "abababababababababababababababababababababababababababababababab";
				}
			);
			bootenv = (
				{ name = "slotsmith_slot"; value = "b"; },
				{ name = "upgrade_available"; value = "1"; },
				{ name = "bootcount"; value = "0"; }
			);
		};
	};
};
"##;
        assert_eq!(text, expected);
    }

    #[test]
    fn parse_round_trips() {
        let d = sample();
        let text = d.to_libconfig().unwrap();
        assert_eq!(SwDescription::parse(&text).unwrap(), d);
        let empty = SwDescription {
            collections: vec![Collection {
                payloads: vec![],
                bootenv: vec![],
                ..d.collections[0].clone()
            }],
            ..d
        };
        let text = empty.to_libconfig().unwrap();
        assert!(text.contains("images = ( );") && text.contains("bootenv = ( );"));
        assert_eq!(SwDescription::parse(&text).unwrap(), empty);
    }

    #[test]
    fn the_security_version_round_trips_and_is_bounded() {
        let d = SwDescription {
            security_version: Some(7),
            ..sample()
        };
        let text = d.to_libconfig().unwrap();
        assert!(
            text.contains("\n\tslotsmith-security-version = 7;\n"),
            "{text}"
        );
        assert_eq!(SwDescription::parse(&text).unwrap(), d);
        let big = SwDescription {
            security_version: Some(1 << 31),
            ..sample()
        };
        assert!(big.to_libconfig().is_err());
        let wrong = text.replace("security-version = 7;", "security-version = \"7\";");
        let err = format!("{:#}", SwDescription::parse(&wrong).unwrap_err());
        assert!(err.contains("must be an integer"), "{err}");
    }

    #[test]
    fn grub_env_names() {
        assert_eq!(
            bootenv_for(Bootloader::Grub, "b"),
            vec![
                ("slotsmith_slot".to_string(), "b".to_string()),
                ("slotsmith_try".to_string(), "1".to_string())
            ]
        );
    }

    fn err(d: &SwDescription) -> String {
        format!("{:#}", d.to_libconfig().unwrap_err())
    }

    #[test]
    fn control_characters_are_rejected() {
        for bad in [
            "x\ninjected=1",
            "x\ry",
            "x\0y",
            "x\u{7f}",
            "x\u{85}",
            "tab\there",
        ] {
            let mut d = sample();
            d.collections[0].bootenv.push(("v4".into(), bad.into()));
            assert!(
                err(&d).contains("control character"),
                "{bad:?}: {}",
                err(&d)
            );
            let mut d = sample();
            d.name = bad.into();
            assert!(err(&d).contains("control character"));
            let mut d = sample();
            d.collections[1].payloads[0].target = Target::Raw {
                device: format!("/dev/{bad}"),
            };
            assert!(err(&d).contains("control character"));
            let mut d = sample();
            d.hardware_compatibility.push(bad.into());
            assert!(err(&d).contains("control character"));
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        let mut d = sample();
        d.collections[0].bootenv.push(("a=b".into(), "1".into()));
        assert!(err(&d).contains("contains '='"));
        let mut d = sample();
        d.collections[0].bootenv.push(("a b".into(), "1".into()));
        assert!(err(&d).contains("printable ASCII"));
        let mut d = sample();
        d.collections[0]
            .bootenv
            .push(("bootcount".into(), "1".into()));
        assert!(err(&d).contains("set twice"));
        for (set, mode) in [
            ("1stable", "copy1"),
            ("st.able", "copy1"),
            ("stable", "co py"),
            ("images", "copy1"),
            ("stable", "bootenv"),
        ] {
            let mut d = sample();
            d.collections[0].set = set.into();
            d.collections[0].mode = mode.into();
            assert!(
                err(&d).contains("setting name") || err(&d).contains("collides"),
                "{set}.{mode}"
            );
        }
        let mut d = sample();
        d.collections[1].mode = "copy1".into();
        assert!(err(&d).contains("appears twice"));
        let mut d = sample();
        d.collections[0].slot = "c".into();
        assert!(err(&d).contains("slot must be"));
        let mut d = sample();
        d.version = "1.0 beta".into();
        assert!(err(&d).contains("version"));
        let mut d = sample();
        d.hardware_compatibility.clear();
        assert!(err(&d).contains("hardware-compatibility is empty"));
    }

    #[test]
    fn unsafe_targets_are_rejected() {
        let mut d = sample();
        d.collections[1].payloads[0].target = Target::Raw {
            device: format!("/dev/{}", "x".repeat(251)),
        };
        assert!(err(&d).contains("crops"));
        let mut d = sample();
        d.collections[1].payloads[0].target = Target::File {
            path: "boot/x".into(),
        };
        assert!(err(&d).contains("absolute"));
        let mut d = sample();
        d.collections[1].payloads[0].target = Target::File {
            path: "/boot/../etc/x".into(),
        };
        assert!(err(&d).contains("'..'"));
        let mut d = sample();
        d.collections[1].payloads[0].filename = "sw-description".into();
        assert!(err(&d).contains("reserved"));
        let mut d = sample();
        d.collections[1].payloads[0].filename = "rootfs-a.img".into();
        // The same member may back two collections only if it is the same.
        d.to_libconfig().unwrap();
        d.collections[1].payloads[0].sha256 = [1; 32];
        assert!(err(&d).contains("different sha256"), "{}", err(&d));
        let mut d = sample();
        let p = d.collections[1].payloads[0].clone();
        d.collections[1].payloads.push(p);
        assert!(err(&d).contains("listed twice"));
    }

    #[test]
    fn parser_survives_truncation() {
        let text = sample().to_libconfig().unwrap();
        // Everything short of the final "};" is incomplete.
        for (i, _) in text.char_indices().filter(|&(i, _)| i < text.len() - 2) {
            assert!(SwDescription::parse(&text[..i]).is_err(), "prefix {i}");
        }
        assert!(SwDescription::parse("software = { version = \"é\u{1}").is_err());
    }

    /// Deep nesting is an error, not a stack overflow (which aborts).
    #[test]
    fn parser_bounds_nesting() {
        for open in ["[", "(", "{ a = "] {
            let text = format!("software = {};", open.repeat(100_000));
            let e = format!("{:#}", SwDescription::parse(&text).unwrap_err());
            assert!(e.contains("nested more than 16 levels deep"), "{e}");
        }
        // What we generate is well inside the bound.
        SwDescription::parse(&sample().to_libconfig().unwrap()).unwrap();
    }

    /// Defect 8: strings from an untrusted sw-description reach the error
    /// text only escaped: a terminal escape is refused by the parser and
    /// shown escaped; a bidi override, which is not a control character,
    /// is accepted by the parser and still escaped in every message.
    #[test]
    fn untrusted_strings_are_escaped_in_errors() {
        let text = sample().to_libconfig().unwrap();
        let cases = [
            (
                text.replacen("type = \"raw\"", "type = \"r\u{202e}aw\u{1b}[2J\"", 1),
                "control character '\\u{1b}' in a string",
            ),
            (
                text.replacen("type = \"raw\"", "type = \"r\u{202e}aw\"", 1),
                "unsupported type \"r\\u{202e}aw\"",
            ),
            (
                text.replacen(
                    "filename = \"rootfs-a.img\"",
                    "filename = \"x\u{202e}gmi.exe\"",
                    1,
                ),
                "cpio entry name \"x\\u{202e}gmi.exe\" may only contain",
            ),
            (
                text.replacen(
                    "filename = \"rootfs-a.img\";\n\t\t\t\t\ttype = \"raw\"",
                    "filename = \"x\u{202e}gmi.exe\";\n\t\t\t\t\ttype = \"ubivol\"",
                    1,
                ),
                "image x\\u{202e}gmi.exe: unsupported type \"ubivol\"",
            ),
            (
                text.replacen("compressed = \"zstd\"", "compressed = \"\u{2066}z\"", 1),
                "unsupported compressed = \"\\u{2066}z\"",
            ),
            (
                text.replacen("version = \"1.2.3\"", "version = \"1.\u{202e}3\"", 1),
                "version \"1.\\u{202e}3\" must be",
            ),
            (
                text.replacen(
                    "slotsmith-slot = \"a\"",
                    "slotsmith-slot = \"\u{200b}a\"",
                    1,
                ),
                "not \"\\u{200b}a\"",
            ),
        ];
        for (t, want) in cases {
            assert_ne!(t, text, "{want}");
            let e = format!("{:#}", SwDescription::parse(&t).unwrap_err());
            assert!(e.contains(want), "want {want:?} in {e:?}");
            assert!(
                !e.chars().any(|c| c == '\u{1b}'
                    || c == '\u{202e}'
                    || c == '\u{2066}'
                    || c == '\u{200b}'),
                "{e:?}"
            );
        }
    }

    #[test]
    fn parser_is_strict() {
        let text = sample().to_libconfig().unwrap();
        for (from, to, msg) in [
            (
                "size = 4096;",
                "size = 4096; x-extra = 1;",
                "unexpected key x-extra",
            ),
            ("type = \"raw\"", "type = \"ubivol\"", "unsupported type"),
            (
                "installed-directly = true",
                "installed-directly = false",
                "installed-directly",
            ),
            (
                "version = \"1.2.3\";",
                "version = \"1.2.3\"; version = \"2\";",
                "duplicate key version",
            ),
            ("\"1.0\"", "\"1\\n0\"", "unsupported escape"),
            ("sha256 = \"ab", "sha256 = \"AB", "lower-case hex"),
            ("software =", "# c\nsoftware =", "expected a setting name"),
        ] {
            let t = text.replacen(from, to, 1);
            assert_ne!(t, text, "{from}");
            let e = format!("{:#}", SwDescription::parse(&t).unwrap_err());
            assert!(e.contains(msg), "{from} -> {e}");
        }
        assert!(SwDescription::parse(&text.replacen(
            "slotsmith-slot = \"a\";",
            "slotsmith-slot = \"a\nb\";",
            1
        ))
        .is_err());
    }
}
