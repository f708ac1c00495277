//! The one-read digests against independent tools: `sha256sum` for the
//! sha256 and GNU cpio for the `070702` check, both the sums GNU cpio
//! writes into its own archives and the ones it verifies when it extracts
//! an archive we wrote from known digests (no second read of the payload).

use slotsmith_swu::{
    read_index, write_swu_members, DigestWriter, Digests, PreparedPayload, Stamp, SW_DESCRIPTION,
    SW_DESCRIPTION_SIG,
};
use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;

/// Runs a tool in `dir`; it must succeed and print nothing on stderr (GNU
/// cpio reports checksum errors there but still exits 0).
fn tool(program: &str, args: &[&str], dir: &Path, stdin: &[u8]) -> Vec<u8> {
    let out = duct::cmd(program, args)
        .dir(dir)
        .stdin_bytes(stdin)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("{program} must be installed ({e})"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{program} {args:?} failed: {stderr}"
    );
    out.stdout
}

/// Files across the buffer boundaries, high bytes, and one big enough
/// (17 MiB of 0xff) for the 32-bit sum to wrap.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as u8
            })
            .collect()
    };
    let mut files = vec![
        ("empty.bin".to_string(), Vec::new()),
        ("one.bin".to_string(), vec![0xfe]),
        ("odd.bin".to_string(), random(4099)),
        ("mib.bin".to_string(), random((1 << 20) + 3)),
        ("big.bin".to_string(), random(3 << 20)),
        ("wrap.bin".to_string(), vec![0xff; (17 << 20) + 1]),
    ];
    for (name, data) in &mut files {
        fs::write(dir.join(name.as_str()), &data).unwrap();
    }
    files
}

#[test]
fn digests_agree_with_sha256sum_and_gnu_cpio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = inputs(dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();

    let sums = String::from_utf8(tool("sha256sum", &names, dir, b"")).unwrap();
    let list = names.join("\n") + "\n";
    let gnu = tool(
        "cpio",
        &["-o", "-H", "crc", "--quiet"],
        dir,
        list.as_bytes(),
    );
    let gnu_entries = read_index(Cursor::new(&gnu)).unwrap();

    for (i, (name, data)) in files.iter().enumerate() {
        let from_file = Digests::of_file(&dir.join(name)).unwrap();
        let from_reader = Digests::of_reader(&data[..]).unwrap();
        let mut w = DigestWriter::new(Vec::new());
        for piece in data.chunks(65_537) {
            w.write_all(piece).unwrap();
        }
        let (_, from_writer) = w.finish().unwrap();
        assert_eq!(from_file, from_reader, "{name}");
        assert_eq!(from_file, from_writer, "{name}");
        assert_eq!(from_file.size, data.len() as u64, "{name}");
        let line = format!("{}  {name}", from_file.sha256_hex());
        assert!(sums.lines().any(|l| l == line), "{name}: {sums}");
        let e = &gnu_entries[i];
        assert_eq!(e.name, *name);
        assert_eq!(e.check, from_file.cpio_sum, "{name}: GNU cpio's check");
    }
}

/// An archive written from digests known in advance (each payload read
/// once, by the copy) extracts with GNU cpio, which verifies every check,
/// to the same bytes.
#[test]
fn archive_from_known_digests_extracts_with_gnu_cpio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = inputs(dir);
    let members: Vec<_> = files
        .iter()
        .map(|(name, data)| {
            // As a build stage would: digests while writing the artifact.
            let path = dir.join(format!("{name}.written"));
            let mut w = DigestWriter::new(fs::File::create(&path).unwrap());
            w.write_all(data).unwrap();
            let (f, d) = w.finish().unwrap();
            let stamp = Stamp::of_file(&f, &path).unwrap();
            PreparedPayload::from_digests(&path, d, stamp)
                .unwrap()
                .archive_member(name)
        })
        .collect();
    let archive = write_swu_members(Vec::new(), b"description", b"signature", &members).unwrap();

    let out = dir.join("extracted");
    fs::create_dir(&out).unwrap();
    tool("cpio", &["-i", "-H", "crc", "--quiet"], &out, &archive);
    assert_eq!(fs::read(out.join(SW_DESCRIPTION)).unwrap(), b"description");
    assert_eq!(
        fs::read(out.join(SW_DESCRIPTION_SIG)).unwrap(),
        b"signature"
    );
    for (name, data) in &files {
        assert!(fs::read(out.join(name)).unwrap() == *data, "{name}");
    }

    // The cross-check has teeth: GNU cpio refuses a flipped data byte.
    let e = &read_index(Cursor::new(&archive)).unwrap()[5];
    assert_eq!(e.name, "mib.bin");
    let mut bad = archive.clone();
    bad[e.offset as usize + 7] ^= 0x10;
    let bad_dir = dir.join("bad");
    fs::create_dir(&bad_dir).unwrap();
    let res = duct::cmd("cpio", ["-i", "-H", "crc", "--quiet"])
        .dir(&bad_dir)
        .stdin_bytes(bad)
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("mib.bin: checksum error"), "{stderr}");
}
