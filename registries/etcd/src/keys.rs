//! etcd key ranges: the `range_end` that selects every key under a prefix.

/// The end of the key range of everything under `key_prefix` (exclusive), as etcd's own
/// client computes it (`clientv3.GetPrefixRangeEnd`): the prefix with trailing `0xff` bytes
/// dropped and the last remaining byte incremented (`/a/` → `/a0`). A prefix of only `0xff`
/// bytes (or an empty one) has no upper bound: `[0]`, which etcd reads as "to the end of the
/// key space".
pub fn prefix_end(key_prefix: impl AsRef<[u8]>) -> Vec<u8> {
    let mut end = key_prefix.as_ref().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        let check = |prefix: &[u8], end: &[u8]| assert_eq!(prefix_end(prefix), end, "{prefix:?}");
        check(b"/switchyard/services/", b"/switchyard/services0");
        check(b"/switchyard/config/", b"/switchyard/config0");
        check(b"a", b"b");
        // Trailing 0xff bytes carry: they are dropped and the byte before them incremented
        // (the earlier `last += 1` overflowed here).
        check(b"a\xff", b"b");
        check(b"a\x01\xff\xff", b"a\x02");
        // Nothing to increment: the whole rest of the key space.
        check(b"\xff\xff", &[0]);
        check(b"", &[0]);
    }
}
