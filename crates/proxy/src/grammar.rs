//! The HTTP/1 grammar the gateway checks itself (RFC 9110, RFC 9112, RFC 3986), shared by
//! the request head guard ([`crate::head_guard`]), the request path's host checks
//! ([`crate::hygiene`]) and the upstream response codec ([`crate::client::codec`]), so that
//! the two directions cannot disagree on a byte.
//!
//! What is here, and what is left to the parsers underneath:
//! - field values ([`field_value`]): `httparse` takes any byte but CR/LF/NUL-like controls
//!   differently across versions and options; the guard checks every byte itself.
//! - decimal numbers ([`decimal`]): `Content-Length` without sign, list or overflow.
//! - chunk-size lines ([`chunk_size_line`]): `httparse::parse_chunk_size` does the size and
//!   the `;`-introduced extension; on top of it this refuses what it lets through (an empty
//!   size, a bare LF or control byte in an extension).
//! - transfer codings ([`TransferCodings`]): `chunked` once and last, anything else is
//!   not implemented.
//! - hosts ([`host`]): `uri-host [ ":" port ]`, stricter than RFC 3986's reg-name.
//!
//! None of these allocates.

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token (a header name, a method, a coding).
pub const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Whether `bytes` is a token (non-empty, every byte a `tchar`).
pub fn token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| TCHAR[usize::from(b)])
}

/// A byte allowed in a field value or chunk extension: HTAB, SP, VCHAR, obs-text.
pub fn field_byte(b: u8) -> bool {
    (b >= 0x20 && b != 0x7f) || b == b'\t'
}

/// Whether every byte is a [`field_byte`]. Eight bytes at a time: a word with no byte below
/// 0x20 and no 0x7f needs no closer look (the bit tricks of "Bit Twiddling Hacks",
/// `hasless` and `haszero`, which may flag a clean word but never miss a bad one).
pub fn field_value(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGH;
        if below_space | del != 0 && !word.iter().all(|&b| field_byte(b)) {
            return false;
        }
    }
    words.remainder().iter().all(|&b| field_byte(b))
}

/// `1*DIGIT` as a number (no sign, no list, no overflow).
pub fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Strips optional whitespace (SP, HTAB) at both ends.
pub fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

// === Chunked framing ===

/// Longest chunk-size line accepted, extensions included (Envoy and HAProxy stay within a
/// few KiB too); longer is a framing error.
pub const MAX_CHUNK_LINE: usize = 4096;

/// A chunk-size line read from the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkLine {
    /// The line is complete: it takes `used` bytes (with its CRLF) and announces `size`.
    Complete {
        /// Bytes of the line, CRLF included.
        used: usize,
        /// The chunk size.
        size: u64,
    },
    /// The line has not ended yet.
    Partial,
}

/// A chunk-size line that breaks the grammar: the message cannot be delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChunkLine;

/// Reads the chunk-size line at the front of `bytes` (RFC 9112 §7.1:
/// `chunk-size [ chunk-ext ] CRLF`, `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS
/// ext-val ] )`). The size and the extension's `;` are `httparse::parse_chunk_size`'s;
/// what it takes and this refuses: no hex digit before the first space or `;`, a bare LF
/// or a control byte anywhere in the line, anything but whitespace then `;` after the
/// size (`2 zz`, which httparse refuses too), and lines over [`MAX_CHUNK_LINE`].
///
/// # Errors
/// The line is malformed (a framing error: the message cannot be delimited).
pub fn chunk_size_line(bytes: &[u8]) -> Result<ChunkLine, BadChunkLine> {
    let window = &bytes[..bytes.len().min(MAX_CHUNK_LINE)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        // A bad byte already: no need to wait for the end of the line. (Only a final CR
        // may yet be good: the verdict must not depend on where the reads split the line.)
        let before_cr = window.strip_suffix(b"\r").unwrap_or(window);
        return if bytes.len() >= MAX_CHUNK_LINE
            || window.first().is_some_and(|b| !b.is_ascii_hexdigit())
            || !before_cr.iter().all(|&b| field_byte(b))
        {
            Err(BadChunkLine)
        } else {
            Ok(ChunkLine::Partial)
        };
    };
    let line = &bytes[..=lf];
    if lf == 0 || line[lf - 1] != b'\r' || !line[0].is_ascii_hexdigit() {
        return Err(BadChunkLine);
    }
    if !line[..lf - 1].iter().all(|&b| field_byte(b)) {
        return Err(BadChunkLine);
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => {
            Ok(ChunkLine::Complete { used, size })
        }
        _ => Err(BadChunkLine),
    }
}

// === Transfer codings ===

/// What the `Transfer-Encoding` fields of a message say (RFC 9112 §6.1), gathered field by
/// field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCodings {
    /// A `Transfer-Encoding` field was seen.
    pub present: bool,
    /// Codings named `chunked`.
    chunked: u8,
    /// A coding came after `chunked`.
    after_chunked: bool,
    /// A coding other than `chunked` (gzip, identity, ...).
    other: bool,
    /// A list element that is not `token *( OWS ";" OWS parameter )`, or `chunked` with
    /// parameters.
    malformed: bool,
    /// Non-empty list elements seen.
    elements: u32,
}

/// The verdict on a message's transfer codings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codings {
    /// No `Transfer-Encoding`.
    Absent,
    /// Exactly `chunked`: the body is chunked.
    Chunked,
    /// A coding the gateway does not implement (anything but `chunked`): 501 for a request
    /// (as nginx and Caddy answer), 502 for a response.
    Unsupported,
    /// Malformed: empty, an empty list element, `chunked` twice or with parameters, not a
    /// token: 400 / 502.
    Invalid,
}

impl TransferCodings {
    /// Takes in one `Transfer-Encoding` field value.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for element in value.split(|&b| b == b',') {
            let element = trim(element);
            if element.is_empty() {
                // The list rule allows empty elements (RFC 9110 §5.6.1), but hyper reads
                // `chunked,` as a final empty coding, not chunked: two readings of one
                // message. Refused.
                self.malformed = true;
                continue;
            }
            self.elements += 1;
            let (name, params) = match memchr::memchr(b';', element) {
                Some(i) => (trim(&element[..i]), Some(&element[i..])),
                None => (element, None),
            };
            if !token(name) || params.is_some_and(|p| !field_value(p)) {
                self.malformed = true;
            } else if name.eq_ignore_ascii_case(b"chunked") {
                self.malformed |= params.is_some();
                self.chunked = self.chunked.saturating_add(1);
            } else {
                self.other = true;
                self.after_chunked |= self.chunked > 0;
            }
        }
    }

    /// The verdict.
    pub fn verdict(&self) -> Codings {
        if !self.present {
            Codings::Absent
        } else if self.malformed || self.elements == 0 || self.chunked > 1 {
            Codings::Invalid
        } else if self.other || self.after_chunked || self.chunked == 0 {
            Codings::Unsupported
        } else {
            Codings::Chunked
        }
    }
}

// === Hosts ===

/// Checks a `Host` value or a request target's authority: `uri-host [ ":" port ]` (RFC 9110
/// §7.2, RFC 3986 §3.2.2), and returns the host without its port.
///
/// Stricter than RFC 3986's reg-name, like nginx's host check and stricter still: a name is
/// letters, digits, `-`, `.` and `_` only (no percent-encoding, no sub-delims such as a
/// comma, no userinfo), with no empty label inside (`a..b`); an IP literal is `[IPv6]`; the
/// port, when the colon is there, is 1 to 5 digits up to 65535. Empty is refused.
pub fn host(value: &[u8]) -> Option<&[u8]> {
    let (name, port) = if value.first() == Some(&b'[') {
        let end = memchr::memchr(b']', value)?;
        let literal = std::str::from_utf8(&value[1..end]).ok()?;
        literal.parse::<std::net::Ipv6Addr>().ok()?;
        let rest = &value[end + 1..];
        let port = match rest {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return None,
        };
        (&value[..=end], port)
    } else {
        let (name, port) = match memchr::memchr(b':', value) {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        };
        if name.is_empty()
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            || name.starts_with(b".")
            || name.windows(2).any(|w| w == b"..")
        {
            return None;
        }
        (name, port)
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || decimal(port).is_none_or(|p| p > 65535) {
            return None;
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines() {
        let complete = |line: &str, size: u64| {
            assert_eq!(
                chunk_size_line(line.as_bytes()),
                Ok(ChunkLine::Complete {
                    used: line.len(),
                    size
                }),
                "{line:?}"
            );
        };
        complete("0\r\n", 0);
        complete("5\r\n", 5);
        complete("A;name=value\r\n", 10);
        complete("b ; x\r\n", 11);
        complete("ffffffffffffffff\r\n", u64::MAX);
        complete("1;a=\"q \\\" d\"\r\n", 1);
        assert_eq!(
            chunk_size_line(b"5\r\nhello"),
            Ok(ChunkLine::Complete { used: 3, size: 5 })
        );
        for partial in ["", "5", "5;ext", "5\r", "ab "] {
            assert_eq!(
                chunk_size_line(partial.as_bytes()),
                Ok(ChunkLine::Partial),
                "{partial:?}"
            );
        }
        for bad in [
            "2 zz\r\n",
            "\r\n",
            ";x\r\n",
            " 5\r\n",
            "5\n",
            "5;a\nb\r\n",
            "5;\0\r\n",
            "-5\r\n",
            "x\r\n",
            "10000000000000000\r\n",
            "5\r\r\n",
            "5 5\r\n",
        ] {
            assert_eq!(
                chunk_size_line(bad.as_bytes()),
                Err(BadChunkLine),
                "{bad:?}"
            );
        }
        assert_eq!(chunk_size_line(&[b'1'; MAX_CHUNK_LINE]), Err(BadChunkLine));
        // A CR inside a partial line is bad at once, not only once the line ends.
        assert_eq!(chunk_size_line(b"2 zz\rnked\r"), Err(BadChunkLine));
        assert_eq!(chunk_size_line(b"2 zz\r"), Ok(ChunkLine::Partial));
        assert_eq!(
            chunk_size_line(b"x"),
            Err(BadChunkLine),
            "bad from the first byte"
        );
    }

    fn codings(values: &[&str]) -> Codings {
        let mut codings = TransferCodings::default();
        for value in values {
            codings.add(value.as_bytes());
        }
        codings.verdict()
    }

    #[test]
    fn transfer_codings() {
        assert_eq!(codings(&[]), Codings::Absent);
        assert_eq!(codings(&["chunked"]), Codings::Chunked);
        assert_eq!(codings(&["CHUNKED"]), Codings::Chunked);
        assert_eq!(codings(&[" chunked "]), Codings::Chunked);
        for unsupported in [
            &["gzip, chunked"][..],
            &["identity, chunked"],
            &["gzip", "chunked"],
            &["chunked, gzip"],
            &["gzip"],
            &["identity"],
            &["x-custom;q=1, chunked"],
        ] {
            assert_eq!(
                codings(unsupported),
                Codings::Unsupported,
                "{unsupported:?}"
            );
        }
        for invalid in [
            &[""][..],
            &[","],
            &["chunked,"],
            &[" chunked , "],
            &[", chunked"],
            &["chunked, chunked"],
            &["chunked", "chunked"],
            &["chunked;q=1"],
            &["chun ked"],
            &["gzip, chunked, chunked"],
            &["\"chunked\""],
        ] {
            assert_eq!(codings(invalid), Codings::Invalid, "{invalid:?}");
        }
    }

    #[test]
    fn hosts() {
        let ok = |value: &str, name: &str| {
            assert_eq!(host(value.as_bytes()), Some(name.as_bytes()), "{value:?}");
        };
        ok("example.com", "example.com");
        ok("Example.COM:8080", "Example.COM");
        ok("a-b_c.d", "a-b_c.d");
        ok("10.0.0.1:80", "10.0.0.1");
        ok("[::1]", "[::1]");
        ok("[2001:db8::1]:443", "[2001:db8::1]");
        ok("example.com.", "example.com.");
        ok("x:65535", "x");
        for bad in [
            "",
            ":80",
            "admin.internal:abc",
            "admin.internal:80:80",
            "a b",
            "a/b",
            "a,b",
            "a.example, b.example",
            "user@a",
            "user:pw@a",
            "a:",
            "a:65536",
            "a:123456",
            "a..b",
            ".a",
            "a%2eb",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[zz]",
            "a\\b",
            "a\tb",
        ] {
            assert_eq!(host(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"007"), Some(7));
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+1", "-1", "1 2", "0x10", "18446744073709551616", "1,1"] {
            assert_eq!(decimal(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn field_values_word_at_a_time() {
        for length in 0..40 {
            for at in 0..length {
                for b in 0..=255u8 {
                    let mut value = vec![b'a'; length];
                    value[at] = b;
                    assert_eq!(
                        field_value(&value),
                        field_byte(b),
                        "{b:#x} at {at} of {length}"
                    );
                }
            }
        }
        assert!(field_value(b"\t \x80\xff~!a\t\t\t\t\t\t\t\t\t"));
    }
}
