//! Request path normalization before routing (`[server.path_normalization]`), so that a
//! route's policy cannot be bypassed by a path that an upstream reads differently than the
//! router: the router matches the normalized path, and the normalized path is what goes
//! upstream.
//!
//! The steps, in the order Envoy applies its equivalents (`path_with_escaped_slashes_action`,
//! then `normalize_path`, then `merge_slashes`), except that slashes are merged before dot
//! segments are removed, as nginx does (either order is safe, since the result is what is
//! forwarded):
//! 1. Escaped slashes (`%2F`, `%5C`, any case): kept, refused with 400 (the default),
//!    unescaped and answered with a 307 redirect to the normalized path, or unescaped and
//!    forwarded.
//! 2. With `normalize` (RFC 3986 §6.2.2): percent-encoded unreserved characters decoded
//!    (`%61` → `a`, `%2E` → `.`), the hex digits of other escapes upper-cased, a backslash
//!    made a slash (as Envoy's and browsers' URL canonicalization do); an invalid escape
//!    (`%zz`, `%4`) or an encoded NUL is refused with 400 (as nginx does).
//! 3. With `merge_slashes`: each run of slashes becomes one.
//! 4. With `normalize`: dot segments removed (RFC 3986 §5.2.4); a `..` that would climb
//!    above the root is refused with 400 (as nginx does; Envoy clamps it at the root).
//!
//! Paths that do not start with `/` (`*`, an authority-form CONNECT target) are left alone.
//!
//! Cost: an already-normal path is checked in one pass over its bytes with no allocation;
//! only a path that changes is rebuilt (two small allocations).

/// What to do with an encoded slash or backslash (`%2F`, `%5C`) in a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Leave it encoded (the upstream may decode it: only for upstreams known not to).
    Keep,
    /// 400 (the default).
    #[default]
    Reject,
    /// Decode it, normalize, and answer 307 with the normalized path as `Location`.
    UnescapeAndRedirect,
    /// Decode it, normalize, and forward.
    UnescapeAndForward,
}

/// `[server.path_normalization]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathNormalization {
    /// RFC 3986 normalization: unreserved escapes decoded, dot segments removed, `..` above
    /// the root refused. Default true.
    pub normalize: bool,
    /// Runs of slashes merged into one. Default true.
    pub merge_slashes: bool,
    /// Encoded slashes. Default [`EscapedSlashes::Reject`].
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// What normalization made of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// The path is normal already (nothing was allocated).
    Unchanged,
    /// Route and forward this path instead.
    Rewritten(String),
    /// Answer 307 with this path (`unescape_and_redirect`).
    Redirect(String),
}

/// Why a path is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// An encoded slash with `escaped_slashes = "reject"`.
    EscapedSlash,
    /// A `%` not followed by two hex digits, or an encoded NUL.
    BadEscape,
    /// A `..` segment above the root.
    AboveRoot,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::EscapedSlash => "encoded slash in the path",
            PathError::BadEscape => "invalid percent-encoding in the path",
            PathError::AboveRoot => "path climbs above the root",
        })
    }
}

/// Normalizes `path` (the path only, without the query) under `rules`.
///
/// # Errors
/// The path is refused (400).
pub fn normalize(path: &str, rules: &PathNormalization) -> Result<Normalized, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || is_normal(bytes, rules) {
        return Ok(Normalized::Unchanged);
    }
    let mut redirect = false;
    // Steps 1 and 2: one pass over the escapes.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && rules.normalize {
            decoded.push(b'/');
            i += 1;
            continue;
        }
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let escape = escape_at(bytes, i);
        match escape {
            Some(c @ (b'/' | b'\\')) if rules.escaped_slashes != EscapedSlashes::Keep => {
                match rules.escaped_slashes {
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::UnescapeAndRedirect => redirect = true,
                    _ => {}
                }
                decoded.push(if rules.normalize { b'/' } else { c });
            }
            _ if !rules.normalize => {
                decoded.push(b);
                i += 1;
                continue;
            }
            None | Some(0) => return Err(PathError::BadEscape),
            Some(c) if unreserved(c) => decoded.push(c),
            Some(_) => {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
        }
        i += 3;
    }
    // Steps 3 and 4: segment by segment.
    let mut out = Vec::with_capacity(decoded.len());
    let segments: Vec<&[u8]> = decoded[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        let is_last = n == last;
        match *segment {
            b"." if rules.normalize => {}
            b".." if rules.normalize => match out.iter().rposition(|&b| b == b'/') {
                Some(at) => out.truncate(at),
                None => return Err(PathError::AboveRoot),
            },
            b"" if rules.merge_slashes && !is_last => continue,
            _ => {
                out.push(b'/');
                out.extend_from_slice(segment);
                continue;
            }
        }
        if is_last {
            out.push(b'/'); // `/a/.` and `/a/b/..` name a directory: `/a/`
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    let out = String::from_utf8(out).map_err(|_| PathError::BadEscape)?;
    Ok(if redirect {
        Normalized::Redirect(out)
    } else if out == path {
        Normalized::Unchanged
    } else {
        Normalized::Rewritten(out)
    })
}

/// Whether normalization would leave `path` as it is: one pass, no allocation.
fn is_normal(path: &[u8], rules: &PathNormalization) -> bool {
    let keep_slashes = rules.escaped_slashes == EscapedSlashes::Keep;
    if !rules.normalize && !rules.merge_slashes && keep_slashes {
        return true;
    }
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => match escape_at(path, i) {
                Some(b'/' | b'\\') if !keep_slashes => return false,
                _ if !rules.normalize => {}
                None | Some(0) => return false,
                Some(c) if unreserved(c) => return false,
                Some(_) if path[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) => return false,
                Some(_) => {}
            },
            b'\\' if rules.normalize => return false,
            b'/' if prev == b'/' && rules.merge_slashes => return false,
            b'.' if prev == b'/' && rules.normalize => {
                let rest = &path[i + 1..];
                if matches!(rest, [] | [b'/', ..] | [b'.'] | [b'.', b'/', ..]) {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// The byte encoded by the `%XY` at `at`, if `XY` are hex digits.
fn escape_at(path: &[u8], at: usize) -> Option<u8> {
    let hi = char::from(*path.get(at + 1)?).to_digit(16)?;
    let lo = char::from(*path.get(at + 2)?).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

/// RFC 3986 §2.3 `unreserved`.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(escaped_slashes: EscapedSlashes) -> PathNormalization {
        PathNormalization {
            escaped_slashes,
            ..PathNormalization::default()
        }
    }

    /// `path` under the default rules: `Ok(None)` unchanged, `Ok(Some(p))` rewritten.
    fn check(path: &str, expected: Result<Option<&str>, PathError>) {
        check_with(&PathNormalization::default(), path, expected);
    }

    fn check_with(
        rules: &PathNormalization,
        path: &str,
        expected: Result<Option<&str>, PathError>,
    ) {
        let got = normalize(path, rules);
        let expected = expected.map(|p| match p {
            None => Normalized::Unchanged,
            Some(p) => Normalized::Rewritten(p.to_owned()),
        });
        assert_eq!(got, expected, "{path:?} under {rules:?}");
    }

    #[test]
    fn normal_paths_are_unchanged() {
        for path in [
            "/",
            "/admin-only",
            "/a/b/c",
            "/a/b/",
            "/a.b/c..d/.well-known/..x/x..",
            "/a%20b",
            "/a%C3%A9",
            "*",
            "",
            "/~user/a-b_c",
        ] {
            check(path, Ok(None));
        }
    }

    #[test]
    fn the_issue_bypasses_normalize_to_the_route() {
        check("//admin-only", Ok(Some("/admin-only")));
        check("/./admin-only", Ok(Some("/admin-only")));
        check("/x/../admin-only", Ok(Some("/admin-only")));
        check("/%61dmin-only", Ok(Some("/admin-only")));
        check("/%2fadmin-only", Err(PathError::EscapedSlash));
        check("/api/../admin-only", Ok(Some("/admin-only")));
    }

    #[test]
    fn dot_segments_and_slashes() {
        check("/a/./b/../c", Ok(Some("/a/c")));
        check("/a/b/..", Ok(Some("/a/")));
        check("/a/.", Ok(Some("/a/")));
        check("/.", Ok(Some("/")));
        check("/a/..", Ok(Some("/")));
        check("/a//b///c", Ok(Some("/a/b/c")));
        check("/a//", Ok(Some("/a/")));
        check("//", Ok(Some("/")));
        check("/a//../b", Ok(Some("/b")));
        check("/%2e%2E/x", Err(PathError::AboveRoot));
        check("/a/%2e%2e/b", Ok(Some("/b")));
        check("/a/.%2e/b", Ok(Some("/b")));
        check("/..", Err(PathError::AboveRoot));
        check("/../a", Err(PathError::AboveRoot));
        check("/a/../..", Err(PathError::AboveRoot));
        check("/a\\..\\..\\b", Err(PathError::AboveRoot));
        check("/a\\b", Ok(Some("/a/b")));
    }

    #[test]
    fn escapes() {
        check("/%7euser", Ok(Some("/~user")));
        check("/a%2db", Ok(Some("/a-b")));
        check("/a%3ab", Ok(Some("/a%3Ab")));
        check("/a%zz", Err(PathError::BadEscape));
        check("/a%4", Err(PathError::BadEscape));
        check("/a%", Err(PathError::BadEscape));
        check("/a%00b", Err(PathError::BadEscape));
        check("/a%5cb", Err(PathError::EscapedSlash));
        check("/a%5Cb", Err(PathError::EscapedSlash));
    }

    #[test]
    fn escaped_slash_actions() {
        let keep = rules(EscapedSlashes::Keep);
        check_with(&keep, "/a%2Fb", Ok(None));
        check_with(&keep, "/a%2fb", Ok(Some("/a%2Fb")));
        let forward = rules(EscapedSlashes::UnescapeAndForward);
        check_with(&forward, "/a%2Fb", Ok(Some("/a/b")));
        check_with(&forward, "/api/..%2fadmin", Ok(Some("/admin")));
        check_with(&forward, "/a%5C..%5Cb", Ok(Some("/b")));
        let redirect = rules(EscapedSlashes::UnescapeAndRedirect);
        assert_eq!(
            normalize("/a%2F%2Fb", &redirect),
            Ok(Normalized::Redirect("/a/b".into()))
        );
        check_with(&redirect, "/a//b", Ok(Some("/a/b")));
    }

    #[test]
    fn switched_off() {
        let off = PathNormalization {
            normalize: false,
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        for path in ["//a/../b", "/%61", "/a%2fb", "/.."] {
            check_with(&off, path, Ok(None));
        }
        let merge_only = PathNormalization {
            normalize: false,
            ..off
        };
        check_with(&merge_only, "//a/../b", Ok(None));
        let merge_only = PathNormalization {
            merge_slashes: true,
            ..merge_only
        };
        check_with(&merge_only, "//a/../%61", Ok(Some("/a/../%61")));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let rules = rules(EscapedSlashes::UnescapeAndForward);
        for path in [
            "/a/./b/../c",
            "/%2e%2e%2fx/../y",
            "/a//b%2F..%2F..",
            "/x/%7e/%3a/..",
            "/a\\b/./",
        ] {
            if let Ok(Normalized::Rewritten(once)) = normalize(path, &rules) {
                assert_eq!(
                    normalize(&once, &rules),
                    Ok(Normalized::Unchanged),
                    "{path}"
                );
            }
        }
    }
}
