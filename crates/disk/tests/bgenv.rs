//! The `BGENV.DAT` encoder against EFI Boot Guard's own tools (Debian's
//! `efibootguard` 0.13), plus the decoder under mutation.
//!
//! `bg_printenv -f` reads a plain file, no partition or root needed. Debian's
//! 0.13-2+deb12u1 carries the CVE-2023-39950 fix (upstream 53dee61), so it
//! also checks the CRC and the bounds of the user-variable records, and
//! refuses the file otherwise (tested below, so that a printout is a CRC
//! check too). Byte identity with what `bg_setenv -f` writes for the same
//! values then proves the padding and the record encoding exactly. A
//! missing tool is a failure naming its package, never a skip.

use slotsmith_disk::bgenv::{decode, encode, BgEnv, UState, ENV_SIZE, MAX_STRING_CHARS};
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: slotsmith_fuzzing::CountingAlloc = slotsmith_fuzzing::CountingAlloc;

/// Finds `tool` on PATH or fails naming the package that provides it.
fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("required tool `{tool}` not found on PATH: install the Debian package `efibootguard`");
}

/// Runs an EFI Boot Guard tool, failing the test on a non-zero exit.
fn run(tool: &str, args: &[String]) -> String {
    let out = duct::cmd(require(tool), args)
        .env("LC_ALL", "C")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap_or_else(|e| panic!("failed to start {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("temporary path is UTF-8").to_owned()
}

/// Environments covering every field, every ustate, both in_progress
/// values, the longest strings that fit and several user variables.
fn envs() -> Vec<BgEnv> {
    let base = BgEnv {
        kernelfile: "L:BOOT-A:linux.efi".into(),
        kernelparams: String::new(),
        revision: 1,
        ustate: UState::Ok,
        in_progress: false,
        watchdog_timeout_sec: 0,
        user_vars: Vec::new(),
    };
    vec![
        base.clone(),
        BgEnv {
            kernelfile: "C:BOOT1:linux.efi".into(),
            kernelparams: "console=ttyS0,115200 quiet panic=5".into(),
            revision: 2_000_000_001,
            ustate: UState::Installed,
            watchdog_timeout_sec: 60,
            user_vars: vec![
                ("slot".into(), "b".into()),
                ("SLOTSMITH_BUILD".into(), "demo 1.2.3 (x86_64)".into()),
            ],
            ..base.clone()
        },
        BgEnv {
            ustate: UState::Testing,
            in_progress: true,
            watchdog_timeout_sec: u16::MAX,
            ..base.clone()
        },
        BgEnv {
            kernelfile: "k".repeat(MAX_STRING_CHARS),
            kernelparams: "p".repeat(MAX_STRING_CHARS),
            revision: 0,
            ustate: UState::Failed,
            user_vars: vec![("v".into(), "~!\"#$%&'()*+,-./:;<>?@[\\]^_`{|} ".into())],
            ..base
        },
    ]
}

/// What `bg_printenv -r` prints for `env`.
fn raw_printout(env: &BgEnv) -> String {
    let mut s = format!(
        "IN_PROGRESS={}\nREVISION={}\nKERNEL={}\nKERNELARGS={}\nWATCHDOG_TIMEOUT={}\nUSTATE={}\n",
        u8::from(env.in_progress),
        env.revision,
        env.kernelfile,
        env.kernelparams,
        env.watchdog_timeout_sec,
        env.ustate as u8,
    );
    for (k, v) in &env.user_vars {
        s.push_str(&format!("{k}={v}\n"));
    }
    s
}

#[test]
fn bg_printenv_reads_every_field_we_encode() {
    let dir = tempfile::tempdir().unwrap();
    for (i, env) in envs().iter().enumerate() {
        let file = dir.path().join(format!("BGENV{i}.DAT"));
        std::fs::write(&file, encode(env).unwrap()).unwrap();
        let raw = run("bg_printenv", &["-r".into(), "-f".into(), path_arg(&file)]);
        assert_eq!(raw, raw_printout(env), "env {i}");
        // The human form names the state the way the loader's docs do.
        let human = run("bg_printenv", &["-f".into(), path_arg(&file)]);
        let want = format!(
            "ustate:           {} ({})",
            env.ustate as u8,
            env.ustate.name()
        );
        assert!(human.contains(&want), "env {i}: {human}");
    }
}

#[test]
fn bg_printenv_refuses_our_encoding_with_a_flipped_byte() {
    // Without this, a printout would not prove the CRC: 0.13 before the
    // CVE fix read files without checking it.
    let dir = tempfile::tempdir().unwrap();
    let env = &envs()[1];
    for at in [0, 1021, 1030, ENV_SIZE - 5, ENV_SIZE - 1] {
        let mut bytes = encode(env).unwrap();
        bytes[at] ^= 0x01;
        let file = dir.path().join(format!("flipped{at}.DAT"));
        std::fs::write(&file, &bytes).unwrap();
        let out = duct::cmd(require("bg_printenv"), ["-r", "-f", &path_arg(&file)])
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .unwrap();
        assert!(
            !out.status.success(),
            "bg_printenv accepted a flip at byte {at}"
        );
        let err = format!("{:#}", decode(&bytes).unwrap_err());
        assert!(err.contains("CRC32"), "byte {at}: {err}");
    }
}

#[test]
fn encoding_is_byte_identical_to_bg_setenv_and_decodes_its_output() {
    let dir = tempfile::tempdir().unwrap();
    for (i, env) in envs().iter().enumerate() {
        let file = dir.path().join(format!("BGENV{i}.DAT"));
        let mut args = vec![
            "-f".into(),
            path_arg(&file),
            "-r".into(),
            env.revision.to_string(),
            "-k".into(),
            env.kernelfile.clone(),
            "-a".into(),
            env.kernelparams.clone(),
            "-w".into(),
            env.watchdog_timeout_sec.to_string(),
            "-s".into(),
            (env.ustate as u8).to_string(),
            "-i".into(),
            u8::from(env.in_progress).to_string(),
        ];
        for (k, v) in &env.user_vars {
            args.push("-x".into());
            args.push(format!("{k}={v}"));
        }
        run("bg_setenv", &args);
        let theirs = std::fs::read(&file).unwrap();
        assert_eq!(theirs.len(), ENV_SIZE, "env {i}");
        let ours = encode(env).unwrap();
        if let Some(at) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
            panic!(
                "env {i}: first difference at byte {at}: ours {:#04x}, bg_setenv {:#04x}",
                ours[at], theirs[at]
            );
        }
        assert_eq!(decode(&theirs).unwrap(), *env, "env {i}");
    }
}

#[test]
fn decode_rejects_bg_setenv_255_character_kernelfile() {
    // bg_setenv accepts 255 characters, leaving no terminator inside the
    // field; the loader would silently cut the name to 254 at boot.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("BGENV.DAT");
    let name = "k".repeat(MAX_STRING_CHARS + 1);
    run(
        "bg_setenv",
        &[
            "-f".into(),
            path_arg(&file),
            "-k".into(),
            name.clone(),
            "-a".into(),
            "x".into(),
        ],
    );
    let err = format!("{:#}", decode(&std::fs::read(&file).unwrap()).unwrap_err());
    assert!(err.contains("kernelfile has no NUL terminator"), "{err}");
    let ours = BgEnv {
        kernelfile: name,
        kernelparams: "x".into(),
        revision: 0,
        ustate: UState::Ok,
        in_progress: false,
        watchdog_timeout_sec: 0,
        user_vars: Vec::new(),
    };
    let err = format!("{:#}", encode(&ours).unwrap_err());
    assert!(err.contains("at most 254"), "{err}");
}

/// Mutations with the CRC resealed, so they reach the field and
/// user-variable checks behind it. Invariants: no panic, bounded
/// allocation, and whatever decodes re-encodes to the same bytes
/// (the decoder accepts only the canonical form).
#[test]
fn decode_survives_mutations_and_accepts_only_canonical_bytes() {
    let seeds: Vec<Vec<u8>> = envs().iter().map(|e| encode(e).unwrap()).collect();
    slotsmith_fuzzing::exercise("bgenv_decode", &seeds, 3000, |input| {
        let mut bytes = input.to_vec();
        if bytes.len() == ENV_SIZE {
            let crc = crc32fast::hash(&bytes[..ENV_SIZE - 4]);
            bytes[ENV_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(env) = decode(&bytes) {
            assert_eq!(encode(&env).unwrap(), bytes, "decoded {env:?}");
        }
    });
}
