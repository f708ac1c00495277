//! The built executable outside an initramfs: it must refuse to run (it
//! would mount over the host's /proc and /dev, and its failure path
//! reboots), say why on one line, and exit with status 2.

#[test]
fn refuses_to_run_unless_pid_1() {
    let out = duct::cmd!(env!("CARGO_BIN_EXE_slotsmith-init"))
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(
            "slotsmith-init: this is the initramfs's /init and runs only as PID 1 (this is PID "
        ),
        "{err}"
    );
    assert!(err.ends_with("); refusing to run\n"), "{err}");
    assert_eq!(err.lines().count(), 1);
}
