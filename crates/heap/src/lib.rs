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
//! The workspace forbids `unsafe`; this crate holds its only audited uses.

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

#[cfg(test)]
mod tests {
    use super::release_free_memory;

    /// Resident memory in KiB, from /proc/self/statm (pages × 4 KiB).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_garbage_below_a_live_allocation_is_given_back() {
        // 64 MiB of small allocations (below the mmap threshold, so they come from the
        // heap), then one small live allocation above them, then the garbage freed: glibc
        // cannot shrink the heap past the live one, so the pages stay resident until trimmed.
        let garbage: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let keep = std::hint::black_box(Box::new([1u8; 64]));
        drop(garbage);
        let before = resident_kib();
        release_free_memory();
        let after = resident_kib();
        println!("resident before trim {before} KiB, after {after} KiB");
        assert_eq!(keep[0], 1);
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "expected over 32 MiB back, got {before} -> {after} KiB"
        );
    }
}
