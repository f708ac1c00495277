//! The dm-verity mapping: its table line and the device-mapper ioctl
//! buffers that create it, built as plain bytes so they can be tested
//! without a kernel.
//!
//! The table is `0 <sectors> verity 1 <data MAJ:MIN> <hash MAJ:MIN> 4096
//! 4096 <data blocks> <hash start block> sha256 <root hash> <salt> 1
//! panic_on_corruption`, with every value taken from the verified manifest
//! (the root hash also equals the signed command line's; see
//! `verify::check_agreement`). `panic_on_corruption` turns one bad block
//! into a kernel panic, and with `panic=5` a reboot: a failed boot for the
//! boot counter rather than a running system on a root that is not ours.
//! The mapping and its table are loaded read-only (`DM_READONLY_FLAG`;
//! dm-verity refuses anything else).
//!
//! The ioctl structures follow linux/dm-ioctl.h (interface version 4):
//! `struct dm_ioctl` is 312 bytes, `struct dm_target_spec` 40 bytes
//! followed by the NUL-terminated parameter string, padded to 8 bytes.
//! Fields are written in native byte order, as the kernel reads them.

use crate::discover::BlockDev;
use anyhow::{bail, Context, Result};
use slotsmith_sign::manifest::{Manifest, VERITY_BLOCK_SIZE, VERITY_HASH};

/// The name of the mapping; the node is `/dev/dm-<minor>`.
pub const DM_NAME: &str = "root";

/// `sizeof(struct dm_ioctl)`.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`: the name field, NUL included.
pub const DM_NAME_LEN: usize = 128;
/// `DM_MAX_TYPE_NAME`: the target type field, NUL included.
pub const DM_MAX_TYPE_NAME: usize = 16;
/// The interface version sent: major 4 (the only compatible one), minor 0
/// (the kernel accepts any minor up to its own).
pub const DM_VERSION: [u32; 3] = [4, 0, 0];
/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`: absent from a DM_DEV_SUSPEND request, it resumes.
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
/// The `DM_IOCTL` ioctl group.
pub const DM_IOCTL: u8 = 0xfd;
/// Command numbers (`enum { DM_VERSION_CMD = 0, ... }`).
pub const DM_DEV_CREATE_CMD: u8 = 3;
pub const DM_DEV_SUSPEND_CMD: u8 = 6;
pub const DM_TABLE_LOAD_CMD: u8 = 9;

/// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)` on x86_64 (and every
/// architecture with the generic ioctl encoding).
pub const fn opcode(cmd: u8) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | ((DM_IOCTL as u32) << 8) | cmd as u32
}

/// One device-mapper target: what a line of `dmsetup table` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    /// Length in 512-byte sectors.
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

impl Target {
    /// The table line `dmsetup create --table` takes.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.start, self.length, self.target_type, self.params
        )
    }
}

/// The verity target for the manifest's root on `root` with its hash tree
/// on `verity`.
pub fn verity_target(m: &Manifest, root: &BlockDev, verity: &BlockDev) -> Result<Target> {
    if m.verity_data_blocks == 0 {
        bail!("the manifest's verity-data-blocks is 0");
    }
    let sectors_per_block = u64::from(VERITY_BLOCK_SIZE / 512);
    let length = m
        .verity_data_blocks
        .checked_mul(sectors_per_block)
        .with_context(|| {
            format!(
                "the manifest's verity-data-blocks {} overflows a sector count",
                m.verity_data_blocks
            )
        })?;
    let params = format!(
        "1 {} {} {bs} {bs} {} {} {VERITY_HASH} {} {} 1 panic_on_corruption",
        root.dev_t(),
        verity.dev_t(),
        m.verity_data_blocks,
        m.verity_hash_start_block,
        hex::encode(m.verity_root_hash),
        hex::encode(m.verity_salt),
        bs = VERITY_BLOCK_SIZE,
    );
    Ok(Target {
        start: 0,
        length,
        target_type: "verity".into(),
        params,
    })
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(b)
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_ne_bytes(b)
}

// Offsets in struct dm_ioctl.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;

/// A request buffer: the header for `name` with `flags`, followed by
/// `payload`, padded to 8 bytes; `data_size` covers the whole buffer.
fn request(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Result<Vec<u8>> {
    if name.is_empty() || name.len() >= DM_NAME_LEN || name.contains('/') || name.contains('\0') {
        bail!("device-mapper name {name:?} is not a valid name");
    }
    let size = (DM_IOCTL_SIZE + payload.len()).next_multiple_of(8);
    let Ok(data_size) = u32::try_from(size) else {
        bail!("device-mapper request of {size} bytes is too large");
    };
    let mut buf = vec![0u8; size];
    for (i, v) in DM_VERSION.iter().enumerate() {
        put_u32(&mut buf, i * 4, *v);
    }
    put_u32(&mut buf, OFF_DATA_SIZE, data_size);
    put_u32(&mut buf, OFF_DATA_START, DM_IOCTL_SIZE as u32);
    put_u32(&mut buf, OFF_TARGET_COUNT, target_count);
    put_u32(&mut buf, OFF_FLAGS, flags);
    buf[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
    buf[DM_IOCTL_SIZE..DM_IOCTL_SIZE + payload.len()].copy_from_slice(payload);
    Ok(buf)
}

/// DM_DEV_CREATE: a new, empty, read-only mapping called `name`.
pub fn create_request(name: &str) -> Result<Vec<u8>> {
    request(name, DM_READONLY_FLAG, 0, &[])
}

/// DM_TABLE_LOAD: `target` as the read-only table of `name`.
pub fn load_request(name: &str, target: &Target) -> Result<Vec<u8>> {
    if target.target_type.is_empty() || target.target_type.len() >= DM_MAX_TYPE_NAME {
        bail!("target type {:?} is not valid", target.target_type);
    }
    if target.params.contains('\0') {
        bail!("target parameters contain a NUL byte");
    }
    // spec, params, NUL, padding to 8: `next` is the offset of the next
    // spec from this one, as the kernel walks them.
    let spec_len = (TARGET_SPEC_SIZE + target.params.len() + 1).next_multiple_of(8);
    let Ok(next) = u32::try_from(spec_len) else {
        bail!(
            "target parameters of {} bytes are too long",
            target.params.len()
        );
    };
    let mut spec = vec![0u8; spec_len];
    put_u64(&mut spec, 0, target.start);
    put_u64(&mut spec, 8, target.length);
    // status (offset 16) stays 0: it is output only.
    put_u32(&mut spec, 20, next);
    spec[24..24 + target.target_type.len()].copy_from_slice(target.target_type.as_bytes());
    spec[TARGET_SPEC_SIZE..TARGET_SPEC_SIZE + target.params.len()]
        .copy_from_slice(target.params.as_bytes());
    request(name, DM_READONLY_FLAG, 1, &spec)
}

/// DM_DEV_SUSPEND without DM_SUSPEND_FLAG: make the loaded table live.
pub fn resume_request(name: &str) -> Result<Vec<u8>> {
    request(name, 0, 0, &[])
}

/// What the kernel wrote back into a request's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub flags: u32,
    pub major: u32,
    pub minor: u32,
}

/// Reads the kernel's answer from a request buffer after the ioctl.
pub fn reply(buf: &[u8]) -> Result<Reply> {
    if buf.len() < DM_IOCTL_SIZE {
        bail!("device-mapper reply of {} bytes is too short", buf.len());
    }
    let major_version = get_u32(buf, 0);
    if major_version != DM_VERSION[0] {
        bail!("the kernel's device-mapper interface is version {major_version}, not 4");
    }
    let (major, minor) = split_dev(get_u64(buf, OFF_DEV));
    Ok(Reply {
        flags: get_u32(buf, OFF_FLAGS),
        major,
        minor,
    })
}

/// Splits the kernel's encoded `dev` (`huge_encode_dev`) into major and
/// minor, as glibc's `major()`/`minor()` do.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_the_kernel_header() {
        // Values as strace prints them for dmsetup (0xc138fd03 etc.).
        assert_eq!(opcode(DM_DEV_CREATE_CMD), 0xc138_fd03);
        assert_eq!(opcode(DM_DEV_SUSPEND_CMD), 0xc138_fd06);
        assert_eq!(opcode(DM_TABLE_LOAD_CMD), 0xc138_fd09);
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        assert_eq!(split_dev(0xfe00), (254, 0));
        assert_eq!(split_dev((253 << 8) | 3), (253, 3));
        // minor 300 = 0x12c: low byte 0x2c, the rest shifted up by 12.
        assert_eq!(split_dev((0x100 << 12) | (8 << 8) | 0x2c), (8, 300));
    }

    fn sample_target() -> Target {
        Target {
            start: 0,
            length: 16,
            target_type: "verity".into(),
            params: "1 254:4 254:5 4096 4096 2 1 sha256 ab cd 1 panic_on_corruption".into(),
        }
    }

    #[test]
    fn load_request_layout_is_exact() {
        let t = sample_target();
        let buf = load_request("root", &t).unwrap();
        // 312 header + 40 spec + 62 params + NUL = 415, padded to 416.
        assert_eq!(t.params.len(), 62);
        assert_eq!(buf.len(), 416);
        let u32_at = |at: usize| get_u32(&buf, at);
        assert_eq!([u32_at(0), u32_at(4), u32_at(8)], [4, 0, 0]);
        assert_eq!(u32_at(12), 416, "data_size");
        assert_eq!(u32_at(16), 312, "data_start");
        assert_eq!(u32_at(20), 1, "target_count");
        assert_eq!(u32_at(24), 0, "open_count");
        assert_eq!(u32_at(28), DM_READONLY_FLAG, "flags");
        assert_eq!(get_u64(&buf, 40), 0, "dev");
        assert_eq!(&buf[48..53], b"root\0");
        assert!(
            buf[53..312].iter().all(|&b| b == 0),
            "name tail, uuid, data[7]"
        );
        let spec = &buf[312..];
        assert_eq!(get_u64(spec, 0), 0, "sector_start");
        assert_eq!(get_u64(spec, 8), 16, "length");
        assert_eq!(get_u32(spec, 16), 0, "status");
        assert_eq!(get_u32(spec, 20), 104, "next: 40 + 62 + 1 padded to 8");
        assert_eq!(&spec[24..40], b"verity\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(&spec[40..102], t.params.as_bytes());
        assert_eq!(&spec[102..], [0, 0], "NUL and padding");
    }

    #[test]
    fn create_and_resume_are_bare_headers() {
        let c = create_request("root").unwrap();
        assert_eq!(c.len(), DM_IOCTL_SIZE);
        assert_eq!(get_u32(&c, 12), 312);
        assert_eq!(get_u32(&c, 20), 0);
        assert_eq!(get_u32(&c, 28), DM_READONLY_FLAG);
        let r = resume_request("root").unwrap();
        assert_eq!(r.len(), DM_IOCTL_SIZE);
        assert_eq!(
            get_u32(&r, 28) & DM_SUSPEND_FLAG,
            0,
            "no suspend flag: resume"
        );
        assert_eq!(&r[48..53], b"root\0");
    }

    #[test]
    fn reply_reads_dev_and_checks_version() {
        let mut buf = create_request("root").unwrap();
        put_u64(&mut buf, OFF_DEV, (253 << 8) | 7);
        put_u32(&mut buf, OFF_FLAGS, DM_READONLY_FLAG | (1 << 5));
        let r = reply(&buf).unwrap();
        assert_eq!((r.major, r.minor), (253, 7));
        assert_eq!(r.flags, DM_READONLY_FLAG | (1 << 5));
        put_u32(&mut buf, 0, 5);
        assert!(reply(&buf).unwrap_err().to_string().contains("version 5"));
        assert!(reply(&buf[..100]).is_err());
    }

    #[test]
    fn bad_targets_are_refused() {
        let mut t = sample_target();
        t.params.push('\0');
        assert!(load_request("root", &t).is_err());
        let mut t = sample_target();
        t.target_type = "x".repeat(16);
        assert!(load_request("root", &t).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(create_request("").is_err());
        assert!(create_request("a/b").is_err());
        assert!(create_request(&"x".repeat(128)).is_err());
        assert!(create_request(&"x".repeat(127)).is_ok());
    }
}
