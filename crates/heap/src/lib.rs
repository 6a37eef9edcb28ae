//! Hands the allocator's free pages back to the operating system.
//!
//! glibc's malloc gives memory back to the kernel only from the top of each arena: the
//! garbage of one big burst of work stays resident for the life of the process once a
//! longer-lived allocation lands above it. Switchyard has such bursts at known moments:
//! parsing the config (through `config`-rs, ~15 MiB of transient trees at 10,000 routes)
//! and a registry's first full sync. [`release_free_memory`] is called after them, never
//! on the request path. On other platforms and allocators it does nothing.
//!
//! [`tune_allocator`], called once at start, stops glibc from raising its mmap threshold
//! after each big free: by default, freeing a 13 MB buffer (a `/metrics` page at 10,000
//! routes) makes every later allocation up to 13 MB come from the heap and lets up to twice
//! that stay resident untrimmed.
//!
//! [`counting`] holds an allocation counter for tests (allocations per proxied request).
//!
//! The workspace forbids `unsafe`; this crate holds its only audited uses.

pub mod counting;

/// Returns every free page of every malloc arena to the kernel (`malloc_trim(0)`).
///
/// Costs a walk over the heap's free chunks (milliseconds at a few hundred MiB) while
/// holding each arena's lock in turn, so call it after a burst of control-plane work,
/// not periodically on a busy request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only reorganises the allocator's own free
    // lists under its locks; it is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations from this size up are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Free memory above this much at the top of an arena is given back at once.
pub const TRIM_THRESHOLD: usize = 1024 * 1024;

/// Fixes glibc's mmap and trim thresholds at [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`]
/// (`mallopt`), which also turns off their adjustment after each free of a large mapped
/// chunk. Call once at start, before the work whose memory should go back.
///
/// Measured on the scale run (BENCHMARKS.md §4): peak RSS under load 126.5 → 119.5 MiB,
/// the same CPU per request.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes the allocator's parameters under
    // its own lock; it is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}
