//! A thin client of Consul's real HTTP API, for tests: what a service or an operator does with
//! `curl` (register, deregister, pass/warn/fail a TTL check, read health). It knows nothing of
//! the double and works the same against a real agent.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A failed API call: the status (none when the agent was unreachable) and the body.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status, or `None` when no answer came.
    pub status: Option<StatusCode>,
    /// The answer's body, or the transport error.
    pub body: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{status}: {}", self.body),
            None => write!(f, "unreachable: {}", self.body),
        }
    }
}

impl std::error::Error for ApiError {}

/// An answer: status, `X-Consul-Index` if present, body.
#[derive(Debug)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// `X-Consul-Index`, parsed.
    pub index: Option<u64>,
    /// `X-Consul-Results-Filtered-By-ACLs: true` was present.
    pub filtered_by_acls: bool,
    /// `X-Consul-Default-ACL-Policy` (`allow` or `deny`), when present.
    pub default_acl_policy: Option<String>,
    /// `X-Consul-Effective-Consistency` (`leader`, `stale`, `consistent`), when present.
    pub consistency: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A client of one agent, optionally with an ACL token (sent as `X-Consul-Token`).
#[derive(Clone, Debug)]
pub struct AgentClient {
    address: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AgentClient {
    /// A client of the agent at `address` (`http://127.0.0.1:8500`). Plain HTTP only.
    pub fn new(address: &str) -> Self {
        AgentClient {
            address: address.trim_end_matches('/').to_owned(),
            token: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The same client, sending `token`.
    #[must_use]
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Any request; `path_and_query` starts with `/v1/`. Times out after 15 s.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<ApiResponse, ApiError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.address));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = request.body(Full::new(body)).map_err(|e| ApiError {
            status: None,
            body: e.to_string(),
        })?;
        let unreachable = |e: String| ApiError {
            status: None,
            body: e,
        };
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let filtered_by_acls = response
            .headers()
            .get("X-Consul-Results-Filtered-By-ACLs")
            .is_some_and(|v| v == "true");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let default_acl_policy = header("X-Consul-Default-ACL-Policy");
        let consistency = header("X-Consul-Effective-Consistency");
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok(ApiResponse {
            status,
            index,
            filtered_by_acls,
            default_acl_policy,
            consistency,
            body,
        })
    }

    async fn put(&self, path_and_query: &str, body: Option<&Value>) -> Result<(), ApiError> {
        let response = self.call(Method::PUT, path_and_query, body).await?;
        if response.status.is_success() {
            Ok(())
        } else {
            Err(ApiError {
                status: Some(response.status),
                body: String::from_utf8_lossy(&response.body).into_owned(),
            })
        }
    }

    /// `PUT /v1/agent/service/register` with a service definition
    /// (`{"ID","Name","Tags","Address","Port","Meta","Weights","Check":{"TTL":"10m"}}`).
    pub async fn register(&self, definition: &Value) -> Result<(), ApiError> {
        self.put("/v1/agent/service/register", Some(definition))
            .await
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ApiError> {
        self.put(
            &format!("/v1/agent/service/deregister/{}", encode(service_id)),
            None,
        )
        .await
    }

    /// `PUT /v1/agent/check/pass/<check-id>`.
    pub async fn pass(&self, check_id: &str) -> Result<(), ApiError> {
        self.put(&format!("/v1/agent/check/pass/{}", encode(check_id)), None)
            .await
    }

    /// `PUT /v1/agent/check/warn/<check-id>`.
    pub async fn warn(&self, check_id: &str) -> Result<(), ApiError> {
        self.put(&format!("/v1/agent/check/warn/{}", encode(check_id)), None)
            .await
    }

    /// `PUT /v1/agent/check/fail/<check-id>`.
    pub async fn fail(&self, check_id: &str) -> Result<(), ApiError> {
        self.put(&format!("/v1/agent/check/fail/{}", encode(check_id)), None)
            .await
    }

    /// Registers a service with one TTL check (`service:<id>`, 10 min TTL) and passes it:
    /// what a healthy instance does on start.
    pub async fn register_passing(
        &self,
        id: &str,
        name: &str,
        address: &str,
        port: u16,
        tags: &[&str],
    ) -> Result<(), ApiError> {
        self.register(&serde_json::json!({
            "ID": id,
            "Name": name,
            "Address": address,
            "Port": port,
            "Tags": tags,
            "Check": {"TTL": "10m"},
        }))
        .await?;
        self.pass(&format!("service:{id}")).await
    }

    /// `GET /v1/health/service/<name>?<query>`: the index and the entries.
    pub async fn health(&self, service: &str, query: &str) -> Result<(u64, Vec<Value>), ApiError> {
        let response = self
            .call(
                Method::GET,
                &format!("/v1/health/service/{}?{query}", encode(service)),
                None,
            )
            .await?;
        if !response.status.is_success() {
            return Err(ApiError {
                status: Some(response.status),
                body: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        let entries = serde_json::from_slice(&response.body).map_err(|e| ApiError {
            status: Some(response.status),
            body: e.to_string(),
        })?;
        Ok((response.index.unwrap_or(0), entries))
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
