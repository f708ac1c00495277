//! Reads the sections of a unified kernel image (a PE/COFF file), so that
//! `verify` can check that the kernel, initramfs and command line inside a
//! slot's signed UKI are the ones its signed boot manifest names.
//!
//! Only the headers needed to find sections are parsed: the DOS header's
//! `e_lfanew`, the `PE\0\0` signature, the COFF header's section count and
//! optional header size, and the section table. Every offset and size
//! comes from an untrusted file, so each is checked against the file's
//! length with checked arithmetic; a section's bytes are the first
//! `VirtualSize` bytes of its raw data (the rest is file-alignment
//! padding), never more than the raw data holds.

use anyhow::{bail, ensure, Context, Result};

/// One section: its name and where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name, up to 8 bytes, without NUL padding.
    pub name: String,
    /// Byte range of its contents in the file.
    pub range: std::ops::Range<usize>,
    /// Whether the loader would see more bytes (zeroes) than the file
    /// holds: `VirtualSize` above `SizeOfRawData`.
    pub zero_extended: bool,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b
        .get(at..at.checked_add(2).context("offset overflows")?)
        .context("the PE file is truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at.checked_add(4).context("offset overflows")?)
        .context("the PE file is truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The section table of the PE file `bytes`.
pub fn sections(bytes: &[u8]) -> Result<Vec<Section>> {
    ensure!(bytes.starts_with(b"MZ"), "not a PE file (no MZ header)");
    let pe = u32_at(bytes, 0x3c)? as usize;
    ensure!(
        bytes.get(pe..pe.saturating_add(4)) == Some(b"PE\0\0"),
        "not a PE file (no PE signature at {pe:#x})"
    );
    let coff = pe + 4;
    let count = u16_at(bytes, coff + 2)? as usize;
    let optional = u16_at(bytes, coff + 16)? as usize;
    ensure!(
        count <= 96,
        "the PE file claims {count} sections (at most 96)"
    );
    let table = coff
        .checked_add(20)
        .and_then(|t| t.checked_add(optional))
        .context("section table offset overflows")?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = table + i * 40;
        let raw_name = bytes
            .get(at..at + 8)
            .context("the PE section table is truncated")?;
        let name_len = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
        let name = String::from_utf8_lossy(&raw_name[..name_len]).into_owned();
        let virtual_size = u32_at(bytes, at + 8)? as usize;
        let raw_size = u32_at(bytes, at + 16)? as usize;
        let raw_ptr = u32_at(bytes, at + 20)? as usize;
        let len = virtual_size.min(raw_size);
        let end = raw_ptr.checked_add(len).context("section end overflows")?;
        if end > bytes.len() {
            bail!(
                "section {} ends at byte {end}, beyond the file's {} bytes",
                slotsmith_yaml::escape::shown(&name),
                bytes.len()
            );
        }
        out.push(Section {
            name,
            range: raw_ptr..end,
            zero_extended: virtual_size > raw_size,
        });
    }
    Ok(out)
}

/// The bytes of the one section named `name`.
pub fn section<'a>(bytes: &'a [u8], name: &str) -> Result<&'a [u8]> {
    let all = sections(bytes)?;
    let mut found = all.iter().filter(|s| s.name == name);
    let s = found
        .next()
        .with_context(|| format!("the UKI has no {name} section"))?;
    ensure!(found.next().is_none(), "the UKI has two {name} sections");
    // Hashing the stored bytes of a section the loader zero-extends would
    // check something other than what runs.
    ensure!(
        !s.zero_extended,
        "the UKI's {name} section is larger in memory than in the file"
    );
    Ok(&bytes[s.range.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_stub_has_its_sections_and_garbage_is_refused() {
        let stub = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
            .expect("systemd-boot-efi is installed (.ci/packages)");
        let names: Vec<String> = sections(&stub)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(names.iter().any(|n| n == ".text"), "{names:?}");
        assert!(names.iter().any(|n| n == ".sbat"), "{names:?}");
        assert!(section(&stub, ".linux").is_err());
        assert!(sections(b"MZ").is_err());
        let mut bad = stub.clone();
        bad[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(sections(&bad).is_err());
        // A section pointing past the end of the file.
        let table = {
            let pe = u32::from_le_bytes(stub[0x3c..0x40].try_into().unwrap()) as usize;
            pe + 24 + u16::from_le_bytes([stub[pe + 20], stub[pe + 21]]) as usize
        };
        let mut past = stub.clone();
        past[table + 20..table + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(sections(&past).unwrap_err().to_string().contains("beyond"));
    }
}
