//! Opening an etcd client from [`ConnectSettings`], and mapping client errors to
//! [`RegistryError`] kinds.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use switchyard_registry::RegistryError;

use crate::config::ConnectSettings;

/// HTTP/2 ping interval on an open connection, so a dead peer is noticed without traffic.
/// etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one unary request (a page of a get, a lease call) may take once connected.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a client. Connections are made lazily by the client's balanced channel, which
/// spreads requests over all endpoints and skips those that are down; with a username,
/// the first authentication request is made here.
pub(crate) async fn connect(settings: &ConnectSettings) -> Result<Client, RegistryError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(settings.dial_timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if settings.uses_tls() || settings.endpoints.iter().any(|e| e.starts_with("https://")) {
        options = options.with_tls(tls_options(settings)?);
    }
    let connecting = Client::connect(&settings.endpoints, Some(options));
    match tokio::time::timeout(settings.dial_timeout + REQUEST_TIMEOUT, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(classify("connecting to etcd", &err)),
        Err(_) => Err(RegistryError::unavailable(format!(
            "connecting to etcd at {} timed out",
            settings.endpoints.join(", ")
        ))),
    }
}

fn tls_options(settings: &ConnectSettings) -> Result<TlsOptions, RegistryError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            RegistryError::unavailable(format!("cannot read {}: {err}", path.display()))
        })
    };
    let mut tls = TlsOptions::new();
    tls = match &settings.ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => tls.with_enabled_roots(),
    };
    if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// Maps a client error to a registry error kind: refused credentials are `unauthorized`,
/// transport failures `unavailable`, anything else `protocol`.
pub(crate) fn classify(what: &str, err: &etcd_client::Error) -> RegistryError {
    use etcd_client::Error as E;
    use tonic::Code;
    let message = format!("{what}: {err}");
    match err {
        E::GRpcStatus(status) => match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => RegistryError::unauthorized(message),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal => RegistryError::unavailable(message),
            _ => RegistryError::protocol(message),
        },
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => {
            RegistryError::unavailable(message)
        }
        _ => RegistryError::protocol(message),
    }
}

/// A copy of `err` (registry errors are not `Clone`), to send to several subscribers.
pub(crate) fn copy_error(err: &RegistryError) -> RegistryError {
    let copy = RegistryError::new(err.kind(), err.message());
    match err.retry_after() {
        Some(delay) => copy.with_retry_after(delay),
        None => copy,
    }
}
