//! The 512-byte verity superblock that `veritysetup format` puts at the
//! start of the hash area.
//!
//! The kernel never reads it, but `veritysetup verify`/`open`/`dump` do, and
//! our own verifier relies on it for the salt. Encoding and decoding live
//! together so the field offsets are written down exactly once.

use anyhow::{bail, ensure, Context, Result};
use slotsmith_yaml::escape::shown_bytes;
use std::io::{Read, Seek, SeekFrom};
use uuid::Uuid;

/// Size of the encoded superblock; the rest of its hash block is zero.
pub(crate) const SUPERBLOCK_SIZE: usize = 512;
const MAGIC: &[u8; 8] = b"verity\0\0";
const MAX_SALT: usize = 256;
const ALGORITHM_LEN: usize = 32;

/// Decoded verity superblock (cryptsetup `struct verity_sb`, version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: Uuid,
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub algorithm: String,
    /// 1 for the normal format, 0 for the ChromeOS layout.
    pub hash_type: u32,
}

impl Superblock {
    /// Encodes the superblock exactly as cryptsetup 2.6.1 writes it:
    /// little-endian fields, NUL-padded algorithm name and salt.
    pub(crate) fn encode(&self) -> Result<[u8; SUPERBLOCK_SIZE]> {
        ensure!(
            self.salt.len() <= MAX_SALT,
            "salt of {} bytes exceeds the superblock's {MAX_SALT}",
            self.salt.len()
        );
        ensure!(
            self.algorithm.len() < ALGORITHM_LEN,
            "algorithm name {:?} does not fit the superblock",
            self.algorithm
        );
        let mut sb = [0u8; SUPERBLOCK_SIZE];
        sb[0..8].copy_from_slice(MAGIC);
        sb[8..12].copy_from_slice(&1u32.to_le_bytes());
        sb[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        sb[16..32].copy_from_slice(self.uuid.as_bytes());
        sb[32..32 + self.algorithm.len()].copy_from_slice(self.algorithm.as_bytes());
        sb[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        sb[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        sb[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        // The length check above bounds salt_size by 256, so it fits a u16.
        let salt_size = u16::try_from(self.salt.len()).context("salt too long")?;
        sb[80..82].copy_from_slice(&salt_size.to_le_bytes());
        sb[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        Ok(sb)
    }

    /// Decodes and sanity-checks the fields every consumer needs (magic,
    /// version, salt size, algorithm name); policy checks such as "must be
    /// sha256 with 4 KiB blocks" are left to the verifier.
    pub(crate) fn decode(sb: &[u8; SUPERBLOCK_SIZE]) -> Result<Self> {
        if &sb[0..8] != MAGIC {
            bail!(
                "superblock: bad magic \"{}\", expected \"verity\"",
                shown_bytes(&sb[0..8])
            );
        }
        let version = u32_at(sb, 8);
        ensure!(version == 1, "superblock: unsupported version {version}");
        let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
        ensure!(
            salt_size <= MAX_SALT,
            "superblock: salt size {salt_size} exceeds {MAX_SALT}"
        );
        let name = &sb[32..32 + ALGORITHM_LEN];
        let Some(end) = name.iter().position(|&b| b == 0) else {
            bail!("superblock: algorithm name is not NUL-terminated");
        };
        // Printable ASCII only: the name is echoed in error messages.
        let algorithm = std::str::from_utf8(&name[..end])
            .ok()
            .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .with_context(|| {
                format!(
                    "superblock: algorithm name \"{}\" is not printable ASCII",
                    shown_bytes(&name[..end])
                )
            })?
            .to_owned();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[16..32]);
        let mut data_blocks = [0u8; 8];
        data_blocks.copy_from_slice(&sb[72..80]);
        Ok(Self {
            uuid: Uuid::from_bytes(uuid),
            salt: sb[88..88 + salt_size].to_vec(),
            data_blocks: u64::from_le_bytes(data_blocks),
            data_block_size: u32_at(sb, 64),
            hash_block_size: u32_at(sb, 68),
            algorithm,
            hash_type: u32_at(sb, 12),
        })
    }

    /// Offset of the first byte that should be zero but is not, if any:
    /// the reserved fields and the unused tails of the algorithm and salt.
    pub(crate) fn nonzero_padding(sb: &[u8; SUPERBLOCK_SIZE]) -> Option<usize> {
        let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]])).min(MAX_SALT);
        let name_end = sb[32..64]
            .iter()
            .position(|&b| b == 0)
            .map_or(64, |p| 32 + p);
        let zero_ranges = [
            name_end..64,
            82..88,
            88 + salt_size..88 + MAX_SALT,
            88 + MAX_SALT..SUPERBLOCK_SIZE,
        ];
        zero_ranges
            .into_iter()
            .find_map(|r| r.clone().find(|&i| sb[i] != 0))
    }
}

fn u32_at(sb: &[u8; SUPERBLOCK_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]])
}

/// Reads and decodes the superblock at offset 0 of the hash area.
pub fn read_superblock<H: Read + Seek>(mut hash: H) -> Result<Superblock> {
    let raw = read_raw(&mut hash)?;
    Superblock::decode(&raw)
}

pub(crate) fn read_raw<H: Read + Seek>(hash: &mut H) -> Result<[u8; SUPERBLOCK_SIZE]> {
    hash.seek(SeekFrom::Start(0))
        .context("cannot seek to the start of the hash area")?;
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    hash.read_exact(&mut raw)
        .context("cannot read the verity superblock")?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            uuid: Uuid::from_u128(0x1234_5678_1234_5678_9abc_def0_1234_5678),
            salt: (0u8..32).collect(),
            data_blocks: 16384,
            data_block_size: 4096,
            hash_block_size: 4096,
            algorithm: "sha256".into(),
            hash_type: 1,
        }
    }

    #[test]
    fn round_trip_and_offsets() {
        let sb = sample();
        let raw = sb.encode().unwrap();
        assert_eq!(&raw[0..8], b"verity\0\0");
        assert_eq!(raw[8], 1);
        assert_eq!(raw[12], 1);
        assert_eq!(&raw[16..20], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&raw[32..39], b"sha256\0");
        assert_eq!(&raw[72..80], &16384u64.to_le_bytes());
        assert_eq!(&raw[80..82], &32u16.to_le_bytes());
        assert_eq!(raw[88 + 31], 31);
        assert_eq!(Superblock::nonzero_padding(&raw), None);
        assert_eq!(Superblock::decode(&raw).unwrap(), sb);
    }

    #[test]
    fn rejects_garbage() {
        let mut raw = sample().encode().unwrap();
        raw[0] = b'V';
        assert!(format!("{:#}", Superblock::decode(&raw).unwrap_err()).contains("bad magic"));
        // Defect 8: the magic of a garbage file reaches the error escaped.
        raw[0..8].copy_from_slice(b"\x1b[2J\x9b\xff\x07\n");
        let err = format!("{:#}", Superblock::decode(&raw).unwrap_err());
        assert!(
            err.contains("bad magic \"\\x1b[2J\\x9b\\xff\\x07\\n\""),
            "{err}"
        );
        assert!(!err.contains('\u{1b}'), "{err:?}");
        let mut raw = sample().encode().unwrap();
        raw[8] = 2;
        assert!(format!("{:#}", Superblock::decode(&raw).unwrap_err()).contains("version 2"));
        let mut raw = sample().encode().unwrap();
        raw[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(format!("{:#}", Superblock::decode(&raw).unwrap_err()).contains("salt size"));
        let mut raw = sample().encode().unwrap();
        raw[32..64].fill(b'a');
        assert!(Superblock::decode(&raw).is_err());
        let mut raw = sample().encode().unwrap();
        raw[32..36].copy_from_slice(b"\x1b[2J");
        let err = format!("{:#}", Superblock::decode(&raw).unwrap_err());
        assert!(err.contains("algorithm name \"\\x1b[2J56\""), "{err}");
        let mut raw = sample().encode().unwrap();
        raw[400] = 1;
        assert_eq!(Superblock::nonzero_padding(&raw), Some(400));
    }
}
