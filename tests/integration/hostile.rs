//! Issue 8, as a hostile user: symlinks out of the project around layers,
//! failed and interrupted publishes, concurrent builds, input errors that
//! only the build can see, and a binary from another checkout. Builds run
//! as an unprivileged user where permissions matter, with a canary
//! directory outside the project and a scan of what changed on disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

/// A directory outside every project, holding a secret that must never
/// reach an image, an output or a message.
struct Canary {
    dir: tempfile::TempDir,
}

const SECRET: &str = "canary-secret-7f3a9c";

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("slotsmith-canary-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/shadow"), SECRET).unwrap();
        fs::create_dir(dir.path().join("conf")).unwrap();
        fs::write(
            dir.path().join("conf/layer.yaml"),
            "collection: evil\npriority: 5\nseries-compat: [anvil]\n",
        )
        .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Canary { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every path and size under the canary: it must not change.
    fn snapshot(&self) -> BTreeMap<PathBuf, u64> {
        walk(self.path())
    }
}

fn walk(dir: &Path) -> BTreeMap<PathBuf, u64> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.path().to_path_buf(), len)
        })
        .collect()
}

/// Names directly under `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// sha256 of every regular file under `dir`, by relative path.
fn hashes(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                sha256(e.path()),
            )
        })
        .collect()
}

fn fixture_project(layers: &[&str]) -> Project {
    let p = Project::new();
    base_tarball(&p.path().join("fixtures/base.tar.gz"));
    p.write(
        "images/fx.yaml",
        &fixture_image("fx", "fixtures/base.tar.gz", layers, "squashfs", "16MiB"),
    );
    p
}

/// Builds image `fx` as nobody, with HOME and TMPDIR inside `canary`'s
/// sibling scratch directory so anything written outside the project shows.
fn build_as_nobody(p: &Project, extra_env: &[(&str, &str)]) -> CliRun {
    let out = p.writable("out");
    p.dev_keys_writable();
    let work = p.writable("work");
    let home = p.writable("home");
    let mut env: Vec<(&str, &str)> = vec![
        ("HOME", home.to_str().unwrap()),
        ("TMPDIR", work.to_str().unwrap()),
    ];
    env.extend_from_slice(extra_env);
    slotsmith(
        &[
            "build",
            p.image("fx").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cache-dir",
            home.join("cache").to_str().unwrap(),
        ],
        &env,
        true,
        None,
    )
}

fn plan(p: &Project) -> CliRun {
    slotsmith(&["plan", p.image("fx").to_str().unwrap()], &[], false, None)
}

/// Asserts that no output, work file or message holds the canary secret.
fn assert_secret_nowhere(p: &Project, r: &CliRun) {
    assert!(!r.stdout.contains(SECRET) && !r.stderr.contains(SECRET));
    for dir in ["out", "work"] {
        let d = p.path().join(dir);
        if !d.exists() {
            continue;
        }
        for e in walkdir::WalkDir::new(&d).follow_links(false) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let data = fs::read(e.path()).unwrap();
                assert!(
                    !data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                    "the canary secret reached {}",
                    e.path().display()
                );
            }
        }
    }
}

#[test]
fn symlinks_out_of_the_project_around_layers_are_refused() {
    let started = std::time::SystemTime::now();
    let canary = Canary::new();
    // A base tarball outside the project, for the last case.
    let p0 = fixture_project(&[]);
    fs::copy(
        p0.path().join("fixtures/base.tar.gz"),
        canary.path().join("base.tar.gz"),
    )
    .unwrap();
    let before = canary.snapshot();
    // Each way a layer can lead out of the project: its files/, its conf/,
    // its conf/layer.yaml, and the layer directory itself.
    type Case<'a> = (&'a str, &'a dyn Fn(&Project));
    let cases: [Case; 4] = [
        ("layer files/", &|p: &Project| {
            symlink(
                canary.path().join("etc"),
                p.path().join("layers/meta-x/files"),
            )
            .unwrap();
        }),
        ("layer conf/", &|p: &Project| {
            fs::remove_dir_all(p.path().join("layers/meta-x/conf")).unwrap();
            symlink(
                canary.path().join("conf"),
                p.path().join("layers/meta-x/conf"),
            )
            .unwrap();
        }),
        ("layer conf/layer.yaml", &|p: &Project| {
            fs::remove_file(p.path().join("layers/meta-x/conf/layer.yaml")).unwrap();
            symlink(
                canary.path().join("conf/layer.yaml"),
                p.path().join("layers/meta-x/conf/layer.yaml"),
            )
            .unwrap();
        }),
        ("leaves the project", &|p: &Project| {
            fs::remove_dir_all(p.path().join("layers/meta-x")).unwrap();
            symlink(canary.path(), p.path().join("layers/meta-x")).unwrap();
        }),
    ];
    for (expect, make) in cases {
        let p = fixture_project(&["meta-x"]);
        layer(&p, "meta-x", "x", 5, "");
        make(&p);
        let r = plan(&p);
        assert_eq!(r.code, 2, "{expect}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{expect}: {}", r.stderr);
        assert!(
            r.stderr.contains("images/fx.yaml:"),
            "{expect}: {}",
            r.stderr
        );
        // The build refuses it as well, as nobody, before writing anything.
        let r = build_as_nobody(&p, &[]);
        assert_eq!(r.code, 2, "{expect}: {}", r.stderr);
        assert_eq!(names(&p.path().join("out")), Vec::<String>::new());
        assert_secret_nowhere(&p, &r);
    }
    // A layer directory linked within the project (to a checkout under
    // sources/) is allowed and builds.
    let p = fixture_project(&["meta-x"]);
    layer(&p, "meta-src", "x", 5, "");
    fs::create_dir_all(p.path().join("sources")).unwrap();
    fs::rename(
        p.path().join("layers/meta-src"),
        p.path().join("sources/meta-x"),
    )
    .unwrap();
    symlink("../sources/meta-x", p.path().join("layers/meta-x")).unwrap();
    let r = plan(&p);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A base tarball reached through a symlink out of the project, too.
    let p = fixture_project(&[]);
    fs::remove_file(p.path().join("fixtures/base.tar.gz")).unwrap();
    symlink(
        canary.path().join("base.tar.gz"),
        p.path().join("fixtures/base.tar.gz"),
    )
    .unwrap();
    let r = plan(&p);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("base.tarball"), "{}", r.stderr);
    assert!(r.stderr.contains("leaves the project"), "{}", r.stderr);
    // A signing key reached through a symlink out of the project: refused
    // before it is read, and the secret it points to appears nowhere.
    let p = fixture_project(&[]);
    symlink(
        canary.path().join("etc/shadow"),
        p.path().join("keys/boot.key.pem"),
    )
    .unwrap();
    let text = fs::read_to_string(p.image("fx")).unwrap()
        + "signing:\n  boot:\n    key: keys/boot.key.pem\n    public-key: keys/boot.key.pem\n";
    fs::write(p.image("fx"), text).unwrap();
    let r = build_as_nobody(&p, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("signing.boot"), "{}", r.stderr);
    assert!(r.stderr.contains("leaves the project"), "{}", r.stderr);
    assert_secret_nowhere(&p, &r);
    assert_eq!(names(&p.path().join("out")), Vec::<String>::new());

    // A policy file linked out of the project.
    let p = fixture_project(&[]);
    fs::write(canary.path().join("evil.yaml"), "rules: []\n").unwrap();
    symlink(
        canary.path().join("evil.yaml"),
        p.path().join("policies/evil.yaml"),
    )
    .unwrap();
    let text = fs::read_to_string(p.image("fx")).unwrap() + "policies: [evil]\n";
    fs::write(p.image("fx"), text).unwrap();
    let r = plan(&p);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("policies/evil.yaml"), "{}", r.stderr);
    assert!(r.stderr.contains("leaves the project"), "{}", r.stderr);
    fs::remove_file(canary.path().join("evil.yaml")).unwrap();
    assert_eq!(canary.snapshot(), before, "the canary directory changed");
    assert_nothing_new_outside_projects(started);
}

/// Scans /tmp and /var/tmp for anything the unprivileged build user
/// created since `since` outside the tests' own project directories: a
/// build must write only into its work and output directories.
fn assert_nothing_new_outside_projects(since: std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    for root in ["/tmp", "/var/tmp"] {
        for e in walkdir::WalkDir::new(root)
            .max_depth(2)
            .into_iter()
            .filter_entry(|e| {
                let n = e.file_name().to_string_lossy();
                !n.starts_with("slotsmith-test-") && !n.starts_with("slotsmith-canary-")
            })
            .filter_map(|e| e.ok())
        {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            let new = md.modified().map(|m| m >= since).unwrap_or(false);
            assert!(
                !(md.uid() == 65534 && new),
                "the unprivileged build created {} outside its project",
                e.path().display()
            );
        }
    }
}

#[test]
fn failed_publish_leaves_out_as_it_was_and_success_leaves_no_partial() {
    let p = fixture_project(&[]);
    let r = build_as_nobody(&p, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = p.path().join("out");
    let published = out.join("fx");
    let before = hashes(&published);
    assert!(before.contains_key("fx.img"), "{before:?}");
    // The previous build made read-only: it cannot be removed, so the new
    // one must not go live.
    fs::set_permissions(&published, fs::Permissions::from_mode(0o555)).unwrap();
    let r = build_as_nobody(&p, &[("SOURCE_DATE_EPOCH", "1700000001")]);
    fs::set_permissions(&published, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot replace"), "{}", r.stderr);
    assert!(r.stderr.contains("left as it was"), "{}", r.stderr);
    assert_eq!(
        hashes(&published),
        before,
        "out/fx changed after a failed publish"
    );
    assert_eq!(
        names(&out),
        ["fx"],
        "a failed publish left something in out/"
    );
    // Writable again: the rebuild goes live and leaves nothing behind.
    let r = build_as_nobody(&p, &[("SOURCE_DATE_EPOCH", "1700000001")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(names(&out), ["fx"]);
    assert_ne!(hashes(&published), before, "the new build is not live");
}

#[test]
fn stale_partials_are_removed_and_a_second_build_waits_for_the_first() {
    let p = fixture_project(&[]);
    let out = p.writable("out");
    let work = p.writable("work");
    // What a killed build leaves: a staging directory, deep and partly
    // read-only, plus another image's, which must stay.
    let stale = out.join(".fx.partial-Ab12Cd");
    let mut deep = stale.clone();
    for i in 0..300 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("big"), vec![7u8; 1 << 20]).unwrap();
    fs::set_permissions(stale.join("d0"), fs::Permissions::from_mode(0o555)).unwrap();
    duct::cmd!("chown", "-R", "65534:65534", &stale)
        .run()
        .unwrap();
    let other = out.join(".other.partial-Zz99Yy");
    fs::create_dir(&other).unwrap();

    // Hold the image's build lock, as a running build would.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(work.join(".fx.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    p.dev_keys_writable();
    let home = p.writable("home");
    let handle = duct::cmd(
        "setpriv",
        [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            cli().to_str().unwrap(),
            "build",
            p.image("fx").to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cache-dir",
            home.join("cache").to_str().unwrap(),
        ],
    )
    .env("HOME", &home)
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .start()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        handle.try_wait().unwrap().is_none(),
        "the second build did not wait for the lock"
    );
    assert!(stale.exists(), "cleanup ran without the lock");
    drop(lock);
    let res = handle.wait().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for its lock"), "{stderr}");
    assert!(stderr.contains("left by an interrupted build"), "{stderr}");
    assert!(
        !stale.exists(),
        "the stale staging directory is still there"
    );
    assert!(
        other.exists(),
        "another image's staging directory was removed"
    );
    assert_eq!(names(&out), [".other.partial-Zz99Yy", "fx"]);
}

#[test]
fn input_errors_the_build_meets_are_input_errors_with_a_position() {
    // A removal of a path the base does not have: exit 2 at remove[1].
    let p = fixture_project(&["meta-rm"]);
    layer(
        &p,
        "meta-rm",
        "rm",
        5,
        "remove:\n  - /etc/passwd\n  - /etc/no-such-file\n",
    );
    let r = build_as_nobody(&p, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "layers/meta-rm/conf/layer.yaml:7:5: remove[1]: cannot remove /etc/no-such-file"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(names(&p.path().join("out")), Vec::<String>::new());

    // source-date-epoch past 2^32 - 1: a load error, in the file and from
    // the environment.
    let p = fixture_project(&[]);
    let text = fs::read_to_string(p.image("fx")).unwrap().replace(
        "source-date-epoch: 1700000000",
        "source-date-epoch: 4294967296",
    );
    fs::write(p.image("fx"), text).unwrap();
    let r = plan(&p);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("images/fx.yaml:6:20: source-date-epoch: 4294967296 is past"),
        "{}",
        r.stderr
    );
    let p = fixture_project(&[]);
    let r = slotsmith(
        &["plan", p.image("fx").to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "18446744073709551615")],
        false,
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("SOURCE_DATE_EPOCH"), "{}", r.stderr);

    // Layout sizes near 2^64: a load error naming the key, never a panic.
    for (key, value) in [
        ("slot", "16777215TiB"),
        ("slot", "18446744073709551615"),
        ("esp", "16777215TiB"),
        ("alignment", "9223372036854775808"),
    ] {
        let p = fixture_project(&[]);
        let text = fs::read_to_string(p.image("fx")).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(&format!("{key}:")) {
                    format!("  {key}: {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(p.image("fx"), text).unwrap();
        let r = plan(&p);
        assert_eq!(r.code, 2, "{key}: {value}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("layout.{key}")),
            "{key}: {value}: {}",
            r.stderr
        );
    }
}

#[test]
fn the_project_comes_from_the_working_directory_not_the_binary() {
    // A project elsewhere: a bare image name resolves under the working
    // directory's project, also from a subdirectory, and with --project.
    let p = fixture_project(&[]);
    let sub = p.path().join("fixtures");
    let r = slotsmith_in(&sub, &["plan", "fx"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"name\": \"fx\""), "{}", r.stdout);
    let elsewhere = tempfile::tempdir().unwrap();
    let r = slotsmith_in(elsewhere.path(), &["plan", "fx"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("no slotsmith project here"),
        "{}",
        r.stderr
    );
    let r = slotsmith_in(
        elsewhere.path(),
        &["--project", p.path().to_str().unwrap(), "plan", "fx"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Another slotsmith checkout (it holds xtask sources): this binary was
    // built from a different one, so it refuses rather than build the other
    // checkout's inputs with this checkout's code.
    fs::create_dir_all(p.path().join("xtask")).unwrap();
    fs::write(
        p.path().join("xtask/Cargo.toml"),
        "[package]\nname = \"xtask\"\n",
    )
    .unwrap();
    let r = slotsmith_in(&sub, &["plan", "fx"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("was built from"), "{}", r.stderr);
    assert!(r.stderr.contains("CARGO_TARGET_DIR"), "{}", r.stderr);
}

/// Runs the CLI with `dir` as its working directory.
fn slotsmith_in(dir: &Path, args: &[&str]) -> CliRun {
    let out = duct::cmd(cli(), args)
        .dir(dir)
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

#[test]
fn layer_entries_the_filesystem_cannot_hold_are_load_errors() {
    let long_name = "n".repeat(256);
    let long_target = "t/".repeat(2500);
    for fs_kind in ["squashfs", "ext4"] {
        let p = Project::new();
        base_tarball(&p.path().join("fixtures/base.tar.gz"));
        p.write(
            "images/fx.yaml",
            &fixture_image(
                "fx",
                "fixtures/base.tar.gz",
                &["meta-lim"],
                fs_kind,
                "16MiB",
            ),
        );
        layer(
            &p,
            "meta-lim",
            "lim",
            5,
            &format!(
                "files:\n  /opt/{long_name}:\n    type: directory\n  /opt/link:\n    type: symlink\n    target: {long_target}\n  /dev/big:\n    type: char\n    major: 5000\n    minor: 2000000\n  /opt/x:\n    type: directory\n    xattrs:\n      \"user.a\\u001b[2Jb\": \"0x01\"\n"
            ),
        );
        let r = plan(&p);
        assert_eq!(r.code, 2, "{fs_kind}: {}", r.stderr);
        for (line, what) in [
            (7, "/opt/nnn"),
            (9, "/opt/link"),
            (12, "/dev/big"),
            (16, "/opt/x"),
        ] {
            let at = format!("layers/meta-lim/conf/layer.yaml:{line}:");
            assert!(
                r.stderr
                    .lines()
                    .any(|l| l.starts_with(&at) && l.contains(what)),
                "{fs_kind}: no diagnostic at {at} for {what}:\n{}",
                r.stderr
            );
        }
        assert!(!r.stderr.contains('\x1b'), "{fs_kind}: {:?}", r.stderr);
    }
}
