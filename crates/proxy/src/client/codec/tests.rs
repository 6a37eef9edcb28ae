//! Tests of the wire format alone: request heads and chunk framing written, response heads
//! and body framing parsed (RFC 9112), chunked bodies decoded however the bytes arrive.

use super::*;

fn head(raw: &str, head_request: bool) -> Result<Option<ResponseHead>, ProtocolError> {
    parse_response_head(&mut BytesMut::from(raw), head_request)
}

fn complete(raw: &str) -> ResponseHead {
    head(raw, false).unwrap().expect("a complete head")
}

#[test]
fn request_head_carries_every_header_and_its_own_framing() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("api.test"));
    headers.append("x-a", HeaderValue::from_static("1"));
    headers.append("x-a", HeaderValue::from_static("2"));
    // Stale framing headers from the client are replaced by the body's own.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    let uri: Uri = "/v1/items?page=2".parse().unwrap();

    let mut out = Vec::new();
    encode_request_head(
        &mut out,
        &Method::POST,
        &uri,
        &headers,
        &AddedFields::default(),
        RequestFraming::Length(5),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /v1/items?page=2 HTTP/1.1\r\nhost: api.test\r\nx-a: 1\r\nx-a: 2\r\n\
         content-length: 5\r\n\r\n"
    );

    let mut out = Vec::new();
    encode_request_head(
        &mut out,
        &Method::PUT,
        &uri,
        &HeaderMap::new(),
        &AddedFields::default(),
        RequestFraming::Chunked,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "PUT /v1/items?page=2 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );

    let mut out = Vec::new();
    let bare: Uri = "/".parse().unwrap();
    encode_request_head(
        &mut out,
        &Method::GET,
        &bare,
        &HeaderMap::new(),
        &AddedFields::default(),
        RequestFraming::Empty,
    );
    assert_eq!(String::from_utf8(out).unwrap(), "GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn added_fields_replace_the_requests_own() {
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    headers.append("x-forwarded-host", HeaderValue::from_static("kept.test"));
    headers.append("x-forwarded-proto", HeaderValue::from_static("gopher"));
    let added = AddedFields {
        forwarded_for: Some(HeaderValue::from_static("10.0.0.9")),
        forwarded_proto: Some(HeaderValue::from_static("http")),
        forwarded_host: None,
        request_id: None,
    };
    let mut out = Vec::new();
    let uri: Uri = "/".parse().unwrap();
    encode_request_head(
        &mut out,
        &Method::GET,
        &uri,
        &headers,
        &added,
        RequestFraming::Empty,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.1\r\nx-forwarded-host: kept.test\r\nx-forwarded-for: 10.0.0.9\r\n\
         x-forwarded-proto: http\r\n\r\n"
    );
    let mut map = HeaderMap::new();
    added.insert_into(&mut map);
    assert_eq!(map.len(), 2);
    assert_eq!(map["x-forwarded-proto"], "http");
}

#[test]
fn framing_of_a_request_body() {
    assert_eq!(
        RequestFraming::for_body(&Method::GET, Some(0)),
        RequestFraming::Empty
    );
    assert_eq!(
        RequestFraming::for_body(&Method::POST, Some(0)),
        RequestFraming::Length(0)
    );
    assert_eq!(
        RequestFraming::for_body(&Method::GET, Some(7)),
        RequestFraming::Length(7)
    );
    assert_eq!(
        RequestFraming::for_body(&Method::POST, None),
        RequestFraming::Chunked
    );
}

#[test]
fn chunk_sizes_and_end_are_encoded() {
    for (len, line) in [
        (0, "0\r\n"),
        (1, "1\r\n"),
        (15, "f\r\n"),
        (16, "10\r\n"),
        (4096, "1000\r\n"),
    ] {
        let mut out = Vec::new();
        encode_chunk_size(&mut out, len);
        assert_eq!(String::from_utf8(out).unwrap(), line, "{len}");
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut out = Vec::new();
    encode_chunked_end(&mut out, Some(&trailers));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0\r\ngrpc-status: 0\r\n\r\n"
    );
}

#[test]
fn a_response_head_is_parsed_and_removed_from_the_buffer() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Multi: a\r\nx-multi: b\r\n\r\nhello",
    );
    let head = parse_response_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.framing, BodyFraming::Length(5));
    assert!(head.keep_alive);
    let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn a_partial_head_waits_and_an_oversized_one_fails() {
    assert!(head("HTTP/1.1 200 OK\r\nContent-Le", false)
        .unwrap()
        .is_none());
    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD_BYTES));
    assert_eq!(head(&huge, false).unwrap_err(), ProtocolError::HeadTooLarge);
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(head(&many, false).unwrap_err(), ProtocolError::HeadTooLarge);
    assert_eq!(
        head("SSH-2.0-OpenSSH\r\n\r\n", false).unwrap_err(),
        ProtocolError::BadHead
    );
}

#[test]
fn body_framing_follows_rfc_9112() {
    let framing = |raw: &str| complete(raw).framing;
    assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), BodyFraming::UntilClose);
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        BodyFraming::Chunked
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"),
        BodyFraming::Chunked
    );
    // Any coding but chunked alone: the gateway cannot pass the body on (502).
    for codings in [
        "gzip, chunked",
        "chunked, gzip",
        "gzip",
        "identity",
        "chunked, chunked",
        "",
    ] {
        let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n");
        assert_eq!(
            head(&raw, false).unwrap_err(),
            ProtocolError::UnsupportedTransferCoding,
            "{codings}"
        );
    }
    // Transfer-Encoding overrides Content-Length.
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        BodyFraming::Chunked
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        BodyFraming::Empty
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"),
        BodyFraming::Length(7)
    );
    assert_eq!(
        framing("HTTP/1.1 204 No Content\r\n\r\n"),
        BodyFraming::Empty
    );
    assert_eq!(
        framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        BodyFraming::Empty
    );
    // Content-Length is not read where it does not delimit the body: no error for a bad
    // one beside Transfer-Encoding (it is removed) or on a 304.
    let beside =
        complete("HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(beside.framing, BodyFraming::Chunked);
    assert!(!beside.headers.contains_key("content-length"));
    assert_eq!(
        framing("HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n"),
        BodyFraming::Empty
    );
    let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(to_head.framing, BodyFraming::Empty);
    for bad in ["1, 2", "-1", "0x10", "", "12a", "99999999999999999999"] {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            head(&raw, false).unwrap_err(),
            ProtocolError::BadContentLength,
            "{bad}"
        );
    }
}

#[test]
fn keep_alive_by_version_and_connection_options() {
    let keep = |raw: &str| complete(raw).keep_alive;
    assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
    assert!(!keep(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
    ));
    assert!(!keep(
        "HTTP/1.1 200 OK\r\nConnection: x-foo, Close\r\nContent-Length: 1\r\n\r\n"
    ));
    assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
    assert!(keep(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"
    ));
    // A body delimited by the close ends the connection whatever it says.
    assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"));
}

/// Decodes `wire` fed to the decoder in pieces of `step` bytes; returns the body and the
/// trailers.
fn decode_in_steps(
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>), ProtocolError> {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = None;
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Trailers(t) => trailers = Some(t),
            Decoded::End => return Ok((body, trailers)),
            Decoded::NeedMore => {
                assert!(
                    fed < wire.len(),
                    "the decoder wants more than the whole body"
                );
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_however_the_bytes_arrive() {
    let wire = b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\n\r\n";
    for step in 1..=wire.len() {
        let (body, trailers) = decode_in_steps(wire, step).unwrap();
        assert_eq!(body, b"hello 0123456789", "step {step}");
        assert!(trailers.is_none());
    }
    let with_trailers = b"3\r\nabc\r\n0\r\nx-checksum: 42\r\nx-other: y\r\n\r\n";
    for step in 1..=with_trailers.len() {
        let (body, trailers) = decode_in_steps(with_trailers, step).unwrap();
        assert_eq!(body, b"abc");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "42");
        assert_eq!(trailers["x-other"], "y");
    }
}

#[test]
fn the_decoder_stops_at_the_end_of_the_body() {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK"[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"ok"))
    );
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::End);
    assert!(decoder.is_end());
    assert_eq!(&buf[..], b"HTTP/1.1 200 OK");
}

#[test]
fn broken_chunked_framing_is_refused() {
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5\nhello\r\n",
        b"5\r\nhelloX\r\n",
        b"5\r\nhello\rX",
        b"11111111111111111\r\n",
        b"5\r\x00",
        b"2 zz\r\nhi\r\n",
        b";x\r\n",
        b"5;a\nb\r\n",
        b"5;\x00\r\n",
    ] {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(bad);
        let result = loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::NeedMore) => break Ok(()),
                Ok(_) => continue,
                Err(error) => break Err(error),
            }
        };
        assert_eq!(
            result,
            Err(ProtocolError::BadChunk),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let bad_trailer = b"0\r\nno colon here\r\n\r\n";
    assert_eq!(
        decode_in_steps(bad_trailer, bad_trailer.len()).unwrap_err(),
        ProtocolError::BadTrailers
    );
}

#[test]
fn content_length_is_made_to_match_the_framing() {
    // Transfer-Encoding wins, and the length goes (RFC 9112 §6.3).
    let both =
        complete("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(!both.headers.contains_key(header::CONTENT_LENGTH));
    // Repeated equal values become one.
    let repeated = complete("HTTP/1.1 200 OK\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n");
    let values: Vec<_> = repeated
        .headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .collect();
    assert_eq!(values, ["7"]);
    let listed = complete("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
    assert_eq!(listed.headers[header::CONTENT_LENGTH], "7");
    // A bodiless response keeps what it says about the representation.
    let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(to_head.headers[header::CONTENT_LENGTH], "10");
}
