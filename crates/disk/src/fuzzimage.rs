//! A compact encoding of a mostly-zero disk image, for fuzzing the image
//! readers.
//!
//! A golden image worth fuzzing (GPT, a FAT boot partition, a verity tree,
//! a signed manifest) is hundreds of KiB, nearly all zeros, while fuzzers
//! and committed corpora want inputs of a few KiB, and mutations are
//! wasted on zero runs. So a fuzz input is a list of patches over a zeroed
//! image: what the image really contains, a few KiB for a complete A/B
//! layout. Mutating the patch headers moves or resizes real structures;
//! mutating their bytes edits them in place.
//!
//! Format, little-endian: `u32 image length` (capped at [`MAX_IMAGE`]),
//! `u8 flags` (bit 0: recompute the GPT CRCs after patching, so that a
//! mutation reaches the checks behind them; see [`crate::gpt::reseal`]),
//! then patches `u32 offset, u16 length, length bytes` until the input
//! ends. Patches beyond the image end are clipped; a truncated last patch
//! contributes the bytes it has.

/// Largest image an input may ask for, so a 5-byte input cannot demand
/// gigabytes.
pub const MAX_IMAGE: usize = 8 << 20;
/// Flag bit: recompute the GPT CRCs after patching.
pub const RESEAL_GPT: u8 = 1;
/// Zero runs shorter than this stay inside a patch when encoding: a patch
/// header is 6 bytes.
const MERGE_GAP: usize = 8;

/// Encodes `image` (at most [`MAX_IMAGE`] bytes, as `encode` truncates)
/// with `flags`.
///
/// The patch at the end of the image goes second, after the one at its
/// start: for a disk those are the two GPT copies, and a mutation that
/// truncates the input then cuts into partition contents, which reach
/// deeper checks, rather than into the backup GPT.
pub fn encode(image: &[u8], flags: u8) -> Vec<u8> {
    let image = &image[..image.len().min(MAX_IMAGE)];
    let mut patches: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < image.len() {
        if image[i] == 0 {
            i += 1;
            continue;
        }
        // Extend the run while the next non-zero byte is close enough.
        let start = i;
        let mut end = i + 1;
        while end < image.len() && end - start < usize::from(u16::MAX) {
            if image[end] != 0 {
                end += 1;
                continue;
            }
            let next = image[end..].iter().take(MERGE_GAP).position(|&b| b != 0);
            match next {
                Some(k) if end + k - start < usize::from(u16::MAX) => end += k,
                _ => break,
            }
        }
        patches.push((start, end));
        i = end;
    }
    if patches.len() > 2 {
        if let Some(last) = patches.pop() {
            patches.insert(1, last);
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(image.len() as u32).to_le_bytes());
    out.push(flags);
    for (start, end) in patches {
        // start < MAX_IMAGE fits a u32; a patch is at most u16::MAX long.
        out.extend_from_slice(&(start as u32).to_le_bytes());
        out.extend_from_slice(&((end - start) as u16).to_le_bytes());
        out.extend_from_slice(&image[start..end]);
    }
    out
}

/// Decodes an input into the image and its flags; `None` if the input is
/// too short to name an image length.
pub fn decode(input: &[u8]) -> Option<(Vec<u8>, u8)> {
    let len = u32::from_le_bytes(input.get(..4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?.min(MAX_IMAGE);
    let flags = *input.get(4)?;
    let mut image = vec![0u8; len];
    let mut rest = &input[5..];
    while rest.len() >= 6 {
        let offset = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let n = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        let bytes = &rest[6..];
        let bytes = &bytes[..n.min(bytes.len())];
        if offset < len {
            let end = len.min(offset.saturating_add(bytes.len()));
            image[offset..end].copy_from_slice(&bytes[..end - offset]);
        }
        rest = &rest[6 + bytes.len()..];
    }
    Some((image, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_compact() {
        let mut image = vec![0u8; 1 << 20];
        image[0] = 1;
        image[5] = 2; // merged with the first run
        image[100_000..100_300].fill(0xab);
        image[(1 << 20) - 1] = 9;
        // A run longer than one patch can hold.
        image[200_000..300_000].fill(0x5a);
        let enc = encode(&image, RESEAL_GPT);
        assert!(enc.len() < 101_000, "{}", enc.len());
        assert_eq!(decode(&enc), Some((image, RESEAL_GPT)));
    }

    #[test]
    fn hostile_inputs_are_bounded() {
        assert_eq!(decode(&[1, 2, 3]), None);
        let (img, _) = decode(&[0xff, 0xff, 0xff, 0xff, 0]).unwrap();
        assert_eq!(img.len(), MAX_IMAGE);
        // A patch at the very end, longer than the image and than the input.
        let mut input = vec![16, 0, 0, 0, 0];
        input.extend_from_slice(&14u32.to_le_bytes());
        input.extend_from_slice(&u16::MAX.to_le_bytes());
        input.extend_from_slice(&[7, 7, 7, 7]);
        let (img, _) = decode(&input).unwrap();
        assert_eq!(&img[14..], &[7, 7]);
        let mut input = vec![16, 0, 0, 0, 0];
        input.extend_from_slice(&u32::MAX.to_le_bytes());
        input.extend_from_slice(&3u16.to_le_bytes());
        input.extend_from_slice(&[7, 7, 7]);
        assert_eq!(decode(&input).unwrap().0, vec![0; 16]);
    }
}
