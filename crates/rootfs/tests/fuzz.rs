//! The `tar_import` fuzz target under stable `cargo test` (its corpus, the
//! seeds below and deterministic mutations: no panic, bounded allocation,
//! escaped messages, limits kept, export round trip; see
//! `slotsmith_rootfs::fuzz`), and the PAX tar writer against GNU tar on
//! random trees: what we write, `tar -tvf` lists with the same paths, types
//! and modes, and our importer reads back as the same tree.
//!
//! `SLOTSMITH_WRITE_CORPUS=1 cargo test -p slotsmith-rootfs --test fuzz`
//! rewrites the committed seeds in `fuzz/corpus/tar_import/`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use slotsmith_rootfs::{Content, Kind, Meta, Node, RelPath, Tree};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// A PAX global header (type `g`).
fn global(data: &[u8]) -> (tar::Header, Vec<u8>) {
    let (mut h, d) = pax_raw(data);
    h.set_entry_type(tar::EntryType::XGlobalHeader);
    h.set_cksum();
    (h, d)
}

/// Small archives covering every header and record kind the importer reads.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();

    // ustar: every entry type, hardlinks, devices.
    let basic = tar_of(&[
        (header("./", b'5', 0o755, 0, 0, 0), Vec::new()),
        (header("./etc/", b'5', 0o755, 0, 0, 0), Vec::new()),
        file("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        link("./etc/hard", b'1', "./etc/passwd"),
        link("./etc/sym", b'2', "passwd"),
        (
            dev_header("./dev/console", b'3', 0o600, 5, 5, 1),
            Vec::new(),
        ),
        (dev_header("./dev/sda", b'4', 0o660, 6, 8, 0), Vec::new()),
        (header("./run/fifo", b'6', 0o600, 0, 0, 0), Vec::new()),
    ]);
    out.push(("ustar-kinds.tar", basic.clone()));

    // PAX: long path and link, big ids, fractional negative time, xattrs
    // (binary SCHILY values, libarchive's base64), star device records.
    let long = format!("./usr/share/{}/file", "p".repeat(120));
    out.push((
        "pax-records.tar",
        tar_of(&[
            global(&pax_record("comment", b"made by the seed generator")),
            pax(&[
                ("path", long.as_bytes()),
                ("uid", b"3000000"),
                ("gid", b"3000001"),
                ("mtime", b"-1.25"),
                ("SCHILY.xattr.security.capability", &CAP_NET_RAW),
                ("SCHILY.xattr.user.bin", b"a\nb\0c =d"),
                ("LIBARCHIVE.xattr.user.%3Dx", b"aGk"),
            ]),
            file("placeholder", b"pax\n"),
            pax(&[("linkpath", format!("../{}", "l".repeat(150)).as_bytes())]),
            link("./lnk", b'2', "short"),
            pax(&[("SCHILY.devmajor", b"259"), ("SCHILY.devminor", b"70000")]),
            (dev_header("./dev/nvme", b'4', 0o660, 6, 1, 1), Vec::new()),
        ]),
    ));

    // GNU long names and long link targets (`././@LongLink`), base-256.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header("x", b'0', 0o644, 0, 0, 3);
    b.append_data(&mut h, format!("./{}/gnu", "g".repeat(130)), &b"gnu"[..])
        .unwrap();
    let mut h = header("x", b'2', 0o777, 0, 0, 0);
    b.append_link(&mut h, "./gnulink", "t".repeat(140)).unwrap();
    let h = with_field(
        header("./b256", b'0', 0o644, 0, 0, 1),
        "uid",
        &base256(1 << 30, 8),
    );
    let h = with_field(h, "mtime", &base256(-86400, 12));
    b.append(&h, &b"b"[..]).unwrap();
    out.push(("gnu-longnames.tar", b.into_inner().unwrap()));

    // Compressed by magic bytes.
    out.push(("kinds.tar.gz", compress(&basic, "tar.gz")));
    out.push(("kinds.tar.zst", compress(&basic, "tar.zst")));

    // GNU tar's own pax output, deterministic.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/f"), "gnu tar\n").unwrap();
    std::os::unix::fs::symlink("sub/f", dir.join("l")).unwrap();
    fs::hard_link(dir.join("sub/f"), dir.join("h")).unwrap();
    let gnu = duct::cmd!(
        "tar",
        "--format=pax",
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--pax-option=delete=atime,delete=ctime",
        "-cf",
        "-",
        "-C",
        &dir,
        "."
    )
    .env("LC_ALL", "C")
    .stdout_capture()
    .run()
    .unwrap()
    .stdout;
    out.push(("gnu-tar-pax.tar", gnu));
    out
}

#[test]
fn tar_import_survives_hostile_bytes() {
    let seeds = seeds();
    if std::env::var_os("SLOTSMITH_WRITE_CORPUS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/tar_import");
        fs::create_dir_all(&dir).unwrap();
        for (name, data) in &seeds {
            if name.ends_with(".tar") && data.len() <= 8192 {
                fs::write(dir.join(name), data).unwrap();
            }
        }
    }
    // Every seed is a valid archive: the mutations start from real ones.
    for (name, data) in &seeds {
        let tmp = tempfile::tempdir().unwrap();
        let res =
            slotsmith_rootfs::import::from_reader(name, &data[..], tmp.path(), &mut |_, _| {});
        res.unwrap_or_else(|e| panic!("seed {name}: {e:#}"));
    }
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    slotsmith_fuzzing::exercise(
        "tar_import",
        &seeds,
        5000,
        slotsmith_rootfs::fuzz::tar_import,
    );
}

/// xorshift64: deterministic, so every failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    /// A name GNU tar's listing keeps unambiguous: no `/`, no leading or
    /// trailing space, no `->` or ` link to `, sometimes long (PAX path),
    /// sometimes not ASCII.
    fn name(&mut self) -> String {
        const ALPHABET: &[&str] = &[
            "a", "b", "x", "Z", "0", "9", "-", "_", ".", "~", " ", "é", "ß",
        ];
        let len = if self.below(8) == 0 {
            60 + self.below(190)
        } else {
            1 + self.below(10)
        };
        loop {
            let mut s = String::new();
            while s.len() < len as usize {
                let c: &str = self.pick::<&str>(ALPHABET);
                s.push_str(c);
            }
            let s = s.trim().to_string();
            if !s.is_empty() && s != "." && s != ".." && s.len() <= 255 {
                return s;
            }
        }
    }
}

/// A random tree of up to 25 entries at every depth the generator reaches,
/// with file contents in `dir`.
fn random_tree(rng: &mut Rng, dir: &Path) -> Tree {
    let mut t = Tree::new(Meta::new(0o755, 0, 0, 1_700_000_000));
    let mut dirs = vec![RelPath::root()];
    let mut files: Vec<RelPath> = Vec::new();
    for i in 0..(1 + rng.below(25)) {
        let parent = rng.pick(&dirs).clone();
        let Ok(path) = parent.join(&rng.name()) else {
            continue;
        };
        if t.get(&path).is_some() {
            continue;
        }
        let mut meta = Meta::new(
            (rng.below(0o10000)) as u32,
            *rng.pick(&[0, 1000, 65534, 3_000_000]),
            *rng.pick(&[0, 5, 100, 4_000_000]),
            *rng.pick(&[0, 1_700_000_000, -1, -86_400 * 365, 8_589_934_592]),
        );
        if rng.below(4) == 0 {
            meta.xattrs.insert(format!("user.x{}", rng.below(1000)), {
                let n = rng.below(300) as usize;
                (0..n).map(|_| rng.next() as u8).collect()
            });
        }
        let kind = match rng.below(8) {
            0 | 1 => {
                dirs.push(path.clone());
                Kind::Dir
            }
            2 | 3 => {
                let body: Vec<u8> = (0..rng.below(3000)).map(|_| rng.next() as u8).collect();
                let src = dir.join(format!("c{i}-{}", rng.next()));
                fs::write(&src, &body).unwrap();
                files.push(path.clone());
                Kind::File {
                    content: Content::Source(src),
                    size: body.len() as u64,
                }
            }
            4 => {
                let n = if rng.below(4) == 0 { 3 } else { 1 };
                let target = (0..n).map(|_| rng.name()).collect::<Vec<_>>().join("/");
                Kind::Symlink { target }
            }
            5 if !files.is_empty() => Kind::Hardlink {
                target: rng.pick(&files).clone(),
            },
            6 => {
                let (major, minor) = (rng.below(4096) as u32, rng.below(1 << 20) as u32);
                if rng.below(2) == 0 {
                    Kind::CharDev { major, minor }
                } else {
                    Kind::BlockDev { major, minor }
                }
            }
            _ => Kind::Fifo,
        };
        t.insert(path, Node::new(kind, meta)).unwrap();
    }
    t
}

/// What a tree means, independent of where contents live and of which
/// name of a hardlink group carries the body: per path, the kind with its
/// payload and the inode's metadata.
fn meaning(t: &Tree) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<RelPath, Vec<String>> = BTreeMap::new();
    for (p, n) in t.iter() {
        match &n.kind {
            Kind::File { .. } => groups.entry(p.clone()).or_default().push(p.to_string()),
            Kind::Hardlink { target } => groups
                .entry(target.clone())
                .or_default()
                .push(p.to_string()),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (p, n) in t.iter() {
        let (file, node) = match &n.kind {
            Kind::Hardlink { target } => (Some(target), t.get(target).unwrap()),
            Kind::File { .. } => (Some(p), n),
            _ => (None, n),
        };
        let kind = match &node.kind {
            Kind::File { content, size } => {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut content.open(*size).unwrap(), &mut body).unwrap();
                assert_eq!(body.len() as u64, *size);
                let mut names = groups[file.unwrap()].clone();
                names.sort();
                format!("file {body:?} names {names:?}")
            }
            other => format!("{other:?}"),
        };
        let m = &node.meta;
        out.insert(
            p.to_string(),
            format!(
                "{kind} mode {:o} {}:{} mtime {} xattrs {:?}",
                m.mode, m.uid, m.gid, m.mtime, m.xattrs
            ),
        );
    }
    out
}

/// `ls -l` style type and permission letters, as GNU tar lists them.
fn mode_string(kind: &Kind, hardlink: bool, mode: u32) -> String {
    let t = match kind {
        _ if hardlink => 'h',
        Kind::Dir => 'd',
        Kind::File { .. } | Kind::Hardlink { .. } => '-',
        Kind::Symlink { .. } => 'l',
        Kind::CharDev { .. } => 'c',
        Kind::BlockDev { .. } => 'b',
        Kind::Fifo => 'p',
    };
    let bit = |b: u32, c: char| if mode & b != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// `tar -tvf` lines as (name, mode string): the name starts after the
/// fifth field (mode, owner, size, date, time); symlinks and hardlinks
/// carry ` -> target` / ` link to target`, which is cut off.
fn gnu_listing(archive: &Path) -> BTreeMap<String, String> {
    let out = run(&[
        "tar",
        "--numeric-owner",
        "--quoting-style=literal",
        "-tvf",
        archive.to_str().unwrap(),
    ]);
    let mut listing = BTreeMap::new();
    for line in out.lines() {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap();
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name = &rest[1..];
        let name = match fields[0].as_bytes()[0] {
            b'l' => name.split(" -> ").next().unwrap(),
            b'h' => name.split(" link to ").next().unwrap(),
            _ => name,
        };
        listing.insert(name.to_string(), fields[0].to_string());
    }
    listing
}

#[test]
fn writer_round_trips_through_gnu_tar_and_our_importer() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..40 {
        let tmp = tempfile::tempdir().unwrap();
        let tree = random_tree(&mut rng, tmp.path());
        let written = export(&tree);
        let archive = write(tmp.path(), "out.tar", &written);

        let leaders = tree.hardlink_leaders();
        let mut want = BTreeMap::new();
        for (p, n) in tree.iter() {
            let (file, node) = match &n.kind {
                Kind::Hardlink { target } => (Some(target), tree.get(target).unwrap()),
                Kind::File { .. } => (Some(p), n),
                _ => (None, n),
            };
            let linked = file.is_some_and(|f| leaders.get(f).is_some_and(|l| l != p));
            let name = match &n.kind {
                _ if p.is_root() => "./".to_string(),
                Kind::Dir => format!("./{}/", p.as_str()),
                _ => format!("./{}", p.as_str()),
            };
            want.insert(name, mode_string(&node.kind, linked, node.meta.mode));
        }
        assert_eq!(
            gnu_listing(&archive),
            want,
            "round {round}: GNU tar lists another tree"
        );

        let back = import(&archive, &tmp.path().join("store")).unwrap();
        assert_eq!(
            meaning(&back),
            meaning(&tree),
            "round {round}: the importer reads another tree"
        );
        assert_eq!(
            export(&back),
            written,
            "round {round}: the second export differs"
        );
    }
}
