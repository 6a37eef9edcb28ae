//! An allocation counter for tests and diagnostics: [`CountingAllocator`] forwards every
//! call to the system allocator and counts the allocation calls (`alloc`, `alloc_zeroed`,
//! `realloc`) made on threads that opted in with [`count_this_thread`].
//!
//! A test installs it with `#[global_allocator]` and opts in only the thread it measures,
//! so the figure is that thread's alone. The gateway binary does not use it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocation calls counted so far, over every opted-in thread.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Starts (`true`) or stops counting the calling thread's allocations.
pub fn count_this_thread(on: bool) {
    COUNTED.with(|c| c.set(on));
}

/// Allocation calls counted so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn count() {
    // `try_with`: a thread's allocations while it tears its locals down must not panic.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The system allocator, counting as described in the module documentation.
pub struct CountingAllocator;

// SAFETY: every call goes unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// counting touches only an atomic and a thread-local `Cell`, neither of which allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's pointer (allocated by this allocator, hence by `System`) and
        // layouts, as `GlobalAlloc::realloc` requires.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's pointer and layout, as `GlobalAlloc::dealloc` requires.
        unsafe { System.dealloc(ptr, layout) }
    }
}
