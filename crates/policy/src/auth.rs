//! Access control filters: client IP allow/deny lists, and consumer authentication
//! (`auth = ["key", "jwt", "basic"]`, any one suffices) with the per-route consumer
//! allow-list.
//!
//! A request without valid credentials gets 401 with one `WWW-Authenticate` challenge per
//! accepted method; a known consumer outside the route's `allow` gets 403. On success the
//! consumer is put in the request context and sent upstream in `x-consumer` (a value the
//! client sent there is always removed), and the credentials are removed from the request
//! unless `forward_credentials = true`.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use ipnet::IpNet;
use switchyard_proxy::body::ProxyBody;
use switchyard_proxy::error::json_error;
use switchyard_proxy::{Filter, RequestContext};

use crate::consumers::Consumers;
use crate::jwt::JwtVerifier;
use crate::metrics::RouteCounters;

/// The header naming the consumer to the upstream.
pub const X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");

/// `ip_allow` / `ip_deny`.
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    counters: Arc<RouteCounters>,
}

impl IpFilter {
    /// A filter refusing clients in `deny`, and (when `allow` is not empty) those outside
    /// `allow`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, counters: Arc<RouteCounters>) -> Self {
        IpFilter {
            allow,
            deny,
            counters,
        }
    }

    /// Whether `ip` may call.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Parses `10.0.0.0/8`, `::1`, `192.168.1.7` (a bare address is a single-host network).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR network"))
}

#[async_trait]
impl Filter for IpFilter {
    fn name(&self) -> &'static str {
        "ip"
    }

    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        _request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        if self.permits(ctx.client.ip()) {
            Ok(())
        } else {
            self.counters.ip_denied.inc();
            Err(json_error(
                StatusCode::FORBIDDEN,
                "client address not allowed",
                &ctx.request_id,
            ))
        }
    }
}

/// An accepted authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// API key in a header or the query.
    Key,
    /// `Authorization: Bearer <JWT>`.
    Jwt,
    /// `Authorization: Basic`.
    Basic,
}

impl Method {
    /// `key` | `jwt` | `basic`.
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "key" => Some(Method::Key),
            "jwt" => Some(Method::Jwt),
            "basic" => Some(Method::Basic),
            _ => None,
        }
    }
}

/// Shared authentication settings of a config generation.
pub struct AuthShared {
    /// The consumers.
    pub consumers: Arc<Consumers>,
    /// `[auth.jwt]`, when configured.
    pub jwt: Option<JwtVerifier>,
    /// The API key header.
    pub key_header: HeaderName,
    /// The API key query parameter (empty: none).
    pub key_query: String,
    /// The `WWW-Authenticate` realm.
    pub realm: String,
}

/// `auth` + `allow` + `forward_credentials`.
pub struct AuthFilter {
    shared: Arc<AuthShared>,
    methods: Vec<Method>,
    /// Allowed consumers (empty: any authenticated consumer).
    allow: Vec<Arc<str>>,
    forward_credentials: bool,
    challenges: Vec<HeaderValue>,
    counters: Arc<RouteCounters>,
}

impl AuthFilter {
    /// A filter accepting any of `methods`, then checking `allow`.
    pub fn new(
        shared: Arc<AuthShared>,
        methods: Vec<Method>,
        allow: Vec<Arc<str>>,
        forward_credentials: bool,
        counters: Arc<RouteCounters>,
    ) -> Self {
        let realm = shared.realm.replace(['"', '\\'], "");
        let challenges = methods
            .iter()
            .filter_map(|m| {
                let text = match m {
                    Method::Key => {
                        format!("ApiKey realm=\"{realm}\", header=\"{}\"", shared.key_header)
                    }
                    Method::Jwt => format!("Bearer realm=\"{realm}\""),
                    Method::Basic => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
                };
                HeaderValue::from_str(&text).ok()
            })
            .collect();
        AuthFilter {
            shared,
            methods,
            allow,
            forward_credentials,
            challenges,
            counters,
        }
    }

    /// The consumer the request's credentials name, or why there is none.
    async fn authenticate(&self, request: &Parts) -> Result<Arc<str>, Option<String>> {
        let mut reason = None;
        for method in &self.methods {
            match method {
                Method::Key => {
                    let presented = request
                        .headers
                        .get(&self.shared.key_header)
                        .map(|v| v.as_bytes().to_vec())
                        .or_else(|| query_param(request, &self.shared.key_query));
                    if let Some(key) = presented {
                        match self.shared.consumers.by_key(&key) {
                            Some(consumer) => return Ok(consumer.clone()),
                            None => reason = Some("unknown API key".to_owned()),
                        }
                    }
                }
                Method::Jwt => {
                    let Some(jwt) = &self.shared.jwt else {
                        continue;
                    };
                    if let Some(token) = authorization(request, "Bearer") {
                        match jwt.verify(token) {
                            Ok(name) => match self.shared.consumers.get(&name) {
                                Some(consumer) => return Ok(consumer.clone()),
                                None => reason = Some(format!("unknown consumer {name:?}")),
                            },
                            Err(why) => reason = Some(why),
                        }
                    }
                }
                Method::Basic => {
                    if let Some(encoded) = authorization(request, "Basic") {
                        let decoded = base64::engine::general_purpose::STANDARD
                            .decode(encoded.trim())
                            .ok()
                            .and_then(|b| String::from_utf8(b).ok());
                        let Some((user, password)) =
                            decoded.as_deref().and_then(|d| d.split_once(':'))
                        else {
                            reason = Some("malformed Basic credentials".to_owned());
                            continue;
                        };
                        match self.shared.consumers.by_basic(user, password).await {
                            Some(consumer) => return Ok(consumer),
                            None => reason = Some("wrong user or password".to_owned()),
                        }
                    }
                }
            }
        }
        Err(reason)
    }

    fn strip_credentials(&self, request: &mut Parts) {
        for method in &self.methods {
            match method {
                Method::Key => {
                    request.headers.remove(&self.shared.key_header);
                    remove_query_param(request, &self.shared.key_query);
                }
                Method::Jwt | Method::Basic => {
                    request.headers.remove(header::AUTHORIZATION);
                }
            }
        }
    }
}

#[async_trait]
impl Filter for AuthFilter {
    fn name(&self) -> &'static str {
        "auth"
    }

    async fn on_request(
        &self,
        ctx: &mut RequestContext,
        request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        request.headers.remove(X_CONSUMER);
        let consumer = match self.authenticate(request).await {
            Ok(consumer) => consumer,
            Err(reason) => {
                self.counters.unauthorized.inc();
                let message = match &reason {
                    Some(why) => format!("unauthorized: {why}"),
                    None => "unauthorized: credentials required".to_owned(),
                };
                let mut response = json_error(StatusCode::UNAUTHORIZED, &message, &ctx.request_id);
                for challenge in &self.challenges {
                    let mut value = challenge.clone();
                    if reason.is_some() && challenge.as_bytes().starts_with(b"Bearer") {
                        let text = format!(
                            "{}, error=\"invalid_token\"",
                            challenge.to_str().unwrap_or("Bearer")
                        );
                        value = HeaderValue::from_str(&text).unwrap_or(value);
                    }
                    response
                        .headers_mut()
                        .append(header::WWW_AUTHENTICATE, value);
                }
                return Err(response);
            }
        };
        if !self.allow.is_empty() && !self.allow.contains(&consumer) {
            self.counters.forbidden.inc();
            ctx.consumer = Some(consumer);
            return Err(json_error(
                StatusCode::FORBIDDEN,
                "consumer not allowed on this route",
                &ctx.request_id,
            ));
        }
        self.counters.authenticated.inc();
        if !self.forward_credentials {
            self.strip_credentials(request);
        }
        if let Ok(value) = HeaderValue::from_str(&consumer) {
            request.headers.insert(X_CONSUMER, value);
        }
        ctx.consumer = Some(consumer);
        Ok(())
    }
}

/// The credentials of an `Authorization: <scheme> <credentials>` header.
fn authorization<'a>(request: &'a Parts, scheme: &str) -> Option<&'a str> {
    let value = request.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// The (decoded) value of query parameter `name`.
fn query_param(request: &Parts, name: &str) -> Option<Vec<u8>> {
    if name.is_empty() {
        return None;
    }
    let query = request.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned().into_bytes())
}

/// Removes every `name=...` from the query, keeping the other parameters as they were.
pub fn remove_query_param(request: &mut Parts, name: &str) {
    if name.is_empty() {
        return;
    }
    let Some(query) = request.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            form_urlencoded::parse(key.as_bytes())
                .next()
                .map_or(key != name, |(k, _)| k != name)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return;
    }
    let path = request.uri.path();
    let new = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = request.uri.clone().into_parts();
    if let Ok(pq) = new.parse::<PathAndQuery>() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        http::Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_params_are_read_and_removed() {
        for (uri, key, after) in [
            ("/a?apikey=k1", Some("k1"), "/a"),
            ("/a?x=1&apikey=k%2B1&y=2", Some("k+1"), "/a?x=1&y=2"),
            ("/a?x=1&apikey=1&apikey=2", Some("1"), "/a?x=1"),
            ("/a?apikeyx=1", None, "/a?apikeyx=1"),
            ("/a", None, "/a"),
        ] {
            let mut p = parts(uri);
            assert_eq!(
                query_param(&p, "apikey")
                    .map(|v| String::from_utf8(v).unwrap())
                    .as_deref(),
                key,
                "{uri}"
            );
            remove_query_param(&mut p, "apikey");
            assert_eq!(p.uri.to_string(), after, "{uri}");
        }
    }

    #[test]
    fn ip_lists() {
        let nets = |list: &[&str]| {
            list.iter()
                .map(|n| parse_net(n).unwrap())
                .collect::<Vec<_>>()
        };
        let filter = IpFilter::new(
            nets(&["127.0.0.0/8", "::1"]),
            nets(&["127.0.0.9"]),
            Arc::default(),
        );
        for (ip, allowed) in [
            ("127.0.0.1", true),
            ("127.0.0.9", false),
            ("10.1.2.3", false),
            ("::1", true),
            ("::ffff:127.0.0.2", true),
            ("::ffff:127.0.0.9", false),
        ] {
            assert_eq!(filter.permits(ip.parse().unwrap()), allowed, "{ip}");
        }
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn authorization_schemes() {
        let mut p = parts("/");
        p.headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc.def.ghi"),
        );
        assert_eq!(authorization(&p, "Bearer"), Some("abc.def.ghi"));
        assert_eq!(authorization(&p, "Basic"), None);
    }
}
