//! What the heap tests share.

/// Resident memory in KiB, from /proc/self/statm (pages × 4 KiB).
pub fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}
