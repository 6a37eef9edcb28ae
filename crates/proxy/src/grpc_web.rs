//! gRPC-Web (`grpc_web = true` on a route), as Envoy's grpc_web filter does it
//! (grpc/grpc doc/PROTOCOL-WEB.md): a call with `content-type: application/grpc-web[+proto]`
//! (binary) or `application/grpc-web-text[+proto]` (base64) goes upstream as gRPC
//! (`application/grpc`, `te: trailers`, the text body decoded), and its answer comes back
//! in the client's form: the trailers become a last message frame whose flag byte has its
//! high bit set (0x80) holding `name:value\r\n` lines, and in text mode every byte of the
//! body is base64, encoded as it streams (three bytes at a time; the rest at the end).
//! Works for HTTP/1.1 clients, which have no trailers: that is what gRPC-Web is for.
//!
//! As the final status then travels as body bytes, the translated response carries a
//! [`TrailerStatus`] in its extensions: the encoder records the trailers' `grpc-status` in it,
//! so that the call is counted and logged with its real code, not as UNKNOWN.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

/// The two gRPC-Web encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto]`: binary frames.
    Binary,
    /// `application/grpc-web-text[+proto]`: base64 of the frames.
    Text,
}

/// The gRPC-Web mode of a request, from its `content-type`.
pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    // No allocation: this runs on every request of the path (for the gateway's errors).
    let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
    let starts = |prefix: &[u8]| {
        value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if starts(b"application/grpc-web-text") {
        Some(Mode::Text)
    } else if starts(b"application/grpc-web") {
        Some(Mode::Binary)
    } else {
        None
    }
}

/// Turns a gRPC-Web request head into gRPC's.
pub fn request_head(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // The body's length changes in text mode; it streams either way.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove("x-grpc-web");
}

/// The `grpc-status` of a gRPC-Web answer's trailers, which its body carries as a data
/// frame: written by the encoder as the trailers go through, read when the body has ended.
#[derive(Clone, Debug, Default)]
pub struct TrailerStatus(Arc<AtomicU32>);

impl TrailerStatus {
    /// The code seen in the trailers, if they had one (and have gone through).
    pub fn get(&self) -> Option<u16> {
        // 0 is "none yet"; a code is stored plus one.
        u16::try_from(self.0.load(Ordering::Acquire).checked_sub(1)?).ok()
    }

    fn set(&self, code: u16) {
        self.0.store(u32::from(code) + 1, Ordering::Release);
    }
}

/// The request body as gRPC: base64 decoded in text mode.
pub fn request_body(body: ProxyBody, mode: Mode) -> ProxyBody {
    match mode {
        Mode::Binary => body,
        Mode::Text => ProxyBody::boxed(
            DecodeText {
                inner: body,
                carry: BytesMut::new(),
            }
            .boxed_unsync(),
        ),
    }
}

/// The response in the client's gRPC-Web form.
pub fn response(response: http::Response<ProxyBody>, mode: Mode) -> http::Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let content_type = match mode {
        Mode::Binary => "application/grpc-web+proto",
        Mode::Text => "application/grpc-web-text+proto",
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.remove(header::CONTENT_LENGTH);
    let status = TrailerStatus::default();
    parts.extensions.insert(status.clone());
    let body = ProxyBody::boxed(
        EncodeWeb {
            inner: body,
            mode,
            carry: BytesMut::new(),
            done: false,
            status,
        }
        .boxed_unsync(),
    );
    http::Response::from_parts(parts, body)
}

/// The trailers as a gRPC-Web frame: flag 0x80, length, `name:value\r\n` lines.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.push(b':');
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(0x80);
    frame.put_u32(block.len() as u32);
    frame.extend_from_slice(&block);
    frame.freeze()
}

/// Decodes a base64 body as it streams: whole 4-character quanta, each padded run on its
/// own (a client may pad every message it sends).
struct DecodeText {
    inner: ProxyBody,
    carry: BytesMut,
}

impl DecodeText {
    fn decode_ready(&mut self, last: bool) -> Result<Bytes, BoxError> {
        if self.carry.iter().any(u8::is_ascii_whitespace) {
            let clean: Vec<u8> = self
                .carry
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            self.carry = BytesMut::from(&clean[..]);
        }
        let whole = if last {
            self.carry.len()
        } else {
            self.carry.len() / 4 * 4
        };
        let text = self.carry.split_to(whole);
        let mut out = Vec::with_capacity(text.len() / 4 * 3);
        let mut start = 0;
        for quantum in (0..text.len()).step_by(4) {
            let end = (quantum + 4).min(text.len());
            if text[quantum..end].contains(&b'=') || end == text.len() {
                STANDARD
                    .decode_vec(&text[start..end], &mut out)
                    .map_err(|e| format!("grpc-web-text body: {e}"))?;
                start = end;
            }
        }
        Ok(Bytes::from(out))
    }
}

impl Body for DecodeText {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.carry.extend_from_slice(&data);
                        let decoded = this.decode_ready(false)?;
                        if !decoded.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(decoded))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    if this.carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    let decoded = this.decode_ready(true)?;
                    return Poll::Ready(Some(Ok(Frame::data(decoded))));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.carry.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The response body in gRPC-Web form: trailers as the last frame, base64 in text mode.
struct EncodeWeb {
    inner: ProxyBody,
    mode: Mode,
    /// Text mode: bytes not yet encoded (fewer than three, until the end).
    carry: BytesMut,
    done: bool,
    /// Where the trailers' `grpc-status` goes.
    status: TrailerStatus,
}

impl EncodeWeb {
    fn out(&mut self, data: &[u8], last: bool) -> Bytes {
        match self.mode {
            Mode::Binary => Bytes::copy_from_slice(data),
            Mode::Text => {
                self.carry.extend_from_slice(data);
                let whole = if last {
                    self.carry.len()
                } else {
                    self.carry.len() / 3 * 3
                };
                let chunk = self.carry.split_to(whole);
                Bytes::from(STANDARD.encode(&chunk))
            }
        }
    }
}

impl Body for EncodeWeb {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let bytes = match frame.into_data() {
                        Ok(data) if this.mode == Mode::Binary => data,
                        Ok(data) => this.out(&data, false),
                        Err(frame) => {
                            let trailers = frame.into_trailers().unwrap_or_default();
                            if let Some(code) = crate::grpc::status_of(&trailers) {
                                this.status.set(code);
                            }
                            this.done = true;
                            this.out(&trailer_frame(&trailers), true)
                        }
                    };
                    if !bytes.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    if this.done {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.out(&[], true);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_frames() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frame = trailer_frame(&trailers);
        assert_eq!(&frame[..], b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
    }

    #[tokio::test]
    async fn text_round_trip_in_pieces() {
        // A message frame, base64 padded per message and cut at odd places.
        let message = b"\x00\x00\x00\x00\x03abc";
        let text = format!("{}{}", STANDARD.encode(message), STANDARD.encode(message));
        let pieces: Vec<Result<Frame<Bytes>, BoxError>> = text
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(pieces));
        let decoded = request_body(ProxyBody::boxed(body.boxed_unsync()), Mode::Text)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&decoded[..], &[&message[..], &message[..]].concat()[..]);

        // The answer: data then trailers, base64 as one stream.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x01z"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let answer = response(
            http::Response::new(ProxyBody::boxed(body.boxed_unsync())),
            Mode::Text,
        );
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            "application/grpc-web-text+proto"
        );
        let status = answer
            .extensions()
            .get::<TrailerStatus>()
            .expect("a TrailerStatus")
            .clone();
        assert_eq!(status.get(), None, "no trailers gone through yet");
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status.get(), Some(5), "the trailers' grpc-status");
        let raw = STANDARD.decode(&text).unwrap();
        assert_eq!(
            raw,
            [&b"\x00\x00\x00\x00\x01z"[..], &trailer_frame(&trailers)[..]].concat()
        );
    }
}
