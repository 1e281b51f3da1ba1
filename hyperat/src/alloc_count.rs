//! Heap allocations counted over a piece of work: `hyperat bench` reports them per
//! iteration of each workload, so buffers reused across attack steps show up as fewer
//! allocations, and a change that allocates per step shows up at all.
//!
//! The binary installs [`Counting`] around its allocator. While nothing is being
//! counted it costs one relaxed atomic load per allocation. Beside the allocations,
//! the page faults of the same window (Linux): an allocator that hands freed memory
//! back to the OS shows up there, as fresh pages the kernel must fault in and clear.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

static ON: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// A global allocator that counts the allocations of [`count`]'s closure, then hands
/// every call to the allocator it wraps.
pub struct Counting<A>(pub A);

fn note(size: usize) {
    if ON.load(Relaxed) {
        COUNT.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call goes unchanged to the wrapped allocator, which upholds the
// contract; counting only touches atomics and never allocates.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees for `alloc` hold for the wrapped allocator.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the wrapped allocator with this layout.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from the wrapped allocator with this layout.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (a `realloc` counts as one) and the bytes they asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// Allocation calls.
    pub count: u64,
    /// Bytes requested, summed over the calls (not the peak).
    pub bytes: u64,
    /// Minor page faults of the whole process meanwhile (`None` off Linux). A
    /// transparent huge page counts once for its 2 MiB.
    #[serde(default)]
    pub page_faults: Option<u64>,
}

/// The process's minor page faults so far, all threads: field 10 of
/// `/proc/self/stat` (after the parenthesised command name, which may hold spaces).
pub fn minor_page_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from the third on: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt.
    after_name.split_whitespace().nth(7)?.parse().ok()
}

/// Runs `f`, counting the allocations every thread makes meanwhile (the thread pool's
/// included). `None` when the binary has not installed [`Counting`], or when another
/// count is already running (the two would mix).
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Option<Allocations>) {
    let faults_before = minor_page_faults();
    if ON.swap(true, Relaxed) {
        return (f(), None);
    }
    let before = COUNT.load(Relaxed);
    drop(std::hint::black_box(Box::new(0u64))); // seen only with `Counting` installed
    let installed = COUNT.load(Relaxed) > before;
    let (c0, b0) = (COUNT.load(Relaxed), BYTES.load(Relaxed));
    let r = f();
    let (c1, b1) = (COUNT.load(Relaxed), BYTES.load(Relaxed));
    ON.store(false, Relaxed);
    let page_faults = faults_before.zip(minor_page_faults()).map(|(a, b)| b - a);
    let counted = Allocations {
        count: c1 - c0,
        bytes: b1 - b0,
        page_faults,
    };
    (r, installed.then_some(counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_allocator_installed_nothing_is_claimed() {
        let (v, counted) = count(|| vec![1u8; 4096]);
        assert_eq!(v.len(), 4096);
        assert_eq!(counted, None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn touching_fresh_pages_counts_page_faults() {
        let before = minor_page_faults().expect("Linux has /proc/self/stat");
        // 64 MiB mapped fresh by the system allocator, one byte written per 4 KiB page.
        let mut v = Vec::<u8>::with_capacity(64 << 20);
        let spare = v.spare_capacity_mut();
        for i in (0..spare.len()).step_by(4096) {
            spare[i].write(1);
        }
        std::hint::black_box(&v);
        let after = minor_page_faults().unwrap();
        // At least one fault per 2 MiB even where huge pages back the buffer.
        assert!(after - before >= 32, "{} faults", after - before);
    }
}
