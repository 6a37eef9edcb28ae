//! The one ZooKeeper session a registry shares between its watched services.
//!
//! The session is opened by the first watch and reused while it is connected. The client
//! (`zookeeper-client`) fails over between the `servers` on its own and keeps the session
//! (and its watches) across a reconnect within the session timeout; Switchyard still treats
//! every disconnect as a break ([`Sessions::client`] refuses a disconnected session) so that
//! each service is read again in full once the connection is back. A session that expired,
//! was closed or failed authentication is replaced by a new one on the next watch.

use std::time::Duration;

use switchyard_registry::RegistryError;
use tokio::sync::Mutex;
use zookeeper_client as zk;

use crate::config::Config;

/// Opens and keeps the registry's session.
pub(crate) struct Sessions {
    config: Config,
    current: Mutex<Option<zk::Client>>,
}

impl Sessions {
    pub(crate) fn new(config: Config) -> Self {
        Sessions {
            config,
            current: Mutex::new(None),
        }
    }

    /// The connected session, opening a new one when there is none or the last one ended.
    /// A session that is reconnecting is an error: the caller's watch fails, its set goes
    /// stale, and the recover wrapper asks again after a backoff.
    pub(crate) async fn client(&self) -> Result<zk::Client, RegistryError> {
        let mut current = self.current.lock().await;
        if let Some(client) = current.as_ref() {
            match client.state() {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    return Ok(client.clone());
                }
                zk::SessionState::Disconnected => {
                    return Err(RegistryError::unavailable(format!(
                        "disconnected from ZooKeeper {}; reconnecting session {}",
                        self.config.connect_string(),
                        client.session_id()
                    )));
                }
                state => {
                    tracing::info!(
                        servers = %self.config.connect_string(),
                        "ZooKeeper session {} ended ({state}); opening a new one",
                        client.session_id()
                    );
                    *current = None;
                }
            }
        }
        let client = self.connect().await?;
        tracing::info!(
            servers = %self.config.connect_string(),
            "ZooKeeper session {} open (timeout {:?})",
            client.session_id(),
            client.session_timeout()
        );
        *current = Some(client.clone());
        Ok(client)
    }

    /// Opens a session, trying each server once.
    async fn connect(&self) -> Result<zk::Client, RegistryError> {
        let config = &self.config;
        let mut connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.connect_timeout)
            .with_fail_eagerly();
        if let Some(digest) = &config.digest {
            connector = connector.with_auth("digest", digest.as_bytes());
        }
        // Each server once, plus the session handshake.
        let servers = u32::try_from(config.servers.len()).unwrap_or(u32::MAX);
        let limit = config.connect_timeout.saturating_mul(servers) + config.session_timeout;
        match tokio::time::timeout(limit, connector.connect(&config.connect_string())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(classify(
                &error,
                &format!("cannot connect to ZooKeeper {}", config.connect_string()),
            )),
            Err(_) => Err(RegistryError::unavailable(format!(
                "cannot connect to ZooKeeper {} within {limit:?}",
                config.connect_string()
            ))),
        }
    }

    /// The time one request may take before the connection counts as broken.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.config.session_timeout
    }
}

/// A ZooKeeper error as a registry error of the right kind.
pub(crate) fn classify(error: &zk::Error, context: &str) -> RegistryError {
    let message = format!("{context}: {error}");
    match error {
        zk::Error::AuthFailed | zk::Error::NoAuth => RegistryError::unauthorized(message),
        zk::Error::BadArguments(_) => RegistryError::invalid_query(message),
        _ => RegistryError::unavailable(message),
    }
}
