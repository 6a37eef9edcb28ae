//! `switchyard register`: keeps one instance's key in etcd under a lease, for services that
//! have no agent of their own.
//!
//! ```text
//! switchyard register --etcd http://127.0.0.1:2379 --service echo --address 10.0.0.5:8080 \
//!     [--weight 3] [--ttl 10s]
//! ```
//!
//! [`run`] grants a lease of `ttl`, puts `<prefix>/<service>/<instance-id>` with a JSON value
//! (`{"host","port","weight","priority","metadata"}`, the format the etcd registry reads)
//! attached to the lease, and renews the lease every `ttl / 3`. When the `shutdown` future
//! completes (the CLI passes SIGTERM or Ctrl-C) it revokes the lease, which deletes the key
//! at once. A process that dies without revoking (SIGKILL, a crash, a lost host) stops
//! renewing, so etcd deletes the key when the lease runs out, at most `ttl` later.
//!
//! While etcd is unreachable the helper keeps retrying with the shared jittered backoff; a
//! lease that expired meanwhile is replaced by a new one and the key put again.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use switchyard_registry::{Backoff, RegistryError};

use crate::config::{normalize_prefix, ConnectSettings, DEFAULT_PREFIX};
use crate::connect::{classify, connect, REQUEST_TIMEOUT};
use crate::entry::parse_host_port;

/// The default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The shortest lease TTL accepted (etcd raises shorter ones to its own minimum anyway).
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// How long the revoke at shutdown may take before the key is left to expire.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

/// What to register and where: the options of `switchyard register`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How to reach etcd: `--etcd URL` (several URLs fail over), plus optional
    /// username/password and TLS files. See [`ConnectSettings`] for defaults.
    pub connect: ConnectSettings,
    /// The key prefix, as in the registry's `prefix`. Default `/switchyard/services`.
    pub prefix: String,
    /// The service: the `<service>` key segment (`--service`). Required, no `/`.
    pub service: String,
    /// Where the instance listens, `HOST:PORT` (`--address`); `HOST` may be an IP
    /// (`[::1]:80` for IPv6) or a name, which the gateway resolves. Required.
    pub address: String,
    /// The `<instance-id>` key segment. Default (`None`): the address.
    pub instance_id: Option<String>,
    /// Balancer weight written in the value (`--weight`). Default 1.
    pub weight: u32,
    /// Priority within the source written in the value; lower is preferred. Default 0.
    pub priority: u32,
    /// Labels written in the value's `metadata`; `zone` becomes the endpoint's zone.
    /// Default empty.
    pub metadata: BTreeMap<String, String>,
    /// Lease TTL (`--ttl`): how long the key outlives a process that dies without
    /// revoking. Rounded up to whole seconds; at least 2 s. Default 10 s.
    pub ttl: Duration,
}

impl RegisterOptions {
    /// Options with the defaults: one endpoint, the default prefix, weight 1, priority 0,
    /// no metadata, a 10 s TTL and the address as instance id.
    pub fn new(
        endpoint: impl Into<String>,
        service: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        RegisterOptions {
            connect: ConnectSettings::new(vec![endpoint.into()]),
            prefix: DEFAULT_PREFIX.to_owned(),
            service: service.into(),
            address: address.into(),
            instance_id: None,
            weight: 1,
            priority: 0,
            metadata: BTreeMap::new(),
            ttl: DEFAULT_TTL,
        }
    }

    /// The key written: `<prefix>/<service>/<instance-id>`.
    pub fn key(&self) -> String {
        let prefix = normalize_prefix(&self.prefix).unwrap_or_else(|_| self.prefix.clone());
        let instance = self.instance_id.as_deref().unwrap_or(&self.address);
        format!("{prefix}/{}/{instance}", self.service)
    }

    /// The value written: `{"host","port","weight","priority","metadata"}`.
    pub fn value(&self) -> Result<String, RegisterError> {
        let entry = parse_host_port(&self.address)
            .map_err(|err| RegisterError::Invalid(format!("--address: {err}")))?;
        let mut value = serde_json::json!({
            "host": entry.host,
            "port": entry.port,
            "weight": self.weight,
            "priority": self.priority,
        });
        if !self.metadata.is_empty() {
            value["metadata"] = serde_json::json!(self.metadata);
        }
        Ok(value.to_string())
    }

    /// Every problem with the options, one message each.
    fn check(&self) -> Result<(), RegisterError> {
        let mut problems = Vec::new();
        if let Err(err) = crate::check_service(&self.service) {
            problems.push(format!("--service: {err}"));
        }
        if let Err(RegisterError::Invalid(err)) = self.value() {
            problems.push(err);
        }
        if let Err(err) = normalize_prefix(&self.prefix) {
            problems.push(format!("--prefix: {err}"));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty() {
                problems.push("instance id: must not be empty".to_owned());
            }
        }
        if self.ttl < MIN_TTL {
            problems.push(format!(
                "--ttl: at least {}",
                humantime::format_duration(MIN_TTL)
            ));
        }
        for issue in self.connect.check() {
            let name = issue
                .path
                .split(['[', '.'])
                .next()
                .unwrap_or_default()
                .to_owned();
            let flag = if name == "endpoints" {
                "etcd".to_owned()
            } else {
                name.replace('_', "-")
            };
            problems.push(format!("--{flag}: {}", issue.message));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RegisterError::Invalid(problems.join("\n")))
        }
    }

    fn ttl_seconds(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The options are invalid; the message names each bad option, one per line.
    #[error("{0}")]
    Invalid(String),
}

/// Registers the instance and keeps it registered until `shutdown` completes, then revokes
/// the lease (deleting the key) and returns `Ok`.
///
/// Fails at once only for invalid options. An unreachable etcd is retried with backoff
/// (logged as warnings), since a sidecar must outlive an etcd restart.
pub async fn run<F>(options: RegisterOptions, shutdown: F) -> Result<(), RegisterError>
where
    F: Future<Output = ()>,
{
    options.check()?;
    let backoff = Backoff::default();
    let mut lease: Option<(Client, i64)> = None;
    let mut attempt = 0u32;
    tokio::pin!(shutdown);
    loop {
        let err = tokio::select! {
            () = &mut shutdown => break,
            result = keep_registered(&options, &mut lease, &mut attempt) => match result {
                Ok(never) => match never {},
                Err(err) => err,
            },
        };
        let delay = backoff.delay(attempt, Some(&err));
        attempt = attempt.saturating_add(1);
        tracing::warn!(key = %options.key(), ?delay, "etcd registration interrupted: {err}");
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    if let Some((mut client, id)) = lease {
        match tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(id)).await {
            Ok(Ok(_)) => tracing::info!(key = %options.key(), "lease revoked, key deleted"),
            Ok(Err(err)) => tracing::warn!(
                key = %options.key(),
                "could not revoke the lease ({err}); the key expires with it"
            ),
            Err(_) => tracing::warn!(
                key = %options.key(),
                "revoking the lease timed out; the key expires with it"
            ),
        }
    }
    Ok(())
}

/// Grants a lease, puts the key with it and renews it until something fails.
async fn keep_registered(
    options: &RegisterOptions,
    lease: &mut Option<(Client, i64)>,
    attempt: &mut u32,
) -> Result<Infallible, RegistryError> {
    let key = options.key();
    let value = options
        .value()
        .map_err(|err| RegistryError::invalid_query(err.to_string()))?;
    let ttl = options.ttl_seconds();
    let mut client = connect(&options.connect).await?;
    let granted = timed("granting a lease", client.lease_grant(ttl, None)).await?;
    let id = granted.id();
    *lease = Some((client.clone(), id));
    let put = client.put(key.clone(), value, Some(PutOptions::new().with_lease(id)));
    timed("putting the key", put).await?;
    tracing::info!(%key, lease = id, ttl = granted.ttl(), "registered in etcd");
    *attempt = 0;

    let (mut keeper, mut answers) =
        timed("opening the lease keep-alive", client.lease_keep_alive(id)).await?;
    let every = (options.ttl / 3).max(Duration::from_millis(500));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        keeper
            .keep_alive()
            .await
            .map_err(|err| classify("renewing the lease", &err))?;
        match tokio::time::timeout(every, answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
            Ok(Ok(Some(_))) => {
                return Err(RegistryError::unavailable(
                    "the lease expired; registering again",
                ))
            }
            Ok(Ok(None)) => {
                return Err(RegistryError::unavailable(
                    "etcd closed the keep-alive stream",
                ))
            }
            Ok(Err(err)) => return Err(classify("renewing the lease", &err)),
            Err(_) => return Err(RegistryError::unavailable("no answer to a lease renewal")),
        }
    }
}

/// Runs one etcd request with [`REQUEST_TIMEOUT`].
async fn timed<T>(
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(classify(what, &err)),
        Err(_) => Err(RegistryError::unavailable(format!("{what} timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the key and value written for `options`, or a fragment of the error.
    fn check(options: RegisterOptions, expected: Result<(&str, &str), &str>) {
        let got = options
            .check()
            .and_then(|()| Ok((options.key(), options.value()?)));
        match (got, expected) {
            (Ok((key, value)), Ok((want_key, want_value))) => {
                assert_eq!(key, want_key);
                assert_eq!(value, want_value);
            }
            (Err(err), Err(want)) => {
                assert!(err.to_string().contains(want), "{err} lacks {want:?}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    fn options(address: &str) -> RegisterOptions {
        RegisterOptions::new("http://127.0.0.1:2379", "echo", address)
    }

    #[test]
    fn keys_and_values() {
        check(
            options("10.0.0.5:8080"),
            Ok((
                "/switchyard/services/echo/10.0.0.5:8080",
                r#"{"host":"10.0.0.5","port":8080,"priority":0,"weight":1}"#,
            )),
        );
        let mut custom = options("app.internal:80");
        custom.prefix = "/apps/".into();
        custom.instance_id = Some("pod-1".into());
        custom.weight = 3;
        custom.metadata.insert("zone".into(), "a".into());
        check(
            custom,
            Ok((
                "/apps/echo/pod-1",
                r#"{"host":"app.internal","metadata":{"zone":"a"},"port":80,"priority":0,"weight":3}"#,
            )),
        );
        check(
            options("[::1]:80"),
            Ok((
                "/switchyard/services/echo/[::1]:80",
                r#"{"host":"::1","port":80,"priority":0,"weight":1}"#,
            )),
        );
        check(
            options("10.0.0.5"),
            Err("--address: \"10.0.0.5\" is neither"),
        );
        let mut bad = RegisterOptions::new("ftp://x", "a/b", "h:1");
        bad.ttl = Duration::from_secs(1);
        check(bad, Err("--service: \"a/b\""));
        let mut bad = options("h:1");
        bad.ttl = Duration::from_millis(500);
        check(bad, Err("--ttl: at least 2s"));
        check(
            RegisterOptions::new("ftp://x", "echo", "h:1"),
            Err("--etcd: \"ftp://x\""),
        );
    }

    #[test]
    fn ttl_rounds_up() {
        let mut o = options("h:1");
        o.ttl = Duration::from_millis(2500);
        assert_eq!(o.ttl_seconds(), 3);
        o.ttl = Duration::from_secs(10);
        assert_eq!(o.ttl_seconds(), 10);
    }
}
