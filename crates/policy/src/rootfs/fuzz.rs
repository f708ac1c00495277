//! The entry points of the fuzz targets `audit_squashfs` and `audit_ext4`,
//! shared by the cargo-fuzz targets (fuzz/fuzz_targets/) and their stable
//! twin (crates/policy/tests/fuzz_images.rs), so both check the same
//! invariants on every input: no panic (the harness catches one), and an
//! error, when there is one, free of raw control and format characters.
//! What an image is used for is what the audit does with it: every entry,
//! every file's contents, and a lookup through symlinks.

use super::{EntryKind, Ext4Rootfs, Index, RootfsRead, SquashfsRootfs};

/// Opens `data` as a squashfs image and reads everything the audit reads.
pub fn squashfs(data: &[u8]) {
    match SquashfsRootfs::from_bytes(data.to_vec()) {
        Ok(fs) => use_image(&fs),
        Err(err) => assert_escaped(&err),
    }
}

/// Opens `data` as an ext4 image and reads everything the audit reads.
pub fn ext4(data: &[u8]) {
    match Ext4Rootfs::from_bytes(data.to_vec()) {
        Ok(fs) => use_image(&fs),
        Err(err) => assert_escaped(&err),
    }
}

fn use_image(fs: &dyn RootfsRead) {
    for (path, e) in fs.entries() {
        if e.kind == EntryKind::File {
            if let Err(err) = fs.read(&path) {
                assert_escaped(&err);
            }
        }
    }
    let ix = Index::new(fs);
    for path in ["/etc/passwd", "/bin/su", "/etc/ssh/sshd_config.d"] {
        if let Err(err) = ix.read_resolved(path) {
            assert_escaped(&err);
        }
        let _ = ix.list_dir(path);
    }
}

/// Errors reach terminals and reports: no raw control or format character.
pub fn assert_escaped(err: &anyhow::Error) {
    let text = format!("{err:#}");
    assert!(
        !text
            .chars()
            .any(|c| c != '\\' && slotsmith_yaml::escape::needs_escape(c)),
        "unescaped error: {text:?}"
    );
}
