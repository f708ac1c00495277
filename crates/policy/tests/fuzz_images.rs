//! The audit's image readers on untrusted images (issue 8, defects 4 and 8,
//! and the fuzzing requirement): a corrupt or hostile squashfs or ext4
//! image gives an error, never a panic or an allocation it did not pay for
//! in bytes, and errors are escaped.
//!
//! The seeds are real images made here by the independent tools
//! (`mksquashfs`, `tar2sqfs`, `mke2fs -d`) from a small tree with every
//! entry type the audit reads; the tests first check that the readers see
//! them exactly, then run the fuzz targets `audit_squashfs` and
//! `audit_ext4` (corpus, seeds and deterministic mutations, with the
//! counting allocator), then hand-made hostile images for the classes the
//! readers bound explicitly. The generated seeds are also written to
//! `target/fuzz-seeds/<target>/`, a second corpus for `cargo fuzz`.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use slotsmith_policy::rootfs::{EntryKind, Index, MAX_DEPTH};
use slotsmith_policy::{Ext4Rootfs, RootfsRead, SquashfsRootfs};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// Mutations per target: a few seconds in the dev profile. A longer local
/// run: `SLOTSMITH_FUZZ_ITERATIONS=200000 cargo test --test fuzz_images`.
fn iterations() -> u32 {
    std::env::var("SLOTSMITH_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

fn run(program: &str, package: &str, args: &[&str]) {
    common::need(program, package);
    let out = duct::cmd(program, args)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small tree with each entry type the audit reads: files (empty, one
/// block, several blocks, hard-linked, which squashfs stores as an extended
/// inode), modes with setuid and sticky bits, directories, symlinks.
fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    fs::create_dir_all(root.join("etc/ssh/sshd_config.d")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/empty"), "").unwrap();
    fs::write(
        root.join("etc/ssh/sshd_config.d/10.conf"),
        "PermitRootLogin no\n",
    )
    .unwrap();
    fs::write(root.join("usr/bin/su"), vec![0x7f; 5000]).unwrap();
    fs::write(root.join("usr/bin/linked"), vec![b'x'; 12345]).unwrap();
    fs::hard_link(root.join("usr/bin/linked"), root.join("usr/bin/linked2")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/dev/null", root.join("etc/masked")).unwrap();
    let mode =
        |p: &str, m: u32| fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    mode("usr/bin/su", 0o4755);
    mode("tmp", 0o1777);
    root
}

fn squashfs_seeds(dir: &Path, root: &Path) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut mk = |name: &str, extra: &[&str]| {
        let img = dir.join(name);
        let mut args = vec![
            s(root),
            s(&img),
            "-noappend",
            "-quiet",
            "-no-progress",
            "-nopad",
        ];
        args.extend_from_slice(extra);
        run("mksquashfs", "squashfs-tools", &args);
        seeds.push(fs::read(&img).unwrap());
    };
    mk("gzip.sqfs", &["-comp", "gzip", "-b", "4096"]);
    mk("zstd.sqfs", &["-comp", "zstd", "-b", "4096"]);
    mk("xz.sqfs", &["-comp", "xz", "-b", "4096", "-no-fragments"]);
    // Uncompressed tables and data: mutations hit the fields directly.
    mk("raw.sqfs", &["-noI", "-noD", "-noF", "-noX", "-b", "4096"]);
    // tar2sqfs, the packer the build uses, from a tar stream.
    let tar = dir.join("tree.tar");
    run("tar", "tar", &["-C", s(root), "-cf", s(&tar), "."]);
    let img = dir.join("tar2sqfs.sqfs");
    common::need("tar2sqfs", "squashfs-tools-ng");
    let out = duct::cmd(
        "tar2sqfs",
        ["-q", "-f", "-c", "gzip", "-b", "4096", s(&img)],
    )
    .stdin_path(&tar)
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    seeds.push(fs::read(&img).unwrap());
    seeds
}

fn ext4_image(dir: &Path, root: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let img = dir.join(name);
    let f = fs::File::create(&img).unwrap();
    f.set_len(64 * 1024).unwrap();
    drop(f);
    let mut all = vec!["-q", "-F", "-b", "1024", "-N", "32", "-d", s(root)];
    all.extend_from_slice(args);
    all.push(s(&img));
    run("mke2fs", "e2fsprogs", &all);
    fs::read(&img).unwrap()
}

fn ext4_seeds(dir: &Path, root: &Path) -> Vec<Vec<u8>> {
    vec![
        ext4_image(
            dir,
            root,
            "ext4.img",
            &["-t", "ext4", "-O", "^has_journal,^resize_inode"],
        ),
        ext4_image(
            dir,
            root,
            "ext2.img",
            &["-t", "ext2", "-O", "^resize_inode"],
        ),
        ext4_image(
            dir,
            root,
            "ext4-64bit.img",
            &[
                "-t",
                "ext4",
                "-O",
                "^has_journal,^resize_inode,64bit,metadata_csum",
            ],
        ),
    ]
}

/// Keeps the generated seeds where `cargo fuzz run <target>` can be given
/// them as a second corpus directory.
fn save_seeds(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/fuzz-seeds")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
    }
}

use slotsmith_policy::rootfs::fuzz::{
    assert_escaped, ext4 as audit_ext4, squashfs as audit_squashfs,
};

/// The sample tree as the image readers must see it.
fn check_sample(fs: &dyn RootfsRead, what: &str) {
    let ix = Index::new(fs);
    let e = |p: &str| {
        ix.get(p)
            .unwrap_or_else(|| panic!("{what}: {p} missing"))
            .clone()
    };
    assert_eq!(e("/usr/bin/su").mode, 0o4755, "{what}");
    assert_eq!(e("/tmp").mode, 0o1777, "{what}");
    assert_eq!(
        e("/bin").kind,
        EntryKind::Symlink {
            target: "usr/bin".into()
        },
        "{what}"
    );
    assert_eq!(
        fs.read("/usr/bin/su").unwrap().unwrap(),
        vec![0x7f; 5000],
        "{what}"
    );
    assert_eq!(
        fs.read("/usr/bin/linked2").unwrap().unwrap().len(),
        12345,
        "{what}"
    );
    assert_eq!(fs.read("/etc/empty").unwrap().unwrap(), b"", "{what}");
    assert_eq!(
        ix.read_resolved("/bin/su").unwrap().unwrap().0,
        "/usr/bin/su",
        "{what}"
    );
}

#[test]
fn seed_images_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    for (i, seed) in squashfs_seeds(dir.path(), &root).into_iter().enumerate() {
        let fs = SquashfsRootfs::from_bytes(seed).unwrap();
        check_sample(&fs, &format!("squashfs seed {i}"));
    }
    for (i, seed) in ext4_seeds(dir.path(), &root).into_iter().enumerate() {
        let fs = Ext4Rootfs::from_bytes(seed).unwrap();
        check_sample(&fs, &format!("ext4 seed {i}"));
    }
    // Opening by path reads the same.
    let fs = SquashfsRootfs::open(&dir.path().join("gzip.sqfs")).unwrap();
    check_sample(&fs, "squashfs file");
    let fs = Ext4Rootfs::open(&dir.path().join("ext4.img")).unwrap();
    check_sample(&fs, "ext4 file");
}

#[test]
fn fuzz_audit_squashfs() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let seeds = squashfs_seeds(dir.path(), &root);
    save_seeds("audit_squashfs", &seeds);
    slotsmith_fuzzing::exercise("audit_squashfs", &seeds, iterations(), audit_squashfs);
}

#[test]
fn fuzz_audit_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let seeds = ext4_seeds(dir.path(), &root);
    save_seeds("audit_ext4", &seeds);
    slotsmith_fuzzing::exercise("audit_ext4", &seeds, iterations(), audit_ext4);
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Runs `f` on one hostile input under the fuzzing harness (no panic,
/// allocation bounded) and returns the error it must give.
fn hostile_error<T>(
    target: &str,
    input: Vec<u8>,
    open: impl Fn(Vec<u8>) -> anyhow::Result<T>,
) -> String {
    slotsmith_fuzzing::exercise(target, std::slice::from_ref(&input), 0, |b| {
        let _ = open(b.to_vec());
    });
    match open(input) {
        Ok(_) => panic!("{target}: a hostile image was accepted"),
        Err(err) => {
            assert_escaped(&err);
            format!("{err:#}")
        }
    }
}

#[test]
fn hostile_squashfs_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let seeds = squashfs_seeds(dir.path(), &root);
    let raw = seeds[3].clone();
    let (inode_table, dir_table) = (le_u64(&raw, 64) as usize, le_u64(&raw, 72) as usize);

    // A file inode claiming a 2 TiB file: with 4 KiB blocks backhand alone
    // reserves its block list (2^29 entries, 2 GiB; the harness's counting
    // allocator reports it) before noticing the table is too short.
    let mut big = raw.clone();
    let size = 12345u64.to_le_bytes();
    let at = (inode_table..dir_table)
        .find(|&i| big[i..i + 8] == size)
        .expect("the hard-linked file's extended inode");
    big[at..at + 8].copy_from_slice(&((2u64 << 40) - 1).to_le_bytes());
    let err = hostile_error("audit_squashfs", big, SquashfsRootfs::from_bytes);
    assert!(err.contains("runs past its end"), "{err}");

    // Truncated: the superblock claims bytes the file does not have.
    let mut short = raw.clone();
    short.truncate(raw.len() - 100);
    let err = hostile_error("audit_squashfs", short, SquashfsRootfs::from_bytes);
    assert!(err.contains("bytes are used, but the file has"), "{err}");

    // An inode count far beyond the limit.
    let mut many = raw.clone();
    many[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = hostile_error("audit_squashfs", many, SquashfsRootfs::from_bytes);
    assert!(err.contains("inodes (at most"), "{err}");

    // The directory table pointing before the inode table.
    let mut swapped = raw.clone();
    swapped[72..80].copy_from_slice(&(inode_table as u64).to_le_bytes());
    let err = hostile_error("audit_squashfs", swapped, SquashfsRootfs::from_bytes);
    assert!(err.contains("not in order"), "{err}");

    // Not a squashfs at all.
    let err = hostile_error(
        "audit_squashfs",
        b"hsqs".to_vec(),
        SquashfsRootfs::from_bytes,
    );
    assert!(err.contains("squashfs image"), "{err}");
}

#[test]
fn deep_and_badly_named_squashfs_trees_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Deeper than the limit: backhand's tree walk recurses once per level.
    let root = dir.path().join("deep");
    let mut p = root.clone();
    for _ in 0..=MAX_DEPTH {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    let img = dir.path().join("deep.sqfs");
    run(
        "mksquashfs",
        "squashfs-tools",
        &[s(&root), s(&img), "-noappend", "-quiet", "-no-progress"],
    );
    let err = format!("{:#}", SquashfsRootfs::open(&img).err().expect("accepted"));
    assert!(
        err.contains(&format!("deeper than {MAX_DEPTH} levels")),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Ext4Rootfs::from_bytes({
            let f = fs::File::create(dir.path().join("deep.img")).unwrap();
            f.set_len(1 << 20).unwrap();
            drop(f);
            run(
                "mke2fs",
                "e2fsprogs",
                &[
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-O",
                    "^has_journal",
                    "-N",
                    "512",
                    "-d",
                    s(&root),
                    s(&dir.path().join("deep.img")),
                ],
            );
            fs::read(dir.path().join("deep.img")).unwrap()
        })
        .err()
        .expect("accepted")
    );
    assert!(
        err.contains(&format!("deeper than {MAX_DEPTH} levels")),
        "{err}"
    );

    // A name with a terminal escape is reported escaped, and a path longer
    // than PATH_MAX (made with mksquashfs pseudo definitions: the host
    // cannot hold such a path) is refused.
    let root = dir.path().join("named");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/\u{1b}[2Jx"), "x").unwrap();
    let long = "n".repeat(200);
    let mut defs = String::new();
    let mut path = String::new();
    for _ in 0..25 {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&long);
        defs.push_str(&format!("{path} d 755 0 0\n"));
    }
    let pf = dir.path().join("pseudo");
    fs::write(&pf, defs).unwrap();
    let img = dir.path().join("named.sqfs");
    run(
        "mksquashfs",
        "squashfs-tools",
        &[
            s(&root),
            s(&img),
            "-noappend",
            "-quiet",
            "-no-progress",
            "-pf",
            s(&pf),
        ],
    );
    let err = format!("{:#}", SquashfsRootfs::open(&img).err().expect("accepted"));
    assert!(err.contains("more than 4095"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    // Without the long path, the escape-named file reads, and its name is
    // only ever printed escaped.
    let img = dir.path().join("escape.sqfs");
    run(
        "mksquashfs",
        "squashfs-tools",
        &[s(&root), s(&img), "-noappend", "-quiet", "-no-progress"],
    );
    let fs = SquashfsRootfs::open(&img).unwrap();
    assert_eq!(fs.read("/etc/\u{1b}[2Jx").unwrap().unwrap(), b"x");
}

#[test]
fn hostile_ext4_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path());
    let img = ext4_seeds(dir.path(), &root).remove(0);

    // Four billion block groups: ext4-view reserves one descriptor per
    // group before reading any, far more memory than exists.
    let mut groups = img.clone();
    groups[1024 + 0x04..1024 + 0x08].copy_from_slice(&u32::MAX.to_le_bytes());
    groups[1024 + 0x20..1024 + 0x24].copy_from_slice(&1u32.to_le_bytes());
    let err = hostile_error("audit_ext4", groups, Ext4Rootfs::from_bytes);
    assert!(
        err.contains("the superblock claims 4294967295 blocks"),
        "{err}"
    );

    // Truncated and non-ext4 input.
    let err = hostile_error("audit_ext4", img[..1500].to_vec(), Ext4Rootfs::from_bytes);
    assert!(err.contains("too short for an ext4 superblock"), "{err}");
    let mut truncated = img.clone();
    truncated.truncate(32 * 1024);
    let err = hostile_error("audit_ext4", truncated, Ext4Rootfs::from_bytes);
    assert!(err.contains("but the image has 32768"), "{err}");
    let err = hostile_error("audit_ext4", vec![0; 4096], Ext4Rootfs::from_bytes);
    assert!(err.contains("no superblock magic"), "{err}");
}
