//! The Debian base lock (issue 13): the default image ships with
//! `images/demo.lock`; a locked build installs exactly those `.deb`s from
//! the content-addressed cache, builds with no network at all from an
//! exported cache (in a network namespace with no interface but a downed
//! loopback) to the same bytes, refuses a cached `.deb` with one flipped
//! byte naming the package, and refuses a lock older than the image
//! definition with exit 2.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

/// A copy of the repository's project (the default image with its lock),
/// writable, in `dir`.
fn project_copy(dir: &Path) -> PathBuf {
    let project = dir.join("project");
    fs::create_dir_all(project.join("images")).unwrap();
    for d in ["layers", "policies"] {
        run(
            "cp",
            &[
                "-a",
                repo_root().join(d).to_str().unwrap(),
                project.to_str().unwrap(),
            ],
        );
    }
    for f in ["demo.yaml", "demo.lock"] {
        fs::copy(
            repo_root().join("images").join(f),
            project.join("images").join(f),
        )
        .unwrap();
    }
    project
}

fn build(project: &Path, out: &Path, debs: Option<&Path>, wrapper: &[&str]) -> CliRun {
    let mut args: Vec<String> = vec![
        "--project".into(),
        project.display().to_string(),
        "build".into(),
        "demo".into(),
        "--out-dir".into(),
        out.display().to_string(),
        "--work-dir".into(),
        out.join("work").display().to_string(),
        "--quiet".into(),
    ];
    if let Some(d) = debs {
        // Only the .debs come from there; the base is bootstrapped anew
        // into a cache of the test's own.
        args.extend([
            "--deb-cache".into(),
            d.display().to_string(),
            "--cache-dir".into(),
            out.join("cache").display().to_string(),
        ]);
    }
    wrapped(wrapper, &args)
}

/// Runs the CLI under `wrapper` (such as `unshare -n`).
fn wrapped(wrapper: &[&str], args: &[String]) -> CliRun {
    let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    argv.push(cli().display().to_string());
    argv.extend(args.iter().cloned());
    let out = duct::cmd(&argv[0], &argv[1..])
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cli_in(project: &Path, args: &[&str]) -> CliRun {
    let mut a = vec!["--project".to_string(), project.display().to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    wrapped(&[], &a)
}

#[test]
fn the_default_image_is_locked_and_rebuilds_offline_bit_for_bit() {
    for (t, p) in [
        ("mmdebstrap", "mmdebstrap"),
        ("dpkg-scanpackages", "dpkg-dev"),
        ("unshare", "util-linux"),
    ] {
        require(t, p);
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the offline build runs in `unshare -n`, a network namespace, which needs root"
    );
    let dir = tempfile::tempdir().unwrap();
    let project = project_copy(dir.path());

    // The committed lock is current and is what the plan installs.
    let lock_text = fs::read_to_string(project.join("images/demo.lock")).unwrap();
    let locked: Vec<&str> = lock_text
        .lines()
        .filter(|l| l.starts_with("package "))
        .collect();
    assert!(locked.len() > 100, "{} packages", locked.len());
    let plan = cli_in(&project, &["plan", "demo"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["base"]["lock"]["path"], "images/demo.lock");
    assert_eq!(
        plan["base"]["lock"]["sha256"],
        sha256(&project.join("images/demo.lock"))
    );
    assert_eq!(
        plan["base"]["lock"]["packages"].as_array().unwrap().len(),
        locked.len()
    );

    // 1. Online, from the shared cache (filled on first use).
    let out1 = dir.path().join("out1");
    let r = build(&project, &out1, None, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out1.join("demo/build.json")).unwrap()).unwrap();
    assert_eq!(
        record["lock_sha256"],
        sha256(&project.join("images/demo.lock")),
        "build.json records the lock's hash"
    );

    // 2. The lock and its .debs exported as one directory, for a build
    //    room: a complete cache, nothing else.
    let room = dir.path().join("room");
    let r = cli_in(
        &project,
        &["lock", "--export", room.to_str().unwrap(), "demo"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("exported {} locked packages", locked.len())),
        "{}",
        r.stdout
    );
    assert_eq!(
        fs::read_dir(room.join("debs")).unwrap().count(),
        locked.len()
    );
    assert_eq!(
        fs::read(room.join("demo.lock")).unwrap(),
        lock_text.as_bytes()
    );

    // The namespace really has no network: resolving against the archive
    // there fails.
    let offline = ["unshare", "-n"];
    let r = wrapped(
        &offline,
        &[
            "--project".into(),
            project.display().to_string(),
            "lock".into(),
            "--update".into(),
            "--cache-dir".into(),
            dir.path().join("nocache").display().to_string(),
            "--work-dir".into(),
            dir.path().join("nowork").display().to_string(),
            "demo".into(),
        ],
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("needs the network"), "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(project.join("images/demo.lock")).unwrap(),
        lock_text,
        "a failed update must leave the lock alone"
    );

    // 3. Offline, from the exported directory alone: `repro` rebuilds
    //    the published build in a fresh project with a fresh base cache
    //    (so mmdebstrap runs again, from the local repository) and
    //    compares every artifact; the rebuild's SHA256SUMS must also be
    //    the online build's.
    let r = wrapped(
        &offline,
        &[
            "--project".into(),
            project.display().to_string(),
            "repro".into(),
            out1.join("demo").display().to_string(),
            "--cache-dir".into(),
            room.display().to_string(),
            "--keep".into(),
            "--json".into(),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["identical"], true, "{report:#}");
    let rebuilt = PathBuf::from(report["rebuilt_dir"].as_str().unwrap());
    let kept = PathBuf::from(report["project"].as_str().unwrap());
    assert!(
        fs::read_dir(kept.join("cache/debian")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tar")),
        "the offline rebuild bootstrapped its own base: {report:#}"
    );
    let sums1 = fs::read_to_string(out1.join("demo/SHA256SUMS")).unwrap();
    let sums2 = fs::read_to_string(rebuilt.join("SHA256SUMS")).unwrap();
    assert!(sums1.lines().count() > 10, "{sums1}");
    assert_eq!(sums1, sums2, "the offline rebuild differs");
    fs::remove_dir_all(kept.parent().unwrap()).unwrap();
    assert!(
        !room.join("debian").exists(),
        "the room cache holds only .debs"
    );

    // 4. One flipped byte in a cached .deb: refused, naming the package.
    let victim = locked
        .iter()
        .find(|l| l.starts_with("package systemd "))
        .unwrap();
    let sha = victim.split_whitespace().nth(4).unwrap();
    let deb = room.join("debs").join(format!("{sha}.deb"));
    let mut bytes = fs::read(&deb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&deb, &bytes).unwrap();
    let out3 = dir.path().join("out3");
    let r = build(&project, &out3, Some(&room.join("debs")), &offline);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the cached .deb of systemd "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("images/demo.lock locks"), "{}", r.stderr);
    assert!(r.stderr.contains(sha), "{}", r.stderr);
    assert!(!out3.join("demo").exists(), "nothing may be published");

    // 5. A lock older than the image definition: exit 2, positioned, and
    //    the way out named; `lock` without --update refuses to overwrite.
    let yaml = fs::read_to_string(project.join("images/demo.yaml")).unwrap();
    let edited = yaml.replacen("      - nftables\n", "      - nftables\n      - curl\n", 1);
    assert_ne!(edited, yaml);
    fs::write(project.join("images/demo.yaml"), edited).unwrap();
    for args in [&["plan", "demo"][..], &["build", "demo", "--quiet"][..]] {
        let r = cli_in(&project, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("images/demo.lock:"), "{}", r.stderr);
        assert!(
            r.stderr.contains("packages not locked: curl"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("cargo xtask lock --update demo"),
            "{}",
            r.stderr
        );
    }
    let r = cli_in(&project, &["lock", "demo"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--update"), "{}", r.stderr);
}

#[test]
fn lock_update_prints_what_changed() {
    require("mmdebstrap", "mmdebstrap");
    let dir = tempfile::tempdir().unwrap();
    let project = project_copy(dir.path());
    // Pretend the lock was taken earlier: one package missing, one at
    // another version.
    let lock = project.join("images/demo.lock");
    let text = fs::read_to_string(&lock).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let gone = lines
        .iter()
        .position(|l| l.starts_with("package nftables "))
        .unwrap();
    lines.remove(gone);
    let moved = lines
        .iter()
        .position(|l| l.starts_with("package openssh-server "))
        .unwrap();
    let mut f: Vec<String> = lines[moved].split(' ').map(String::from).collect();
    let new_version = f[2].clone();
    f[2] = "1:9.0p1-1".into();
    lines[moved] = f.join(" ");
    fs::write(&lock, lines.join("\n") + "\n").unwrap();
    let r = cli_in(
        &project,
        &[
            "lock",
            "--update",
            "--work-dir",
            dir.path().join("work").to_str().unwrap(),
            "demo",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Compared with the refreshed lock itself, so a newer archive (a
    // security update since the lock was committed) does not matter here.
    let refreshed = fs::read_to_string(&lock).unwrap();
    let version = |name: &str| {
        refreshed
            .lines()
            .find(|l| l.starts_with(&format!("package {name} ")))
            .and_then(|l| l.split(' ').nth(2))
            .unwrap()
            .to_string()
    };
    assert!(
        r.stdout
            .contains(&format!("added     nftables {}", version("nftables"))),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "upgraded  openssh-server 1:9.0p1-1 -> {}",
            version("openssh-server")
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(" 0 removed"), "{}", r.stdout);
    assert!(!r.stdout.contains("removed   "), "{}", r.stdout);
    assert!(new_version.contains(':') || new_version.contains('.'));
}
