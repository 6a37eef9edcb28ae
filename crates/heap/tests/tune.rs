//! `tune_allocator` in a process of its own (mallopt settings are process-wide).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod common;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn buffers_freed_after_a_big_free_go_back_to_the_kernel() {
    use common::resident_kib;
    switchyard_heap::tune_allocator();
    // A big buffer freed, as a /metrics page is after each scrape. Untuned, glibc would
    // now serve allocations up to 16 MiB from the heap and keep up to 32 MiB of it.
    drop(std::hint::black_box(vec![1u8; 16 << 20]));
    let start = resident_kib();
    let buffers: Vec<Vec<u8>> = (0..32).map(|i| vec![i as u8; 1 << 20]).collect();
    // A small live allocation after them: had they come from the heap, it would pin them.
    let keep = std::hint::black_box(Box::new([1u8; 64]));
    let full = resident_kib();
    drop(buffers);
    let after = resident_kib();
    println!("resident at start {start} KiB, with 32 MiB of buffers {full} KiB, after freeing them {after} KiB");
    assert_eq!(keep[0], 1);
    assert!(full - start > 30 * 1024, "the buffers were resident");
    assert!(
        after < start + 4 * 1024,
        "expected the 32 MiB back at once, resident went {start} -> {full} -> {after} KiB"
    );
}
