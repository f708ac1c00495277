//! Deterministic GUID Partition Table writing and strict reading.
//!
//! The GPT headers and entry arrays are encoded by hand here; only the
//! protective MBR comes from the `gpt` crate (`gpt::mbr::ProtectiveMBR`).
//! The reason: `gpt` 4.1 is built around editing a live disk. Its
//! `add_partition_at` always assigns a random `Uuid::new_v4()` partition
//! GUID, `create_from_device` defaults to a random disk GUID, it asserts
//! (panics) on some bad input, and it locates the backup header from the
//! device length rather than from an explicit disk size. A golden image
//! needs exact first/last LBAs, GUIDs, names and attribute bits and must be
//! byte-identical across builds, and the format is small (a 92-byte header
//! and 128-byte entries, each protected by a CRC32), so owning the encoding
//! is simpler and easier to audit than working around the crate.
//!
//! Layout written (UEFI 2.x, chapter 5): LBA 0 protective MBR, LBA 1
//! primary header, LBA 2.. a 128-entry array (16 KiB), and mirrored at the
//! end of the disk the backup entry array followed by the backup header in
//! the last sector. [`read_gpt`] checks both copies, because a build tool
//! that verifies its own output should reject anything a firmware might
//! silently "repair" from the other copy.

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::{shown, shown_bytes};
use std::io::{Read, Seek, SeekFrom, Write};
use uuid::Uuid;

/// Number of entries in each partition entry array. 128 is what every
/// tool writes by default and what the usable-LBA helpers assume.
const NUM_ENTRIES: u64 = 128;
/// Size of one partition entry in bytes.
const ENTRY_SIZE: u64 = 128;
/// Size of the defined part of the GPT header.
const HEADER_SIZE: u32 = 92;
/// `EFI PART`.
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Revision 1.0.
const REVISION: u32 = 0x0001_0000;
/// Maximum name length of an entry in UTF-16 code units (72 bytes).
const NAME_UNITS: usize = 36;
/// Attribute bits 3..=47 are reserved by UEFI and must be zero.
const RESERVED_ATTRIBUTES: u64 = ((1u64 << 48) - 1) & !0b111;
/// Largest sector size accepted; bounds the buffers we allocate.
const MAX_SECTOR: u64 = 65536;
/// Largest entry array the reader accepts (1 MiB), so a corrupt header
/// cannot make us allocate gigabytes.
const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// One partition of a [`GptLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry {
    /// Partition label (at most 36 UTF-16 code units).
    pub name: String,
    /// Partition type GUID (e.g. the DPS root or ESP type).
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub part_guid: Uuid,
    /// First sector of the partition.
    pub first_lba: u64,
    /// Last sector of the partition, inclusive.
    pub last_lba: u64,
    /// 64-bit attribute field (bit 60 read-only, 63 no-auto, ...).
    pub attributes: u64,
}

/// A complete, explicit GPT description of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptLayout {
    /// Logical sector size in bytes (512 in practice; 4096 also works).
    pub sector_size: u64,
    /// Disk size in bytes, a multiple of `sector_size`.
    pub disk_size: u64,
    /// Disk GUID stored in both headers.
    pub disk_guid: Uuid,
    /// Partitions, written as entries 1..=n in this order.
    pub partitions: Vec<PartitionEntry>,
}

/// Sectors occupied by one 128-entry array.
fn entry_array_sectors(sector_size: u64) -> u64 {
    (NUM_ENTRIES * ENTRY_SIZE).div_ceil(sector_size.max(1))
}

/// First LBA a partition may use: after the MBR, the primary header and
/// the primary entry array (34 for 512-byte sectors).
pub fn first_usable_lba(sector_size: u64) -> u64 {
    2 + entry_array_sectors(sector_size)
}

/// Last LBA a partition may use: before the backup entry array and the
/// backup header (`sectors - 34` for 512-byte sectors). Saturates at 0
/// for disks too small to hold a GPT.
pub fn last_usable_lba(disk_size: u64, sector_size: u64) -> u64 {
    let sectors = disk_size / sector_size.max(1);
    sectors.saturating_sub(2 + entry_array_sectors(sector_size))
}

/// Writes the protective MBR, both GPT headers and both entry arrays of
/// `layout` to `dev`, whose length must equal `layout.disk_size`.
///
/// Only the GPT structures are written; partition contents are untouched.
/// The output depends only on `layout`.
pub fn write_gpt<D: Read + Write + Seek>(dev: &mut D, layout: &GptLayout) -> Result<()> {
    validate(layout)?;
    let ss = layout.sector_size;
    let sectors = layout.disk_size / ss;
    let dev_len = dev
        .seek(SeekFrom::End(0))
        .context("seek to the end of the disk")?;
    ensure!(
        dev_len == layout.disk_size,
        "device is {dev_len} bytes but the layout disk size is {} bytes",
        layout.disk_size
    );

    let entries = encode_entries(layout)?;
    let entries_crc = crc32fast::hash(&entries);
    let array_sectors = entry_array_sectors(ss);
    let last_lba = sectors - 1;
    let backup_array_lba = last_lba - array_sectors;
    let first_usable = first_usable_lba(ss);
    let last_usable = last_usable_lba(layout.disk_size, ss);

    let primary = encode_header(&HeaderFields {
        my_lba: 1,
        alternate_lba: last_lba,
        first_usable,
        last_usable,
        disk_guid: layout.disk_guid,
        entries_lba: 2,
        entries_crc,
        sector_size: ss,
    });
    let backup = encode_header(&HeaderFields {
        my_lba: last_lba,
        alternate_lba: 1,
        first_usable,
        last_usable,
        disk_guid: layout.disk_guid,
        entries_lba: backup_array_lba,
        entries_crc,
        sector_size: ss,
    });

    // The protective partition starts at LBA 1 and covers the rest of the
    // disk, capped at 0xFFFFFFFF sectors as the UEFI spec requires.
    let pmbr_sectors = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    let mut lba0 = vec![0u8; to_usize(ss)?];
    lba0[..512].copy_from_slice(&gpt::mbr::ProtectiveMBR::with_lb_size(pmbr_sectors).to_bytes());

    let mut array = entries;
    array.resize(to_usize(array_sectors * ss)?, 0);

    write_at(dev, 0, &lba0).context("write protective mbr")?;
    write_at(dev, ss, &primary).context("write primary gpt header")?;
    write_at(dev, 2 * ss, &array).context("write primary partition entries")?;
    write_at(dev, backup_array_lba * ss, &array).context("write backup partition entries")?;
    write_at(dev, last_lba * ss, &backup).context("write backup gpt header")?;
    dev.flush().context("flush gpt")?;
    Ok(())
}

/// Reads and validates the GPT of `dev` (primary and backup copies).
///
/// Both headers must have a valid signature and CRC, both entry arrays
/// must match their CRCs, the two copies must agree, and the backup
/// header must sit in the last sector of the device. Empty entries
/// (nil type GUID) are skipped; the others are returned in array order.
///
/// Every number in the table is untrusted, CRC or not (a CRC only proves
/// that whoever wrote the table computed one): header and entry sizes and
/// the entry count are bounded, each entry array must lie between its
/// header and the usable range, and each partition must lie inside the
/// usable range without overlapping another, so that callers can compute
/// `(last_lba + 1 - first_lba) * sector_size` and `first_lba * sector_size`
/// without overflow. Errors name the copy, the entry and the field.
pub fn read_gpt<D: Read + Seek>(dev: &mut D, sector_size: u64) -> Result<GptLayout> {
    ensure!(
        (512..=MAX_SECTOR).contains(&sector_size) && sector_size.is_power_of_two(),
        "sector size {sector_size} is not a power of two between 512 and {MAX_SECTOR}"
    );
    let disk_size = dev
        .seek(SeekFrom::End(0))
        .context("seek to the end of the disk")?;
    ensure!(
        disk_size % sector_size == 0,
        "disk size {disk_size} is not a multiple of the sector size {sector_size}"
    );
    let sectors = disk_size / sector_size;
    ensure!(
        sectors > 2 * first_usable_lba(sector_size),
        "disk of {disk_size} bytes is too small to hold a gpt"
    );
    let last_lba = sectors - 1;

    let lba0 = read_at(dev, 0, 512).context("read protective mbr")?;
    ensure!(
        lba0[510..512] == [0x55, 0xAA],
        "protective mbr lacks the 55aa boot signature"
    );
    ensure!(
        lba0[446 + 4] == 0xEE,
        "first mbr partition has type {:#04x}, not the protective 0xee",
        lba0[446 + 4]
    );

    let primary = read_header(dev, 1, sector_size, "primary")?;
    ensure!(
        primary.alternate_lba == last_lba,
        "primary gpt header points to a backup at lba {} but the last lba is {last_lba}",
        primary.alternate_lba
    );
    check_header_ranges(&primary, last_lba, sector_size, "primary")?;
    let primary_entries = read_entries(dev, &primary, sector_size, "primary")?;
    let backup = read_header(dev, last_lba, sector_size, "backup")?;
    ensure!(
        backup.alternate_lba == 1,
        "backup gpt header points to a primary at lba {}, not 1",
        backup.alternate_lba
    );
    check_header_ranges(&backup, last_lba, sector_size, "backup")?;
    let backup_entries = read_entries(dev, &backup, sector_size, "backup")?;
    ensure!(
        primary.disk_guid == backup.disk_guid
            && primary.first_usable == backup.first_usable
            && primary.last_usable == backup.last_usable
            && primary.num_entries == backup.num_entries
            && primary.entry_size == backup.entry_size,
        "primary and backup gpt headers disagree on disk guid, usable range or entry array shape"
    );
    ensure!(
        primary_entries == backup_entries,
        "primary and backup gpt partition entry arrays differ"
    );

    let mut partitions = Vec::new();
    for (index, raw) in primary_entries
        .chunks_exact(to_usize(primary.entry_size)?)
        .enumerate()
    {
        if let Some(p) = decode_entry(raw, index + 1, &primary)? {
            partitions.push((index + 1, p));
        }
    }
    check_no_overlap(&partitions)?;
    Ok(GptLayout {
        sector_size,
        disk_size,
        disk_guid: primary.disk_guid,
        partitions: partitions.into_iter().map(|(_, p)| p).collect(),
    })
}

/// Checks that a header's usable range and entry array fit the disk and
/// stay clear of each other (UEFI 2.10, 5.3.2): the primary array lies
/// between the primary header and the first usable LBA, the backup array
/// between the last usable LBA and the backup header.
fn check_header_ranges(h: &Header, last_lba: u64, ss: u64, which: &str) -> Result<()> {
    ensure!(
        h.first_usable <= h.last_usable && h.last_usable < last_lba,
        "{which} gpt usable range {}..={} does not fit the disk of {} sectors",
        h.first_usable,
        h.last_usable,
        last_lba + 1
    );
    let array_bytes = u64::from(h.num_entries) * h.entry_size;
    let array_sectors = array_bytes.div_ceil(ss);
    let array_end = h
        .entries_lba
        .checked_add(array_sectors)
        .with_context(|| format!("{which} gpt entry array lba {} overflows", h.entries_lba))?;
    let (after, before) = if h.my_lba == 1 {
        (1, h.first_usable)
    } else {
        (h.last_usable, h.my_lba)
    };
    ensure!(
        h.entries_lba > after && array_end <= before,
        "{which} gpt entry array at lba {}..{array_end} overlaps its header or the usable range \
         (it must lie within lba {}..{before})",
        h.entries_lba,
        after + 1
    );
    Ok(())
}

/// Decodes one entry; `None` for an unused one (nil type GUID). Checks
/// the LBA range against the header's usable range and the GUID.
fn decode_entry(raw: &[u8], number: usize, h: &Header) -> Result<Option<PartitionEntry>> {
    let type_guid = Uuid::from_slice_le(&raw[0..16]).context("decode type guid")?;
    if type_guid.is_nil() {
        return Ok(None);
    }
    let units: Vec<u16> = raw[56..128]
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let name = String::from_utf16(&units)
        .with_context(|| format!("gpt partition entry {number} name is not valid utf-16"))?;
    let what = format!("gpt partition entry {number} ({})", shown(&name));
    let part_guid = Uuid::from_slice_le(&raw[16..32]).context("decode partition guid")?;
    ensure!(!part_guid.is_nil(), "{what} has a nil partition guid");
    let first_lba = le_u64(&raw[32..40]);
    let last_lba = le_u64(&raw[40..48]);
    ensure!(
        first_lba <= last_lba,
        "{what}: first lba {first_lba} is after last lba {last_lba}"
    );
    ensure!(
        first_lba >= h.first_usable && last_lba <= h.last_usable,
        "{what}: lba {first_lba}..={last_lba} is outside the usable range {}..={}",
        h.first_usable,
        h.last_usable
    );
    Ok(Some(PartitionEntry {
        name,
        type_guid,
        part_guid,
        first_lba,
        last_lba,
        attributes: le_u64(&raw[48..56]),
    }))
}

/// No two partitions may share a sector or a partition GUID. Sorting
/// keeps this O(n log n) for the largest arrays the reader accepts.
fn check_no_overlap(parts: &[(usize, PartitionEntry)]) -> Result<()> {
    let mut by_start: Vec<&(usize, PartitionEntry)> = parts.iter().collect();
    by_start.sort_by_key(|(_, p)| (p.first_lba, p.last_lba));
    for pair in by_start.windows(2) {
        let [(i, p), (j, q)] = [pair[0], pair[1]];
        ensure!(
            p.last_lba < q.first_lba,
            "gpt partition entry {i} ({}) at lba {}..={} overlaps entry {j} ({}) at lba {}..={}",
            shown(&p.name),
            p.first_lba,
            p.last_lba,
            shown(&q.name),
            q.first_lba,
            q.last_lba
        );
    }
    let mut by_guid: Vec<&(usize, PartitionEntry)> = parts.iter().collect();
    by_guid.sort_by_key(|(_, p)| p.part_guid);
    for pair in by_guid.windows(2) {
        let [(i, p), (j, q)] = [pair[0], pair[1]];
        ensure!(
            p.part_guid != q.part_guid,
            "gpt partition entries {i} ({}) and {j} ({}) share the partition guid {}",
            shown(&p.name),
            shown(&q.name),
            p.part_guid
        );
    }
    Ok(())
}

/// Recomputes both entry-array CRCs and both header CRCs of the GPT in
/// `image` in place, wherever the headers' own fields locate them. For
/// fuzzing and tests: a mutated table then reaches the checks behind the
/// CRCs, which is where a careless reader overflows. Fields that point
/// outside `image` are left alone.
pub fn reseal(image: &mut [u8], sector_size: u64) {
    let Ok(ss) = usize::try_from(sector_size) else {
        return;
    };
    let sectors = image.len() / ss.max(1);
    if ss < 512 || sectors < 3 {
        return;
    }
    for lba in [1, sectors - 1] {
        let h = lba * ss;
        let entries_lba = le_u64(&image[h + 72..h + 80]);
        let count = u64::from(le_u32(&image[h + 80..h + 84]));
        let size = u64::from(le_u32(&image[h + 84..h + 88]));
        let array = entries_lba
            .checked_mul(sector_size)
            .zip(count.checked_mul(size))
            .and_then(|(start, len)| {
                Some((usize::try_from(start).ok()?, usize::try_from(len).ok()?))
            })
            .and_then(|(start, len)| image.get(start..start.checked_add(len)?));
        if let Some(array) = array {
            let crc = crc32fast::hash(array);
            image[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
        }
        let header_size = usize::try_from(le_u32(&image[h + 12..h + 16]))
            .unwrap_or(usize::MAX)
            .clamp(HEADER_SIZE as usize, ss);
        image[h + 16..h + 20].fill(0);
        let crc = crc32fast::hash(&image[h..h + header_size]);
        image[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Checks everything `write_gpt` relies on, with errors naming the
/// offending partition.
fn validate(layout: &GptLayout) -> Result<()> {
    let ss = layout.sector_size;
    ensure!(
        (512..=MAX_SECTOR).contains(&ss) && ss.is_power_of_two(),
        "sector size {ss} is not a power of two between 512 and {MAX_SECTOR}"
    );
    ensure!(
        layout.disk_size.is_multiple_of(ss),
        "disk size {} is not a multiple of the sector size {ss}",
        layout.disk_size
    );
    let first = first_usable_lba(ss);
    let last = last_usable_lba(layout.disk_size, ss);
    ensure!(
        layout.disk_size / ss > 2 * first,
        "disk of {} bytes is too small to hold a gpt",
        layout.disk_size
    );
    ensure!(
        layout.partitions.len() as u64 <= NUM_ENTRIES,
        "{} partitions exceed the {NUM_ENTRIES} gpt entries",
        layout.partitions.len()
    );

    for (i, p) in layout.partitions.iter().enumerate() {
        let what = format!("partition {} ({:?})", i + 1, p.name);
        ensure!(
            !p.type_guid.is_nil(),
            "{what} has a nil type guid, which marks an unused entry"
        );
        ensure!(!p.part_guid.is_nil(), "{what} has a nil partition guid");
        ensure!(
            p.first_lba <= p.last_lba,
            "{what} ends at lba {} before it starts at lba {}",
            p.last_lba,
            p.first_lba
        );
        ensure!(
            p.first_lba >= first && p.last_lba <= last,
            "{what} spans lba {}..={} outside the usable range {first}..={last}",
            p.first_lba,
            p.last_lba
        );
        let units = p.name.encode_utf16().count();
        ensure!(
            units <= NAME_UNITS,
            "{what} name is {units} utf-16 units, more than {NAME_UNITS}"
        );
        ensure!(
            !p.name.contains('\0'),
            "{what} name contains a nul character"
        );
        ensure!(
            p.attributes & RESERVED_ATTRIBUTES == 0,
            "{what} sets reserved attribute bits {:#018x} (only bits 0-2 and 48-63 are defined)",
            p.attributes & RESERVED_ATTRIBUTES
        );
        for (j, q) in layout.partitions.iter().enumerate().take(i) {
            ensure!(
                p.last_lba < q.first_lba || q.last_lba < p.first_lba,
                "{what} at lba {}..={} overlaps partition {} ({:?}) at lba {}..={}",
                p.first_lba,
                p.last_lba,
                j + 1,
                q.name,
                q.first_lba,
                q.last_lba
            );
            ensure!(
                p.part_guid != q.part_guid,
                "{what} reuses the partition guid {} of partition {}",
                p.part_guid,
                j + 1
            );
        }
    }
    Ok(())
}

/// Encodes the used entries; the caller pads to the full array size.
fn encode_entries(layout: &GptLayout) -> Result<Vec<u8>> {
    let mut out = vec![0u8; to_usize(NUM_ENTRIES * ENTRY_SIZE)?];
    for (p, raw) in layout
        .partitions
        .iter()
        .zip(out.chunks_exact_mut(to_usize(ENTRY_SIZE)?))
    {
        // GUIDs are stored in the mixed-endian Microsoft layout.
        raw[0..16].copy_from_slice(&p.type_guid.to_bytes_le());
        raw[16..32].copy_from_slice(&p.part_guid.to_bytes_le());
        raw[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        raw[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        raw[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (unit, slot) in p.name.encode_utf16().zip(raw[56..128].chunks_exact_mut(2)) {
            slot.copy_from_slice(&unit.to_le_bytes());
        }
    }
    Ok(out)
}

/// Header fields that differ between layouts or between the two copies.
struct HeaderFields {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    entries_crc: u32,
    sector_size: u64,
}

/// Encodes a full header sector (92 defined bytes, zero padding).
fn encode_header(h: &HeaderFields) -> Vec<u8> {
    // sector_size was validated to be a small power of two.
    let mut s = vec![0u8; h.sector_size as usize];
    s[0..8].copy_from_slice(SIGNATURE);
    s[8..12].copy_from_slice(&REVISION.to_le_bytes());
    s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    // 16..20 header CRC (computed below with the field zeroed), 20..24 reserved.
    s[24..32].copy_from_slice(&h.my_lba.to_le_bytes());
    s[32..40].copy_from_slice(&h.alternate_lba.to_le_bytes());
    s[40..48].copy_from_slice(&h.first_usable.to_le_bytes());
    s[48..56].copy_from_slice(&h.last_usable.to_le_bytes());
    s[56..72].copy_from_slice(&h.disk_guid.to_bytes_le());
    s[72..80].copy_from_slice(&h.entries_lba.to_le_bytes());
    s[80..84].copy_from_slice(&(NUM_ENTRIES as u32).to_le_bytes());
    s[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    s[88..92].copy_from_slice(&h.entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&s[..HEADER_SIZE as usize]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    s
}

/// A decoded and CRC-checked header.
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u64,
    entries_crc: u32,
}

/// Largest partition entry the reader accepts. UEFI allows any
/// `128 * 2^n`; every tool writes 128, and Linux reads nothing else.
const MAX_ENTRY_SIZE: u32 = 4096;

fn read_header<D: Read + Seek>(dev: &mut D, lba: u64, ss: u64, which: &str) -> Result<Header> {
    let offset = lba
        .checked_mul(ss)
        .with_context(|| format!("{which} gpt header lba {lba} overflows"))?;
    let mut s = read_at(dev, offset, to_usize(ss)?)
        .with_context(|| format!("read {which} gpt header at lba {lba}"))?;
    ensure!(
        &s[0..8] == SIGNATURE,
        "{which} gpt header at lba {lba} has no \"EFI PART\" signature (found {})",
        shown_bytes(&s[0..8])
    );
    let size = le_u32(&s[12..16]);
    // ss <= MAX_SECTOR, so it fits a u32 and a usize.
    let max_size = u32::try_from(ss).unwrap_or(u32::MAX);
    ensure!(
        (HEADER_SIZE..=max_size).contains(&size),
        "{which} gpt header size {size} is outside {HEADER_SIZE}..={ss}"
    );
    let stored = le_u32(&s[16..20]);
    s[16..20].fill(0);
    let computed = crc32fast::hash(&s[..size as usize]);
    ensure!(
        stored == computed,
        "{which} gpt header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
    );
    ensure!(
        s[20..24] == [0; 4],
        "{which} gpt header reserved field (bytes 20..24) is not zero"
    );
    let my_lba = le_u64(&s[24..32]);
    ensure!(
        my_lba == lba,
        "{which} gpt header at lba {lba} claims to be at lba {my_lba}"
    );
    let num_entries = le_u32(&s[80..84]);
    let entry_size = le_u32(&s[84..88]);
    ensure!(
        (128..=MAX_ENTRY_SIZE).contains(&entry_size) && entry_size.is_power_of_two(),
        "{which} gpt entry size {entry_size} is not 128 * 2^n up to {MAX_ENTRY_SIZE}"
    );
    let array_bytes = u64::from(num_entries) * u64::from(entry_size);
    ensure!(
        array_bytes <= MAX_ARRAY_BYTES,
        "{which} gpt entry array of {num_entries} x {entry_size} bytes is over the \
         {MAX_ARRAY_BYTES}-byte limit"
    );
    Ok(Header {
        my_lba,
        alternate_lba: le_u64(&s[32..40]),
        first_usable: le_u64(&s[40..48]),
        last_usable: le_u64(&s[48..56]),
        disk_guid: Uuid::from_slice_le(&s[56..72]).context("decode disk guid")?,
        entries_lba: le_u64(&s[72..80]),
        num_entries,
        entry_size: u64::from(entry_size),
        entries_crc: le_u32(&s[88..92]),
    })
}

fn read_entries<D: Read + Seek>(dev: &mut D, h: &Header, ss: u64, which: &str) -> Result<Vec<u8>> {
    // Bounded by MAX_ARRAY_BYTES in read_header.
    let len = u64::from(h.num_entries) * h.entry_size;
    let offset = h
        .entries_lba
        .checked_mul(ss)
        .with_context(|| format!("{which} gpt entry array lba {} overflows", h.entries_lba))?;
    let raw = read_at(dev, offset, to_usize(len)?)
        .with_context(|| format!("read {which} gpt entry array at lba {}", h.entries_lba))?;
    let computed = crc32fast::hash(&raw);
    ensure!(
        computed == h.entries_crc,
        "{which} gpt partition entry array crc mismatch: stored {:#010x}, computed {computed:#010x}",
        h.entries_crc
    );
    Ok(raw)
}

fn write_at<D: Write + Seek>(dev: &mut D, offset: u64, data: &[u8]) -> Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(data)?;
    Ok(())
}

fn read_at<D: Read + Seek>(dev: &mut D, offset: u64, len: usize) -> Result<Vec<u8>> {
    dev.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    dev.read_exact(&mut buf)?;
    Ok(buf)
}

fn to_usize(n: u64) -> Result<usize> {
    match usize::try_from(n) {
        Ok(v) => Ok(v),
        Err(_) => bail!("size {n} does not fit in memory"),
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MIB: u64 = 1 << 20;

    fn guid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    /// The six-partition A/B layout used by the tests (also by tools.rs,
    /// which has its own copy since integration tests cannot see this).
    fn ab_layout() -> GptLayout {
        let ro = 1u64 << 60;
        let mib = |m: u64| m * MIB / 512;
        let part =
            |name: &str, ty: &str, uuid: &str, start: u64, size: u64, attr: u64| PartitionEntry {
                name: name.to_string(),
                type_guid: guid(ty),
                part_guid: guid(uuid),
                first_lba: mib(start),
                last_lba: mib(start + size) - 1,
                attributes: attr,
            };
        let root = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
        let verity = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
        GptLayout {
            sector_size: 512,
            disk_size: 64 * MIB,
            disk_guid: guid("8a9e1f3c-5b7d-4e21-9c0a-1b2c3d4e5f60"),
            partitions: vec![
                part(
                    "esp",
                    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                    "11111111-2222-4333-8444-555555555501",
                    1,
                    8,
                    0,
                ),
                part(
                    "root-a",
                    root,
                    "11111111-2222-4333-8444-555555555502",
                    9,
                    16,
                    ro,
                ),
                part(
                    "root-a-verity",
                    verity,
                    "11111111-2222-4333-8444-555555555503",
                    25,
                    1,
                    ro,
                ),
                part(
                    "root-b",
                    root,
                    "11111111-2222-4333-8444-555555555504",
                    26,
                    16,
                    ro | (1 << 63),
                ),
                part(
                    "root-b-verity",
                    verity,
                    "11111111-2222-4333-8444-555555555505",
                    42,
                    1,
                    ro | (1 << 63),
                ),
                part(
                    "data",
                    "0fc63daf-8483-4772-8e79-3d69d8477de4",
                    "11111111-2222-4333-8444-555555555506",
                    43,
                    20,
                    1 << 59,
                ),
            ],
        }
    }

    fn written(layout: &GptLayout) -> Vec<u8> {
        let mut dev = Cursor::new(vec![0u8; layout.disk_size as usize]);
        write_gpt(&mut dev, layout).unwrap();
        dev.into_inner()
    }

    #[test]
    fn usable_range_for_512_byte_sectors() {
        assert_eq!(first_usable_lba(512), 34);
        assert_eq!(last_usable_lba(64 * MIB, 512), 131072 - 34);
        assert_eq!(first_usable_lba(4096), 6);
        assert_eq!(last_usable_lba(64 * MIB, 4096), 16384 - 6);
    }

    #[test]
    fn write_is_deterministic_and_round_trips() {
        let layout = ab_layout();
        let a = written(&layout);
        let b = written(&layout);
        assert!(a == b, "two writes of the same layout differ");
        let back = read_gpt(&mut Cursor::new(a.clone()), 512).unwrap();
        assert_eq!(back, layout);
        // Protective MBR: type 0xEE from LBA 1 covering the rest.
        assert_eq!(a[446 + 4], 0xEE);
        assert_eq!(le_u32(&a[446 + 8..]), 1);
        assert_eq!(le_u32(&a[446 + 12..]), (64 * MIB / 512 - 1) as u32);
        assert_eq!(&a[510..512], &[0x55, 0xAA]);
        // Backup header in the last sector.
        assert_eq!(&a[a.len() - 512..a.len() - 504], SIGNATURE);
    }

    #[test]
    fn round_trips_with_4k_sectors() {
        let mut layout = ab_layout();
        layout.sector_size = 4096;
        for p in &mut layout.partitions {
            p.first_lba /= 8;
            p.last_lba = (p.last_lba + 1) / 8 - 1;
        }
        let img = written(&layout);
        assert_eq!(read_gpt(&mut Cursor::new(img), 4096).unwrap(), layout);
    }

    #[test]
    fn read_detects_crc_tampering() {
        let img = written(&ab_layout());
        let last = img.len() - 512;
        let cases: [(usize, &str); 4] = [
            (512 + 40, "primary gpt header crc mismatch"),
            (1024 + 130, "primary gpt partition entry array crc mismatch"),
            (last + 60, "backup gpt header crc mismatch"),
            (
                last - 32 * 512 + 5,
                "backup gpt partition entry array crc mismatch",
            ),
        ];
        for (offset, want) in cases {
            let mut bad = img.clone();
            bad[offset] ^= 0x01;
            let err = format!("{:#}", read_gpt(&mut Cursor::new(bad), 512).unwrap_err());
            assert!(
                err.contains(want),
                "flip at {offset}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn read_rejects_wrong_signature_and_missing_mbr() {
        let img = written(&ab_layout());
        let mut bad = img.clone();
        bad[512] = b'X';
        let err = format!("{:#}", read_gpt(&mut Cursor::new(bad), 512).unwrap_err());
        assert!(err.contains("signature"), "{err}");
        let mut bad = img;
        bad[446 + 4] = 0x83;
        let err = format!("{:#}", read_gpt(&mut Cursor::new(bad), 512).unwrap_err());
        assert!(err.contains("protective"), "{err}");
    }

    /// Applies `edit` to both copies of entry `index` (0-based) of a
    /// written image, then reseals the CRCs: the reader must reject the
    /// contents, not merely the checksum.
    fn with_entry(img: &[u8], index: usize, edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut img = img.to_vec();
        let backup_array = img.len() - 33 * 512;
        for array in [1024, backup_array] {
            edit(&mut img[array + index * 128..][..128]);
        }
        reseal(&mut img, 512);
        img
    }

    /// Applies `edit` to both headers (512-byte sectors), then reseals.
    fn with_headers(img: &[u8], edit: impl Fn(&mut [u8], bool)) -> Vec<u8> {
        let mut img = img.to_vec();
        let last = img.len() - 512;
        edit(&mut img[512..1024], true);
        edit(&mut img[last..], false);
        reseal(&mut img, 512);
        img
    }

    fn read_err(img: Vec<u8>) -> String {
        format!("{:#}", read_gpt(&mut Cursor::new(img), 512).unwrap_err())
    }

    #[test]
    fn reseal_keeps_a_valid_table_valid() {
        let img = written(&ab_layout());
        let mut copy = img.clone();
        reseal(&mut copy, 512);
        assert!(copy == img);
    }

    /// Defect 4: a table whose CRCs are valid but whose entries are absurd
    /// must be an error naming the entry and field, never a panic or an
    /// overflow in a caller. Covers the reported values (first > last,
    /// last = 2^64-1, first = 2^56) and the rest of the class.
    #[test]
    fn crc_valid_absurd_entries_are_errors() {
        let img = written(&ab_layout());
        let set = |off: usize, v: u64| {
            move |e: &mut [u8]| e[off..off + 8].copy_from_slice(&v.to_le_bytes())
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                with_entry(&img, 1, set(32, 60_000)),
                "entry 2 (root-a): first lba 60000 is after last lba 51199",
            ),
            (
                with_entry(&img, 1, set(40, u64::MAX)),
                "entry 2 (root-a): lba 18432..=18446744073709551615 is outside the usable range 34..=131038",
            ),
            (
                with_entry(&img, 0, |e| {
                    e[32..40].copy_from_slice(&(1u64 << 56).to_le_bytes());
                    e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
                }),
                "entry 1 (esp): lba 72057594037927936..=18446744073709551615 is outside the usable range",
            ),
            (
                with_entry(&img, 5, set(40, 131_039)),
                "entry 6 (data): lba 88064..=131039 is outside the usable range 34..=131038",
            ),
            (
                with_entry(&img, 0, set(32, 33)),
                "entry 1 (esp): lba 33..=18431 is outside the usable range",
            ),
            (
                with_entry(&img, 2, set(32, 51_199)),
                "gpt partition entry 2 (root-a) at lba 18432..=51199 overlaps entry 3 (root-a-verity) at lba 51199..=53247",
            ),
            (
                // An unused slot of the array that claims the whole disk.
                with_entry(&img, 100, |e| {
                    let src = img[1024 + 3 * 128..][..128].to_vec();
                    e.copy_from_slice(&src);
                    e[16] ^= 1;
                }),
                "gpt partition entry 4 (root-b) at lba 53248..=86015 overlaps entry 101 (root-b)",
            ),
            (
                with_entry(&img, 4, |e| {
                    let src = img[1024 + 3 * 128 + 16..][..16].to_vec();
                    e[16..32].copy_from_slice(&src);
                }),
                "share the partition guid",
            ),
            (with_entry(&img, 4, |e| e[16..32].fill(0)), "entry 5 (root-b-verity) has a nil partition guid"),
        ];
        for (bad, want) in cases {
            let err = read_err(bad);
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn crc_valid_absurd_headers_are_errors() {
        let img = written(&ab_layout());
        let u32_at = |off: usize, v: u32| {
            move |h: &mut [u8], _: bool| h[off..off + 4].copy_from_slice(&v.to_le_bytes())
        };
        let u64_at = |off: usize, v: u64| {
            move |h: &mut [u8], _: bool| h[off..off + 8].copy_from_slice(&v.to_le_bytes())
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with_headers(&img, u32_at(12, 513)), "primary gpt header size 513 is outside 92..=512"),
            (with_headers(&img, u32_at(12, u32::MAX)), "primary gpt header size 4294967295"),
            (with_headers(&img, u32_at(12, 91)), "primary gpt header size 91"),
            (with_headers(&img, u32_at(84, 0)), "primary gpt entry size 0 is not 128 * 2^n"),
            (with_headers(&img, u32_at(84, 136)), "primary gpt entry size 136"),
            (with_headers(&img, u32_at(84, 8192)), "primary gpt entry size 8192"),
            (with_headers(&img, u32_at(84, u32::MAX)), "primary gpt entry size 4294967295"),
            (with_headers(&img, u32_at(80, u32::MAX)), "primary gpt entry array of 4294967295 x 128 bytes is over"),
            (with_headers(&img, u32_at(80, 8193)), "over the 1048576-byte limit"),
            // 256 entries still fit 1 MiB but no longer fit before LBA 34.
            (with_headers(&img, u32_at(80, 256)), "primary gpt entry array at lba 2..66 overlaps its header or the usable range"),
            (with_headers(&img, u64_at(72, u64::MAX)), "primary gpt entry array lba 18446744073709551615 overflows"),
            (with_headers(&img, u64_at(72, 1 << 60)), "primary gpt entry array at lba 1152921504606846976"),
            (with_headers(&img, u64_at(72, 1)), "primary gpt entry array at lba 1..33 overlaps"),
            (with_headers(&img, u64_at(48, u64::MAX)), "primary gpt usable range 34..=18446744073709551615 does not fit"),
            (with_headers(&img, u64_at(40, 200_000)), "primary gpt usable range 200000..=131038"),
            (with_headers(&img, u64_at(32, u64::MAX)), "primary gpt header points to a backup at lba 18446744073709551615"),
            (with_headers(&img, u32_at(20, 1)), "reserved field"),
            (
                with_headers(&img, |h, primary| {
                    if !primary {
                        h[72..80].copy_from_slice(&100u64.to_le_bytes());
                    }
                }),
                "backup gpt entry array at lba 100..132 overlaps its header or the usable range (it must lie within lba 131039..131071)",
            ),
        ];
        for (bad, want) in cases {
            let err = read_err(bad);
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
    }

    /// Defect 8: bytes from the table reach error text only escaped.
    #[test]
    fn untrusted_names_and_signatures_are_escaped() {
        let img = written(&ab_layout());
        let name: Vec<u16> = "\u{1b}[2J\u{202e}x\u{7}".encode_utf16().collect();
        let bad = with_entry(&img, 2, |e| {
            e[56..128].fill(0);
            for (slot, unit) in e[56..].chunks_exact_mut(2).zip(&name) {
                slot.copy_from_slice(&unit.to_le_bytes());
            }
            e[32..40].copy_from_slice(&51_199u64.to_le_bytes());
        });
        let err = read_err(bad);
        assert!(err.contains("(\\x1b[2J\\u{202e}x\\x07)"), "{err}");
        assert!(
            !err.contains('\u{1b}') && !err.contains('\u{202e}'),
            "{err:?}"
        );

        let mut bad = img.clone();
        bad[512..520].copy_from_slice(b"\x1b[2J\x9b\x07\xff ");
        let err = read_err(bad);
        assert!(err.contains("found \\x1b[2J\\x9b\\x07\\xff "), "{err}");
        assert!(!err.contains('\u{1b}'), "{err:?}");
    }

    fn write_err(layout: &GptLayout) -> String {
        let mut dev = Cursor::new(vec![0u8; layout.disk_size as usize]);
        format!("{:#}", write_gpt(&mut dev, layout).unwrap_err())
    }

    #[test]
    fn rejects_overlap() {
        let mut layout = ab_layout();
        layout.partitions[2].first_lba = layout.partitions[1].last_lba;
        let err = write_err(&layout);
        assert!(err.contains("overlaps partition 2"), "{err}");
    }

    #[test]
    fn rejects_bad_layouts() {
        let mut l = ab_layout();
        l.partitions[0].first_lba = 33;
        assert!(write_err(&l).contains("outside the usable range 34"));

        let mut l = ab_layout();
        l.partitions[5].last_lba = last_usable_lba(l.disk_size, 512) + 1;
        assert!(write_err(&l).contains("outside the usable range"));

        let mut l = ab_layout();
        l.partitions[0].name = "x".repeat(37);
        assert!(write_err(&l).contains("37 utf-16 units"));
        l.partitions[0].name = "é".repeat(36);
        let mut dev = Cursor::new(vec![0u8; l.disk_size as usize]);
        write_gpt(&mut dev, &l).unwrap();
        assert_eq!(
            read_gpt(&mut dev, 512).unwrap().partitions[0].name,
            l.partitions[0].name
        );

        let mut l = ab_layout();
        l.disk_size += 100;
        assert!(write_err(&l).contains("not a multiple of the sector size"));

        let mut l = ab_layout();
        l.partitions[3].part_guid = l.partitions[1].part_guid;
        assert!(write_err(&l).contains("reuses the partition guid"));

        let mut l = ab_layout();
        l.partitions[3].attributes |= 1 << 20;
        assert!(write_err(&l).contains("reserved attribute bits"));

        let mut l = ab_layout();
        l.partitions[3].first_lba = l.partitions[3].last_lba + 1;
        assert!(write_err(&l).contains("before it starts"));

        let l = ab_layout();
        let mut short = Cursor::new(vec![0u8; 1 << 20]);
        let err = format!("{:#}", write_gpt(&mut short, &l).unwrap_err());
        assert!(err.contains("layout disk size"), "{err}");
    }
}
