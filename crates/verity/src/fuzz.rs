//! Entry point of the `verity_superblock` fuzz target and its stable twin
//! (`tests/fuzz.rs`): the superblock parser and the full verifier on a
//! hash area taken from the input.
//!
//! Input: one byte choosing the data size (1 to 136 blocks, so trees of
//! zero, one and two levels occur), then the hash area. The data is a
//! fixed pattern and the expected root hash is that of the tree
//! [`crate::format`] builds for it, so a seed that is a real hash area
//! verifies and every mutation of it is checked against the truth.

use crate::{format, read_superblock, verify, VerityParams, BLOCK};
use std::io::Cursor;

/// Salt and UUID of the trees the seeds hold.
pub const PARAMS: VerityParams = VerityParams {
    salt: [0x5a; 32],
    uuid: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef),
};

/// The data a size byte selects.
pub fn data_for(size_byte: u8) -> Vec<u8> {
    let blocks = 1 + usize::from(size_byte) % 136;
    (0..blocks * BLOCK as usize)
        .map(|i| (i / 4096) as u8 ^ (i as u8).wrapping_mul(7))
        .collect()
}

/// A seed: the size byte followed by the real hash area for its data.
pub fn seed(size_byte: u8) -> Vec<u8> {
    let data = data_for(size_byte);
    let mut area = Cursor::new(Vec::new());
    let mut out = vec![size_byte];
    // The pattern data is always a positive multiple of the block size.
    if format(&data[..], data.len() as u64, &mut area, &PARAMS).is_ok() {
        out.extend_from_slice(area.get_ref());
    }
    out
}

/// Runs the parser and the verifier on `input`; panics only if an
/// invariant breaks: a message with an unescaped control character, or a
/// hash area that verifies without being the one `format` writes.
pub fn superblock(input: &[u8]) {
    let Some((&size_byte, area)) = input.split_first() else {
        return;
    };
    let _ = read_superblock(Cursor::new(area)).map_err(|e| check_text(&format!("{e:#}")));
    let data = data_for(size_byte);
    let mut truth = Cursor::new(Vec::new());
    let Ok(info) = format(&data[..], data.len() as u64, &mut truth, &PARAMS) else {
        return;
    };
    match verify(
        &data[..],
        data.len() as u64,
        Cursor::new(area),
        &info.root_hash,
    ) {
        Ok(_) => {
            // Everything but the superblock UUID (bytes 16..32), which
            // no verifier uses, must be the real hash area.
            let want = truth.get_ref();
            let same = area.len() >= want.len()
                && area[..16] == want[..16]
                && area[32..want.len()] == want[32..];
            assert!(same, "a hash area that differs from the real one verified");
        }
        Err(e) => check_text(&format!("{e:#}")),
    }
}

fn check_text(text: &str) {
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\\' && slotsmith_yaml::escape::needs_escape(c))
    {
        panic!("unescaped {c:?} in message: {text:?}");
    }
}
