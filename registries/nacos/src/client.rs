//! Talking to a Nacos cluster: server failover, login with token refresh, and the
//! instance-list request (v2 Open API, falling back to v1 on a server without it).
//!
//! - Servers are tried in turn from the last one that answered; a transport error or a 5xx
//!   moves on to the next, and only when every server failed is the fetch an error (as the
//!   Nacos client's `NamingHttpClientProxy.reqApi` walks its server list).
//! - With `username`, `POST /nacos/v1/auth/login` (form `username`, `password`) answers
//!   `{"accessToken","tokenTtl","globalAdmin"}`; the token is sent as `accessToken=` and
//!   renewed once `tokenTtl` minus a tenth of it has passed (the Nacos client's refresh
//!   window), or at once when a server answers 403 (`token expired!`, `token invalid!`).
//! - The instance list is `GET <ctx>/v2/ns/instance/list?namespaceId&groupName&serviceName
//!   &clusterName&healthyOnly=true` (Nacos >= 2.2); a 404 there (an older server) switches
//!   that server to `GET <ctx>/v1/ns/instance/list` with `serviceName=GROUP@@name` and
//!   `clusters`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};
use switchyard_registry::RegistryError;

use crate::config::Config;

/// A login token and when to renew it.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// The client of one registry, shared by its watches.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    config: Config,
    /// The server to try first.
    current: AtomicUsize,
    /// Per server: whether it lacks the v2 API.
    v1_only: Vec<AtomicBool>,
    token: Mutex<Option<Token>>,
}

/// What went wrong with one server.
enum Failure {
    /// Try the next server.
    Next(RegistryError),
    /// Stop: the answer was authoritative (bad credentials, a refused query).
    Stop(RegistryError),
}

impl Client {
    /// A client of the configured servers.
    pub fn new(http: reqwest::Client, config: Config) -> Self {
        let v1_only = config
            .servers
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        Client {
            http,
            config,
            current: AtomicUsize::new(0),
            v1_only,
            token: Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The instance list of `group@@service`, from the first server that answers.
    pub async fn instances(
        &self,
        group: &str,
        service: &str,
    ) -> Result<serde_json::Value, RegistryError> {
        let count = self.config.servers.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for attempt in 0..count {
            let index = (start + attempt) % count;
            match self.list_from(index, group, service).await {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Failure::Stop(error)) => return Err(error),
                Err(Failure::Next(error)) => errors.push(error),
            }
        }
        let kind_of_last = errors.last().map(RegistryError::kind);
        let text: Vec<&str> = errors.iter().map(RegistryError::message).collect();
        let message = format!("every nacos server failed: {}", text.join("; "));
        Err(match kind_of_last {
            Some(kind) => RegistryError::new(kind, message),
            None => RegistryError::unavailable(message),
        })
    }

    async fn list_from(
        &self,
        index: usize,
        group: &str,
        service: &str,
    ) -> Result<serde_json::Value, Failure> {
        let base = &self.config.servers[index];
        let mut relogged = false;
        loop {
            let token = self.token(base).await?;
            let v1 = self.v1_only[index].load(Ordering::Relaxed);
            let url = self.list_url(base, v1, group, service, token.as_deref());
            let response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| Failure::Next(transport(base, &e)))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| Failure::Next(transport(base, &e)))?;
            let text = String::from_utf8_lossy(&body);
            match status {
                s if s.is_success() => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        Failure::Next(RegistryError::protocol(format!(
                            "nacos at {base} answered the list of {group}@@{service} with something other than JSON: {e}"
                        )))
                    })
                }
                StatusCode::NOT_FOUND if !v1 => {
                    tracing::info!(server = %base, "nacos server has no v2 Open API; using v1");
                    self.v1_only[index].store(true, Ordering::Relaxed);
                }
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
                    if self.config.credentials.is_some() && !relogged =>
                {
                    relogged = true;
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                    return Err(Failure::Stop(RegistryError::unauthorized(format!(
                        "nacos at {base} refused to list {group}@@{service}: {} {}",
                        status.as_u16(),
                        text.trim()
                    ))))
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(Failure::Next(RegistryError::unavailable(format!(
                        "nacos at {base} failed to list {group}@@{service}: {} {}",
                        status.as_u16(),
                        text.trim()
                    ))))
                }
                _ => {
                    return Err(Failure::Stop(RegistryError::invalid_query(format!(
                        "nacos at {base} refused to list {group}@@{service}: {} {}",
                        status.as_u16(),
                        text.trim()
                    ))))
                }
            }
        }
    }

    /// The list URL for `base`.
    pub fn list_url(
        &self,
        base: &Url,
        v1: bool,
        group: &str,
        service: &str,
        token: Option<&str>,
    ) -> Url {
        let path = if v1 {
            "v1/ns/instance/list"
        } else {
            "v2/ns/instance/list"
        };
        let mut url = base.join(path).expect("a relative path joins");
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("namespaceId", &self.config.namespace);
            let clusters = self.config.clusters.join(",");
            if v1 {
                pairs.append_pair("serviceName", &format!("{group}@@{service}"));
                if !clusters.is_empty() {
                    pairs.append_pair("clusters", &clusters);
                }
            } else {
                pairs.append_pair("groupName", group);
                pairs.append_pair("serviceName", service);
                if !clusters.is_empty() {
                    pairs.append_pair("clusterName", &clusters);
                }
            }
            pairs.append_pair("healthyOnly", "true");
            if let Some(token) = token {
                pairs.append_pair("accessToken", token);
            }
        }
        url
    }

    /// The current token, logging in (at `base`) when there is none or it is due.
    async fn token(&self, base: &Url) -> Result<Option<String>, Failure> {
        let Some((username, password)) = &self.config.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            if Instant::now() < token.renew_at {
                return Ok(Some(token.value));
            }
        }
        let url = base.join("v1/auth/login").expect("a relative path joins");
        let response = self
            .http
            .post(url)
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .map_err(|e| Failure::Next(transport(base, &e)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            return Err(Failure::Stop(RegistryError::unauthorized(format!(
                "nacos at {base} refused the login of {username:?}: {} {}",
                status.as_u16(),
                text.trim()
            ))));
        }
        if !status.is_success() {
            return Err(Failure::Next(RegistryError::unavailable(format!(
                "nacos at {base} failed the login: {} {}",
                status.as_u16(),
                text.trim()
            ))));
        }
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let Some(value) = answer["accessToken"].as_str().map(str::to_owned) else {
            return Err(Failure::Next(RegistryError::protocol(format!(
                "nacos at {base} answered the login without accessToken: {}",
                text.trim()
            ))));
        };
        let ttl = Duration::from_secs(answer["tokenTtl"].as_u64().unwrap_or(18_000));
        let renew_at = Instant::now() + ttl - ttl / 10;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(Token {
            value: value.clone(),
            renew_at,
        });
        Ok(Some(value))
    }
}

fn transport(base: &Url, err: &reqwest::Error) -> RegistryError {
    let mut message = format!("nacos at {base} unreachable: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    RegistryError::unavailable(message)
}
