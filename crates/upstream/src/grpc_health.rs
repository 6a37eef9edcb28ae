//! The gRPC health probe (`[upstreams.NAME.health_check] type = "grpc"`): one
//! `grpc.health.v1.Health/Check` call over a fresh prior-knowledge HTTP/2 connection
//! (grpc/grpc doc/health-checking.md). Healthy when the answer's `status` is SERVING (1)
//! and the call ends with `grpc-status: 0`; NOT_SERVING, SERVICE_UNKNOWN, any other status,
//! an error or no answer is unhealthy.
//!
//! The two messages are tiny and fixed, so they are encoded by hand (protobuf wire format):
//! `HealthCheckRequest { string service = 1; }`, `HealthCheckResponse { ServingStatus
//! status = 1; }`.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

/// `ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// One Check call to `address` for `service` ("" = the server as a whole).
pub(crate) async fn check(address: SocketAddr, service: &str) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (client, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = call(client, address, service).await;
    driver.abort();
    result
}

async fn call(
    client: h2::client::SendRequest<Bytes>,
    address: SocketAddr,
    service: &str,
) -> Result<(), String> {
    let mut client = client.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "switchyard-health-check")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut body) = client
        .send_request(request, false)
        .map_err(|e| format!("HTTP/2: {e}"))?;
    body.send_data(frame(&request_message(service)), true)
        .map_err(|e| format!("HTTP/2: {e}"))?;
    let response = response.await.map_err(|e| format!("HTTP/2: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    // A trailers-only answer carries its status in the head.
    if let Some(status) = grpc_status(response.headers()) {
        if status != 0 {
            return Err(format!("grpc-status {status}"));
        }
    }
    let mut recv = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| format!("HTTP/2: {e}"))?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > 4096 {
            return Err("answer too long".into());
        }
    }
    let trailers = recv.trailers().await.map_err(|e| format!("HTTP/2: {e}"))?;
    match trailers.as_ref().and_then(grpc_status) {
        Some(0) => {}
        Some(status) => return Err(format!("grpc-status {status}")),
        None => return Err("no grpc-status".into()),
    }
    let message = unframe(&data).ok_or("malformed answer")?;
    match response_status(message) {
        Some(SERVING) => Ok(()),
        Some(status) => Err(match status {
            0 => "UNKNOWN".to_owned(),
            2 => "NOT_SERVING".to_owned(),
            3 => "SERVICE_UNKNOWN".to_owned(),
            other => format!("status {other}, not SERVING"),
        }),
        None => Err("malformed answer".into()),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `HealthCheckRequest { service }`.
fn request_message(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC message frame: uncompressed flag, 4-byte big-endian length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.extend_from_slice(message);
    out.freeze()
}

/// The message of one uncompressed frame.
fn unframe(data: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = data.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

/// `HealthCheckResponse.status` (0 when absent: proto3 default UNKNOWN).
fn response_status(mut message: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !message.is_empty() {
        let (key, rest) = varint(message)?;
        message = rest;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (value, rest) = varint(message)?;
                status = value;
                message = rest;
            }
            (_, 0) => message = varint(message)?.1,
            (_, 2) => {
                let (len, rest) = varint(message)?;
                message = rest.get(usize::try_from(len).ok()?..)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &data[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(request_message(""), b"");
        assert_eq!(request_message("test.Echo"), b"\x0a\x09test.Echo");
        assert_eq!(&frame(b"ab")[..], b"\x00\x00\x00\x00\x02ab");
        assert_eq!(
            unframe(b"\x00\x00\x00\x00\x02\x08\x01"),
            Some(&b"\x08\x01"[..])
        );
        assert_eq!(response_status(b"\x08\x01"), Some(1));
        assert_eq!(response_status(b"\x08\x02"), Some(2));
        assert_eq!(response_status(b""), Some(0));
        // An unknown field before the status is skipped.
        assert_eq!(response_status(b"\x12\x01x\x08\x01"), Some(1));
        assert_eq!(response_status(b"\x08"), None);
    }
}
