//! Strict HTTP/1 request framing in front of hyper: a request smuggling guard.
//!
//! hyper's HTTP/1 parser is lenient where a gateway must not be. It takes a bare LF as a line
//! end (RFC 9112 §2.2 allows this), and it resolves `Content-Length` together with
//! `Transfer-Encoding` by dropping the length (§6.3), so the request path never sees the
//! ambiguity. [`HeadGuard`] wraps a client connection and reads the request byte stream
//! before hyper does. It checks each request head line by line as it arrives, then follows
//! the body framing (a `Content-Length` count, or the chunked state machine) to the next head
//! on a keep-alive connection. The following are refused with `400` (`501`, `413` where
//! said) and the connection is closed:
//!
//! - a bare LF as a line end, RFC 9112 §2.2;
//! - `Content-Length` that is not a plain decimal number, or that is sent more than once,
//!   even with equal values (`1, 1` too), §6.3; one over 2^63-1, which hyper cannot
//!   represent (`413`);
//! - a transfer coding other than `chunked` (`501`, as nginx and Caddy answer), `chunked`
//!   applied twice or with parameters, an empty list element, or `Transfer-Encoding` in an
//!   HTTP/1.0 request, §6.1;
//! - `Content-Length` together with `Transfer-Encoding`, in either order (RFC 9112 lets a
//!   server pick one; the guard refuses both, as Envoy does by default);
//! - a method longer than 32 bytes (`501`, RFC 9110 §9.1);
//! - a chunked body whose framing is broken (size line, chunk CRLF or trailers); size lines
//!   are read with [`crate::grammar::chunk_size_line`], the upstream codec's grammar too.
//!
//! Left to httparse, which hyper runs next on the same bytes and which refuses them with
//! hyper's own `400` and a closed connection: a header name that is not a token,
//! whitespace before the colon, obs-fold, and control bytes in a header value (see
//! [`Scanner::header`]).
//!
//! A refused head never reaches hyper whole, so the request is never forwarded. The requests
//! before it on the same connection are answered first. This relies on hyper reading a new
//! request head only after it has answered the previous request. hyper gets the lines of the
//! refused head before the bad one (or a single byte when there are none): a partial head
//! that can never complete. hyper's next read therefore means every earlier response is
//! written. The guard parks that read. On hyper's next flush it writes its own `400`
//! (`{"error":"bad request","request_id":""}`, `connection: close`, as in
//! [`crate::error`]), and shuts the connection down. Then it reports end of stream to
//! hyper, which drops the partial head without answering it. A broken chunked body is cut
//! off where it breaks: hyper sees the body end early, the request fails, and the
//! connection is closed after the request path's answer.
//!
//! What the guard leaves to hyper: a head larger than `max_head_bytes` (hyper answers 431;
//! the guard passes on just enough of it for hyper to see that), too many headers (431),
//! and the request line's grammar (the guard checks it with `httparse`, as hyper does).
//! It stops looking at a connection that starts with the HTTP/2 preface
//! (`PRI * HTTP/2.0`), and after a request that asks for an upgrade (`Connection: upgrade`
//! with `Upgrade`), since the bytes after it may belong to the upgraded protocol; unless
//! such a request is answered with 101, the request path closes the connection after the
//! answer ([`crate::hygiene::Admission::upgrade`]).
//!
//! Cost: a head that arrives in one read is checked in place in hyper's buffer, with a
//! `memchr` search for each line end and one pass over each header line. There is no copy
//! and no allocation. Body bytes are skipped by count, except the chunked framing (size
//! lines, CRLFs, trailers). Only a line split across two reads is copied, with what follows
//! it in the next read, into a small buffer kept per connection (4 KiB, more for a longer
//! line). The first head of a connection is usually split, because hyper-util reads 24 bytes
//! first to tell HTTP/1 from h2. Measured in place: about 50 ns for a 40-byte `GET`, 290 ns
//! for a 500-byte browser head.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::grammar::{self, ChunkLine, Codings, TransferCodings};

/// The answer to a refused request.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 39\r\n\r\n{\"error\":\"bad request\",\"request_id\":\"\"}";

/// The answer to a request whose method or transfer coding the gateway does not implement.
const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 43\r\n\r\n{\"error\":\"not implemented\",\"request_id\":\"\"}";

/// The answer to a request declaring a body no limit can hold.
const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 50\r\n\r\n{\"error\":\"request body too large\",\"request_id\":\"\"}";

/// Largest `Content-Length` the guard lets through (2^63 - 1): hyper cannot represent
/// lengths near 2^64 and would answer 431. Route limits (413) apply below it.
const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

/// Longest method accepted (the longest registered method, `UPDATEREDIRECTREF`, has 17
/// bytes); a longer one is answered 501, as RFC 9110 §9.1 says for unknown methods.
const MAX_METHOD: usize = 32;

/// Given to hyper in place of a refused head when none of the head reached it yet: the
/// start of a request line, which hyper keeps waiting to complete (see the module docs).
const POISON: &[u8] = b"G";

/// The start of the HTTP/2 prior-knowledge preface (RFC 9113 §3.4) as a request line.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

/// How much the guard reads at a time into its own buffer (only while a line is split
/// across reads).
const READ_CHUNK: usize = 4096;

/// Past this size the guard's buffer is freed once empty, rather than kept.
const KEEP_BUFFER: usize = 16 * 1024;

/// An HTTP/1 client connection whose requests are checked before hyper parses them (see the
/// module docs). Wrap the accepted stream (TCP or TLS) before handing it to hyper.
pub struct HeadGuard<S> {
    inner: S,
    scanner: Scanner,
    /// Bytes read from `inner` but not yet given to hyper; used only while a line is split
    /// across reads. `held[pos..released]` may go to hyper; `held[released..end]` is
    /// the current partial line. `pos` can run ahead of `released` when the start of the
    /// first request line went to hyper before its end arrived.
    held: Vec<u8>,
    pos: usize,
    released: usize,
    end: usize,
    phase: Phase,
    /// The answer to write ([`BAD_REQUEST`], [`NOT_IMPLEMENTED`] or [`TOO_LARGE`]).
    answer: &'static [u8],
    /// Bytes of `answer` written so far.
    answered: usize,
    /// hyper's read task, parked while the guard answers.
    reader: Option<Waker>,
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Requests flow through (checked, or passed as they are).
    Open,
    /// A head was refused; once the bytes before it are out, give hyper [`POISON`].
    Poison,
    /// hyper holds a partial head that cannot complete. Its next read means it has answered
    /// every earlier request.
    Poisoned,
    /// hyper is idle: after its next flush, write [`BAD_REQUEST`] and shut down.
    Answer,
    /// No more bytes for hyper (a broken body or an oversized head): end of stream.
    Eof,
    /// The guard answered and shut the connection down.
    Closed,
}

impl<S> HeadGuard<S> {
    /// Wraps `inner`. `max_head_bytes` must be hyper's `max_buf_size` for the connection:
    /// a head that does not end within it is left to hyper, which answers 431.
    pub fn new(inner: S, max_head_bytes: usize) -> Self {
        HeadGuard {
            inner,
            scanner: Scanner::new(max_head_bytes),
            held: Vec::new(),
            pos: 0,
            released: 0,
            end: 0,
            phase: Phase::Open,
            answer: BAD_REQUEST,
            answered: 0,
            reader: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Stops feeding hyper once the bytes released so far are out: logs why and sets what
    /// happens next.
    fn refuse(&mut self, kind: Refusal, head_sent: bool) {
        match kind {
            Refusal::Head(violation) => {
                self.answer = violation.answer();
                tracing::debug!("request refused: {violation}");
                self.phase = if head_sent {
                    Phase::Poisoned
                } else {
                    Phase::Poison
                };
            }
            Refusal::Body => {
                tracing::debug!("request body refused: broken chunked framing");
                self.phase = Phase::Eof;
            }
            Refusal::TooLarge => self.phase = Phase::Eof,
        }
    }

    /// Moves the partial line to the front of `held` and makes room to read behind it.
    fn make_room(&mut self) {
        if self.released > 0 {
            let shift = self.released;
            self.held.copy_within(shift..self.end, 0);
            self.end -= shift;
            self.pos = self.pos.saturating_sub(shift);
            self.released = 0;
        }
        if self.held.len() < self.end + READ_CHUNK {
            self.held.resize(self.end + READ_CHUNK, 0);
        }
    }

    /// Keeps `line` (a partial line) in `held`, which is empty.
    fn hold(&mut self, line: &[u8]) {
        if self.held.len() < line.len() + READ_CHUNK {
            self.held.resize(line.len() + READ_CHUNK, 0);
        }
        self.held[..line.len()].copy_from_slice(line);
        self.pos = 0;
        self.released = 0;
        self.end = line.len();
    }

    /// Forgets delivered bytes once everything held went out.
    fn drained(&mut self) {
        if self.pos >= self.end && self.released == self.end {
            self.pos = 0;
            self.released = 0;
            self.end = 0;
            if self.held.len() > KEEP_BUFFER {
                self.held = Vec::new();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> HeadGuard<S> {
    /// Writes the answer, flushes and shuts the stream down, then wakes hyper's reader
    /// (which then sees end of stream).
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = loop {
            if self.answered == self.answer.len() {
                break match Pin::new(&mut self.inner).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
                    other => other,
                };
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.answer[self.answered..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.answered += n,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        };
        if result.is_ready() {
            self.phase = Phase::Closed;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.released {
                let n = (this.released - this.pos).min(buf.remaining());
                buf.put_slice(&this.held[this.pos..this.pos + n]);
                this.pos += n;
                this.drained();
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Open => {}
                Phase::Poison => {
                    buf.put_slice(POISON);
                    this.phase = Phase::Poisoned;
                    return Poll::Ready(Ok(()));
                }
                Phase::Poisoned | Phase::Answer => {
                    this.phase = Phase::Answer;
                    this.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Phase::Eof | Phase::Closed => return Poll::Ready(Ok(())),
            }
            if this.released == this.end {
                // Nothing held: read straight into hyper's buffer and check it there.
                if this.scanner.passing() {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                let before = buf.filled().len();
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match this.scanner.scan(new) {
                    Step::Release => return Poll::Ready(Ok(())),
                    Step::Hold(keep) => {
                        let line = &buf.filled()[before + keep..];
                        this.hold(line);
                        buf.set_filled(before + keep);
                        if keep > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Step::Refuse {
                        good,
                        kind,
                        head_sent,
                    } => {
                        buf.set_filled(before + good);
                        this.refuse(kind, head_sent);
                        if good > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            } else {
                // A line is split across reads: read the rest behind it.
                this.make_room();
                let mut room = ReadBuf::new(&mut this.held[this.end..]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut room) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        // hyper-util picks HTTP/1 or h2 from the first bytes and starts
                        // hyper's header timeout only then: let a slow first request line
                        // through as it comes (its copy stays here to be checked).
                        if this.scanner.awaiting_first_request_line() && this.pos < this.end {
                            let n = (this.end - this.pos).min(buf.remaining());
                            buf.put_slice(&this.held[this.pos..this.pos + n]);
                            this.pos += n;
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Pending;
                    }
                }
                let n = room.filled().len();
                if n == 0 {
                    // The client left in the middle of a head: hyper sees the end.
                    this.end = this.released;
                    this.pos = this.pos.min(this.end);
                    this.phase = Phase::Eof;
                    continue;
                }
                let start = this.released;
                this.end += n;
                match this.scanner.scan(&this.held[start..this.end]) {
                    Step::Release => this.released = this.end,
                    Step::Hold(keep) => this.released = start + keep,
                    Step::Refuse {
                        good,
                        kind,
                        head_sent,
                    } => {
                        let early = this.pos > start;
                        this.released = start + good;
                        this.end = this.released;
                        this.pos = this.pos.min(this.end);
                        this.refuse(kind, head_sent || early);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.phase == Phase::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.phase {
            Phase::Answer => self.poll_answer(cx),
            Phase::Closed => Poll::Ready(Ok(())),
            _ => Pin::new(&mut self.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.phase {
            Phase::Answer => self.poll_answer(cx),
            Phase::Closed => Poll::Ready(Ok(())),
            _ => Pin::new(&mut self.inner).poll_shutdown(cx),
        }
    }
}

// === Scanner ===

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A line ends in LF without CR.
    BareLf,
    /// The request line is not `method SP target SP HTTP/1.x`.
    RequestLine,
    /// The method is longer than [`MAX_METHOD`] (501).
    MethodTooLong,
    /// `Content-Length` is not a decimal number.
    ContentLength,
    /// `Content-Length` is over [`MAX_CONTENT_LENGTH`] (413).
    ContentLengthTooLarge,
    /// `Content-Length` appears more than once.
    RepeatedContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndTransferEncoding,
    /// `Transfer-Encoding` that is empty, not a token list, or `chunked` twice or with
    /// parameters.
    TransferEncoding,
    /// A transfer coding other than `chunked` (501, as nginx and Caddy answer).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    TransferEncodingHttp10,
}

impl Violation {
    /// The answer written for it.
    fn answer(self) -> &'static [u8] {
        match self {
            Violation::MethodTooLong | Violation::UnsupportedTransferCoding => NOT_IMPLEMENTED,
            Violation::ContentLengthTooLarge => TOO_LARGE,
            _ => BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Violation::BareLf => "bare LF as a line end",
            Violation::RequestLine => "malformed request line",
            Violation::MethodTooLong => "method too long",
            Violation::ContentLength => "invalid Content-Length",
            Violation::ContentLengthTooLarge => "Content-Length too large",
            Violation::RepeatedContentLength => "more than one Content-Length",
            Violation::LengthAndTransferEncoding => "both Content-Length and Transfer-Encoding",
            Violation::TransferEncoding => "malformed Transfer-Encoding",
            Violation::UnsupportedTransferCoding => "transfer coding other than chunked",
            Violation::TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
        })
    }
}

/// What stops the flow to hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A bad head: answer 400 once hyper is idle.
    Head(Violation),
    /// A broken chunked body: end of stream to hyper.
    Body,
    /// A head longer than the limit: hyper has enough of it to answer 431.
    TooLarge,
}

/// The scanner's verdict on the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Every byte may go to hyper.
    Release,
    /// `bytes[..n]` may go to hyper; the rest is a partial header line, to be given again
    /// with the bytes that follow it.
    Hold(usize),
    /// `bytes[..good]` may go to hyper, then nothing more.
    Refuse {
        good: usize,
        kind: Refusal,
        /// Whether bytes of the refused head went to hyper before (so hyper holds a
        /// partial head already and needs no [`POISON`]).
        head_sent: bool,
    },
}

/// Where the scanner is in the request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In a request head (or between requests).
    Head,
    /// In a body with this many bytes to go.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not checking any more (h2, or an upgrade).
    Pass,
}

/// The chunked body state machine (RFC 9112 §7.1). Size lines are read whole with
/// [`grammar::chunk_size_line`] (a partial one is held until it ends, like a head line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    SizeLine,
    /// Chunk data still to come.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line or of the final CRLF.
    TrailerStart,
    /// In a trailer field line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The final LF.
    EndLf,
}

/// What is known of the head being read.
#[derive(Clone, Copy, Debug, Default)]
struct Head {
    /// Bytes of this head already released (complete lines).
    len: usize,
    /// Bytes of the current line already searched for its LF.
    scanned: usize,
    /// Whether the request line was seen (leading empty lines come before it).
    request_line: bool,
    http10: bool,
    content_length: Option<u64>,
    codings: TransferCodings,
    upgrade: bool,
    connection_upgrade: bool,
}

/// The sans-IO checker: request heads line by line, then the body framing.
#[derive(Debug)]
pub(crate) struct Scanner {
    pub(crate) state: State,
    head: Head,
    /// Largest head (hyper's `max_buf_size`).
    limit: usize,
    /// No request line seen yet on this connection (the h2 preface can only come first).
    first: bool,
}

impl Scanner {
    pub(crate) fn new(limit: usize) -> Self {
        Scanner {
            state: State::Head,
            head: Head::default(),
            limit,
            first: true,
        }
    }

    fn passing(&self) -> bool {
        self.state == State::Pass
    }

    fn awaiting_first_request_line(&self) -> bool {
        self.first && self.state == State::Head
    }

    /// Checks `bytes`, which start at the first byte not released yet (in a head, at the
    /// start of the current line).
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Step {
        let mut at = 0;
        loop {
            if at == bytes.len() {
                return Step::Release;
            }
            match self.state {
                State::Pass => return Step::Release,
                State::Length(remaining) => {
                    let available = (bytes.len() - at) as u64;
                    if available < remaining {
                        self.state = State::Length(remaining - available);
                        return Step::Release;
                    }
                    at += remaining as usize;
                    self.state = State::Head;
                }
                State::Chunked(chunk) => match self.chunked(chunk, &bytes[at..]) {
                    BodyStep::Used(used) => at += used,
                    BodyStep::Partial(used) => return Step::Hold(at + used),
                    BodyStep::Bad(bad) => {
                        return Step::Refuse {
                            good: at + bad,
                            kind: Refusal::Body,
                            head_sent: true,
                        }
                    }
                },
                State::Head => match self.head(&bytes[at..]) {
                    HeadStep::Done(used) => at += used,
                    HeadStep::Partial(used) => return Step::Hold(at + used),
                    HeadStep::Bad {
                        good,
                        violation,
                        sent,
                    } => {
                        return Step::Refuse {
                            good: at + good,
                            kind: Refusal::Head(violation),
                            head_sent: sent,
                        }
                    }
                    HeadStep::TooLarge(used) => {
                        return Step::Refuse {
                            good: at + used,
                            kind: Refusal::TooLarge,
                            head_sent: true,
                        }
                    }
                },
            }
        }
    }

    /// Reads head lines from `bytes` (which start at the current line).
    pub(crate) fn head(&mut self, bytes: &[u8]) -> HeadStep {
        let mut at = 0;
        loop {
            let line = &bytes[at..];
            let Some(found) = memchr::memchr(b'\n', &line[self.head.scanned..]) else {
                self.head.scanned = line.len();
                if self.head.len + line.len() > self.limit {
                    return HeadStep::TooLarge(bytes.len());
                }
                return HeadStep::Partial(at);
            };
            let lf = self.head.scanned + found;
            self.head.scanned = 0;
            if self.head.len + lf >= self.limit {
                // The head cannot end within the limit: give hyper all of it but this LF.
                return HeadStep::TooLarge(at + lf);
            }
            if lf == 0 || line[lf - 1] != b'\r' {
                return self.bad_line(at, Violation::BareLf);
            }
            let content = &line[..lf - 1];
            let end = if !self.head.request_line {
                if content.is_empty() {
                    false // an empty line before the request line is ignored (§2.2)
                } else if self.first && self.head.len == 0 && content == H2_PREFACE_LINE {
                    self.state = State::Pass;
                    self.first = false;
                    return HeadStep::Done(at);
                } else {
                    if let Err(violation) = self.request_line(&line[..=lf]) {
                        return self.bad_line(at, violation);
                    }
                    false
                }
            } else if content.is_empty() {
                true
            } else {
                if let Err(violation) = self.header(content) {
                    return self.bad_line(at, violation);
                }
                false
            };
            at += lf + 1;
            self.head.len += lf + 1;
            if end {
                if let Err(violation) = self.end_of_head() {
                    // Everything but the final LF: hyper cannot complete the head.
                    return HeadStep::Bad {
                        good: at - 1,
                        violation,
                        sent: true,
                    };
                }
                return HeadStep::Done(at);
            }
        }
    }

    /// A bad line at `at`: the lines before it were released.
    fn bad_line(&self, at: usize, violation: Violation) -> HeadStep {
        HeadStep::Bad {
            good: at,
            violation,
            sent: self.head.len > 0,
        }
    }

    /// Checks the request line (with its CRLF).
    fn request_line(&mut self, line: &[u8]) -> Result<(), Violation> {
        let mut request = httparse::Request::new(&mut []);
        match request.parse(line) {
            Ok(httparse::Status::Partial) => {}
            _ => return Err(Violation::RequestLine),
        }
        if request.method.is_some_and(|m| m.len() > MAX_METHOD) {
            return Err(Violation::MethodTooLong);
        }
        self.head.request_line = true;
        self.head.http10 = request.version == Some(0);
        self.first = false;
        Ok(())
    }

    /// Reads one header line (without its CRLF) for the framing fields.
    ///
    /// Left to httparse, which hyper runs on the same bytes and which refuses them with a
    /// 400 of hyper's before any request is made: a header name that is not a token or has
    /// whitespace before its colon, a line without a colon, obs-fold (a line starting with
    /// whitespace), and control bytes (NUL, a lone CR, DEL) in a value (httparse's
    /// `HEADER_VALUE_MAP` is exactly [`grammar::field_byte`]). The guard keeps what
    /// httparse lets through: bare LF line ends (checked in [`Scanner::head`]) and the
    /// framing fields below.
    fn header(&mut self, line: &[u8]) -> Result<(), Violation> {
        let Some(colon) = memchr::memchr(b':', line) else {
            return Ok(()); // httparse refuses it
        };
        let name = &line[..colon];
        let value = grammar::trim(&line[colon + 1..]);
        let head = &mut self.head;
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if head.content_length.is_some() {
                    return Err(Violation::RepeatedContentLength);
                }
                let length = match grammar::decimal(value) {
                    Some(n) => n,
                    None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                        return Err(Violation::ContentLengthTooLarge)
                    }
                    None => return Err(Violation::ContentLength),
                };
                if length > MAX_CONTENT_LENGTH {
                    return Err(Violation::ContentLengthTooLarge);
                }
                head.content_length = Some(length);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => head.codings.add(value),
            7 if name.eq_ignore_ascii_case(b"upgrade") => head.upgrade = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                head.connection_upgrade |= value
                    .split(|&b| b == b',')
                    .any(|token| grammar::trim(token).eq_ignore_ascii_case(b"upgrade"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks that need the whole head, then the framing of what follows it.
    fn end_of_head(&mut self) -> Result<(), Violation> {
        let head = std::mem::take(&mut self.head);
        let codings = head.codings.verdict();
        if codings != Codings::Absent {
            if head.content_length.is_some() {
                return Err(Violation::LengthAndTransferEncoding);
            }
            if head.http10 {
                return Err(Violation::TransferEncodingHttp10);
            }
            match codings {
                Codings::Invalid => return Err(Violation::TransferEncoding),
                Codings::Unsupported => return Err(Violation::UnsupportedTransferCoding),
                Codings::Chunked | Codings::Absent => {}
            }
        }
        self.state = if head.upgrade && head.connection_upgrade {
            // What follows may be the upgraded protocol. If the request is not answered
            // with 101, the request path closes the connection after its answer, so hyper
            // reads no further request from these unchecked bytes (crate::hygiene).
            State::Pass
        } else if codings == Codings::Chunked {
            State::Chunked(Chunk::SizeLine)
        } else {
            match head.content_length {
                Some(n) if n > 0 => State::Length(n),
                _ => State::Head,
            }
        };
        Ok(())
    }

    /// Follows a chunked body through `bytes`: how many bytes it used (all of them, or up to
    /// the end of the message), where a partial size line starts, or where the framing
    /// broke.
    pub(crate) fn chunked(&mut self, mut chunk: Chunk, bytes: &[u8]) -> BodyStep {
        use Chunk::*;
        let mut i = 0;
        while i < bytes.len() {
            match chunk {
                Data(remaining) => {
                    let available = (bytes.len() - i) as u64;
                    if available < remaining {
                        self.state = State::Chunked(Data(remaining - available));
                        return BodyStep::Used(bytes.len());
                    }
                    i += remaining as usize;
                    chunk = DataCr;
                    continue;
                }
                SizeLine => {
                    match grammar::chunk_size_line(&bytes[i..]) {
                        Ok(ChunkLine::Complete { used, size }) => {
                            i += used;
                            chunk = if size == 0 { TrailerStart } else { Data(size) };
                        }
                        Ok(ChunkLine::Partial) => {
                            self.state = State::Chunked(SizeLine);
                            return BodyStep::Partial(i);
                        }
                        Err(grammar::BadChunkLine) => return BodyStep::Bad(i),
                    }
                    continue;
                }
                _ => {}
            }
            let b = bytes[i];
            chunk = match (chunk, b) {
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => SizeLine,
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart, _) if grammar::TCHAR[usize::from(b)] => Trailer,
                (Trailer, b'\r') => TrailerLf,
                (Trailer, _) if grammar::field_byte(b) => Trailer,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => {
                    self.state = State::Head;
                    return BodyStep::Used(i + 1);
                }
                _ => return BodyStep::Bad(i),
            };
            i += 1;
        }
        self.state = State::Chunked(chunk);
        BodyStep::Used(i)
    }
}

/// What [`Scanner::chunked`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyStep {
    /// This many bytes are body (all, or up to the end of the message).
    Used(usize),
    /// This many bytes are body; a partial chunk-size line starts there.
    Partial(usize),
    /// The framing broke at this offset.
    Bad(usize),
}

/// What [`Scanner::head`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadStep {
    /// The head is complete and valid; it used this many bytes.
    Done(usize),
    /// The head goes on: this many bytes are complete lines, the rest a partial line.
    Partial(usize),
    /// A line breaks a rule: `good` bytes may go to hyper (the lines before it); `sent`
    /// says whether any byte of this head goes or went to hyper.
    Bad {
        good: usize,
        violation: Violation,
        sent: bool,
    },
    /// The head is over the limit; this many bytes hold no head end.
    TooLarge(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a byte stream ends, as the scanner sees it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Verdict {
        /// Every request complete, at a message boundary.
        Ok,
        /// Valid so far, in the middle of a request.
        Incomplete,
        /// Passed through unchecked from some point on.
        Pass,
        Bad(Violation),
        BadBody,
        TooLarge,
    }
    use Verdict::*;

    /// Feeds `input` in pieces of `step` bytes as the guard does (a held partial line is given
    /// again with what follows).
    fn verdict(input: &[u8], step: usize, limit: usize) -> Verdict {
        let mut scanner = Scanner::new(limit);
        let mut pending = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            match scanner.scan(&pending) {
                Step::Release => pending.clear(),
                Step::Hold(n) => drop(pending.drain(..n)),
                Step::Refuse { kind, .. } => {
                    return match kind {
                        Refusal::Head(violation) => Bad(violation),
                        Refusal::Body => BadBody,
                        Refusal::TooLarge => TooLarge,
                    }
                }
            }
        }
        if scanner.passing() {
            Pass
        } else if pending.is_empty() && scanner.state == State::Head && scanner.head.len == 0 {
            Ok
        } else {
            Incomplete
        }
    }

    /// The verdict on `input`, whole and fed one byte at a time.
    fn check(input: &str, expected: Verdict) {
        check_with(input.as_bytes(), 8192, expected);
    }

    fn check_with(input: &[u8], limit: usize, expected: Verdict) {
        let text = String::from_utf8_lossy(input);
        assert_eq!(
            verdict(input, input.len().max(1), limit),
            expected,
            "{text:?}"
        );
        assert_eq!(verdict(input, 1, limit), expected, "{text:?} byte by byte");
        assert_eq!(
            verdict(input, 7, limit),
            expected,
            "{text:?} in 7-byte pieces"
        );
    }

    const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn valid_requests() {
        check(GET, Ok);
        check(&GET.repeat(3), Ok);
        check("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok);
        check("GET / HTTP/1.0\r\n\r\n", Ok);
        check("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\nX-Utf8: \u{e9}\r\n\r\n", Ok);
        check("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", Ok);
        check(
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            Ok,
        );
        check(
            "POST / HTTP/1.1\r\ncontent-length:  007 \r\n\r\n1234567",
            Ok,
        );
        check("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", Incomplete);
        check("GET / HTTP/1.1\r\nHost: x\r\n", Incomplete);
        check("GET / HTTP/1.1\r\nHost: x\r\n\r", Incomplete);
        // A body that looks like a request is a body.
        check(
            "POST / HTTP/1.1\r\nContent-Length: 22\r\n\r\nGET /x HTTP/1.1\n\n\n\n\n\nGET / HTTP/1.1\r\n\r\n",
            Ok,
        );
    }

    #[test]
    fn chunked_bodies() {
        let post = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let check_body = |body: &str, expected| check(&format!("{post}{body}"), expected);
        check_body("0\r\n\r\n", Ok);
        check_body("5\r\nhello\r\n0\r\n\r\n", Ok);
        check_body("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", Ok);
        check_body(
            "A;name=value\r\n0123456789\r\nb ; x\r\n0123456789a\r\n0\r\n\r\n",
            Ok,
        );
        check_body("5\r\nhel", Incomplete);
        check_body("5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n", Ok);
        check_body("0000000000000005\r\nhello\r\n0\r\n\r\n", Ok);
        // More than 16 hex digits: httparse's limit (a u64), whatever their value.
        check_body("00000000000000000005\r\nhello\r\n0\r\n\r\n", BadBody);
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            Bad(Violation::UnsupportedTransferCoding),
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Bad(Violation::UnsupportedTransferCoding),
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            Bad(Violation::UnsupportedTransferCoding),
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
            Ok,
        );
        // Broken framing.
        check_body("5\nhello\r\n0\r\n\r\n", BadBody);
        check_body("5\r\nhello\n0\r\n\r\n", BadBody);
        check_body("5\r\nhelloX\r\n0\r\n\r\n", BadBody);
        check_body("x\r\n", BadBody);
        check_body(" 5\r\nhello\r\n0\r\n\r\n", BadBody);
        check_body("-5\r\n", BadBody);
        check_body("10000000000000000\r\n", BadBody);
        check_body("5;a\nb\r\nhello\r\n0\r\n\r\n", BadBody);
        check_body("2 zz\r\nhi\r\n0\r\n\r\n", BadBody);
        check_body("\r\nhi\r\n0\r\n\r\n", BadBody);
        check_body(";x\r\n\r\n", BadBody);
        check_body(&format!("1;{}\r\n", "x".repeat(5000)), BadBody);
        check_body("5;\0\r\nhello\r\n0\r\n\r\n", BadBody);
        check_body("0\r\nX: 1\n\r\n", BadBody);
        check_body("0\r\nX: 1\r\n folded\r\n\r\n", BadBody);
        check_body("0\r\nX: a\0b\r\n\r\n", BadBody);
        check_body("0\r\n\n", BadBody);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        use Violation::*;
        let post = |headers: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        check(
            &post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            Bad(LengthAndTransferEncoding),
        );
        check(
            &post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Bad(LengthAndTransferEncoding),
        );
        check(
            &post("Transfer-Encoding: chunked, gzip\r\n"),
            Bad(UnsupportedTransferCoding),
        );
        check(
            &post("Transfer-Encoding: gzip\r\n"),
            Bad(UnsupportedTransferCoding),
        );
        check(
            &post("Transfer-Encoding: identity\r\n"),
            Bad(UnsupportedTransferCoding),
        );
        check(
            &post("Transfer-Encoding: chunked, chunked\r\n"),
            Bad(TransferEncoding),
        );
        check(
            &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Bad(TransferEncoding),
        );
        check(
            &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
            Bad(UnsupportedTransferCoding),
        );
        check(
            &post("Transfer-Encoding: chunked;q=1\r\n"),
            Bad(TransferEncoding),
        );
        check(&post("Transfer-Encoding:\r\n"), Bad(TransferEncoding));
        check(
            &post("Transfer-Encoding: xchunked\r\n"),
            Bad(UnsupportedTransferCoding),
        );
        check(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Bad(TransferEncodingHttp10),
        );
        check(
            &post("Content-Length: 3\r\nContent-Length: 4\r\n"),
            Bad(RepeatedContentLength),
        );
        check(
            &post("Content-Length: 3\r\nContent-Length: 3\r\n"),
            Bad(RepeatedContentLength),
        );
        check(&post("Content-Length: 1, 1\r\n"), Bad(ContentLength));
        check(&post("Content-Length: 3x\r\n"), Bad(ContentLength));
        check(&post("Content-Length: +3\r\n"), Bad(ContentLength));
        check(&post("Content-Length: -1\r\n"), Bad(ContentLength));
        check(&post("Content-Length: 0x10\r\n"), Bad(ContentLength));
        check(&post("Content-Length:\r\n"), Bad(ContentLength));
        check(&post("Content-Length: 1 2\r\n"), Bad(ContentLength));
        check(
            &post("Content-Length: 99999999999999999999\r\n"),
            Bad(ContentLengthTooLarge),
        );
        check(
            &post("Content-Length: 18446744073709551615\r\n"),
            Bad(ContentLengthTooLarge),
        );
        check(
            &post("Content-Length: 9223372036854775808\r\n"),
            Bad(ContentLengthTooLarge),
        );
        check_with(
            format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(10 * 1024)).as_bytes(),
            32 * 1024,
            Bad(MethodTooLong),
        );
        check(
            &format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(33)),
            Bad(MethodTooLong),
        );
        check(
            &format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(32)),
            Ok,
        );
        check(&post("X-Lf: a\nb: c\r\n"), Bad(BareLf));
        check("GET / HTTP/1.1\nHost: x\r\n\r\n", Bad(BareLf));
        check("GET / HTTP/1.1\r\nHost: x\n\n", Bad(BareLf));
        check("GET / HTTP/1.1\r\nHost: x\r\n\n", Bad(BareLf));
        check("\nGET / HTTP/1.1\r\n\r\n", Bad(BareLf));
        check("GET  / HTTP/1.1\r\n\r\n", Bad(RequestLine));
        check("GET / HTTP/2.0\r\n\r\n", Bad(RequestLine));
        check("GET /\0 HTTP/1.1\r\n\r\n", Bad(RequestLine));
        check("GET / HTTP/1.1 \r\n\r\n", Bad(RequestLine));
        // The second request of a keep-alive connection is checked as well.
        check(
            &format!(
                "{GET}{}",
                post("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n")
            ),
            Bad(LengthAndTransferEncoding),
        );
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\nX: y\r\n\r\n",
            Bad(BareLf),
        );
    }

    #[test]
    fn passes_h2_and_upgrades_but_not_lookalikes() {
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0", Pass);
        check(
            "GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n\x01\x05hello\n\n",
            Pass,
        );
        // Upgrade without Connection: upgrade is no upgrade: the next request is checked.
        check(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\nX: y\r\n\r\n",
            Bad(Violation::BareLf),
        );
        // The preface counts only at the start of a connection.
        check(
            &format!("{GET}PRI * HTTP/2.0\r\n\r\n"),
            Bad(Violation::RequestLine),
        );
        check("\r\nPRI * HTTP/2.0\r\n\r\n", Bad(Violation::RequestLine));
        // CONNECT is framed like any request (hyper hands the connection off only on a 2xx).
        check(
            "CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            Bad(Violation::RepeatedContentLength),
        );
    }

    #[test]
    fn heads_over_the_limit_are_left_to_hyper() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        check_with(big.as_bytes(), 8192, TooLarge);
        check_with(big.as_bytes(), 16384, Ok);
        // The guard gives hyper at least the limit's worth of the head, and never its end.
        for head in [
            big.clone(),
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000)),
        ] {
            let mut scanner = Scanner::new(8192);
            match scanner.scan(head.as_bytes()) {
                Step::Refuse {
                    good,
                    kind: Refusal::TooLarge,
                    ..
                } => {
                    assert!(good >= 8192, "{good}");
                    assert!(!head[..good].contains("\r\n\r\n"));
                }
                other => panic!("{other:?}"),
            }
        }
        // Exactly at the limit is fine.
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100));
        check_with(exact.as_bytes(), exact.len(), Ok);
        check_with(exact.as_bytes(), exact.len() - 1, TooLarge);
    }

    #[test]
    fn refusals_release_the_requests_before_and_never_the_bad_head() {
        let input = format!(
            "{GET}{GET}POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut scanner = Scanner::new(8192);
        let Step::Refuse {
            good, head_sent, ..
        } = scanner.scan(input.as_bytes())
        else {
            panic!("not refused")
        };
        // Everything but the final LF of the bad head (which hyper can never complete).
        assert_eq!(&input[..good], &input[..input.len() - 1]);
        assert!(head_sent);
        let input = format!("{GET}GET / HTTP/1.1\nHost: x\r\n\r\n");
        let mut scanner = Scanner::new(8192);
        let Step::Refuse {
            good, head_sent, ..
        } = scanner.scan(input.as_bytes())
        else {
            panic!("not refused")
        };
        assert_eq!(good, GET.len());
        assert!(
            !head_sent,
            "nothing of the bad head went: hyper gets the poison byte"
        );
    }

    #[test]
    fn answers_are_well_formed() {
        for (answer, status, error) in [
            (BAD_REQUEST, "400", "bad request"),
            (NOT_IMPLEMENTED, "501", "not implemented"),
            (TOO_LARGE, "413", "request body too large"),
        ] {
            check_answer(answer, status, error);
        }
    }

    fn check_answer(answer: &[u8], status: &str, error: &str) {
        let text = std::str::from_utf8(answer).unwrap();
        assert_eq!(&text[9..12], status);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], error);
        assert_eq!(json["request_id"], "");
    }

    // === hyper behind the guard ===

    mod with_hyper {
        use super::super::HeadGuard;
        use std::convert::Infallible;
        use std::time::Duration;

        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper::body::Incoming;
        use hyper::service::service_fn;
        use hyper::{Request, Response};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto;
        use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

        /// A hyper server behind the guard on one end of an in-memory pipe: it answers
        /// `<path> <body length>`, or 500 `body error`.
        fn serve() -> DuplexStream {
            let (client, server) = tokio::io::duplex(1 << 16);
            let service = service_fn(|request: Request<Incoming>| async move {
                let path = request.uri().path().to_owned();
                let answer = match request.into_body().collect().await {
                    Ok(body) => Response::new(Full::new(Bytes::from(format!(
                        "{path} {}",
                        body.to_bytes().len()
                    )))),
                    Err(_) => {
                        let mut response = Response::new(Full::new(Bytes::from("body error")));
                        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        response
                    }
                };
                Ok::<_, Infallible>(answer)
            });
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().max_buf_size(8192);
                let io = TokioIo::new(HeadGuard::new(server, 8192));
                let _ = builder.serve_connection_with_upgrades(io, service).await;
            });
            client
        }

        /// Writes `pieces` (pausing between them) and reads until the server closes.
        async fn exchange(pieces: &[&[u8]]) -> (String, bool) {
            let mut client = serve();
            for piece in pieces {
                if client.write_all(piece).await.is_err() {
                    break; // the server closed: read what it answered
                }
                if pieces.len() > 1 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut out = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
                .await
                .is_ok();
            (String::from_utf8_lossy(&out).into_owned(), closed)
        }

        fn statuses(text: &str) -> Vec<&str> {
            text.match_indices("HTTP/1.1 ")
                .map(|(i, _)| &text[i + 9..i + 12])
                .collect()
        }

        const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        const GET_B: &[u8] = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        const SMUGGLE: &[u8] =
            b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

        #[tokio::test]
        async fn pipelined_requests_are_answered_then_the_bad_one_gets_400() {
            let input = [GET_A, GET_B, SMUGGLE].concat();
            let (text, closed) = exchange(&[&input]).await;
            println!("{text}");
            assert_eq!(statuses(&text), ["200", "200", "400"]);
            assert!(text.contains("/a 0") && text.contains("/b 0"));
            assert!(
                !text.contains("/c"),
                "the bad request never reached the service"
            );
            assert!(text.ends_with("{\"error\":\"bad request\",\"request_id\":\"\"}"));
            assert!(closed);
        }

        #[tokio::test]
        async fn slow_and_split_requests_are_checked_the_same() {
            // One byte at a time: the first request line goes out early, header lines wait.
            let input = [GET_A, SMUGGLE].concat();
            let pieces: Vec<&[u8]> = input.chunks(1).collect();
            let (text, closed) = exchange(&pieces).await;
            assert_eq!(statuses(&text), ["200", "400"], "{text}");
            assert!(closed);
            let (text, closed) = exchange(&[
                b"GET /a HTT",
                b"P/1.1\r\nHost: x\r\nConn",
                b"ection: close\r",
                b"\n\r\n",
            ])
            .await;
            assert_eq!(statuses(&text), ["200"], "{text}");
            assert!(text.contains("/a 0"), "{text}");
            assert!(closed);
        }

        #[tokio::test]
        async fn a_bad_first_request_gets_400_alone() {
            for input in [
                &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
                b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
                SMUGGLE,
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            ] {
                let (text, closed) = exchange(&[input]).await;
                assert_eq!(statuses(&text), ["400"], "{text}");
                assert!(text.contains("connection: close"), "{text}");
                assert!(closed);
            }
        }

        #[tokio::test]
        async fn chunked_body_then_next_request() {
            let input = [
                &b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n"[..],
                b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
            ]
            .concat();
            for pieces in [vec![&input[..]], input.chunks(3).collect()] {
                let (text, closed) = exchange(&pieces).await;
                assert_eq!(statuses(&text), ["200", "200"], "{text}");
                assert!(text.contains("/a 8") && text.contains("/b 0"), "{text}");
                assert!(closed);
            }
        }

        #[tokio::test]
        async fn broken_chunked_body_ends_the_connection() {
            let input = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
            let (text, closed) = exchange(&[input]).await;
            println!("{text}");
            assert!(!text.contains("/b"), "{text}");
            assert!(!text.contains(" 200 "), "{text}");
            assert!(closed);
        }

        #[tokio::test]
        async fn oversized_head_gets_hyper_431() {
            let input = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
            let (text, closed) = exchange(&[input.as_bytes()]).await;
            assert_eq!(statuses(&text), ["431"], "{text}");
            assert!(closed);
        }

        #[tokio::test]
        async fn h2_prior_knowledge_passes() {
            let mut client = serve();
            client
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .await
                .unwrap();
            let mut frame = [0u8; 9];
            tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut frame))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(frame[3], 0x4, "a SETTINGS frame: {frame:?}");
        }
    }
}
