//! Header and path rewrites: `request_headers` and `response_headers`
//! (`{ remove, set, add }`, applied in that order), `rewrite = { regex, replacement }` on
//! the request path (the query is kept), and `host_rewrite` (the `Host` sent upstream).

use async_trait::async_trait;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Response};
use regex::Regex;
use switchyard_proxy::body::ProxyBody;
use switchyard_proxy::{Filter, RequestContext};
use switchyard_registry::ConfigIssue;

use crate::config::{HeaderRules, RewriteConfig};

/// Compiled header rules.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// Compiles `rules`; issues are relative to the rules table (`set.X-Name`).
    pub fn build(rules: &HeaderRules) -> Result<HeaderOps, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut ops = HeaderOps::default();
        for (i, name) in rules.remove.iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => ops.remove.push(n),
                Err(_) => issues.push(ConfigIssue::new(
                    format!("remove[{i}]"),
                    "not a header name",
                )),
            }
        }
        for (kind, map, out) in [
            ("set", &rules.set, &mut ops.set),
            ("add", &rules.add, &mut ops.add),
        ] {
            for (name, value) in map {
                let path = format!("{kind}.{name}");
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => out.push((n, v)),
                    (Err(_), _) => issues.push(ConfigIssue::new(path, "not a header name")),
                    (_, Err(_)) => issues.push(ConfigIssue::new(path, "not a header value")),
                }
            }
        }
        if issues.is_empty() {
            Ok(ops)
        } else {
            Err(issues)
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the rules to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A compiled path rewrite.
#[derive(Clone, Debug)]
pub struct PathRewrite {
    regex: Regex,
    replacement: String,
}

impl PathRewrite {
    /// Compiles; issues are relative to the `rewrite` table.
    pub fn build(config: &RewriteConfig) -> Result<PathRewrite, Vec<ConfigIssue>> {
        let regex = Regex::new(&config.regex)
            .map_err(|e| vec![ConfigIssue::new("regex", format!("not a valid regex: {e}"))])?;
        Ok(PathRewrite {
            regex,
            replacement: config.replacement.clone(),
        })
    }

    /// The rewritten path (first match replaced), or `None` when it does not match.
    pub fn apply(&self, path: &str) -> Option<String> {
        if !self.regex.is_match(path) {
            return None;
        }
        let new = self.regex.replace(path, self.replacement.as_str());
        Some(if new.starts_with('/') {
            new.into_owned()
        } else {
            format!("/{new}")
        })
    }
}

/// The `rewrite` filter (all of a route's rewrites in one).
#[derive(Debug, Default)]
pub struct RewriteFilter {
    /// `request_headers`.
    pub request: HeaderOps,
    /// `response_headers`.
    pub response: HeaderOps,
    /// `rewrite`.
    pub path: Option<PathRewrite>,
    /// `host_rewrite`.
    pub host: Option<HeaderValue>,
}

impl RewriteFilter {
    fn rewrite_path(&self, request: &mut Parts) {
        let Some(rewrite) = &self.path else { return };
        let Some(path) = rewrite.apply(request.uri.path()) else {
            return;
        };
        let new = match request.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let Ok(pq) = new.parse::<PathAndQuery>() else {
            tracing::debug!("path rewrite produced an invalid path: {new:?}");
            return;
        };
        let mut parts = request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

#[async_trait]
impl Filter for RewriteFilter {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    async fn on_request(
        &self,
        _ctx: &mut RequestContext,
        request: &mut Parts,
    ) -> Result<(), Response<ProxyBody>> {
        self.rewrite_path(request);
        if let Some(host) = &self.host {
            request.headers.insert(header::HOST, host.clone());
        }
        self.request.apply(&mut request.headers);
        Ok(())
    }

    async fn on_response(&self, _ctx: &mut RequestContext, response: &mut Response<ProxyBody>) {
        self.response.apply(response.headers_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rewrites() {
        let rewrite = |regex: &str, replacement: &str, path: &str| {
            PathRewrite::build(&RewriteConfig {
                regex: regex.into(),
                replacement: replacement.into(),
            })
            .unwrap()
            .apply(path)
        };
        assert_eq!(
            rewrite("^/old/(.*)$", "/new/$1", "/old/a/b").as_deref(),
            Some("/new/a/b")
        );
        assert_eq!(
            rewrite("^/v1/(?P<rest>.*)$", "/api/${rest}", "/v1/x").as_deref(),
            Some("/api/x")
        );
        assert_eq!(rewrite("^/old/(.*)$", "/new/$1", "/other").as_deref(), None);
        assert_eq!(rewrite("^/api", "", "/api/x").as_deref(), Some("/x"));
        assert_eq!(rewrite("^/api/", "", "/api/x").as_deref(), Some("/x"));
        assert!(PathRewrite::build(&RewriteConfig {
            regex: "(".into(),
            replacement: String::new()
        })
        .is_err());
    }

    #[test]
    fn header_ops_in_order() {
        let rules: HeaderRules = serde_json::from_value(serde_json::json!({
            "remove": ["x-drop", "x-set"],
            "set": {"x-set": "new"},
            "add": {"x-add": "2"},
        }))
        .unwrap();
        let ops = HeaderOps::build(&rules).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-drop", HeaderValue::from_static("1"));
        headers.insert("x-set", HeaderValue::from_static("old"));
        headers.insert("x-add", HeaderValue::from_static("1"));
        ops.apply(&mut headers);
        assert!(!headers.contains_key("x-drop"));
        assert_eq!(headers["x-set"], "new");
        let added: Vec<_> = headers.get_all("x-add").iter().collect();
        assert_eq!(added, ["1", "2"]);

        let bad: HeaderRules = serde_json::from_value(serde_json::json!({
            "remove": ["bad name"],
            "set": {"x-ok": "bad\nvalue"},
        }))
        .unwrap();
        let issues = HeaderOps::build(&bad).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["remove[0]", "set.x-ok"]);
    }
}
