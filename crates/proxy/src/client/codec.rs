//! The HTTP/1.1 wire format of the upstream side (RFC 9112), with no I/O: request heads
//! written into a byte buffer, response heads parsed out of one, and a response body's
//! framing decoded (length, chunked, or until the connection closes).
//!
//! Response heads are parsed with `httparse` and header values are slices of the received
//! buffer (`Bytes`), not copies. What is refused (the exchange fails, the client answers
//! 502): a head over [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] headers, a
//! `Content-Length` that is not one decimal number (several equal values are taken, as
//! RFC 9112 §6.3 allows), a transfer coding other than `chunked` (the gateway implements
//! no other, so it could not pass the body on correctly), and a chunked body whose framing
//! is broken. Decimal numbers, transfer codings and chunk-size lines are read with the
//! grammar the request guard uses ([`crate::grammar`]), so the two directions agree.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use smallvec::SmallVec;

use crate::grammar::{self, ChunkLine, Codings, TransferCodings};

/// Largest response head accepted (nginx's default is 4–8 KiB and fails beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest trailer section of a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer fields.
const MAX_TRAILERS: usize = 32;

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// The head is not HTTP/1.x.
    BadHead,
    /// The head is larger than [`MAX_HEAD_BYTES`] or has too many headers.
    HeadTooLarge,
    /// `Content-Length` is not one decimal number.
    BadContentLength,
    /// The chunked framing is broken.
    BadChunk,
    /// The trailer section is malformed or too large.
    BadTrailers,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnexpectedUpgrade,
    /// A transfer coding other than `chunked`, or a malformed `Transfer-Encoding`.
    UnsupportedTransferCoding,
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolError::BadHead => "malformed response head",
            ProtocolError::HeadTooLarge => "response head too large",
            ProtocolError::BadContentLength => "invalid content-length",
            ProtocolError::BadChunk => "invalid chunked framing",
            ProtocolError::BadTrailers => "invalid trailers",
            ProtocolError::UnexpectedUpgrade => "unexpected 101 switching protocols",
            ProtocolError::UnsupportedTransferCoding => "unsupported transfer coding",
        })
    }
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length: n` and exactly `n` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing for a body whose exact size is `exact` (when known): known sizes are
    /// sent with `Content-Length` (0 only for methods that carry a body), others chunked.
    pub fn for_body(method: &Method, exact: Option<u64>) -> Self {
        match exact {
            Some(0) if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
                RequestFraming::Empty
            }
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    }
}

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The fields the gateway sets on a request on its way upstream (`X-Forwarded-*`, a fresh
/// `x-request-id`), written by
/// [`encode_request_head`] after the request's own fields, in place of any the request has
/// of the same names. Not inserted into the request's header map: each insert hashed a name
/// that the map would only hold until the head was encoded.
#[derive(Clone, Debug, Default)]
pub struct AddedFields {
    /// `X-Forwarded-For`.
    pub forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub forwarded_proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`.
    pub forwarded_host: Option<HeaderValue>,
    /// `x-request-id`, when the gateway made it.
    pub request_id: Option<HeaderValue>,
}

impl AddedFields {
    /// The fields as name and value, those set.
    fn iter(&self) -> impl Iterator<Item = (HeaderName, &HeaderValue)> {
        [
            (X_FORWARDED_FOR, &self.forwarded_for),
            (X_FORWARDED_PROTO, &self.forwarded_proto),
            (X_FORWARDED_HOST, &self.forwarded_host),
            (X_REQUEST_ID, &self.request_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// Whether `name` is one of the fields set (the request's own is then left out).
    fn replaces(&self, name: &HeaderName) -> bool {
        (self.forwarded_for.is_some() && *name == X_FORWARDED_FOR)
            || (self.forwarded_proto.is_some() && *name == X_FORWARDED_PROTO)
            || (self.forwarded_host.is_some() && *name == X_FORWARDED_HOST)
            || (self.request_id.is_some() && *name == X_REQUEST_ID)
    }

    /// Puts the fields into `headers` (for a request sent by another encoder).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            headers.insert(name, value.clone());
        }
    }
}

/// Writes a request head: the request line (origin form), every header but the framing
/// ones and those `added` replaces, then `added`, the framing header `framing` calls for,
/// and the blank line.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    added: &AddedFields,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || added.replaces(name)
        {
            continue;
        }
        encode_field(out, name, value);
    }
    for (name, value) in added.iter() {
        encode_field(out, &name, value);
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one field line.
fn encode_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the size line that starts a chunk of `len` bytes.
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(HEX[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a chunked body's end: the last chunk, `trailers`, and the blank line.
pub fn encode_chunked_end(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        encode_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a `HEAD` request, or `1xx`/`204`/`304`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, values sharing the received bytes.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses one response head from the front of `buf`, removing it from `buf` when complete.
/// `Ok(None)`: the head is not complete yet. `head_request`: the request was `HEAD`
/// (the response then has no body whatever it declares).
///
/// # Errors
/// A malformed or oversized head, or an invalid `Content-Length`.
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, ProtocolError> {
    // Header slots left uninitialised: zeroing 100 of them cost more than the parse.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
        Err(_) => return Err(ProtocolError::BadHead),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ProtocolError::HeadTooLarge);
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ProtocolError::BadHead)?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Each name, and where its value sits in `buf`, so that the values can share its bytes
    // once the head is split off.
    let base = buf.as_ptr() as usize;
    let mut fields: SmallVec<[(HeaderName, usize, usize); 24]> =
        SmallVec::with_capacity(response.headers.len());
    for slot in response.headers.iter() {
        let name =
            HeaderName::from_bytes(slot.name.as_bytes()).map_err(|_| ProtocolError::BadHead)?;
        fields.push((name, slot.value.as_ptr() as usize - base, slot.value.len()));
    }
    let head = buf.split_to(head_len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    // The framing fields are read as the map is built: looking each one up afterwards
    // hashed and probed four names per response.
    let mut framing_fields = FramingFields::default();
    for (name, value, len) in fields.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + len))
            .map_err(|_| ProtocolError::BadHead)?;
        framing_fields.see(&name, &value);
        headers.append(name, value);
    }
    let framing = framing_fields.body_framing(status, head_request)?;
    if framing_fields.needs_normalizing(framing) {
        normalize_length(&mut headers, framing);
    }
    let keep_alive = framing_fields.keep_alive(version) && framing != BodyFraming::UntilClose;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// What a response head says about its framing and its connection, gathered in the one
/// pass that builds its header map.
#[derive(Debug, Default)]
struct FramingFields {
    /// The `Transfer-Encoding` fields.
    codings: TransferCodings,
    /// The `Content-Length`, while all of its values agree.
    length: Option<u64>,
    /// `Content-Length` values seen (a line `7, 7` holds two).
    length_values: u32,
    /// A `Content-Length` value was not a number, or disagreed with another.
    bad_length: bool,
    /// `Connection: close` seen.
    close: bool,
    /// `Connection: keep-alive` seen.
    keep_alive: bool,
}

impl FramingFields {
    /// Takes in one header field.
    fn see(&mut self, name: &HeaderName, value: &HeaderValue) {
        if *name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                self.length_values += 1;
                match grammar::decimal(part.trim_ascii()) {
                    Some(n) if self.length.is_none_or(|seen| seen == n) => self.length = Some(n),
                    _ => self.bad_length = true,
                }
            }
        } else if *name == header::TRANSFER_ENCODING {
            self.codings.add(value.as_bytes());
        } else if *name == header::CONNECTION {
            for option in value.as_bytes().split(|&b| b == b',') {
                let option = option.trim_ascii();
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    /// RFC 9112 §6.3, for a response. `Transfer-Encoding` wins over `Content-Length`,
    /// which is then not looked at; any coding but a single `chunked` is refused (a body
    /// that ran to the close under `gzip` would reach the client without its coding named).
    fn body_framing(
        &self,
        status: StatusCode,
        head_request: bool,
    ) -> Result<BodyFraming, ProtocolError> {
        if head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(BodyFraming::Empty);
        }
        Ok(match (self.codings.verdict(), self.length) {
            (Codings::Chunked, _) => BodyFraming::Chunked,
            (Codings::Unsupported | Codings::Invalid, _) => {
                return Err(ProtocolError::UnsupportedTransferCoding)
            }
            _ if self.bad_length => return Err(ProtocolError::BadContentLength),
            (Codings::Absent, None) => BodyFraming::UntilClose,
            (Codings::Absent, Some(0)) => BodyFraming::Empty,
            (Codings::Absent, Some(n)) => BodyFraming::Length(n),
        })
    }

    /// Whether [`normalize_length`] has anything to do: a `Content-Length` where it does
    /// not delimit the body, or one repeated.
    fn needs_normalizing(&self, framing: BodyFraming) -> bool {
        match framing {
            BodyFraming::Chunked | BodyFraming::UntilClose => self.length_values > 0,
            BodyFraming::Length(_) => self.length_values > 1,
            BodyFraming::Empty => false,
        }
    }

    /// Whether the connection persists after this message (RFC 9112 §9.3).
    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// Makes `Content-Length` say what the body is, before the head is forwarded: removed when
/// `Transfer-Encoding` delimits the body (RFC 9112 §6.3: a sender must remove it), one
/// value when it was repeated (`7, 7`). Left alone for responses without a body (`HEAD`,
/// `304`), where it describes the representation.
fn normalize_length(headers: &mut HeaderMap, framing: BodyFraming) {
    match framing {
        BodyFraming::Chunked | BodyFraming::UntilClose => {
            headers.remove(header::CONTENT_LENGTH);
        }
        BodyFraming::Length(n) => {
            let values = headers.get_all(header::CONTENT_LENGTH);
            let mut values = values.iter();
            let single = values.next().is_some_and(|v| !v.as_bytes().contains(&b','))
                && values.next().is_none();
            if !single {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        BodyFraming::Empty => {}
    }
}

/// What the chunked decoder produced.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields, at the end of the body (only when there are any).
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a size line ([`grammar::chunk_size_line`]).
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// The trailer section after the last chunk.
    Trailers,
    /// Done.
    End,
}

/// Decodes a chunked body (RFC 9112 §7.1) from a buffer that fills as bytes arrive.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: Chunk,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: Chunk::Size }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailers have been read.
    pub fn is_end(&self) -> bool {
        self.state == Chunk::End
    }

    /// Decodes what it can from the front of `buf`, removing what it used.
    ///
    /// # Errors
    /// Broken framing or trailers.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                Chunk::End => return Ok(Decoded::End),
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    self.state = if take as u64 == left {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - take as u64)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunk::Trailers => return self.trailers(buf),
                Chunk::Size => {
                    match grammar::chunk_size_line(buf) {
                        Ok(ChunkLine::Complete { used, size }) => {
                            buf.advance(used);
                            self.state = if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(ChunkLine::Partial) => return Ok(Decoded::NeedMore),
                        Err(grammar::BadChunkLine) => return Err(ProtocolError::BadChunk),
                    }
                    continue;
                }
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.state = match (self.state, byte) {
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size,
                _ => return Err(ProtocolError::BadChunk),
            };
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = Chunk::End;
            return Ok(Decoded::End);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILERS];
        match httparse::parse_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes())
                        .map_err(|_| ProtocolError::BadTrailers)?;
                    let value = HeaderValue::from_bytes(field.value)
                        .map_err(|_| ProtocolError::BadTrailers)?;
                    trailers.append(name, value);
                }
                buf.advance(len);
                self.state = Chunk::End;
                Ok(Decoded::Trailers(trailers))
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILER_BYTES => {
                Ok(Decoded::NeedMore)
            }
            _ => Err(ProtocolError::BadTrailers),
        }
    }
}

#[cfg(test)]
mod tests;
