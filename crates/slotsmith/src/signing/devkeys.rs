//! Which keys are development keys, so that release images refuse them
//! wherever their files live.
//!
//! **The rule.** A key is a development key when its *public key* is
//! - the public key of any key or certificate file under `keys/dev/`
//!   (boot and provenance Ed25519 private and public keys, update ECDSA P-256 keys and
//!   certificates, Secure Boot RSA keys and certificates, in any encoding
//!   and any subdirectory), or
//! - listed in `keys/dev-fingerprints.txt`, the project's record of every
//!   development key it ever generated or signed with.
//!
//! A release build computes the public-key fingerprint of every key it is
//! given (the private key, the configured public key, the update
//! certificate, the Secure Boot PK, KEK and db certificates and private
//! keys; from a file, from `key-env`, or for an external signer its public
//! key or certificate) and refuses any that matches. Fingerprints are
//! `sha256:` over the raw public key: the 32 Ed25519 bytes
//! (`slotsmith_sign::fingerprint`), the 65-byte uncompressed P-256 point
//! (`slotsmith_cms::fingerprint`), and for RSA, which has no single raw
//! form, the DER SubjectPublicKeyInfo re-encoded from the modulus and
//! exponent (`secureboot::rsa`; what `openssl pkey -pubout -outform DER`
//! hashes). So a copy, a hard link, a symlink, a PEM-to-DER or PKCS#8-to-
//! PKCS#1 conversion or a re-issued certificate of a development key is
//! recognised as one; only the key itself matters.
//!
//! **Why a committed file and not a marker in the key.** A marker inside
//! the key file (a PEM header, a comment line) is removed by any
//! re-encoding (`openssl pkey -in dev.pem -out x.pem`), and a registry
//! inside the git-ignored `keys/dev/` dies with that directory. The
//! registry therefore sits *beside* it, in `keys/dev-fingerprints.txt`,
//! which is not ignored and is meant to be committed: a developer who
//! copies a development key away and deletes `keys/dev/`, or a CI job on a
//! fresh clone, still has it. It is append-only (slotsmith never removes a
//! line) and holds only public fingerprints, so committing it discloses
//! nothing. Every build that signs with a development key records the key
//! (so keys made before the registry existed are covered the first time
//! they are used), and so does `cargo xtask keys generate` for a key
//! written into `keys/dev/` or made with `--dev`.
//!
//! The registry is parsed strictly and a malformed line fails a release
//! build: a check that silently skipped lines could be switched off by an
//! edit.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::{shown, shown_path};

/// Directory of the development keys, relative to the project root.
pub const DEV_KEY_DIR: &str = "keys/dev";
/// The committed record of every development key's public fingerprint,
/// relative to the project root.
pub const DEV_KEY_REGISTRY: &str = "keys/dev-fingerprints.txt";
/// A registry line is about 100 bytes; 1 MiB is ten thousand keys.
const MAX_REGISTRY: u64 = 1 << 20;
/// Files looked at under `keys/dev/`, and the largest one read: key and
/// certificate files are a few KiB. Bounds keep a stray disk image or a
/// huge tree in `keys/dev/` from stalling every release build.
const MAX_DEV_FILES: usize = 256;
const MAX_DEV_FILE: u64 = 1 << 20;
/// How deep `keys/dev/` is searched.
const MAX_DEV_DEPTH: usize = 4;

const REGISTRY_HEADER: &str = "\
# Public keys of this project's slotsmith DEVELOPMENT keys. Commit this file.
# A release image refuses every key listed here, wherever its file lives
# (copies, hard links, re-encodings, key-env, external signers).
# slotsmith appends a line whenever it generates or signs with a development
# key; never delete lines. Format:
#   sha256:<hex of sha256 over the raw public key> <boot|update|secureboot|provenance> <first seen as>
";

/// The development keys of a project: fingerprint to where it is known
/// from, for the message.
#[derive(Debug, Default)]
pub struct DevKeys {
    known: BTreeMap<String, String>,
}

impl DevKeys {
    /// Reads `keys/dev/` and `keys/dev-fingerprints.txt` under `root`.
    pub fn load(root: &Path) -> Result<DevKeys> {
        let mut dev = DevKeys::default();
        // keys/dev/ first: "the same key as keys/dev/boot.pub.pem" is the
        // more concrete explanation when both apply.
        for (fingerprint, file) in scan_dev_dir(&root.join(DEV_KEY_DIR))? {
            let rel = file.strip_prefix(root).unwrap_or(&file);
            dev.known
                .entry(fingerprint)
                .or_insert_with(|| format!("the key of {}", shown_path(rel)));
        }
        for line in read_registry(&root.join(DEV_KEY_REGISTRY))? {
            dev.known.entry(line.fingerprint).or_insert_with(|| {
                format!(
                    "a development {} key listed in {DEV_KEY_REGISTRY} line {}",
                    line.role, line.number
                )
            });
        }
        Ok(dev)
    }

    /// Whether `fingerprint` is a development key.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.known.contains_key(fingerprint)
    }

    /// Fails, saying why, if `fingerprint` is a development key. `what`
    /// names the file ("private key /x/boot.key.pem (from $BOOT_KEY)").
    pub fn refuse(&self, role: &str, what: &str, fingerprint: &str) -> Result<()> {
        if let Some(origin) = self.known.get(fingerprint) {
            bail!(
                "a release image refuses development keys: the {role} {what} has the public \
                 key {fingerprint}, which is {origin}. A copy, link or re-encoding of a \
                 development key is still a development key; create a release key with \
                 `cargo xtask keys generate --role {role} --out keys/release`"
            );
        }
        Ok(())
    }
}

/// One registry line.
struct RegistryLine {
    number: usize,
    fingerprint: String,
    role: String,
}

/// Reads the registry; a missing file is an empty registry. A symlink is
/// refused: the file decides what a release may not use, and must be the
/// project's own.
fn read_registry(path: &Path) -> Result<Vec<RegistryLine>> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", shown_path(path))),
        Ok(meta) => ensure!(
            meta.file_type().is_file(),
            "{} must be a regular file (not a symlink or directory)",
            shown_path(path)
        ),
    }
    let data = slotsmith_sign::keyfile::read_bounded(path, MAX_REGISTRY, false)?;
    let text =
        std::str::from_utf8(&data).with_context(|| format!("{} is not UTF-8", shown_path(path)))?;
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (fingerprint, role) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if !is_fingerprint(fingerprint) || !is_role(role) {
            bail!(
                "{} line {number}: expected `sha256:<64 lowercase hex digits> boot|update|secureboot|provenance \
                 [note]`, found \"{}\"",
                shown_path(path),
                shown(&raw.chars().take(120).collect::<String>())
            );
        }
        lines.push(RegistryLine {
            number,
            fingerprint: fingerprint.to_string(),
            role: role.to_string(),
        });
    }
    Ok(lines)
}

/// The roles a registry line may name.
fn is_role(role: &str) -> bool {
    matches!(role, "boot" | "update" | "secureboot" | "provenance")
}

fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Appends `fingerprint` to the registry under `root` unless it is there
/// already; returns whether it was added. `file` is noted on the line, for
/// people. The file is created (0644, with a header) if missing, and never
/// written through a symlink.
pub fn record_dev_key(root: &Path, role: &str, fingerprint: &str, file: &Path) -> Result<bool> {
    ensure!(
        is_fingerprint(fingerprint),
        "internal error: {fingerprint:?} is not a fingerprint"
    );
    ensure!(is_role(role), "internal error: unknown key role {role:?}");
    let path = root.join(DEV_KEY_REGISTRY);
    let existing = read_registry(&path)?;
    if existing.iter().any(|l| l.fingerprint == fingerprint) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", shown_path(parent)))?;
    }
    let mut out = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(&path)
        .with_context(|| format!("cannot open {} for appending", shown_path(&path)))?;
    let empty = out
        .metadata()
        .with_context(|| format!("cannot stat {}", shown_path(&path)))?
        .len()
        == 0;
    let rel = file.strip_prefix(root).unwrap_or(file);
    // One write per line, so that two builds recording at once append two
    // whole lines (O_APPEND) rather than interleaved pieces.
    let mut text = String::new();
    if empty {
        text.push_str(REGISTRY_HEADER);
    }
    text.push_str(&format!("{fingerprint} {role} {}\n", shown_path(rel)));
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot append to {}", shown_path(&path)))?;
    Ok(true)
}

/// After `cargo xtask keys generate`: records the new key when it is a
/// development key, that is when `--dev` was given or the output directory
/// is the project's `keys/dev/` (or inside it). Returns the registry path
/// when it recorded the key.
pub fn note_generated_key(
    project: Option<&Path>,
    out_dir: &Path,
    dev_flag: bool,
    role: &str,
    fingerprint: &str,
    file: &Path,
) -> Result<Option<PathBuf>> {
    let Some(project) = project else {
        ensure!(
            !dev_flag,
            "--dev records the key in the project's {DEV_KEY_REGISTRY}, but no project was \
             found: run inside a project or give --project"
        );
        return Ok(None);
    };
    let in_dev_dir = match (
        fs::canonicalize(out_dir),
        fs::canonicalize(project.join(DEV_KEY_DIR)),
    ) {
        (Ok(out), Ok(dev)) => out.starts_with(dev),
        _ => false,
    };
    if !dev_flag && !in_dev_dir {
        return Ok(None);
    }
    record_dev_key(project, role, fingerprint, file)?;
    Ok(Some(project.join(DEV_KEY_REGISTRY)))
}

/// The fingerprint of every key and certificate under `dir` (a missing
/// directory has none). Files that are not keys are skipped; they cannot
/// be used to sign anything. Symlinks inside are not followed: a link out
/// of `keys/dev/` does not make its target a development key.
fn scan_dev_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let mut files = 0usize;
    for entry in walkdir::WalkDir::new(dir)
        .follow_root_links(true)
        .follow_links(false)
        .max_depth(MAX_DEV_DEPTH)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot read {}", shown_path(dir)))?;
        if !entry.file_type().is_file() {
            continue;
        }
        files += 1;
        ensure!(
            files <= MAX_DEV_FILES,
            "{} holds more than {MAX_DEV_FILES} files; it should hold only the development keys",
            shown_path(dir)
        );
        let path = entry.path();
        let Ok(data) = slotsmith_sign::keyfile::read_bounded(path, MAX_DEV_FILE, false) else {
            continue;
        };
        for fingerprint in key_fingerprints(&data, path) {
            found.push((fingerprint, path.to_path_buf()));
        }
    }
    Ok(found)
}

/// The public-key fingerprints in the bytes of any key or certificate file
/// of any role; none when it is not one.
pub fn key_fingerprints(data: &[u8], path: &Path) -> Vec<String> {
    if let Ok(key) = slotsmith_sign::parse_signing_key(data, path) {
        return vec![slotsmith_sign::fingerprint(&key.verifying_key())];
    }
    if let Ok(key) = slotsmith_sign::parse_verifying_key(data, path) {
        return vec![slotsmith_sign::fingerprint(&key)];
    }
    let mut found = slotsmith_cms::file_fingerprints(data, path).unwrap_or_default();
    found.extend(crate::secureboot::rsa::fingerprints(data));
    found
}
