//! A plain (uncompressed) tarball is imported in place: file bodies stay
//! in the archive as slices, nothing is copied into the store, and every
//! consumer reads the same bytes a compressed import of the same archive
//! gives. A truncated or shrunk archive is an error, never short data.

mod common;

use std::fs;

use common::*;
use slotsmith_rootfs::tree::{Content, Kind};

#[test]
fn a_plain_tar_is_read_in_place_and_exports_like_a_compressed_one() {
    let dir = tempfile::tempdir().unwrap();
    let tar = fixture_tar();
    let plain = write(dir.path(), "base.tar", &tar);
    let gz = write(dir.path(), "base.tar.gz", &compress(&tar, "tar.gz"));
    let store_plain = dir.path().join("store-plain");
    let store_gz = dir.path().join("store-gz");
    let a = import(&plain, &store_plain).unwrap();
    let b = import(&gz, &store_gz).unwrap();
    // Every regular file of the plain import is a slice of the archive,
    // and nothing went into its store.
    let mut files = 0;
    for (p, n) in a.iter() {
        if let Kind::File { content, .. } = &n.kind {
            files += 1;
            assert!(
                matches!(content, Content::Slice { archive, .. } if *archive == plain),
                "{p}: {content:?}"
            );
        }
    }
    assert!(files > 0);
    assert_eq!(fs::read_dir(&store_plain).unwrap().count(), 0);
    // The same tar stream comes out of both, byte for byte.
    assert_eq!(export(&a), export(&b));
}

#[test]
fn a_plain_tar_cut_short_or_shrunk_later_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tar = fixture_tar();
    // Cut anywhere past the first header: the import refuses it, naming
    // the archive (a body past the end is "truncated", a missing header
    // a read error).
    for cut_at in [700, 5000, tar.len() / 3, tar.len() / 2] {
        let cut = write(dir.path(), "cut.tar", &tar[..cut_at]);
        let err = import(&cut, &dir.path().join("s1")).unwrap_err();
        assert!(format!("{err:#}").contains("cut.tar"), "{cut_at}: {err:#}");
    }
    // Shrunk after a good import: reading the slices fails, never returns
    // short or other data.
    let p = write(dir.path(), "ok.tar", &tar);
    let tree = import(&p, &dir.path().join("s2")).unwrap();
    fs::write(&p, &tar[..tar.len() / 2]).unwrap();
    let mut out = Vec::new();
    let err = slotsmith_rootfs::export::write_tar(&tree, &mut out, &mut |_| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("changed during the build"),
        "{err:#}"
    );
}
