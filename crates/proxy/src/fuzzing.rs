//! Differential fuzz targets for the HTTP/1 grammar (docs/fuzzing.md): built only with the
//! `fuzzing` feature (for `fuzz/`, cargo-fuzz) and in this crate's unit tests, where
//! [`tests`] runs the stable smoke run over `fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/` and a seeded mutation loop, in `make test` like any test.
//!
//! - [`http1_request_guard`]: a client byte stream through the head guard's scanner.
//!   Read boundaries never change its verdict; every head it lets through, httparse (the
//!   parser hyper runs next) parses to the same end, reading the same body framing from
//!   the same fields; every chunked body it lets through ends, for the upstream codec's
//!   decoder, at the same byte.
//! - [`http1_response_codec`]: an upstream's response bytes through the gateway's codec
//!   and through hyper's own HTTP/1 client on an in-memory pipe. When both accept the
//!   response, they agree on the status and on every body byte; the body decodes the same
//!   however the bytes arrive.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::codec::{parse_response_head, BodyFraming, ChunkedDecoder, Decoded};
use crate::head_guard::{BodyStep, Chunk, HeadStep, Refusal, Scanner, State, Step};

/// The head limit the guard runs with in the targets (the gateway's smallest).
const LIMIT: usize = 8192;

/// A fuzz target: takes any bytes, panics on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, for the smoke run and `fuzz/`.
pub const TARGETS: [(&str, Target); 2] = [
    ("http1_request_guard", http1_request_guard),
    ("http1_response_codec", http1_response_codec),
];

// === The request guard ===

/// How a byte stream ends for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Released,
    Pending,
    Refused(Refusal),
}

/// Feeds `data` in pieces of `step` bytes as the guard does (a held partial line is given
/// again with what follows).
fn verdict(data: &[u8], step: usize) -> Verdict {
    let mut scanner = Scanner::new(LIMIT);
    let mut pending = Vec::new();
    for piece in data.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        match scanner.scan(&pending) {
            Step::Release => pending.clear(),
            Step::Hold(n) => drop(pending.drain(..n)),
            Step::Refuse { kind, .. } => return Verdict::Refused(kind),
        }
    }
    if pending.is_empty() {
        Verdict::Released
    } else {
        Verdict::Pending
    }
}

/// The body framing a head asks for, as the guard left its scanner after the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// See the module docs.
pub fn http1_request_guard(data: &[u8]) {
    let whole = verdict(data, data.len());
    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 13);
    let pieces = verdict(data, step);
    // A head over the limit is cut at a point that depends on the pieces; the verdict not.
    assert_eq!(
        whole, pieces,
        "the verdict depends on read boundaries (step {step})"
    );

    let mut scanner = Scanner::new(LIMIT);
    let mut at = 0;
    for _ in 0..32 {
        if at >= data.len() {
            return;
        }
        let HeadStep::Done(used) = scanner.head(&data[at..]) else {
            return;
        };
        let framing = match scanner.state {
            State::Pass => return, // h2 preface or an upgrade: nothing more to compare
            State::Head => Framing::None,
            State::Length(n) => Framing::Length(n),
            State::Chunked(_) => Framing::Chunked,
        };
        compare_with_httparse(&data[at..at + used], framing);
        at += used;
        match framing {
            Framing::None => {}
            Framing::Length(n) => {
                at = at.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                scanner.state = State::Head;
            }
            Framing::Chunked => {
                let Some(end) = compare_chunked(&data[at..]) else {
                    return;
                };
                at += end;
                scanner.state = State::Head;
            }
        }
    }
}

/// A head the guard let through must be one httparse parses to the same end, with the
/// framing the guard follows (or one httparse refuses: hyper then answers 400 itself).
fn compare_with_httparse(head: &[u8], framing: Framing) {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut slots);
    let parsed = request.parse(head);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            panic!("the guard ended a head that httparse has not: {head:?}")
        }
        Err(_) => return,
    };
    assert_eq!(len, head.len(), "the guard and httparse end the head apart");
    // hyper's reading (RFC 9112 §6.3): Transfer-Encoding wins; its final coding says
    // chunked; otherwise Content-Length.
    let mut chunked = None;
    let mut length = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
    }
    let reference = match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => panic!("the guard let through a coding hyper does not read as chunked"),
        (None, Some(0) | None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    assert_eq!(
        framing, reference,
        "framing disagrees with httparse's fields"
    );
}

/// A chunked body the guard lets through ends, for the upstream codec's decoder, at the
/// same byte. Returns where it ends, `None` when it does not (broken or incomplete).
fn compare_chunked(body: &[u8]) -> Option<usize> {
    let mut scanner = Scanner::new(LIMIT);
    let guard = match scanner.chunked(Chunk::SizeLine, body) {
        BodyStep::Used(n) if scanner.state == State::Head => Some(n),
        _ => None,
    };
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(body);
    let codec = loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::End) => break Ok(body.len() - buf.len()),
            Ok(Decoded::NeedMore) => break Err(false),
            Ok(_) => {}
            Err(crate::client::codec::ProtocolError::BadTrailers) => break Err(true),
            Err(_) => break Err(false),
        }
    };
    match (guard, codec) {
        (Some(end), Ok(codec_end)) => assert_eq!(end, codec_end, "chunked body ends apart"),
        // The codec caps trailers (32 fields, 16 KiB); the guard leaves that to hyper.
        (Some(_), Err(true)) => {}
        (Some(end), Err(false)) => panic!("the guard ends a chunked body at {end}, the codec not"),
        (None, _) => {}
    }
    guard
}

// === The upstream response codec ===

/// A response as read: status and body, or why it was not.
type Read = Result<(u16, Vec<u8>), String>;

/// See the module docs.
pub fn http1_response_codec(data: &[u8]) {
    let ours = codec_read(data, data.len());
    let step = 1 + usize::from(data.last().copied().unwrap_or(0) % 7);
    let stepped = codec_read(data, step);
    assert_eq!(
        ours, stepped,
        "the body depends on read boundaries (step {step})"
    );
    let Ok((status, body)) = &ours else {
        return;
    };
    if let Ok((hyper_status, hyper_body)) = hyper_read(data) {
        assert_eq!(*status, hyper_status, "status differs from hyper's");
        assert_eq!(body, &hyper_body, "body differs from hyper's");
    }
}

/// The codec's reading of a response to a `GET` (1xx skipped as the client does), with the
/// bytes arriving `step` at a time.
fn codec_read(data: &[u8], step: usize) -> Read {
    let mut pieces = data.chunks(step.max(1));
    let mut buf = BytesMut::new();
    let head = loop {
        match parse_response_head(&mut buf, false) {
            Ok(Some(head)) if head.status.is_informational() => {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Err("101".into());
                }
            }
            Ok(Some(head)) => break head,
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Err("incomplete head".into()),
            },
            Err(error) => return Err(error.to_string()),
        }
    };
    let mut body = Vec::new();
    match head.framing {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            buf.extend(pieces.flatten());
            let n = usize::try_from(n).map_err(|_| "too long")?;
            if buf.len() < n {
                return Err("incomplete body".into());
            }
            body.extend_from_slice(&buf[..n]);
        }
        BodyFraming::UntilClose => {
            buf.extend(pieces.flatten());
            body.extend_from_slice(&buf);
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::Trailers(_) => {}
                    Decoded::End => break,
                    Decoded::NeedMore => match pieces.next() {
                        Some(piece) => buf.extend_from_slice(piece),
                        None => return Err("incomplete chunked body".into()),
                    },
                }
            }
        }
    }
    Ok((head.status.as_u16(), body))
}

/// hyper's own client reading the same bytes as the answer to a `GET`.
fn hyper_read(data: &[u8]) -> Read {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    });
    let data = Bytes::copy_from_slice(data);
    runtime.block_on(async move {
        let (client, mut server) = tokio::io::duplex(data.len() + 4096);
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = server.write_all(&data).await;
            let _ = server.shutdown().await;
            // Keep reading so that hyper's writes never block.
            while matches!(server.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let exchange = async {
            let io = hyper_util::rt::TokioIo::new(client);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = http::Request::get("/")
                .header("host", "x")
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("a request");
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body.to_vec()))
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    })
}

#[cfg(test)]
mod tests;
