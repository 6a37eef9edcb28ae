//! The check every backend's settings tests make: what decoding a settings table gave.

use crate::ConfigIssue;

/// Asserts what decoding `settings` gave: success when `expected` is empty, else one issue
/// per entry of `expected`, in order, each starting with it (`path: message` prefixes).
pub fn assert_issues<T>(
    settings: &serde_json::Value,
    decoded: Result<T, Vec<ConfigIssue>>,
    expected: &[&str],
) {
    match decoded {
        Ok(_) => assert!(
            expected.is_empty(),
            "{settings}: decoded, expected {expected:?}"
        ),
        Err(issues) => {
            let got: Vec<String> = issues.iter().map(ToString::to_string).collect();
            assert_eq!(got.len(), expected.len(), "{settings}: {got:?}");
            for (got, want) in got.iter().zip(expected) {
                assert!(got.starts_with(want), "{settings}: {got:?} !~ {want:?}");
            }
        }
    }
}
