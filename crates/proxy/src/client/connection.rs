//! One upstream HTTP/1.1 connection and the exchange of one request on it, driven by the
//! request's own task: the head and body written, the response head read, then the
//! response body streamed by [`UpstreamBody`] straight from the socket buffer.
//!
//! Writing and reading go on together until the response head arrives, so an endpoint
//! that answers before reading the whole request body (a `413`, say) is heard. From then
//! on the rest of the request body is not sent and the connection is closed after the
//! response. `1xx` interim responses (`100 Continue`) are skipped.
//!
//! Buffers: a connection owns its head-writing buffer (a few hundred bytes, kept) and a
//! read buffer only while a response is being read (between exchanges the buffer waits in
//! a small per-thread spare list, [`spare`]). Body frames are slices of that buffer, handed
//! on without copying; a connection back in the pool holds no read buffer.

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::codec::{
    self, AddedFields, BodyFraming, ChunkedDecoder, Decoded, ProtocolError, RequestFraming,
    ResponseHead,
};
use super::{EndpointPool, UpstreamIo};
use crate::body::{BoxError, ProxyBody};

/// The first read of a response reserves this much; a read that fills its room doubles the
/// next, up to [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
/// The largest single read.
const MAX_READ: usize = 64 * 1024;
/// A request body frame up to this size is copied behind the head instead of being
/// written from its own buffer...
const COPY_FRAME: usize = 4 * 1024;
/// ...as long as the write buffer stays within this.
const COPY_TOTAL: usize = 8 * 1024;
/// A write buffer that grew past this is not kept between requests.
const KEEP_WRITE_BUFFER: usize = COPY_TOTAL;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The endpoint closed the connection before the response was complete.
    Closed,
    /// The endpoint's response broke HTTP/1.1.
    Protocol(ProtocolError),
    /// The request body failed (the client's side).
    RequestBody(BoxError),
    /// The request body ended before its declared `Content-Length`, or went past it.
    RequestBodyLength,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io(e) => write!(f, "{e}"),
            ExchangeError::Closed => f.write_str("connection closed before the response ended"),
            ExchangeError::Protocol(e) => write!(f, "{e}"),
            ExchangeError::RequestBody(e) => write!(f, "request body: {e}"),
            ExchangeError::RequestBodyLength => {
                f.write_str("request body did not match its content-length")
            }
        }
    }
}

impl std::error::Error for ExchangeError {}

impl From<ProtocolError> for ExchangeError {
    fn from(error: ProtocolError) -> Self {
        ExchangeError::Protocol(error)
    }
}

/// One keep-alive connection to an endpoint.
pub struct Connection {
    io: UpstreamIo,
    /// Received bytes not consumed yet; empty (no allocation) between exchanges.
    read: BytesMut,
    /// How much the next read reserves.
    read_size: usize,
    /// The request head being written.
    write: Vec<u8>,
    /// When it last went back to the pool.
    pub(super) idle_since: Instant,
}

impl Connection {
    /// A connection over `io`, not used yet.
    pub fn new(io: UpstreamIo) -> Box<Self> {
        Box::new(Connection {
            io,
            read: BytesMut::new(),
            read_size: FIRST_READ,
            write: Vec::new(),
            idle_since: Instant::now(),
        })
    }

    /// Whether an idle connection is still usable: the endpoint has neither closed it nor
    /// sent anything unasked. Costs no system call unless the socket reported readiness.
    pub fn poll_idle_usable(&mut self, cx: &mut Context<'_>) -> bool {
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(cx, &mut probe)
            .is_pending()
    }

    /// Reads more bytes into the read buffer. `Ok(0)`: end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() == 0 {
            self.read = spare::take();
        }
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Makes the connection ready to go back to the pool: no read buffer kept, a grown
    /// write buffer freed. `false`: bytes beyond the response arrived, so it cannot be
    /// reused.
    fn park(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        spare::give(std::mem::take(&mut self.read));
        self.read_size = FIRST_READ;
        if self.write.capacity() > KEEP_WRITE_BUFFER {
            self.write = Vec::new();
        }
        true
    }
}

/// Read buffers between exchanges, per thread: a connection going back to the pool leaves
/// its buffer here rather than keeping it idle, and the next exchange on this thread takes
/// it. The body frames cut from a buffer may still be on their way to the client when it
/// comes back; once they are gone, `BytesMut::reserve` reuses its memory in place, so the
/// steady state allocates no read buffer per response.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    /// Buffers kept per thread.
    const KEPT: usize = 32;
    /// A buffer grown larger than this (a large body's reads) is not kept.
    const KEEP_CAPACITY: usize = 2 * super::FIRST_READ;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A spare buffer, or an empty one (no allocation).
    pub(super) fn take() -> BytesMut {
        SPARE
            .with(|spare| spare.borrow_mut().pop())
            .unwrap_or_default()
    }

    /// Keeps `buffer` (empty) for the next exchange on this thread, if there is room.
    pub(super) fn give(buffer: BytesMut) {
        if buffer.capacity() == 0 || buffer.capacity() > KEEP_CAPACITY {
            return;
        }
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEPT {
                spare.push(buffer);
            }
        });
    }
}

/// Bytes queued for the socket: the connection's write buffer from `head_at` (the head,
/// chunk size lines, small body frames), then `data` (a large frame), then `tail` (the CRLF
/// after a large chunk).
struct Outgoing {
    head_at: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Outgoing {
    fn is_empty(&self, head: &[u8]) -> bool {
        self.head_at == head.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Marks `n` written bytes as sent.
    fn advance(&mut self, head: &[u8], mut n: usize) {
        let from_head = n.min(head.len() - self.head_at);
        self.head_at += from_head;
        n -= from_head;
        let from_data = n.min(self.data.len());
        let _ = self.data.split_to(from_data);
        n -= from_data;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }
}

/// A request being sent and its response head awaited.
struct Exchange<'a> {
    conn: &'a mut Connection,
    /// The request body still to send; `None` once it ended.
    body: Option<ProxyBody>,
    framing: RequestFraming,
    /// Body bytes still owed under `Content-Length`.
    owed: u64,
    out: Outgoing,
    head_request: bool,
    /// Whether the request had no body bytes at all (it can be sent again).
    empty_body: bool,
    /// Whether the whole request (head and body) was written.
    sent: bool,
    /// Whether any response byte arrived.
    heard: bool,
}

impl<'a> Exchange<'a> {
    /// Encodes the head of `request` and takes its body (unless it is empty, so that an
    /// empty-bodied request can be sent again).
    fn new(
        conn: &'a mut Connection,
        request: &mut Request<ProxyBody>,
        added: &AddedFields,
    ) -> Self {
        let body = request.body();
        let exact = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        let framing = RequestFraming::for_body(request.method(), exact);
        conn.write.clear();
        codec::encode_request_head(
            &mut conn.write,
            request.method(),
            request.uri(),
            request.headers(),
            added,
            framing,
        );
        let body = (framing != RequestFraming::Empty)
            .then(|| std::mem::replace(request.body_mut(), ProxyBody::empty()));
        Exchange {
            conn,
            body,
            framing,
            owed: match framing {
                RequestFraming::Length(n) => n,
                _ => 0,
            },
            out: Outgoing {
                head_at: 0,
                data: Bytes::new(),
                tail: b"",
            },
            head_request: request.method() == Method::HEAD,
            empty_body: exact == Some(0),
            sent: false,
            heard: false,
        }
    }

    /// Writes what can be written now; ready when the whole request is sent. A body frame
    /// that is ready goes out in the same write as what is queued before it (the head and
    /// the first frame in one `writev`).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        loop {
            let room = self.out.data.is_empty() && self.out.tail.is_empty();
            if let (true, Some(body)) = (room, self.body.as_mut()) {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        if self.out.head_at == self.conn.write.len() {
                            self.conn.write.clear();
                            self.out.head_at = 0;
                        }
                        self.queue_frame(frame)?;
                        continue;
                    }
                    Poll::Pending if self.out.is_empty(&self.conn.write) => {
                        // What was written goes out (TLS buffers) while the body waits.
                        ready!(Pin::new(&mut self.conn.io).poll_flush(cx))
                            .map_err(ExchangeError::Io)?;
                        return Poll::Pending;
                    }
                    Poll::Pending => {}
                }
            }
            if self.out.is_empty(&self.conn.write) {
                // Only reached once the body has ended (or there is none).
                ready!(Pin::new(&mut self.conn.io).poll_flush(cx)).map_err(ExchangeError::Io)?;
                return Poll::Ready(Ok(()));
            }
            let slices = [
                IoSlice::new(&self.conn.write[self.out.head_at..]),
                IoSlice::new(&self.out.data),
                IoSlice::new(self.out.tail),
            ];
            let n = ready!(Pin::new(&mut self.conn.io).poll_write_vectored(cx, &slices))
                .map_err(ExchangeError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(ExchangeError::Closed));
            }
            self.out.advance(&self.conn.write, n);
        }
    }

    /// Queues a frame of the request body (or its end) behind what is queued.
    fn queue_frame(
        &mut self,
        frame: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Result<(), ExchangeError> {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => Ok(()),
                Ok(data) => self.queue_data(data),
                Err(frame) => {
                    // Trailers go out with a chunked body; a body sent with its length has
                    // nowhere to put them.
                    if let (Ok(trailers), RequestFraming::Chunked) =
                        (frame.into_trailers(), self.framing)
                    {
                        codec::encode_chunked_end(&mut self.conn.write, Some(&trailers));
                        self.body = None;
                    }
                    Ok(())
                }
            },
            Some(Err(error)) => Err(ExchangeError::RequestBody(error)),
            None => {
                self.body = None;
                match self.framing {
                    RequestFraming::Chunked => {
                        codec::encode_chunked_end(&mut self.conn.write, None);
                        Ok(())
                    }
                    RequestFraming::Length(_) if self.owed > 0 => {
                        Err(ExchangeError::RequestBodyLength)
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Queues body bytes: a small frame is copied behind the head (so that frames already
    /// there go out in one write, and a body that fails at once sends nothing), a large
    /// one is written from its own buffer.
    fn queue_data(&mut self, data: Bytes) -> Result<(), ExchangeError> {
        let chunked = self.framing == RequestFraming::Chunked;
        if !chunked {
            self.owed = self
                .owed
                .checked_sub(data.len() as u64)
                .ok_or(ExchangeError::RequestBodyLength)?;
        }
        if chunked {
            codec::encode_chunk_size(&mut self.conn.write, data.len());
        }
        if data.len() <= COPY_FRAME && self.conn.write.len() + data.len() <= COPY_TOTAL {
            self.conn.write.extend_from_slice(&data);
            if chunked {
                self.conn.write.extend_from_slice(b"\r\n");
            }
        } else {
            self.out.data = data;
            self.out.tail = if chunked { b"\r\n" } else { b"" };
        }
        Ok(())
    }

    /// Sends the request and reads until a final response head arrives.
    fn poll_response(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, ExchangeError>> {
        loop {
            if !self.sent {
                match self.poll_send(cx) {
                    Poll::Ready(Ok(())) => self.sent = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            while let Some(head) =
                codec::parse_response_head(&mut self.conn.read, self.head_request)?
            {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Poll::Ready(Err(ProtocolError::UnexpectedUpgrade.into()));
                }
                if !head.status.is_informational() {
                    return Poll::Ready(Ok(head));
                }
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(ExchangeError::Closed)),
                Ok(_) => self.heard = true,
                Err(error) => return Poll::Ready(Err(ExchangeError::Io(error))),
            }
        }
    }
}

/// Why [`exchange`] failed, and whether the request could go again on another connection.
pub struct Failed {
    /// What went wrong.
    pub error: ExchangeError,
    /// The connection was lost before any of a response arrived, and the request had no
    /// body to lose: what a reused connection that the endpoint closed as the request went
    /// out looks like.
    pub may_resend: bool,
}

/// Sends `request` (with `added`'s fields) on `conn` and reads the response head. The response body streams from
/// the connection, which goes back to `pool` at its end if it can carry another request.
pub async fn exchange(
    mut conn: Box<Connection>,
    request: &mut Request<ProxyBody>,
    added: &AddedFields,
    pool: Arc<EndpointPool>,
) -> Result<Response<ProxyBody>, Failed> {
    let mut exchange = Exchange::new(&mut conn, request, added);
    let result = poll_fn(|cx| exchange.poll_response(cx)).await;
    let (sent, heard, empty_body) = (exchange.sent, exchange.heard, exchange.empty_body);
    drop(exchange);
    let head = match result {
        Ok(head) => head,
        Err(error) => {
            let lost_connection = matches!(error, ExchangeError::Io(_) | ExchangeError::Closed);
            return Err(Failed {
                may_resend: lost_connection && !heard && empty_body,
                error,
            });
        }
    };
    let reusable = head.keep_alive && sent;
    let mut body = UpstreamBody {
        connection: Some(conn),
        pool,
        state: match head.framing {
            BodyFraming::Empty => BodyState::End,
            BodyFraming::Length(n) => BodyState::Length(n),
            BodyFraming::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => BodyState::UntilClose,
        },
        reusable,
    };
    if matches!(body.state, BodyState::End) {
        body.release();
    }
    let mut response = Response::new(ProxyBody::upstream(body));
    // The response is the gateway's own HTTP/1.1 message to its client (RFC 9110 §6.2),
    // whatever version the endpoint spoke.
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Where a response body is.
enum BodyState {
    /// This many bytes to go.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// Until the endpoint closes the connection.
    UntilClose,
    /// Read to its end.
    End,
}

/// A response body streamed from its connection; the connection goes back to the pool when
/// the body has been read to its end (if it can carry another request).
pub struct UpstreamBody {
    connection: Option<Box<Connection>>,
    pool: Arc<EndpointPool>,
    state: BodyState,
    /// Whether the connection may carry another request once the body is read.
    reusable: bool,
}

impl UpstreamBody {
    /// Hands the connection back to the pool if it can serve another request.
    fn release(&mut self) {
        let Some(mut conn) = self.connection.take() else {
            return;
        };
        if !self.reusable || !conn.park() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let since_epoch = now.duration_since(self.pool.epoch).as_millis();
        self.pool
            .last_used_ms
            .store(u64::try_from(since_epoch).unwrap_or(0), Ordering::Relaxed);
        // A full pool closes the connection (the box is dropped).
        let _ = self.pool.idle.push(conn);
    }

    /// The next frame from the bytes already received, if they make one.
    fn decode(&mut self, conn: &mut Connection) -> Result<Option<Frame<Bytes>>, ExchangeError> {
        match &mut self.state {
            BodyState::Length(left) => {
                if conn.read.is_empty() {
                    return Ok(None);
                }
                let take =
                    usize::try_from(*left).map_or(conn.read.len(), |l| l.min(conn.read.len()));
                *left -= take as u64;
                if *left == 0 {
                    self.state = BodyState::End;
                }
                Ok(Some(Frame::data(conn.read.split_to(take).freeze())))
            }
            BodyState::Chunked(decoder) => match decoder.decode(&mut conn.read)? {
                Decoded::Data(data) => Ok(Some(Frame::data(data))),
                Decoded::Trailers(trailers) => {
                    self.state = BodyState::End;
                    Ok(Some(Frame::trailers(trailers)))
                }
                Decoded::End => {
                    self.state = BodyState::End;
                    Ok(None)
                }
                Decoded::NeedMore => Ok(None),
            },
            BodyState::UntilClose => {
                Ok((!conn.read.is_empty()).then(|| Frame::data(conn.read.split().freeze())))
            }
            BodyState::End => Ok(None),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = &mut *self;
        loop {
            if matches!(this.state, BodyState::End) {
                this.release();
                return Poll::Ready(None);
            }
            let Some(mut conn) = this.connection.take() else {
                return Poll::Ready(None);
            };
            let decoded = this.decode(&mut conn);
            match decoded {
                Ok(Some(frame)) => {
                    this.connection = Some(conn);
                    if matches!(this.state, BodyState::End) {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if matches!(this.state, BodyState::End) => {
                    this.connection = Some(conn);
                    continue;
                }
                Ok(None) => {}
                // The connection is dropped (closed): it is mid-message.
                Err(error) => return Poll::Ready(Some(Err(error))),
            }
            let filled = conn.poll_fill(cx);
            match filled {
                Poll::Pending => {
                    this.connection = Some(conn);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) if matches!(this.state, BodyState::UntilClose) => {
                    this.state = BodyState::End;
                    this.reusable = false;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(ExchangeError::Closed))),
                Poll::Ready(Ok(_)) => this.connection = Some(conn),
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(ExchangeError::Io(error)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::End)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::End => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
