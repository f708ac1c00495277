//! `cargo xtask verify IMAGE.img --boot-key PUB.pem`: checks a golden image
//! from the image file alone, as a manufacturing station or an auditor
//! would, with nothing from the build but the public key.
//!
//! For each slot that has a manifest on the boot partition it checks:
//! the manifest's Ed25519 signature (`verify_strict`) and strict syntax;
//! that the GPT's root and verity partition UUIDs are the ones the
//! manifest names, which are the first and last 128 bits of the root hash
//! (Discoverable Partitions Specification); the dm-verity tree, recomputed
//! from the partition bytes; and the kernel, initrd and device tree on the
//! boot partition against their signed hashes.
//!
//! A slot without a manifest is reported empty only when the signed
//! `golden-slots` record (boot manifest format v2) of the manifests that do
//! verify says the golden image left it empty, and the slot looks empty
//! (no boot files, a zeroed verity partition); otherwise it is tampered
//! (see `empty_slot`). Every number read from the image is untrusted: the
//! GPT reader bounds the table, and partition offsets are computed with
//! checked arithmetic. Text from the image (partition names, manifest
//! fields, file names) is escaped before it reaches a message or the report.
//!
//! Every problem is reported with the slot and what exactly differs, and
//! all of them are collected before failing. When a signature does not
//! verify, the (untrusted) manifest is still compared with the image to
//! tell a modified manifest from a corrupt signature.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use slotsmith_disk::{fat, gpt, window::Window};
use slotsmith_sign::{verify_manifest, Manifest};
use uuid::Uuid;

use slotsmith_yaml::escape::shown;

use crate::plan::{guid, ATTR_READ_ONLY, SECTOR};

/// What a successful verification saw, for `--json` and logs.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The image file.
    pub image: String,
    /// Slots verified.
    pub slots: Vec<SlotReport>,
    /// Slots without a manifest that the golden image left empty.
    pub empty_slots: Vec<String>,
    /// Why each of `empty_slots` is empty rather than tampered, in the same
    /// order: the signed record it rests on and what was checked.
    pub empty_slot_evidence: Vec<String>,
}

/// One verified slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    /// `a` or `b`.
    pub slot: String,
    /// Image name and version from the manifest.
    pub image: String,
    /// Version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// The verity root hash, recomputed and signed.
    pub root_hash: String,
    /// Data blocks covered by verity.
    pub data_blocks: u64,
}

/// Makes any write fail: verification must never modify the image.
struct ReadOnly<T>(T);

impl<T: Read> Read for ReadOnly<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T> Write for ReadOnly<T> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "verification opens the image read-only",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<T: Seek> Seek for ReadOnly<T> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// Largest `manifest.sig` read from the boot partition; an Ed25519
/// signature is 64 bytes, the rest of the margin is for a clear error.
const MAX_SIGNATURE: u64 = 4096;

/// Byte offset and length of a GPT partition, computed with checked
/// arithmetic. The reader already bounds every entry by the disk; this
/// keeps the verifier safe on its own, and names the partition if not.
fn span(p: &gpt::PartitionEntry) -> anyhow::Result<(u64, u64)> {
    let offset = p.first_lba.checked_mul(SECTOR);
    let len = p
        .last_lba
        .checked_sub(p.first_lba)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_mul(SECTOR));
    match (offset, len) {
        (Some(o), Some(l)) if o.checked_add(l).is_some() => Ok((o, l)),
        _ => bail!(
            "partition {} spans lba {}..={}, which is not a range of bytes",
            shown(&p.name),
            p.first_lba,
            p.last_lba
        ),
    }
}

/// One slot's manifest as found on the boot partition.
enum Found {
    /// No `/<slot>/manifest` (the error says why).
    Missing(String),
    /// A manifest and signature that verify with the boot key.
    Verified(Box<Manifest>),
    /// A manifest without a signature file (the error says why).
    Unsigned(String),
    /// A manifest whose signature does not verify.
    BadSignature(Vec<u8>, anyhow::Error),
}

/// Verifies `path` against the boot public key.
pub fn verify_image(path: &Path, key: &VerifyingKey) -> anyhow::Result<VerifyReport> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    verify_image_file(&file, &path.display().to_string(), key)
}

/// [`verify_image`] on an open image; `name` is what messages call it.
/// This is also the entry point of the `gpt_verify` fuzz target.
pub fn verify_image_file(
    file: &File,
    name: &str,
    key: &VerifyingKey,
) -> anyhow::Result<VerifyReport> {
    verify_image_within(file, None, name, key)
}

/// [`verify_image_file`] on the first `size` bytes of `file` (a device a
/// golden image was written to, which may be larger: its GPT is read as
/// the image's, with the backup header at the image's end).
pub fn verify_image_within(
    file: &File,
    size: Option<u64>,
    name: &str,
    key: &VerifyingKey,
) -> anyhow::Result<VerifyReport> {
    let table = match size {
        Some(size) => gpt::read_gpt(&mut Window::new(file, 0, size), SECTOR),
        None => gpt::read_gpt(&mut { file }, SECTOR),
    }
    .with_context(|| format!("GPT of {name} is damaged"))?;
    let find = |name: &str| table.partitions.iter().find(|p| p.name == name);
    let esp = find(crate::layout::ESP).with_context(|| {
        let names: Vec<String> = table.partitions.iter().map(|p| shown(&p.name)).collect();
        format!(
            "the GPT has no 'esp' partition (it has: {})",
            names.join(", ")
        )
    })?;
    if esp.type_guid != guid::ESP.parse::<Uuid>()? {
        bail!(
            "partition 'esp' has type {}, not the EFI System Partition type",
            esp.type_guid
        );
    }
    let (esp_offset, esp_len) = span(esp)?;
    // A boot chain image keeps each slot's manifest and UKI on the slot's
    // own boot partition (`boot-<slot>`, at its root); the older layout
    // keeps them in `/<slot>/` on the ESP.
    let chain = find(&crate::plan::chain::boot_partition("a")).is_some();
    let mut volumes = Vec::new();
    for slot in crate::layout::SLOTS {
        if chain {
            let name = crate::plan::chain::boot_partition(slot);
            let p = find(&name).with_context(|| format!("the GPT has boot-a but no {name}"))?;
            volumes.push((span(p)?, String::new()));
        } else {
            volumes.push(((esp_offset, esp_len), format!("/{slot}")));
        }
    }
    let vol = |i: usize| {
        let ((offset, len), _) = volumes[i];
        move || ReadOnly(Window::new(file, offset, len))
    };

    // Every slot's manifest first: whether a slot without one is empty or
    // tampered is decided from the manifests that do verify.
    let slot_names = crate::layout::SLOTS;
    let mut found = Vec::new();
    for (i, slot) in slot_names.into_iter().enumerate() {
        found.push(load_manifest(&vol(i), &volumes[i].1, slot, key));
    }

    let mut problems = Vec::new();
    let golden = golden_slots(&slot_names, &found, &mut problems);
    let mut slots = Vec::new();
    let mut empty = Vec::new();
    let mut evidence = Vec::new();
    for (i, (slot, f)) in slot_names.into_iter().zip(found).enumerate() {
        let (esp_win, dir) = (vol(i), volumes[i].1.as_str());
        match f {
            Found::Verified(m) => {
                if let Some((g, _)) = &golden {
                    if !g.iter().any(|s| s == slot) {
                        problems.push(format!(
                            "slot {slot}: has a signed manifest, but the golden image was built \
                             with slot {slot} empty (signed golden-slots: {})",
                            g.join(" ")
                        ));
                    }
                }
                let found = check_slot(file, &table, slot, &m, &esp_win, dir);
                if found.is_empty() {
                    slots.push(SlotReport {
                        slot: slot.into(),
                        image: shown(&m.image),
                        version: shown(&m.version),
                        security_version: m.security_version,
                        root_hash: hex::encode(m.verity_root_hash),
                        data_blocks: m.verity_data_blocks,
                    });
                }
                problems.extend(found.into_iter().map(|p| format!("slot {slot}: {p}")));
            }
            Found::Unsigned(msg) => problems.push(msg),
            Found::BadSignature(bytes, sig_err) => {
                let why = untrusted(file, &table, slot, &bytes, &sig_err, &esp_win, dir);
                problems.push(format!("slot {slot}: {why}"));
            }
            Found::Missing(why) if slot == "a" => problems.push(why),
            Found::Missing(why) => match empty_slot(file, &table, slot, &golden, &esp_win, dir) {
                Ok(because) => {
                    empty.push(slot.to_string());
                    evidence.push(format!("slot {slot}: empty: {because}"));
                }
                Err(e) => problems.push(format!("slot {slot}: {e} ({why})")),
            },
        }
    }
    if !problems.is_empty() {
        bail!("{name} failed verification:\n  {}", problems.join("\n  "));
    }
    Ok(VerifyReport {
        image: name.to_string(),
        slots,
        empty_slots: empty,
        empty_slot_evidence: evidence,
    })
}

/// Reads `/<slot>/manifest` and its signature from the boot partition and
/// verifies them. A manifest whose signature fails is still compared
/// with the image, only to say which of the two was modified.
fn load_manifest<W: Read + Write + Seek>(
    esp: &dyn Fn() -> W,
    dir: &str,
    slot: &str,
    key: &VerifyingKey,
) -> Found {
    let manifest_path = format!("{dir}/manifest");
    let max = slotsmith_sign::manifest::MAX_MANIFEST_SIZE as u64;
    let bytes = match fat::read_fat_file_max(esp(), &manifest_path, max) {
        Ok(b) => b,
        Err(e) => {
            return Found::Missing(format!(
                "slot {slot}: no boot manifest {manifest_path} on the boot partition: {e:#}"
            ))
        }
    };
    let sig = match fat::read_fat_file_max(esp(), &format!("{dir}/manifest.sig"), MAX_SIGNATURE) {
        Ok(s) => s,
        Err(e) => {
            return Found::Unsigned(format!(
                "slot {slot}: no signature {dir}/manifest.sig on the boot partition: {e:#}"
            ))
        }
    };
    match verify_manifest(&bytes, &sig, key) {
        Ok(m) => Found::Verified(Box::new(m)),
        Err(sig_err) => Found::BadSignature(bytes, sig_err),
    }
}

/// Explains a manifest whose signature failed. The untrusted manifest is
/// looked at only to say which of the two was modified.
fn untrusted<W: Read + Write + Seek>(
    file: &File,
    table: &gpt::GptLayout,
    slot: &str,
    bytes: &[u8],
    sig_err: &anyhow::Error,
    esp: &dyn Fn() -> W,
    dir: &str,
) -> String {
    match Manifest::parse(bytes) {
        Err(e) => format!(
            "boot manifest is malformed ({}) and its signature does not verify",
            shown(&format!("{e:#}"))
        ),
        Ok(m) => {
            let found = check_slot(file, table, slot, &m, esp, dir);
            if found.is_empty() {
                format!(
                    "boot manifest signature does not verify ({}), though the manifest matches \
                     the image: the signature is corrupt or was made by another key",
                    shown(&format!("{sig_err:#}"))
                )
            } else {
                format!(
                    "boot manifest was modified ({}) and its signature does not verify",
                    found.join("; ")
                )
            }
        }
    }
}

/// The slots the golden image filled, from the signed `golden-slots`
/// record of every manifest that verified (format v2), with the slot
/// whose manifest said so. Manifests that disagree come from different
/// builds: that is a problem, and no record is trusted.
fn golden_slots(
    slots: &[&str],
    found: &[Found],
    problems: &mut Vec<String>,
) -> Option<(Vec<String>, String)> {
    let mut record: Option<(Vec<String>, String)> = None;
    for (slot, f) in slots.iter().zip(found) {
        let Found::Verified(m) = f else { continue };
        let Some(g) = &m.golden_slots else { continue };
        match &record {
            None => record = Some((g.clone(), slot.to_string())),
            Some((first, from)) if first != g => {
                problems.push(format!(
                    "the signed manifests of slot {from} and slot {slot} disagree on the slots \
                     the golden image filled ({} against {}): they come from different builds",
                    first.join(" "),
                    g.join(" ")
                ));
                return None;
            }
            Some(_) => {}
        }
    }
    record
}

/// Decides whether a slot without a manifest is empty, and says on what
/// evidence; an error means the image was tampered with.
///
/// The decision rests on the signed `golden-slots` record (manifest format
/// v2) of the manifests that verified; slot A's is always on a golden
/// image. Deleting a manifest cannot change that record, and editing it
/// breaks the signature. A slot the record lists as filled is therefore
/// tampered; one it lists as empty must also look empty: no boot files of
/// its own on the boot partition and a zeroed verity partition (a verity
/// superblock there without a manifest is a filled slot whose manifest
/// was removed). With only v1 manifests there is no record, and an emptied
/// slot cannot be told from a removed manifest, so that fails too.
fn empty_slot<W: Read + Write + Seek>(
    file: &File,
    table: &gpt::GptLayout,
    slot: &str,
    golden: &Option<(Vec<String>, String)>,
    esp: &dyn Fn() -> W,
    dir: &str,
) -> anyhow::Result<String> {
    let Some((filled, from)) = golden else {
        bail!(
            "no verified manifest records which slots the golden image filled (manifest format \
             v1 has no golden-slots), so a removed manifest cannot be told from an empty slot: \
             rebuild the image"
        );
    };
    let record = format!(
        "the signed manifest of slot {from} records golden-slots {}",
        filled.join(" ")
    );
    if filled.iter().any(|s| s == slot) {
        bail!(
            "tampered: {record}, so the golden image filled slot {slot}, but its manifest is \
             missing"
        );
    }
    let files = fat::list_fat(esp()).context("listing the boot partition")?;
    // An empty slot has no files of its own: on the older layout nothing
    // under `/<slot>/`, on a chain image nothing on its boot partition but
    // the loader environment.
    let own = |p: &str| {
        if dir.is_empty() {
            p != "BGENV.DAT"
        } else {
            p.starts_with(&format!("{}/", dir.trim_start_matches('/')))
        }
    };
    if let Some((path, _)) = files.iter().find(|(p, _)| own(p)) {
        bail!(
            "tampered: {record}, yet /{} is on the boot partition",
            shown(path)
        );
    }
    let verity_name = crate::layout::verity_partition(slot);
    let verity = table
        .partitions
        .iter()
        .find(|p| p.name == verity_name)
        .with_context(|| format!("the GPT lacks partition {verity_name}"))?;
    let (offset, len) = span(verity)?;
    if let Some(at) = first_nonzero(file, offset, len)
        .with_context(|| format!("reading partition {verity_name}"))?
    {
        bail!(
            "tampered: {record}, but partition {verity_name} is not zeroed (byte {at} is not \
             zero): it holds a verity tree without a manifest"
        );
    }
    Ok(format!("{record}, and partition {verity_name} is zeroed"))
}

/// Offset of the first non-zero byte in `len` bytes at `offset`.
fn first_nonzero(file: &File, offset: u64, len: u64) -> std::io::Result<Option<u64>> {
    let mut win = Window::new(file, offset, len);
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = win.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
}

/// Compares one slot of the image with its manifest; returns every
/// difference found.
fn check_slot<W: Read + Write + Seek>(
    file: &File,
    table: &gpt::GptLayout,
    slot: &str,
    m: &Manifest,
    esp: &dyn Fn() -> W,
    dir: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if m.slot != slot {
        out.push(format!(
            "the manifest of slot {slot} is for slot {}",
            shown(&m.slot)
        ));
    }
    let root_name = crate::layout::root_partition(slot);
    let verity_name = crate::layout::verity_partition(slot);
    let (Some(root), Some(verity)) = (
        table.partitions.iter().find(|p| p.name == root_name),
        table.partitions.iter().find(|p| p.name == verity_name),
    ) else {
        out.push(format!(
            "the GPT lacks partition {root_name} or {verity_name}"
        ));
        return out;
    };
    let root_types = [guid::ROOT_X86_64, guid::ROOT_ARM64];
    let verity_types = [guid::ROOT_VERITY_X86_64, guid::ROOT_VERITY_ARM64];
    if !root_types
        .iter()
        .any(|t| t.parse::<Uuid>().ok() == Some(root.type_guid))
    {
        out.push(format!(
            "partition {root_name} has type {}, not a DPS root type",
            root.type_guid
        ));
    }
    if !verity_types
        .iter()
        .any(|t| t.parse::<Uuid>().ok() == Some(verity.type_guid))
    {
        out.push(format!(
            "partition {verity_name} has type {}, not a DPS root-verity type",
            verity.type_guid
        ));
    }
    for p in [root, verity] {
        if p.attributes & ATTR_READ_ONLY == 0 {
            out.push(format!(
                "partition {} lacks the read-only attribute (bit 60)",
                p.name
            ));
        }
    }
    let want_root = Uuid::from_slice(&m.verity_root_hash[..16]).unwrap_or_default();
    let want_verity = Uuid::from_slice(&m.verity_root_hash[16..]).unwrap_or_default();
    if m.root_partition_uuid != want_root || m.verity_partition_uuid != want_verity {
        out.push("the manifest's partition UUIDs are not derived from its root hash".into());
    }
    if root.part_guid != m.root_partition_uuid {
        out.push(format!(
            "GPT partition {root_name} has UUID {}, the manifest says {}",
            root.part_guid, m.root_partition_uuid
        ));
    }
    if verity.part_guid != m.verity_partition_uuid {
        out.push(format!(
            "GPT partition {verity_name} has UUID {}, the manifest says {}",
            verity.part_guid, m.verity_partition_uuid
        ));
    }
    // The verity tree, recomputed from the partition bytes.
    let spans = span(root).and_then(|r| Ok((r, span(verity)?)));
    match spans {
        Err(e) => out.push(format!("{e:#}")),
        Ok(((root_offset, root_size), (verity_offset, verity_size))) => {
            let data_size = m.verity_data_blocks.checked_mul(slotsmith_verity::BLOCK);
            match data_size {
                Some(data_size)
                    if data_size > 0
                        && data_size <= root_size
                        && m.verity_hash_start_block == 1 =>
                {
                    let data = Window::new(file, root_offset, data_size);
                    let hash = Window::new(file, verity_offset, verity_size);
                    match slotsmith_verity::verify(data, data_size, hash, &m.verity_root_hash) {
                        Ok(info) => {
                            if info.salt != m.verity_salt {
                                out.push(
                                    "the verity superblock salt differs from the manifest's".into(),
                                );
                            }
                        }
                        Err(e) => out.push(format!(
                            "dm-verity check of {root_name} against {verity_name} failed: {e:#}"
                        )),
                    }
                }
                _ => out.push(format!(
                    "the manifest's verity geometry ({} data blocks, hash start {}) does not fit \
                     partition {root_name} ({root_size} bytes)",
                    m.verity_data_blocks, m.verity_hash_start_block
                )),
            }
        }
    }
    // The boot files.
    let files = [
        Some(("kernel", &m.kernel)),
        m.initrd.as_ref().map(|f| ("initrd", f)),
        m.dtb.as_ref().map(|f| ("dtb", f)),
    ];
    if dir.is_empty() {
        out.extend(check_uki(esp, m, &files));
        return out;
    }
    for (what, f) in files.into_iter().flatten() {
        let path = shown(&f.path);
        if !f.path.starts_with(&format!("{dir}/")) {
            out.push(format!(
                "{what} {path} is outside {dir}/ on the boot partition"
            ));
            continue;
        }
        // Read no more than the manifest's size plus one byte: enough to
        // see a mismatch, and bounded whatever the volume claims.
        match fat::hash_fat_file(esp(), &f.path, f.size) {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok((sha, size)) => out.push(format!(
                "{what} {path} does not match the manifest (sha256 {}, {size} bytes; the manifest has {}, {} bytes)",
                hex::encode(sha),
                hex::encode(f.sha256),
                f.size
            )),
            Err(e) => out.push(format!("{what} {path} cannot be read from the boot partition: {}", shown(&format!("{e:#}")))),
        }
    }
    out
}

/// Largest UKI read from a slot's boot partition.
const MAX_UKI: u64 = 512 << 20;

/// A chain slot: the kernel, initramfs and command line inside the UKI on
/// the slot's boot partition are the ones the manifest signs. (The UKI's
/// own Authenticode signature is the firmware's to check: `sbverify`.)
fn check_uki<W: Read + Write + Seek>(
    vol: &dyn Fn() -> W,
    m: &Manifest,
    files: &[Option<(&str, &slotsmith_sign::FileRef)>],
) -> Vec<String> {
    use sha2::Digest;
    let mut out = Vec::new();
    let uki_path = format!("/{}", crate::plan::chain::UKI_NAME);
    let uki = match fat::read_fat_file_max(vol(), &uki_path, MAX_UKI) {
        Ok(b) => b,
        Err(e) => {
            out.push(format!(
                "no UKI {uki_path} on the slot's boot partition: {}",
                shown(&format!("{e:#}"))
            ));
            return out;
        }
    };
    match crate::uki::section(&uki, ".cmdline") {
        Ok(c) if c == m.cmdline.as_bytes() => {}
        Ok(c) => {
            // Untrusted and unbounded: NUL padding dropped, at most 200
            // characters shown, escaped.
            let text = String::from_utf8_lossy(c);
            let text: String = text.trim_end_matches('\0').chars().take(200).collect();
            out.push(format!(
                "the UKI's command line differs from the manifest's ({})",
                shown(&text)
            ))
        }
        Err(e) => out.push(format!("UKI {uki_path}: {}", shown(&format!("{e:#}")))),
    }
    for (what, f) in files.iter().flatten() {
        let path = shown(&f.path);
        let Some(section) = f.path.strip_prefix(&format!("{uki_path}:")) else {
            out.push(format!("{what} {path} is not a section of {uki_path}"));
            continue;
        };
        match crate::uki::section(&uki, section) {
            Ok(bytes) => {
                let sha: [u8; 32] = sha2::Sha256::digest(bytes).into();
                if sha != f.sha256 || bytes.len() as u64 != f.size {
                    out.push(format!(
                        "{what} {path} does not match the manifest (sha256 {}, {} bytes; the manifest has {}, {} bytes)",
                        hex::encode(sha),
                        bytes.len(),
                        hex::encode(f.sha256),
                        f.size
                    ));
                }
            }
            Err(e) => out.push(format!("{what} {path}: {}", shown(&format!("{e:#}")))),
        }
    }
    out
}

/// Seed of the fixed, public test key that fuzz seeds are signed with
/// (`ed25519_dalek::SigningKey::from_bytes(&FUZZ_KEY_SEED)`). Never a real
/// key: it exists so fuzz inputs can get past the signature checks.
#[doc(hidden)]
pub const FUZZ_KEY_SEED: [u8; 32] = [7; 32];

/// The `gpt_verify` fuzz target and its stable twin
/// (`tests/fuzz_verify.rs`): `data` is a compact image
/// (`slotsmith_disk::fuzzimage`), written to a temporary file and
/// verified against the public half of [`FUZZ_KEY_SEED`]. Asserts the
/// invariants beyond "no panic": a verified image has exactly slots a
/// and b accounted for, and no error or report text carries a raw control
/// or bidi character (every untrusted byte is escaped).
#[doc(hidden)]
pub fn fuzz_verify(data: &[u8]) {
    use slotsmith_disk::fuzzimage;
    let Some((mut image, flags)) = fuzzimage::decode(data) else {
        return;
    };
    if flags & fuzzimage::RESEAL_GPT != 0 {
        gpt::reseal(&mut image, SECTOR);
    }
    let Ok(mut file) = tempfile::tempfile() else {
        return;
    };
    if file.write_all(&image).is_err() {
        return;
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&FUZZ_KEY_SEED).verifying_key();
    let text = match verify_image_file(&file, "fuzz.img", &key) {
        Ok(r) => {
            assert_eq!(
                r.slots.len() + r.empty_slots.len(),
                2,
                "a verified image accounts for both slots: {r:?}"
            );
            let mut text = r.empty_slot_evidence.join("\n");
            for s in &r.slots {
                text.push_str(&format!("\n{} {} {}", s.slot, s.image, s.version));
            }
            text
        }
        Err(e) => format!("{e:#}"),
    };
    assert_printable(&text);
}

/// Panics if `text` has a character a terminal would act on, other than
/// the newlines that separate problems.
#[doc(hidden)]
pub fn assert_printable(text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\n' && c != '\\' && slotsmith_yaml::escape::needs_escape(c))
    {
        panic!("unescaped {c:?} in message: {text:?}");
    }
}

/// What a successful `.swu` verification saw.
#[derive(Debug, Clone, Serialize)]
pub struct SwuReport {
    /// The update file.
    pub update: String,
    /// The version it installs.
    pub version: String,
    /// Accepted hardware revisions.
    pub hardware_compatibility: Vec<String>,
    /// The CMS signer's subject.
    pub signer: String,
    /// Collections as `set,mode -> slot`.
    pub collections: Vec<String>,
    /// Members in archive order.
    pub members: Vec<String>,
}

/// Verifies a `.swu` from the file alone: the member order and every cpio
/// checksum, the CMS signature over sw-description against the trusted
/// certificate (the signer itself or a CA that issued it), every sha256
/// that sw-description lists, and that each slot payload fits its target.
pub fn verify_swu(path: &Path, cert: &Path) -> anyhow::Result<SwuReport> {
    // Container structure and checksums, then the signature, then (only
    // once authenticated) sw-description and the sha256 of every member.
    // Everything below comes from the archive or its certificate and is
    // escaped before it reaches a message or the report.
    let mut signer = String::new();
    let contents = slotsmith_swu::read_swu_authenticated(path, |text, sig| {
        signer =
            slotsmith_cms::verify_detached(sig, text, cert).context("sw-description signature")?;
        Ok(())
    })
    .with_context(|| format!("{} is not a valid update", path.display()))?;
    let mut problems = Vec::new();
    let mut collections = Vec::new();
    for c in &contents.description.collections {
        collections.push(format!(
            "{},{} -> slot {}",
            shown(&c.set),
            shown(&c.mode),
            shown(&c.slot)
        ));
        for p in &c.payloads {
            match (&p.target, p.fit) {
                (slotsmith_swu::Target::Raw { device }, Some(fit)) if fit.installed_size > fit.capacity => problems.push(format!(
                    "slot {}: payload {} needs {} bytes but {} holds {}",
                    shown(&c.slot), shown(&p.filename), fit.installed_size, shown(device), fit.capacity
                )),
                (slotsmith_swu::Target::Raw { device }, None) => problems.push(format!(
                    "slot {}: payload {} for {} carries no size information, so it cannot be checked against the slot",
                    shown(&c.slot), shown(&p.filename), shown(device)
                )),
                _ => {}
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} failed verification:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(SwuReport {
        update: path.display().to_string(),
        version: shown(&contents.description.version),
        hardware_compatibility: contents
            .description
            .hardware_compatibility
            .iter()
            .map(|h| shown(h))
            .collect(),
        signer: shown(&signer),
        collections,
        members: contents.entries.iter().map(|e| shown(&e.name)).collect(),
    })
}
