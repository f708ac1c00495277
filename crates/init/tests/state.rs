//! The writable state on a (temporary) data directory: the machine-id is
//! created once, kept when valid, replaced when not, never written through
//! a symlink; the `/var` overlay directories are created, and planted
//! symlinks or files in their place refuse the boot.

use slotsmith_init::state::{ensure_machine_id, is_valid_machine_id, prepare_var_overlay};
use std::cell::Cell;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};

#[test]
fn machine_id_is_created_once_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let calls = Cell::new(0);
    let random = || {
        calls.set(calls.get() + 1);
        Ok([0xa5; 16])
    };
    let path = ensure_machine_id(tmp.path(), random).unwrap();
    assert_eq!(path, tmp.path().join(".state/machine-id"));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, "a5a5a5a5a5a545a5a5a5a5a5a5a5a5a5\n");
    assert!(is_valid_machine_id(text.as_bytes()));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444);
    // No temp file is left behind.
    let names: Vec<_> = fs::read_dir(tmp.path().join(".state"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["machine-id"]);

    // A second boot keeps it and asks for no randomness.
    ensure_machine_id(tmp.path(), || panic!("must not regenerate")).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    assert_eq!(calls.get(), 1);
}

#[test]
fn invalid_or_symlinked_machine_ids_are_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join(".state");
    fs::create_dir(&state).unwrap();
    let id = state.join("machine-id");
    for bad in [
        &b""[..],
        b"uninitialized\n",
        b"00000000000000000000000000000000\n",
        b"A5A5A5A5A5A54A5A5A5A5A5A5A5A5A5A\n",
    ] {
        let _ = fs::remove_file(&id);
        fs::write(&id, bad).unwrap();
        ensure_machine_id(tmp.path(), || Ok([0x11; 16])).unwrap();
        assert_eq!(
            fs::read_to_string(&id).unwrap(),
            "11111111111141119111111111111111\n",
            "{bad:?}"
        );
    }

    // A symlink to a file outside the data partition: the victim keeps
    // its content, the link is replaced by a regular file.
    let victim = tmp.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::remove_file(&id).unwrap();
    symlink(&victim, &id).unwrap();
    ensure_machine_id(tmp.path(), || Ok([0x22; 16])).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(fs::symlink_metadata(&id).unwrap().file_type().is_file());

    // A planted temp-file symlink is removed, not written through.
    fs::remove_file(&id).unwrap();
    symlink(&victim, state.join("machine-id.tmp")).unwrap();
    ensure_machine_id(tmp.path(), || Ok([0x33; 16])).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(fs::symlink_metadata(state.join("machine-id.tmp")).is_err());

    // A directory in its place cannot be replaced by a rename: refuse.
    fs::remove_file(&id).unwrap();
    fs::create_dir(&id).unwrap();
    let err = ensure_machine_id(tmp.path(), || Ok([0x44; 16])).unwrap_err();
    assert!(
        err.to_string().ends_with("machine-id is a directory"),
        "{err}"
    );
}

#[test]
fn var_overlay_directories_are_real_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let o = prepare_var_overlay(tmp.path()).unwrap();
    assert_eq!(o.upper, tmp.path().join(".state/var/upper"));
    assert_eq!(o.work, tmp.path().join(".state/var/work"));
    assert!(o.upper.is_dir() && o.work.is_dir());
    // Idempotent on the next boot.
    assert_eq!(prepare_var_overlay(tmp.path()).unwrap(), o);

    // A symlink planted at any level is refused, whatever it points to.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::remove_dir(&o.work).unwrap();
    symlink(elsewhere.path(), &o.work).unwrap();
    let err = prepare_var_overlay(tmp.path()).unwrap_err().to_string();
    assert!(
        err.ends_with(".state/var/work is a symlink, not a directory"),
        "{err}"
    );

    let tmp = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), tmp.path().join(".state")).unwrap();
    let err = prepare_var_overlay(tmp.path()).unwrap_err().to_string();
    assert!(
        err.ends_with(".state is a symlink, not a directory"),
        "{err}"
    );
    let err = ensure_machine_id(tmp.path(), || Ok([1; 16]))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(".state is a symlink, not a directory"),
        "{err}"
    );
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(".state"), "file").unwrap();
    let err = prepare_var_overlay(tmp.path()).unwrap_err().to_string();
    assert!(err.ends_with(".state is not a directory"), "{err}");
}
