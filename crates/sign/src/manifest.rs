//! The per-slot boot manifest: what the device checks before it boots.
//!
//! One manifest per A/B slot names the kernel, initrd and dtb (path,
//! sha256, size), the kernel command line, the dm-verity parameters of the
//! root filesystem (root hash, salt, geometry) and the partition UUIDs.
//! The release key signs the exact manifest bytes with pure Ed25519; the
//! initramfs verifies that signature, then trusts these values to map the
//! verity device. So every value a device acts on is in here, and nothing
//! outside the signed bytes is trusted.
//!
//! The format is a small hand-written text document rather than JSON or
//! YAML because it is the heart of the trust chain and must be parsed on
//! the device, possibly by a different implementation (busybox shell,
//! C in a bootloader). It is:
//!
//! - domain-separated: the first line `slotsmith-boot-manifest v2` (or
//!   `v1`) ensures a signature over a manifest can never be mistaken for a
//!   signature over some other document signed with the same key, and
//!   versions the format;
//! - canonical: exactly one byte string represents a given [`Manifest`].
//!   [`Manifest::parse`] is strict (fixed key order, LF only, no trailing
//!   whitespace, no duplicates, no unknown keys, printable ASCII only,
//!   lowercase hex of exact length, decimal without leading zeros, final
//!   newline, 64 KiB limit), so that `to_bytes(parse(b)) == b` for every
//!   accepted `b`. Strictness removes parser differentials: with duplicate
//!   keys, for example, one parser might take the first value and another
//!   the last, and a signed document would mean two different things.
//!
//! ```text
//! slotsmith-boot-manifest v2
//! image demo
//! version 1.0.0
//! security-version 3
//! slot a
//! golden-slots a b                                   (v2 only)
//! kernel /a/vmlinuz sha256=<64 hex> size=<n>
//! initrd /a/initrd.img sha256=<64 hex> size=<n>      (optional)
//! dtb /a/board.dtb sha256=<64 hex> size=<n>          (optional)
//! cmdline <kernel command line, printable ASCII>
//! verity-root-hash <64 hex>
//! verity-salt <64 hex>
//! verity-data-blocks <n>
//! verity-hash-start-block <n>
//! verity-block-size 4096
//! verity-hash sha256
//! root-partition-uuid <lowercase uuid>
//! verity-partition-uuid <lowercase uuid>
//! ```
//!
//! Format v2 adds one line, `golden-slots`: the slots the golden disk image
//! of this build fills, in ascending order, the same in every slot's
//! manifest. It exists so that `verify` can tell a slot the build left
//! empty from a slot whose manifest an attacker deleted (issue 8, defect
//! 11): the line is signed, so it cannot be removed or edited without the
//! signature failing, and a golden image always carries at least one
//! manifest (slot A's). The format version changes with it, rather than
//! the line being optional in v1, so that a reader can see from the first
//! line whether the record must be there: a v1 reader refuses a v2
//! manifest by its version ("unsupported manifest format `v2`") instead of
//! by an unknown key, and this reader still accepts v1 manifests, reporting
//! [`Manifest::golden_slots`] as `None` (no record). A v1 manifest never
//! has the line and a v2 manifest always has it, so each manifest still
//! has exactly one encoding.

use crate::signer::{check_signature, Signer};
use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::VerifyingKey;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use uuid::Uuid;

/// First line of a v1 manifest (no `golden-slots` record): domain
/// separation and format version.
pub const MAGIC: &str = "slotsmith-boot-manifest v1";
/// First line of a v2 manifest, which has the `golden-slots` record.
pub const MAGIC_V2: &str = "slotsmith-boot-manifest v2";
/// Largest manifest accepted or produced, in bytes. Real manifests are well
/// under 1 KiB; the bound keeps a device-side parser's memory use fixed.
pub const MAX_MANIFEST_SIZE: usize = 64 * 1024;
/// The dm-verity data and hash block size; the only one v1 supports.
pub const VERITY_BLOCK_SIZE: u32 = 4096;
/// The dm-verity hash algorithm; the only one v1 supports.
pub const VERITY_HASH: &str = "sha256";

/// Keys in the only order they may appear, after the magic line. Used to
/// tell "out of order" and "duplicate" apart from "unknown".
const KEYS: [&str; 17] = [
    "image",
    "version",
    "security-version",
    "slot",
    "golden-slots",
    "kernel",
    "initrd",
    "dtb",
    "cmdline",
    "verity-root-hash",
    "verity-salt",
    "verity-data-blocks",
    "verity-hash-start-block",
    "verity-block-size",
    "verity-hash",
    "root-partition-uuid",
    "verity-partition-uuid",
];

/// A file the bootloader or initramfs loads, pinned by hash and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Absolute path on the boot partition, e.g. `/a/vmlinuz`.
    pub path: String,
    /// sha256 of the file's contents.
    pub sha256: [u8; 32],
    /// Size in bytes; checked before hashing so a huge file is refused early.
    pub size: u64,
}

/// The contents of one slot's boot manifest. See the module documentation
/// for the byte format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Image name (printable ASCII, no spaces).
    pub image: String,
    /// Human-facing release version (printable ASCII, no spaces).
    pub version: String,
    /// Monotonic anti-rollback counter: a device refuses a manifest whose
    /// security version is lower than the highest it has booted.
    pub security_version: u64,
    /// Slot name, e.g. `a` or `b` (printable ASCII, no spaces). Signed so
    /// that a manifest for slot A cannot be replayed onto slot B.
    pub slot: String,
    /// Format v2: the slots the golden disk image of this build fills
    /// (ascending, unique tokens such as `a` and `b`), signed so that a
    /// deleted manifest cannot pass for a slot built empty. `None` is a
    /// v1 manifest, which has no such record.
    pub golden_slots: Option<Vec<String>>,
    pub kernel: FileRef,
    pub initrd: Option<FileRef>,
    pub dtb: Option<FileRef>,
    /// Kernel command line: non-empty printable ASCII (0x20..=0x7e), no
    /// leading or trailing space.
    pub cmdline: String,
    pub verity_root_hash: [u8; 32],
    pub verity_salt: [u8; 32],
    /// Number of 4096-byte data blocks covered by the hash tree.
    pub verity_data_blocks: u64,
    /// Block offset of the verity superblock in the hash device.
    pub verity_hash_start_block: u64,
    pub root_partition_uuid: Uuid,
    pub verity_partition_uuid: Uuid,
}

impl Manifest {
    /// The canonical bytes of this manifest, after checking every field can
    /// be represented (so that `parse(to_bytes(m)) == m` always holds).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let field = |key: &str, check: fn(&str) -> Result<(), String>, value: &str| {
            check(value).map_err(|why| anyhow!("invalid manifest field {key}: {why}"))
        };
        field("image", check_token, &self.image)?;
        field("version", check_token, &self.version)?;
        field("slot", check_token, &self.slot)?;
        if let Some(golden) = &self.golden_slots {
            check_golden_slots(golden)
                .map_err(|why| anyhow!("invalid manifest field golden-slots: {why}"))?;
        }
        field("kernel path", check_path, &self.kernel.path)?;
        if let Some(initrd) = &self.initrd {
            field("initrd path", check_path, &initrd.path)?;
        }
        if let Some(dtb) = &self.dtb {
            field("dtb path", check_path, &dtb.path)?;
        }
        field("cmdline", check_cmdline, &self.cmdline)?;

        // `write!` into a String cannot fail; the results are discarded
        // through `let _` rather than unwrapped so there is no panic path.
        let mut out = String::with_capacity(1024);
        let magic = if self.golden_slots.is_some() {
            MAGIC_V2
        } else {
            MAGIC
        };
        let _ = writeln!(out, "{magic}");
        let _ = writeln!(out, "image {}", self.image);
        let _ = writeln!(out, "version {}", self.version);
        let _ = writeln!(out, "security-version {}", self.security_version);
        let _ = writeln!(out, "slot {}", self.slot);
        if let Some(golden) = &self.golden_slots {
            let _ = writeln!(out, "golden-slots {}", golden.join(" "));
        }
        let _ = writeln!(out, "kernel {}", FileLine(&self.kernel));
        if let Some(initrd) = &self.initrd {
            let _ = writeln!(out, "initrd {}", FileLine(initrd));
        }
        if let Some(dtb) = &self.dtb {
            let _ = writeln!(out, "dtb {}", FileLine(dtb));
        }
        let _ = writeln!(out, "cmdline {}", self.cmdline);
        let _ = writeln!(
            out,
            "verity-root-hash {}",
            hex::encode(self.verity_root_hash)
        );
        let _ = writeln!(out, "verity-salt {}", hex::encode(self.verity_salt));
        let _ = writeln!(out, "verity-data-blocks {}", self.verity_data_blocks);
        let _ = writeln!(
            out,
            "verity-hash-start-block {}",
            self.verity_hash_start_block
        );
        let _ = writeln!(out, "verity-block-size {VERITY_BLOCK_SIZE}");
        let _ = writeln!(out, "verity-hash {VERITY_HASH}");
        let _ = writeln!(
            out,
            "root-partition-uuid {}",
            self.root_partition_uuid.hyphenated()
        );
        let _ = writeln!(
            out,
            "verity-partition-uuid {}",
            self.verity_partition_uuid.hyphenated()
        );
        if out.len() > MAX_MANIFEST_SIZE {
            bail!(
                "manifest would be {} bytes, over the {MAX_MANIFEST_SIZE}-byte limit",
                out.len()
            );
        }
        Ok(out.into_bytes())
    }

    /// Parses canonical manifest bytes, rejecting anything [`Self::to_bytes`]
    /// would not have produced. Errors read
    /// `manifest is malformed: line N: …`.
    ///
    /// On a device, call [`verify_manifest`] instead: it checks the
    /// signature before any of the bytes are parsed.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        parse_strict(bytes).map_err(|err| anyhow!("manifest is malformed: {err}"))
    }
}

/// Signs `m` with `signer`, returning the exact manifest bytes and the raw
/// 64-byte signature to ship next to them (`manifest` and `manifest.sig`).
///
/// The signature is verified against the signer's public key before it is
/// returned, so a broken or misconfigured signer fails the build instead of
/// producing an image the device will refuse to boot.
pub fn sign_manifest(m: &Manifest, signer: &dyn Signer) -> Result<(Vec<u8>, [u8; 64])> {
    let bytes = m.to_bytes()?;
    let sig = signer
        .sign(&bytes)
        .with_context(|| format!("cannot sign the boot manifest with {}", signer.describe()))?;
    check_signature(&signer.public_key(), &bytes, &sig).with_context(|| {
        format!(
            "signer {} returned a signature that does not verify",
            signer.describe()
        )
    })?;
    Ok((bytes, sig))
}

/// Verifies `sig` over `bytes` with `key`, then strictly parses the bytes.
///
/// Security-critical ordering: the signature is checked first (with
/// `verify_strict`) so that no unauthenticated byte ever reaches the
/// parser; the parser then still rejects non-canonical input, so that even
/// a signed document is only accepted if it means exactly one thing. The
/// two failure classes read differently: "manifest signature does not
/// verify …" versus "manifest is malformed: line N: …".
pub fn verify_manifest(bytes: &[u8], sig: &[u8], key: &VerifyingKey) -> Result<Manifest> {
    check_signature(key, bytes, sig).context("manifest signature does not verify")?;
    Manifest::parse(bytes)
}

/// Entry point of the `manifest_parse` fuzz target and its stable twin
/// (`tests/fuzz.rs`). Checks, beyond "no panic": an accepted manifest
/// re-encodes to exactly the input (canonical), rejections print no raw
/// control character, and the signature check agrees with the parser: the
/// input signed with a test key verifies exactly when it parses, and a
/// damaged or truncated signature never verifies.
#[doc(hidden)]
pub fn fuzz_parse(input: &[u8]) {
    let parsed = Manifest::parse(input);
    match &parsed {
        Ok(m) => assert_eq!(
            m.to_bytes().ok().as_deref(),
            Some(input),
            "a manifest parsed but does not re-encode to its bytes"
        ),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                !text.chars().any(|c| c.is_control() || !c.is_ascii()),
                "unescaped text in {text:?}"
            );
        }
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let public = key.verifying_key();
    let sig = ed25519_dalek::Signer::sign(&key, input).to_bytes();
    let verified = verify_manifest(input, &sig, &public);
    assert_eq!(
        verified.as_ref().ok(),
        parsed.as_ref().ok(),
        "the signature check and the parser disagree"
    );
    let mut bad = sig;
    bad[input.len() % 64] ^= 1 << (input.len() % 8);
    assert!(verify_manifest(input, &bad, &public).is_err());
    let short = &input[..input.len().min(64)];
    if short.len() != 64 || short != sig {
        assert!(verify_manifest(input, short, &public).is_err());
    }
}

/// Formats the value part of a kernel/initrd/dtb line.
struct FileLine<'a>(&'a FileRef);

impl fmt::Display for FileLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sha256={} size={}",
            self.0.path,
            hex::encode(self.0.sha256),
            self.0.size
        )
    }
}

/// A parse error, optionally tied to a 1-based line number.
struct Malformed {
    line: Option<usize>,
    msg: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

fn at(line: usize, msg: impl Into<String>) -> Malformed {
    Malformed {
        line: Some(line),
        msg: msg.into(),
    }
}

/// Walks the lines in the one permitted order.
struct Reader<'a> {
    lines: Vec<&'a str>,
    /// Index into `lines` of the next line to consume.
    pos: usize,
    /// Keys consumed so far, to report duplicates as duplicates.
    seen: HashSet<&'a str>,
}

impl<'a> Reader<'a> {
    /// 1-based line number of the next line.
    fn lineno(&self) -> usize {
        self.pos + 1
    }

    fn peek_key(&self) -> Option<&'a str> {
        self.lines
            .get(self.pos)
            .map(|line| line.split_once(' ').map_or(*line, |(key, _)| key))
    }

    /// Consumes the next line, which must be `key value`, and returns the
    /// line number and value.
    fn take(&mut self, key: &str) -> Result<(usize, &'a str), Malformed> {
        let lineno = self.lineno();
        let Some(&line) = self.lines.get(self.pos) else {
            return Err(at(
                lineno,
                format!("expected `{key}`, found the end of the manifest"),
            ));
        };
        let (found, value) = line.split_once(' ').unwrap_or((line, ""));
        if found != key {
            return Err(self.misplaced(lineno, found, &format!("`{key}`")));
        }
        if value.is_empty() {
            return Err(at(lineno, format!("`{key}` has no value")));
        }
        self.pos += 1;
        self.seen.insert(found);
        Ok((lineno, value))
    }

    /// Explains why key `found` cannot be at this line.
    fn misplaced(&self, lineno: usize, found: &str, expected: &str) -> Malformed {
        if self.seen.contains(found) {
            at(lineno, format!("duplicate `{found}` line"))
        } else if KEYS.contains(&found) {
            at(
                lineno,
                format!("`{found}` is out of order: expected {expected} here"),
            )
        } else {
            at(
                lineno,
                format!(
                    "unknown key `{}` (expected {expected})",
                    found.escape_debug()
                ),
            )
        }
    }
}

/// The strict parser. Every rejection names the offending line.
fn parse_strict(bytes: &[u8]) -> Result<Manifest, Malformed> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(Malformed {
            line: None,
            msg: format!(
                "{} bytes, over the {MAX_MANIFEST_SIZE}-byte limit",
                bytes.len()
            ),
        });
    }
    if bytes.is_empty() {
        return Err(Malformed {
            line: None,
            msg: "empty".into(),
        });
    }

    // Byte-level rules first, with the line they occur on: LF only, and
    // nothing but printable ASCII. This also makes the text valid UTF-8.
    let mut line = 1;
    let mut col = 1;
    for &b in bytes {
        match b {
            b'\n' => {
                line += 1;
                col = 0;
            }
            b'\r' => {
                return Err(at(
                    line,
                    "carriage return: manifests use LF line endings only",
                ))
            }
            0x20..=0x7e => {}
            _ => {
                return Err(at(
                    line,
                    format!("byte 0x{b:02x} at column {col} is not printable ASCII"),
                ))
            }
        }
        col += 1;
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(at(line, "missing final newline"));
    };
    let text = std::str::from_utf8(body).map_err(|_| Malformed {
        line: None,
        msg: "not UTF-8".into(),
    })?;

    let lines: Vec<&str> = text.split('\n').collect();
    for (i, l) in lines.iter().enumerate() {
        if l.is_empty() {
            return Err(at(i + 1, "empty line"));
        }
        if l.ends_with(' ') {
            return Err(at(i + 1, "trailing whitespace"));
        }
        if l.starts_with(' ') {
            return Err(at(i + 1, "leading whitespace"));
        }
    }

    let v2 = lines[0] == MAGIC_V2;
    if lines[0] != MAGIC && !v2 {
        return Err(match lines[0].strip_prefix("slotsmith-boot-manifest ") {
            Some(version) => at(
                1,
                format!(
                    "unsupported manifest format `{}` (this build reads `v1` and `v2`)",
                    version.escape_debug()
                ),
            ),
            None => at(
                1,
                format!("not a slotsmith boot manifest: expected `{MAGIC}`"),
            ),
        });
    }

    let mut r = Reader {
        lines,
        pos: 1,
        seen: HashSet::new(),
    };
    let image = field(&mut r, "image", |v| check_token(v).map(|()| v.to_owned()))?;
    let version = field(&mut r, "version", |v| check_token(v).map(|()| v.to_owned()))?;
    let security_version = field(&mut r, "security-version", parse_u64)?;
    let slot = field(&mut r, "slot", |v| check_token(v).map(|()| v.to_owned()))?;
    let golden_slots = if v2 {
        Some(field(&mut r, "golden-slots", parse_golden_slots)?)
    } else {
        if r.peek_key() == Some("golden-slots") {
            return Err(at(
                r.lineno(),
                format!("`golden-slots` needs format v2, but line 1 is `{MAGIC}`"),
            ));
        }
        None
    };
    let kernel = field(&mut r, "kernel", parse_file)?;
    let initrd = match r.peek_key() {
        Some("initrd") => Some(field(&mut r, "initrd", parse_file)?),
        _ => None,
    };
    let dtb = match r.peek_key() {
        Some("dtb") => Some(field(&mut r, "dtb", parse_file)?),
        _ => None,
    };
    let cmdline = field(&mut r, "cmdline", |v| {
        check_cmdline(v).map(|()| v.to_owned())
    })?;
    let verity_root_hash = field(&mut r, "verity-root-hash", parse_hex32)?;
    let verity_salt = field(&mut r, "verity-salt", parse_hex32)?;
    let verity_data_blocks = field(&mut r, "verity-data-blocks", parse_u64)?;
    let verity_hash_start_block = field(&mut r, "verity-hash-start-block", parse_u64)?;
    field(&mut r, "verity-block-size", |v| {
        parse_u64(v).and_then(|n| {
            if n == u64::from(VERITY_BLOCK_SIZE) {
                Ok(())
            } else {
                Err(format!(
                    "must be {VERITY_BLOCK_SIZE}, the only block size of format v1"
                ))
            }
        })
    })?;
    field(&mut r, "verity-hash", |v| {
        if v == VERITY_HASH {
            Ok(())
        } else {
            Err(format!(
                "must be `{VERITY_HASH}`, the only hash of format v1"
            ))
        }
    })?;
    let root_partition_uuid = field(&mut r, "root-partition-uuid", parse_uuid)?;
    let verity_partition_uuid = field(&mut r, "verity-partition-uuid", parse_uuid)?;

    if let Some(found) = r.peek_key() {
        return Err(r.misplaced(r.lineno(), found, "the end of the manifest"));
    }

    Ok(Manifest {
        image,
        version,
        security_version,
        slot,
        golden_slots,
        kernel,
        initrd,
        dtb,
        cmdline,
        verity_root_hash,
        verity_salt,
        verity_data_blocks,
        verity_hash_start_block,
        root_partition_uuid,
        verity_partition_uuid,
    })
}

/// Takes the `key` line and converts its value, attaching the line number
/// and key to any conversion error.
fn field<T>(
    r: &mut Reader<'_>,
    key: &str,
    convert: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, Malformed> {
    let (lineno, value) = r.take(key)?;
    convert(value).map_err(|why| at(lineno, format!("{key}: {why}")))
}

/// Image, version and slot names: non-empty printable ASCII without spaces,
/// so a line splits unambiguously and nothing can hide in a value.
fn check_token(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if let Some(b) = v.bytes().find(|&b| !(0x21..=0x7e).contains(&b)) {
        return Err(if b == b' ' {
            "contains a space".into()
        } else {
            format!("contains byte 0x{b:02x}: only printable ASCII without spaces is allowed")
        });
    }
    Ok(())
}

/// The `golden-slots` list: at least one slot, each a token, strictly
/// ascending (which also makes them unique), so the line is canonical.
fn check_golden_slots(slots: &[String]) -> Result<(), String> {
    if slots.is_empty() {
        return Err("lists no slot".into());
    }
    for s in slots {
        check_token(s).map_err(|why| format!("slot name {why}"))?;
    }
    if let Some(w) = slots.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!(
            "slots must be unique and in ascending order, but {} comes before {}",
            w[0], w[1]
        ));
    }
    Ok(())
}

/// `golden-slots` value: slot names separated by single spaces.
fn parse_golden_slots(v: &str) -> Result<Vec<String>, String> {
    let slots: Vec<String> = v.split(' ').map(str::to_owned).collect();
    check_golden_slots(&slots)?;
    Ok(slots)
}

/// Boot-partition paths: tokens that are absolute.
fn check_path(v: &str) -> Result<(), String> {
    check_token(v).map_err(|why| format!("path {why}"))?;
    if !v.starts_with('/') {
        return Err(format!("path {v:?} is not absolute"));
    }
    Ok(())
}

/// The kernel command line may contain spaces but nothing else outside
/// printable ASCII: control characters could truncate it in a C consumer
/// or smuggle a second line into the manifest.
fn check_cmdline(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if let Some(b) = v.bytes().find(|&b| !(0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "contains byte 0x{b:02x}: only printable ASCII is allowed"
        ));
    }
    if v.starts_with(' ') || v.ends_with(' ') {
        return Err("must not start or end with a space".into());
    }
    Ok(())
}

/// Canonical decimal: digits only (no sign, which `u64::from_str` would
/// accept), no leading zeros, fits in 64 bits.
fn parse_u64(v: &str) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{:?} is not a decimal number", v));
    }
    if v.len() > 1 && v.starts_with('0') {
        return Err(format!("{v:?} has a leading zero"));
    }
    v.parse()
        .map_err(|_| format!("{v} does not fit in 64 bits"))
}

/// Exactly 64 lowercase hex digits (`hex::decode` alone would also accept
/// uppercase, giving two encodings of one value).
fn parse_hex32(v: &str) -> Result<[u8; 32], String> {
    if v.len() != 64 {
        return Err(format!(
            "must be 64 lowercase hex digits, found {} characters",
            v.len()
        ));
    }
    if !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("must be 64 lowercase hex digits".into());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(v, &mut out).map_err(|err| format!("bad hex: {err}"))?;
    Ok(out)
}

/// Lowercase hyphenated UUID only; `Uuid::parse_str` also accepts simple,
/// braced, URN and uppercase forms, which would break canonicality.
fn parse_uuid(v: &str) -> Result<Uuid, String> {
    let uuid = Uuid::parse_str(v).map_err(|_| format!("{v:?} is not a UUID"))?;
    if uuid.hyphenated().to_string() != v {
        return Err(format!(
            "{v:?} is not in canonical form (lowercase, hyphenated: {})",
            uuid.hyphenated()
        ));
    }
    Ok(uuid)
}

/// `<path> sha256=<64 hex> size=<n>`, single spaces, fixed order.
fn parse_file(v: &str) -> Result<FileRef, String> {
    let parts: Vec<&str> = v.split(' ').collect();
    let [path, sha, size] = parts[..] else {
        return Err("expected `<path> sha256=<64 hex> size=<bytes>`".into());
    };
    check_path(path)?;
    let sha = sha
        .strip_prefix("sha256=")
        .ok_or("second field must be `sha256=<64 hex>`")?;
    let size = size
        .strip_prefix("size=")
        .ok_or("third field must be `size=<bytes>`")?;
    Ok(FileRef {
        path: path.to_owned(),
        sha256: parse_hex32(sha).map_err(|why| format!("sha256 {why}"))?,
        size: parse_u64(size).map_err(|why| format!("size {why}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::KeySigner;
    use ed25519_dalek::SigningKey;

    pub(crate) fn sample(with_optional: bool) -> Manifest {
        Manifest {
            image: "demo".into(),
            version: "1.0.0".into(),
            security_version: 3,
            slot: "a".into(),
            golden_slots: None,
            kernel: FileRef {
                path: "/a/vmlinuz".into(),
                sha256: [0x11; 32],
                size: 8_123_456,
            },
            initrd: with_optional.then(|| FileRef {
                path: "/a/initrd.img".into(),
                sha256: [0x22; 32],
                size: 1_048_576,
            }),
            dtb: with_optional.then(|| FileRef {
                path: "/a/board.dtb".into(),
                sha256: [0xab; 32],
                size: 0,
            }),
            cmdline: "console=ttyS0 ro quiet".into(),
            verity_root_hash: [0xcd; 32],
            verity_salt: [0x01; 32],
            verity_data_blocks: 65536,
            verity_hash_start_block: 1,
            root_partition_uuid: Uuid::from_bytes([0xA1; 16]),
            verity_partition_uuid: Uuid::from_bytes([0x0b; 16]),
        }
    }

    fn text(with_optional: bool) -> String {
        String::from_utf8(sample(with_optional).to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn exact_bytes_are_pinned() {
        let h = |b: &str| b.repeat(32);
        let want = format!(
            "slotsmith-boot-manifest v1\n\
             image demo\n\
             version 1.0.0\n\
             security-version 3\n\
             slot a\n\
             kernel /a/vmlinuz sha256={} size=8123456\n\
             initrd /a/initrd.img sha256={} size=1048576\n\
             dtb /a/board.dtb sha256={} size=0\n\
             cmdline console=ttyS0 ro quiet\n\
             verity-root-hash {}\n\
             verity-salt {}\n\
             verity-data-blocks 65536\n\
             verity-hash-start-block 1\n\
             verity-block-size 4096\n\
             verity-hash sha256\n\
             root-partition-uuid a1a1a1a1-a1a1-a1a1-a1a1-a1a1a1a1a1a1\n\
             verity-partition-uuid 0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b\n",
            h("11"),
            h("22"),
            h("ab"),
            h("cd"),
            h("01")
        );
        assert_eq!(text(true), want);
    }

    #[test]
    fn round_trips_with_and_without_optional_files() {
        for with in [false, true] {
            let m = sample(with);
            let bytes = m.to_bytes().unwrap();
            assert_eq!(Manifest::parse(&bytes).unwrap(), m);
            assert_eq!(Manifest::parse(&bytes).unwrap().to_bytes().unwrap(), bytes);
        }
        let mut m = sample(false);
        m.dtb = sample(true).dtb;
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        m.security_version = u64::MAX;
        m.verity_data_blocks = 0;
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
    }

    /// Parses `doc` and returns the error text, failing if it parsed.
    fn reject(doc: &str) -> String {
        match Manifest::parse(doc.as_bytes()) {
            Ok(_) => panic!("accepted:\n{doc}"),
            Err(err) => err.to_string(),
        }
    }

    fn replace_line(doc: &str, key: &str, new: &str) -> String {
        let mut hit = false;
        let out: Vec<String> = doc
            .split_inclusive('\n')
            .map(|l| {
                if l.starts_with(&format!("{key} ")) && !hit {
                    hit = true;
                    new.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(hit, "no {key} line");
        out.concat()
    }

    #[test]
    fn each_strictness_rule_is_enforced_with_a_line_number() {
        let good = text(true);
        let check = |name: &str, doc: String, want: &str| {
            let got = reject(&doc);
            assert!(
                got.starts_with(&format!("manifest is malformed: {want}")),
                "{name}: got {got:?}, want prefix {want:?}"
            );
        };
        check(
            "crlf",
            good.replacen("slot a\n", "slot a\r\n", 1),
            "line 5: carriage return",
        );
        check(
            "trailing space",
            good.replacen("slot a\n", "slot a \n", 1),
            "line 5: trailing whitespace",
        );
        check(
            "leading space",
            good.replacen("slot a\n", " slot a\n", 1),
            "line 5: leading whitespace",
        );
        check(
            "tab",
            good.replacen("slot a\n", "slot\ta\n", 1),
            "line 5: byte 0x09 at column 5 is not printable ASCII",
        );
        check(
            "nul",
            good.replacen("image demo", "image de\0mo", 1),
            "line 2: byte 0x00",
        );
        check(
            "non-ascii",
            good.replacen("image demo", "image démo", 1),
            "line 2: byte 0xc3",
        );
        check(
            "del",
            good.replacen("ro quiet", "ro\x7fquiet", 1),
            "line 9: byte 0x7f",
        );
        check(
            "empty line",
            good.replacen("slot a\n", "slot a\n\n", 1),
            "line 6: empty line",
        );
        check(
            "no final newline",
            good.strip_suffix('\n').unwrap().to_owned(),
            "line 17: missing final newline",
        );
        check(
            "wrong magic",
            good.replacen(MAGIC, "abimg-manifest-v1", 1),
            "line 1: not a slotsmith boot manifest",
        );
        check(
            "future version",
            good.replacen(MAGIC, "slotsmith-boot-manifest v3", 1),
            "line 1: unsupported manifest format `v3` (this build reads `v1` and `v2`)",
        );
        check(
            "duplicate",
            good.replacen("slot a\n", "slot a\nslot a\n", 1),
            "line 6: duplicate `slot` line",
        );
        check(
            "duplicate last",
            format!("{good}verity-partition-uuid 0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b\n"),
            "line 18: duplicate `verity-partition-uuid` line",
        );
        check(
            "unknown key",
            good.replacen("slot a\n", "slot a\nowner mallory\n", 1),
            "line 6: unknown key `owner` (expected `kernel`)",
        );
        check(
            "unknown at end",
            format!("{good}extra 1\n"),
            "line 18: unknown key `extra` (expected the end of the manifest)",
        );
        check(
            "out of order",
            good.replacen(
                "image demo\nversion 1.0.0\n",
                "version 1.0.0\nimage demo\n",
                1,
            ),
            "line 2: `version` is out of order: expected `image` here",
        );
        check(
            "dtb before initrd",
            good.replacen(
                &format!(
                    "initrd /a/initrd.img sha256={} size=1048576\n",
                    "22".repeat(32)
                ),
                "",
                1,
            )
            .replacen(
                "cmdline",
                &format!(
                    "initrd /a/initrd.img sha256={} size=1048576\ncmdline",
                    "22".repeat(32)
                ),
                1,
            ),
            "line 8: `initrd` is out of order: expected `cmdline` here",
        );
        check(
            "missing line",
            good.replacen("verity-hash sha256\n", "", 1),
            "line 15: `root-partition-uuid` is out of order: expected `verity-hash` here",
        );
        check(
            "truncated",
            good.replacen(
                "verity-partition-uuid 0b0b0b0b-0b0b-0b0b-0b0b-0b0b0b0b0b0b\n",
                "",
                1,
            ),
            "line 17: expected `verity-partition-uuid`, found the end of the manifest",
        );
        check(
            "no value",
            replace_line(&good, "slot", "slot\n"),
            "line 5: `slot` has no value",
        );
        check(
            "double space",
            replace_line(&good, "image", "image  demo\n"),
            "line 2: image: contains a space",
        );
        check(
            "uppercase hex",
            good.replacen(&"cd".repeat(32), &"CD".repeat(32), 1),
            "line 10: verity-root-hash: must be 64 lowercase hex digits",
        );
        check(
            "short hex",
            good.replacen(&"01".repeat(32), &"01".repeat(31), 1),
            "line 11: verity-salt: must be 64 lowercase hex digits, found 62 characters",
        );
        check(
            "long hex",
            good.replacen(&"01".repeat(32), &"01".repeat(33), 1),
            "line 11: verity-salt: must be 64 lowercase hex digits, found 66 characters",
        );
        check(
            "leading zero",
            replace_line(&good, "security-version", "security-version 03\n"),
            "line 4: security-version: \"03\" has a leading zero",
        );
        check(
            "plus sign",
            replace_line(&good, "security-version", "security-version +3\n"),
            "line 4: security-version: \"+3\" is not a decimal number",
        );
        check(
            "negative",
            replace_line(&good, "verity-data-blocks", "verity-data-blocks -1\n"),
            "line 12: verity-data-blocks: \"-1\" is not a decimal number",
        );
        check(
            "overflow",
            replace_line(
                &good,
                "verity-data-blocks",
                "verity-data-blocks 18446744073709551616\n",
            ),
            "line 12: verity-data-blocks: 18446744073709551616 does not fit in 64 bits",
        );
        check(
            "block size",
            replace_line(&good, "verity-block-size", "verity-block-size 512\n"),
            "line 14: verity-block-size: must be 4096",
        );
        check(
            "block size zero-padded",
            replace_line(&good, "verity-block-size", "verity-block-size 04096\n"),
            "line 14: verity-block-size: \"04096\" has a leading zero",
        );
        check(
            "hash",
            replace_line(&good, "verity-hash", "verity-hash sha1\n"),
            "line 15: verity-hash: must be `sha256`",
        );
        let root = "a1a1a1a1-a1a1-a1a1-a1a1-a1a1a1a1a1a1";
        let root_err = "line 16: root-partition-uuid";
        check(
            "uppercase uuid",
            good.replacen(root, &root.to_uppercase(), 1),
            &format!(
                "{root_err}: {:?} is not in canonical form",
                root.to_uppercase()
            ),
        );
        check(
            "simple uuid",
            good.replacen(root, &root.replace('-', ""), 1),
            &format!(
                "{root_err}: {:?} is not in canonical form",
                root.replace('-', "")
            ),
        );
        check(
            "braced uuid",
            good.replacen(root, &format!("{{{root}}}"), 1),
            &format!("{root_err}: \"{{{root}}}\" is not in canonical form"),
        );
        check(
            "bad uuid",
            good.replacen("0b0b0b0b-0b0b", "0b0b0b0b-zzzz", 1),
            "line 17: verity-partition-uuid: \"0b0b0b0b-zzzz-0b0b-0b0b-0b0b0b0b0b0b\" is not a UUID",
        );
        check(
            "relative path",
            good.replacen("kernel /a/vmlinuz", "kernel a/vmlinuz", 1),
            "line 6: kernel: path \"a/vmlinuz\" is not absolute",
        );
        check(
            "file missing size",
            good.replacen(" size=8123456", "", 1),
            "line 6: kernel: expected `<path> sha256=<64 hex> size=<bytes>`",
        );
        check(
            "file fields swapped",
            good.replacen(
                &format!("sha256={} size=8123456", "11".repeat(32)),
                &format!("size=8123456 sha256={}", "11".repeat(32)),
                1,
            ),
            "line 6: kernel: second field must be `sha256=<64 hex>`",
        );
        check(
            "file size leading zero",
            good.replacen("size=1048576", "size=01048576", 1),
            "line 7: initrd: size \"01048576\" has a leading zero",
        );
        check(
            "empty cmdline",
            replace_line(&good, "cmdline", "cmdline\n"),
            "line 9: `cmdline` has no value",
        );
    }

    #[test]
    fn size_and_emptiness_limits() {
        assert_eq!(reject(""), "manifest is malformed: empty");
        let big = format!("{MAGIC}\nimage {}\n", "x".repeat(MAX_MANIFEST_SIZE));
        assert!(reject(&big).contains("over the 65536-byte limit"));
        let mut m = sample(true);
        m.cmdline = "x".repeat(MAX_MANIFEST_SIZE);
        let err = m.to_bytes().unwrap_err().to_string();
        assert!(err.contains("over the 65536-byte limit"), "{err}");
    }

    #[test]
    fn to_bytes_refuses_unrepresentable_fields() {
        type Mutation = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|m| m.image = "de mo".into()),
                "invalid manifest field image: contains a space",
            ),
            (
                Box::new(|m| m.image = String::new()),
                "invalid manifest field image: is empty",
            ),
            (
                Box::new(|m| m.version = "1.0\n".into()),
                "invalid manifest field version: contains byte 0x0a",
            ),
            (
                Box::new(|m| m.slot = "ä".into()),
                "invalid manifest field slot: contains byte 0xc3",
            ),
            (
                Box::new(|m| m.kernel.path = "vmlinuz".into()),
                "invalid manifest field kernel path: path \"vmlinuz\" is not absolute",
            ),
            (
                Box::new(|m| m.kernel.path = "/a b".into()),
                "invalid manifest field kernel path: path contains a space",
            ),
            (
                Box::new(|m| m.dtb.as_mut().unwrap().path = String::new()),
                "invalid manifest field dtb path: path is empty",
            ),
            (
                Box::new(|m| m.cmdline = String::new()),
                "invalid manifest field cmdline: is empty",
            ),
            (
                Box::new(|m| m.cmdline = "quiet ".into()),
                "invalid manifest field cmdline: must not start or end with a space",
            ),
            (
                Box::new(|m| m.cmdline = "quiet\nslot b".into()),
                "invalid manifest field cmdline: contains byte 0x0a",
            ),
            (
                Box::new(|m| m.cmdline = "a\tb".into()),
                "invalid manifest field cmdline: contains byte 0x09",
            ),
        ];
        for (mutate, want) in cases {
            let mut m = sample(true);
            mutate(&mut m);
            let err = m.to_bytes().unwrap_err().to_string();
            assert!(err.starts_with(want), "got {err:?}, want {want:?}");
        }
    }

    /// Canonicality, checked exhaustively over single-byte edits of a
    /// valid manifest: every edit is either rejected or re-encodes to the
    /// edited bytes. If two byte strings ever parsed to the same manifest,
    /// one of them would fail the re-encoding check.
    #[test]
    fn every_single_byte_edit_is_rejected_or_canonical() {
        let good = sample(true).to_bytes().unwrap();
        let replacements = [
            b'0', b'9', b'a', b'A', b'f', b'g', b' ', b'\n', b'-', b'=', b'/', 0,
        ];
        let mut accepted = 0;
        let mut check = |doc: &[u8]| {
            if let Ok(m) = Manifest::parse(doc) {
                accepted += 1;
                assert_eq!(m.to_bytes().unwrap(), doc, "non-canonical parse of {doc:?}");
            }
        };
        for i in 0..good.len() {
            for &r in &replacements {
                let mut doc = good.clone();
                doc[i] = r;
                check(&doc);
            }
            let mut doc = good.clone();
            doc.remove(i);
            check(&doc);
            for &r in &replacements {
                let mut doc = good.clone();
                doc.insert(i, r);
                check(&doc);
            }
        }
        // Sanity: the edits do reach accepted documents (hex digits, the
        // image name, numbers), so the canonicality assertion is exercised.
        assert!(accepted > 100, "only {accepted} edits parsed");
    }

    fn v2(golden: &[&str]) -> Manifest {
        Manifest {
            golden_slots: Some(golden.iter().map(|s| s.to_string()).collect()),
            ..sample(true)
        }
    }

    /// Defect 11 (signer side): v2 records the golden image's slots in the
    /// signed bytes, right after `slot`; v1 manifests still parse, without
    /// the record, and each version has one encoding.
    #[test]
    fn golden_slots_are_signed_in_format_v2() {
        let bytes = v2(&["a", "b"]).to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(&format!(
                "{MAGIC_V2}\nimage demo\nversion 1.0.0\nsecurity-version 3\nslot a\n\
                 golden-slots a b\nkernel /a/vmlinuz "
            )),
            "{text}"
        );
        assert_eq!(Manifest::parse(&bytes).unwrap(), v2(&["a", "b"]));
        let only_a = v2(&["a"]).to_bytes().unwrap();
        assert_eq!(
            Manifest::parse(&only_a).unwrap().golden_slots,
            Some(vec!["a".to_string()])
        );
        // v1 is still read, as "no record".
        let v1 = sample(true).to_bytes().unwrap();
        assert!(v1.starts_with(format!("{MAGIC}\n").as_bytes()));
        assert_eq!(Manifest::parse(&v1).unwrap().golden_slots, None);

        let good = text;
        let check = |doc: String, want: &str| {
            let got = reject(&doc);
            assert!(
                got.starts_with(&format!("manifest is malformed: {want}")),
                "got {got:?}, want prefix {want:?}"
            );
        };
        check(
            good.replacen("golden-slots a b\n", "", 1),
            "line 6: `kernel` is out of order: expected `golden-slots` here",
        );
        check(
            good.replacen("golden-slots a b", "golden-slots b a", 1),
            "line 6: golden-slots: slots must be unique and in ascending order, but b comes before a",
        );
        check(
            good.replacen("golden-slots a b", "golden-slots a a", 1),
            "line 6: golden-slots: slots must be unique",
        );
        check(
            good.replacen("golden-slots a b", "golden-slots a  b", 1),
            "line 6: golden-slots: slot name is empty",
        );
        check(
            good.replacen("golden-slots a b", "golden-slots", 1),
            "line 6: `golden-slots` has no value",
        );
        check(
            good.replacen(MAGIC_V2, MAGIC, 1),
            "line 6: `golden-slots` needs format v2, but line 1 is `slotsmith-boot-manifest v1`",
        );
        check(
            good.replacen(
                "slot a\ngolden-slots a b\n",
                "golden-slots a b\nslot a\n",
                1,
            ),
            "line 5: `golden-slots` is out of order: expected `slot` here",
        );
        for bad in [
            vec![],
            vec!["b", "a"],
            vec!["a", "a"],
            vec!["a b"],
            vec![""],
        ] {
            let err = v2(&bad).to_bytes().unwrap_err().to_string();
            assert!(
                err.starts_with("invalid manifest field golden-slots"),
                "{bad:?}: {err}"
            );
        }
    }

    /// The exhaustive canonicality check, on the v2 encoding.
    #[test]
    fn every_single_byte_edit_of_a_v2_manifest_is_rejected_or_canonical() {
        let good = v2(&["a", "b"]).to_bytes().unwrap();
        let mut accepted = 0;
        for i in 0..good.len() {
            for r in [b'a', b'b', b'c', b' ', b'\n', b'1', b'2', 0] {
                for doc in [
                    {
                        let mut d = good.clone();
                        d[i] = r;
                        d
                    },
                    {
                        let mut d = good.clone();
                        d.insert(i, r);
                        d
                    },
                ] {
                    if let Ok(m) = Manifest::parse(&doc) {
                        accepted += 1;
                        assert_eq!(m.to_bytes().unwrap(), doc, "non-canonical parse of {doc:?}");
                    }
                }
            }
            let mut doc = good.clone();
            doc.remove(i);
            if let Ok(m) = Manifest::parse(&doc) {
                assert_eq!(m.to_bytes().unwrap(), doc, "non-canonical parse of {doc:?}");
            }
        }
        assert!(accepted > 100, "only {accepted} edits parsed");
    }

    #[test]
    fn sign_then_verify() {
        let signer = KeySigner::new(SigningKey::from_bytes(&[5; 32]));
        let m = sample(true);
        let (bytes, sig) = sign_manifest(&m, &signer).unwrap();
        assert_eq!(bytes, m.to_bytes().unwrap());
        assert_eq!(
            verify_manifest(&bytes, &sig, &signer.public_key()).unwrap(),
            m
        );
    }

    #[test]
    fn verification_failures_are_told_apart() {
        let signer = KeySigner::new(SigningKey::from_bytes(&[5; 32]));
        let key = signer.public_key();
        let (bytes, sig) = sign_manifest(&sample(false), &signer).unwrap();

        // Any single-byte tamper breaks the signature, and is reported as
        // such rather than as a parse error.
        for i in [0, 30, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let err = verify_manifest(&bad, &sig, &key).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("manifest signature does not verify"),
                "{err:#}"
            );
        }
        let err = verify_manifest(&bytes, &sig[..63], &key).unwrap_err();
        assert!(format!("{err:#}").contains("63 bytes"), "{err:#}");
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert!(verify_manifest(&bytes, &sig, &other).is_err());

        // Correctly signed but non-canonical bytes are still refused, as
        // malformed: the signature is not a licence to be sloppy.
        let sloppy = String::from_utf8(bytes).unwrap().replace('\n', "\r\n");
        let sig = ed25519_dalek::Signer::sign(&SigningKey::from_bytes(&[5; 32]), sloppy.as_bytes())
            .to_bytes();
        let err = verify_manifest(sloppy.as_bytes(), &sig, &key).unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest is malformed: line 1: carriage return: manifests use LF line endings only"
        );
    }

    /// A signer whose key does not match what it claims.
    struct LyingSigner;

    impl Signer for LyingSigner {
        fn public_key(&self) -> VerifyingKey {
            SigningKey::from_bytes(&[1; 32]).verifying_key()
        }
        fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
            Ok(ed25519_dalek::Signer::sign(&SigningKey::from_bytes(&[2; 32]), msg).to_bytes())
        }
        fn describe(&self) -> String {
            "lying test signer".into()
        }
    }

    #[test]
    fn sign_manifest_rejects_a_signature_from_the_wrong_key() {
        let err = sign_manifest(&sample(true), &LyingSigner).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signer lying test signer returned a signature that does not verify"
        );
    }
}
