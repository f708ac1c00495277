//! A global allocator that counts, per thread, the bytes currently
//! allocated and their peak, so [`crate::exercise`] can bound what one input
//! makes a parser allocate. Per thread, because `cargo test` runs tests in
//! parallel threads of one process; a parser that hands work to other
//! threads is measured only on its calling thread.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Install with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`
/// in a test binary to enable the allocation bound.
pub struct CountingAlloc;

fn add(n: isize) {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = CURRENT.try_with(|c| {
        let v = c.get() + n;
        c.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every method forwards to the system allocator unchanged; the
// bookkeeping only touches const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Starts a new measurement on this thread: the peak becomes what is
/// allocated now.
pub fn reset_peak() {
    let cur = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(cur));
    BASE.with(|b| b.set(cur));
}

thread_local! {
    static BASE: Cell<isize> = const { Cell::new(0) };
}

/// Bytes allocated at once since [`reset_peak`], above what was allocated
/// then; 0 when the counting allocator is not installed.
pub fn peak() -> usize {
    let p = PEAK.with(Cell::get) - BASE.with(Cell::get);
    p.max(0) as usize
}
