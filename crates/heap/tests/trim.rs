//! `release_free_memory` in a process of its own (resident memory is process-wide).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod common;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_garbage_below_a_live_allocation_is_given_back() {
    use common::resident_kib;
    // 64 MiB of small allocations (below the mmap threshold, so they come from the
    // heap), then one small live allocation above them, then the garbage freed: glibc
    // cannot shrink the heap past the live one, so the pages stay resident until trimmed.
    let garbage: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
    let keep = std::hint::black_box(Box::new([1u8; 64]));
    drop(garbage);
    let before = resident_kib();
    switchyard_heap::release_free_memory();
    let after = resident_kib();
    println!("resident before trim {before} KiB, after {after} KiB");
    assert_eq!(keep[0], 1);
    assert!(
        before.saturating_sub(after) > 32 * 1024,
        "expected over 32 MiB back, got {before} -> {after} KiB"
    );
}
