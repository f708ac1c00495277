//! The only unsafe code of the init: two raw system calls that have no
//! safe wrapper in rustix.
//!
//! - the device-mapper ioctl, whose argument is a variable-size buffer
//!   (`struct dm_ioctl`, then the target specs and their parameter
//!   strings) rather than one fixed struct;
//! - `execve(2)` of `/sbin/init`, which replaces this process (PID 1) and
//!   must not go through `std::process::Command` (banned in this
//!   workspace for running tools, and it would fork-and-wait semantics we
//!   do not want).
//!
//! The crate denies `unsafe_code`; this module alone allows it, and every
//! unsafe block says why it is sound. The buffers themselves are built and
//! tested as plain bytes in `dm.rs`.

#![allow(unsafe_code)]

use crate::dm::DM_IOCTL_SIZE;
use core::ffi::c_void;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;

/// A device-mapper ioctl over a request buffer.
struct DmCall<'a> {
    opcode: rustix::ioctl::Opcode,
    buf: &'a mut [u8],
}

// SAFETY: `as_ptr` points at a buffer the kernel may read and write for
// `data_size` bytes; `dm_ioctl` below checks that the buffer is at least
// that long before constructing a `DmCall`. The output is only the return
// code, so `output_from_ptr` reads nothing through the pointer.
unsafe impl rustix::ioctl::Ioctl for DmCall<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> rustix::ioctl::Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }

    unsafe fn output_from_ptr(
        _out: rustix::ioctl::IoctlOutput,
        _ptr: *mut c_void,
    ) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// Runs device-mapper command `cmd` (e.g. `dm::DM_DEV_CREATE_CMD`) on
/// `/dev/mapper/control` with `buf`, a request from `dm.rs`; the kernel's
/// answer is written back into `buf`.
pub fn dm_ioctl(control: &File, cmd: u8, buf: &mut [u8]) -> io::Result<()> {
    let declared = buf
        .get(12..16)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match declared {
        Some(size) if size >= DM_IOCTL_SIZE && size <= buf.len() => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "device-mapper request buffer is shorter than its data_size",
            ))
        }
    }
    let opcode = rustix::ioctl::opcode::from_components(
        rustix::ioctl::Direction::ReadWrite,
        crate::dm::DM_IOCTL,
        cmd,
        DM_IOCTL_SIZE,
    );
    // SAFETY: the opcode is `_IOWR(0xfd, cmd, struct dm_ioctl)`, whose
    // argument is a pointer to a dm_ioctl header followed by `data_size`
    // bytes in total. The kernel copies at most `data_size` bytes in and
    // writes at most `data_size` bytes back (dm-ioctl.c copies back
    // `param->data_size`, never more than the caller's), and `buf` was just
    // checked to be at least that long and is exclusively borrowed for the
    // call.
    unsafe { rustix::ioctl::ioctl(control, DmCall { opcode, buf }) }.map_err(io::Error::from)
}

/// Replaces this process with `path`, passing `argv` and `envp`. Returns
/// only on failure, with the error.
pub fn exec(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: `path` is a NUL-terminated string; `argv_ptrs` and
    // `envp_ptrs` are NULL-terminated arrays of pointers to NUL-terminated
    // strings owned by `argv` and `envp`, all of which outlive the call.
    // execve does not return on success; on failure it changes nothing but
    // errno, read right after.
    unsafe {
        libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustix_opcode_equals_the_header_value() {
        for cmd in [
            crate::dm::DM_DEV_CREATE_CMD,
            crate::dm::DM_TABLE_LOAD_CMD,
            crate::dm::DM_DEV_SUSPEND_CMD,
        ] {
            let op = rustix::ioctl::opcode::from_components(
                rustix::ioctl::Direction::ReadWrite,
                crate::dm::DM_IOCTL,
                cmd,
                DM_IOCTL_SIZE,
            );
            assert_eq!(op as u64, u64::from(crate::dm::opcode(cmd)));
        }
    }

    #[test]
    fn a_short_buffer_never_reaches_the_kernel() {
        let f = File::open("/dev/null").unwrap();
        let mut buf = crate::dm::create_request("root").unwrap();
        buf.truncate(DM_IOCTL_SIZE - 8);
        let err = dm_ioctl(&f, crate::dm::DM_DEV_CREATE_CMD, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn exec_reports_a_missing_program() {
        let err = exec(
            c"/nonexistent/slotsmith-init-test",
            &[CString::new("x").unwrap()],
            &[],
        );
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
