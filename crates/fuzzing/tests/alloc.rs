//! The allocation bound: with [`CountingAlloc`] installed, an input that
//! makes the target allocate more than the limit fails the exercise.

use std::panic::catch_unwind;

use slotsmith_fuzzing::{exercise_with_limit, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn an_allocation_over_the_bound_fails() {
    let res = catch_unwind(|| {
        exercise_with_limit("selftest-alloc", &[vec![1, 2, 3]], 0, 1 << 20, |b| {
            // Sized from the input, as a careless header parser would.
            let v = vec![0u8; usize::from(b[0]) << 21];
            std::hint::black_box(v);
        })
    });
    let err = res.expect_err("a 2 MiB allocation must break a 1 MiB bound");
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("allocated"), "{msg}");
}

#[test]
fn an_allocation_under_the_bound_passes() {
    exercise_with_limit("selftest-alloc-ok", &[vec![1, 2, 3]], 50, 1 << 20, |b| {
        let v = vec![0u8; b.len() * 16];
        std::hint::black_box(v);
    });
}
