//! The boot sequence: the system calls around the pure, tested pieces.
//!
//! Order matters for safety: nothing under `/sysroot` is mounted before the
//! manifest has been verified and agrees with the command line, the root
//! is only ever mounted from the dm-verity device, and the data partition
//! (the one unverified filesystem) is mounted last, `nodev,nosuid,noexec`,
//! and only used for `/var` and the machine-id. Every step returns an
//! error instead of continuing; `main.rs` turns it into the refusal line
//! and a reboot. There is no udev: device nodes come from devtmpfs, and
//! each one is checked to be the block device sysfs named before use.
//!
//! Anti-rollback: the data partition is mounted first (at `/data` in the
//! initramfs) only to read the device's minimum security version, which
//! [`verify::check_security_version`] holds the manifest to; it is moved
//! under the new root once the root is mounted. A refusal after that
//! mount is also left on the data partition (`slotsmith/boot-refusal`),
//! so the next boot's updater can record why the slot fell back.

use crate::cmdline::{self, BootArgs, MAX_CMDLINE};
use crate::discover::{self, BlockDev, Found, SlotDevices};
use crate::dm::{self, DM_NAME};
use crate::fat::{self, BootFiles};
use crate::modules;
use crate::state;
use crate::sys;
use crate::verify;
use crate::{console, read_bounded};
use anyhow::{bail, Context, Result};
use rustix::mount::{mount, mount_bind, mount_move, mount_remount, MountFlags};
use slotsmith_sign::manifest::Manifest;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for the slot's disk to appear (virtio and USB probing
/// is asynchronous).
pub const DISK_WAIT: Duration = Duration::from_secs(30);
/// How long to wait for a device node devtmpfs is about to create.
pub const NODE_WAIT: Duration = Duration::from_secs(2);
/// The program systemd is started as after switch_root.
pub const NEXT_INIT: &str = "/sbin/init";
/// Where the root is assembled before switch_root.
pub const SYSROOT: &str = "/sysroot";

/// Verifies the boot files of a slot against the embedded key and the
/// command line: the signature first, then agreement of slot, root hash,
/// security version and command line, then the anti-rollback hook. This is
/// everything the init decides before it maps the root; it reads no file
/// and makes no system call, so tests run it on real images.
pub fn verify_slot(
    files: &BootFiles,
    key_pem: &[u8],
    key_path: &Path,
    args: &BootArgs,
    proc_cmdline: &str,
    minimum: Option<u64>,
) -> Result<Manifest> {
    let m = verify::verify(&files.manifest, &files.sig, key_pem, key_path)?;
    verify::check_agreement(&m, args, proc_cmdline)?;
    verify::check_security_version(m.security_version, minimum)?;
    Ok(m)
}

/// Where the data partition is mounted while the init runs.
pub const EARLY_DATA: &str = "/data";
/// Whether [`EARLY_DATA`] holds the data partition (for [`note_refusal`]).
static DATA_MOUNTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Leaves the refusal on the data partition if it is mounted.
pub fn note_refusal(reason: &str) {
    if DATA_MOUNTED.load(std::sync::atomic::Ordering::SeqCst) {
        let _ = state::note_refusal(Path::new(EARLY_DATA), reason);
    }
}

/// Runs the whole boot. Returns only on failure (on success the process
/// has become /sbin/init).
pub fn run(started: Instant) -> Result<()> {
    mount_api_filesystems()?;

    let raw = read_bounded(Path::new("/proc/cmdline"), MAX_CMDLINE)?;
    let proc_cmdline = String::from_utf8(raw).context("the kernel command line is not UTF-8")?;
    let args = cmdline::parse(&proc_cmdline)?;

    load_modules()?;
    let devs = wait_for_disk(&args)?;

    mount_data(&devs.data)?;
    let minimum = state::read_min_svn(Path::new(EARLY_DATA))?;

    let boot_dev = open_block(&devs.boot)?;
    let files = fat::read_boot_files(boot_dev)
        .with_context(|| format!("cannot read the boot files on {}", devs.boot.node()))?;
    let key_path = Path::new(verify::KEY_PATH);
    let key = verify::read_key(key_path)?;
    let manifest = verify_slot(&files, &key, key_path, &args, &proc_cmdline, minimum)
        .with_context(|| format!("boot partition {}", devs.boot.node()))?;

    #[cfg(not(feature = "bench-unverified-root"))]
    let root = open_verity(&manifest, &devs)?;
    // BENCH ONLY (see Cargo.toml): the same boot without verity.
    #[cfg(feature = "bench-unverified-root")]
    let root = {
        let _ = &manifest;
        drop(open_block(&devs.root)?);
        PathBuf::from(devs.root.node())
    };
    mount(
        root.as_path(),
        SYSROOT,
        "squashfs",
        MountFlags::RDONLY,
        None,
    )
    .with_context(|| format!("cannot mount {} read-only on {SYSROOT}", root.display()))?;
    setup_state()?;

    console::say(&console::timing_line(
        args.slot.name(),
        started.elapsed().as_millis(),
        console::uptime_ms(),
        console::secure_boot_state(&console::read_kmsg()),
    ));
    switch_root()
}

/// proc, sysfs and devtmpfs, with the usual restrictive flags.
fn mount_api_filesystems() -> Result<()> {
    let common = MountFlags::NOSUID | MountFlags::NOEXEC;
    for (fstype, target, flags, data) in [
        ("proc", "/proc", common | MountFlags::NODEV, None),
        ("sysfs", "/sys", common | MountFlags::NODEV, None),
        ("devtmpfs", "/dev", common, Some(c"mode=0755")),
    ] {
        mount(fstype, target, fstype, flags, data)
            .with_context(|| format!("cannot mount {fstype} on {target}"))?;
    }
    Ok(())
}

/// Loads the modules listed in the initramfs, in order.
fn load_modules() -> Result<()> {
    let list = read_bounded(Path::new(modules::LIST_PATH), modules::MAX_LIST)?;
    let entries = modules::parse_list(&list)?;
    let uname = rustix::system::uname();
    let release = uname
        .release()
        .to_str()
        .context("the kernel release is not UTF-8")?;
    let dir = Path::new("/lib/modules").join(release);
    for rel in entries {
        let path = dir.join(&rel);
        let file =
            File::open(&path).with_context(|| format!("cannot open module {}", path.display()))?;
        let flags = modules::load_flags(&rel);
        match rustix::system::finit_module(&file, c"", flags) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(rustix::io::Errno::OPNOTSUPP) if flags != 0 => bail!(
                "cannot load module {}: this kernel cannot decompress modules; ship it uncompressed",
                path.display()
            ),
            Err(err) => bail!("cannot load module {}: {err}", path.display()),
        }
    }
    Ok(())
}

/// Polls sysfs until the slot's four partitions are on one disk.
fn wait_for_disk(args: &BootArgs) -> Result<SlotDevices> {
    let begun = Instant::now();
    loop {
        match discover::discover(Path::new("/sys"), args.slot)? {
            Found::Complete(devs) => return Ok(*devs),
            Found::Incomplete(why) if begun.elapsed() >= DISK_WAIT => {
                bail!("after {} s, {why}", DISK_WAIT.as_secs())
            }
            Found::Incomplete(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Opens `/dev/<DEVNAME>` read-only, waiting briefly for devtmpfs, and
/// checks it is the block device sysfs described (so a stale or planted
/// node is never read).
fn open_block(dev: &BlockDev) -> Result<File> {
    let path = PathBuf::from(dev.node());
    let begun = Instant::now();
    let file = loop {
        match File::open(&path) {
            Ok(f) => break f,
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound && begun.elapsed() < NODE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    if !meta.file_type().is_block_device() || (major, minor) != (dev.major, dev.minor) {
        bail!(
            "{} is not block device {} (found {major}:{minor})",
            path.display(),
            dev.dev_t()
        );
    }
    Ok(file)
}

/// Creates the read-only dm-verity mapping and returns its device node.
#[cfg_attr(feature = "bench-unverified-root", allow(dead_code))]
fn open_verity(m: &Manifest, devs: &SlotDevices) -> Result<PathBuf> {
    let target = dm::verity_target(m, &devs.root, &devs.verity)?;
    let control = open_control()?;
    let mut create = dm::create_request(DM_NAME)?;
    sys::dm_ioctl(&control, dm::DM_DEV_CREATE_CMD, &mut create)
        .with_context(|| format!("cannot create device-mapper device {DM_NAME}"))?;
    let created = dm::reply(&create)?;
    let mut load = dm::load_request(DM_NAME, &target)?;
    sys::dm_ioctl(&control, dm::DM_TABLE_LOAD_CMD, &mut load)
        .with_context(|| format!("the kernel refused the verity table `{}`", target.line()))?;
    let mut resume = dm::resume_request(DM_NAME)?;
    sys::dm_ioctl(&control, dm::DM_DEV_SUSPEND_CMD, &mut resume)
        .with_context(|| format!("cannot activate device-mapper device {DM_NAME}"))?;
    // The kernel names the node (dm-<minor>); ask sysfs rather than assume.
    let uevent_path = format!("/sys/dev/block/{}:{}/uevent", created.major, created.minor);
    let text = read_bounded(Path::new(&uevent_path), discover::MAX_UEVENT as usize)?;
    let text = String::from_utf8(text).with_context(|| format!("{uevent_path} is not UTF-8"))?;
    let keys =
        discover::parse_uevent(&text).with_context(|| format!("{uevent_path} is malformed"))?;
    let devname = keys
        .get("DEVNAME")
        .with_context(|| format!("{uevent_path} has no DEVNAME="))?;
    let dev = BlockDev {
        name: devname.to_string(),
        devname: devname.to_string(),
        major: created.major,
        minor: created.minor,
    };
    drop(open_block(&dev)?);
    Ok(PathBuf::from(dev.node()))
}

/// Opens /dev/mapper/control, which devtmpfs creates when dm-mod loads.
fn open_control() -> Result<File> {
    let path = Path::new("/dev/mapper/control");
    let begun = Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound && begun.elapsed() < NODE_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => {
                return Err(err).context("cannot open /dev/mapper/control (is dm-mod loaded?)")
            }
        }
    }
}

/// Mounts the data partition on [`EARLY_DATA`].
fn mount_data(data: &BlockDev) -> Result<()> {
    drop(open_block(data)?);
    mount(
        data.node().as_str(),
        EARLY_DATA,
        "ext4",
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
        None,
    )
    .with_context(|| format!("cannot mount {} on {EARLY_DATA}", data.node()))?;
    DATA_MOUNTED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Moves the data partition under the new root; sets up the `/var`
/// overlay and the machine-id.
fn setup_state() -> Result<()> {
    let data_dir = format!("{SYSROOT}/data");
    mount_move(EARLY_DATA, data_dir.as_str())
        .with_context(|| format!("cannot move {EARLY_DATA} to {data_dir}"))?;
    DATA_MOUNTED.store(false, std::sync::atomic::Ordering::SeqCst);

    let overlay = state::prepare_var_overlay(Path::new(&data_dir))?;
    let var = format!("{SYSROOT}/var");
    let opts = format!(
        "lowerdir={var},upperdir={},workdir={}",
        overlay.upper.display(),
        overlay.work.display()
    );
    let opts = CString::new(opts).context("overlay options contain a NUL byte")?;
    mount(
        "overlay",
        var.as_str(),
        "overlay",
        // The upper layer lives on the unsigned data partition: nothing
        // on it may run (or be a device node, or gain privileges).
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(opts.as_c_str()),
    )
    .with_context(|| format!("cannot mount the /var overlay ({})", opts.to_string_lossy()))?;

    let id = state::ensure_machine_id(Path::new(&data_dir), || {
        let mut buf = [0u8; 16];
        let n = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())?;
        if n != buf.len() {
            bail!("getrandom returned {n} of 16 bytes");
        }
        Ok(buf)
    })?;
    let target = format!("{SYSROOT}/etc/machine-id");
    mount_bind(&id, target.as_str())
        .with_context(|| format!("cannot bind {} on {target}", id.display()))?;
    mount_remount(
        target.as_str(),
        MountFlags::BIND
            | MountFlags::RDONLY
            | MountFlags::NOSUID
            | MountFlags::NODEV
            | MountFlags::NOEXEC,
        "",
    )
    .with_context(|| format!("cannot make {target} read-only"))?;
    Ok(())
}

/// Moves the API filesystems into the new root, makes it `/` and execs
/// /sbin/init with our arguments and environment.
fn switch_root() -> Result<()> {
    for fs in ["/dev", "/proc", "/sys"] {
        let to = format!("{SYSROOT}{fs}");
        mount_move(fs, to.as_str()).with_context(|| format!("cannot move {fs} to {to}"))?;
    }
    rustix::process::chdir(SYSROOT).with_context(|| format!("cannot enter {SYSROOT}"))?;
    mount_move(".", "/").with_context(|| format!("cannot move {SYSROOT} to /"))?;
    rustix::process::chroot(".").context("cannot chroot into the new root")?;
    rustix::process::chdir("/").context("cannot enter the new root")?;

    let path = CString::new(NEXT_INIT).context("init path")?;
    let mut argv = vec![path.clone()];
    for arg in std::env::args_os().skip(1) {
        argv.push(CString::new(arg.into_vec()).context("an init argument contains a NUL byte")?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        envp.push(CString::new(kv).context("an environment variable contains a NUL byte")?);
    }
    let err = sys::exec(&path, &argv, &envp);
    Err(err).with_context(|| format!("cannot execute {NEXT_INIT}"))
}
