//! `/init` of slotsmith's initramfs. See the library documentation
//! (src/lib.rs) for what it checks and why.
//!
//! It refuses to run as anything but PID 1: outside the initramfs it would
//! try to mount over the host's /proc and /dev, and its failure path
//! reboots. Every error and every panic ends in the single refusal line
//! and a reboot (fail closed); there is no shell to fall back to.

use slotsmith_init::{boot, console};
use std::time::Instant;

fn main() {
    let started = Instant::now();
    let pid = rustix::process::getpid();
    if !pid.is_init() {
        console::say(&format!(
            "{} this is the initramfs's /init and runs only as PID 1 (this is PID {}); refusing to run\n",
            console::PREFIX,
            pid.as_raw_nonzero()
        ));
        std::process::exit(2);
    }
    console::install_panic_hook();
    match boot::run(started) {
        Err(err) => {
            let reason = format!("{err:#}");
            boot::note_refusal(&reason);
            console::refuse(&reason)
        }
        Ok(()) => console::refuse("the boot sequence ended without starting /sbin/init"),
    }
}
