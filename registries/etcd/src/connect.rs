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
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a client on the first endpoint that answers, trying them all from a random
/// starting point (so that many gateways spread over the cluster). A dead endpoint costs
/// at most `dial_timeout`; the error names every endpoint's failure.
///
/// Each client talks to one endpoint: when it dies, the watch breaks, and the reconnect
/// that follows lands on another live one (fail over).
pub async fn connect(settings: &ConnectSettings) -> Result<Client, RegistryError> {
    let count = settings.endpoints.len();
    let start = if count > 1 {
        fastrand::usize(..count)
    } else {
        0
    };
    let mut failures = Vec::new();
    let mut unauthorized = false;
    for endpoint in settings.endpoints.iter().cycle().skip(start).take(count) {
        let options = connect_options(settings, endpoint)?;
        match connect_one(endpoint, settings.dial_timeout, options).await {
            Ok(client) => return Ok(client),
            Err(err) => {
                tracing::debug!(endpoint, "etcd endpoint unusable: {err}");
                unauthorized |= err.kind() == switchyard_registry::ErrorKind::Unauthorized;
                failures.push(format!("{endpoint}: {err}"));
            }
        }
    }
    let message = format!("no usable etcd endpoint ({})", failures.join("; "));
    Err(if unauthorized {
        RegistryError::unauthorized(message)
    } else {
        RegistryError::unavailable(message)
    })
}

/// Connects to one endpoint and checks that it answers (a status request; with a username,
/// the authentication request comes first).
async fn connect_one(
    endpoint: &str,
    dial_timeout: Duration,
    options: ConnectOptions,
) -> Result<Client, RegistryError> {
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options))
            .await
            .map_err(|err| classify("connecting", &err))?;
        client
            .status()
            .await
            .map_err(|err| classify("status request", &err))?;
        Ok(client)
    };
    match tokio::time::timeout(dial_timeout + REQUEST_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::unavailable("timed out")),
    }
}

/// Options for one endpoint: TLS for `https://` ones, and for scheme-less ones when TLS
/// files are configured.
fn connect_options(
    settings: &ConnectSettings,
    endpoint: &str,
) -> Result<ConnectOptions, RegistryError> {
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
    let tls = endpoint.starts_with("https://")
        || (!endpoint.starts_with("http://") && settings.uses_tls());
    if tls {
        options = options.with_tls(tls_options(settings)?);
    }
    Ok(options)
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
            // etcd reports refused credentials as InvalidArgument ("etcdserver:
            // authentication failed, invalid user ID or password", "user name is empty",
            // "invalid auth token").
            Code::InvalidArgument if is_auth_message(status.message()) => {
                RegistryError::unauthorized(message)
            }
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

fn is_auth_message(message: &str) -> bool {
    [
        "authentication failed",
        "user name is empty",
        "invalid auth token",
        "permission denied",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// A copy of `err` (registry errors are not `Clone`), to send to several subscribers.
pub(crate) fn copy_error(err: &RegistryError) -> RegistryError {
    let copy = RegistryError::new(err.kind(), err.message());
    match err.retry_after() {
        Some(delay) => copy.with_retry_after(delay),
        None => copy,
    }
}
