//! The admin dashboard at `/`: one self-contained HTML page (no build step, no external
//! assets, works offline) whose small script reads the JSON API every two seconds and
//! redraws in place, without reloading the page.
//!
//! It shows the routes with live request rates, p99 latency and 5xx share over the last
//! 10 seconds (computed by the gateway: `/api/routes?window=10s`, as `switchyard status`
//! reads them); charts of the last 15 minutes (`/api/history`) and the event timeline;
//! every upstream endpoint with its address, source registry and service, tier, health
//! (overall, and its registry / active / passive inputs), staleness and requests in flight;
//! the registries with their state, last update and last error; the fleet config source;
//! and the per-route usage of `/api/stats`. On a narrow screen (a phone) each table row
//! becomes a labelled card.
//!
//! With `admin.token` set, the page is served to `/?token=TOKEN` (or a request with the
//! bearer token); without it, `/` answers 401 with a small login form that does the same.
//! The script then drops the token from the address bar (`history.replaceState`), keeps it
//! in the tab's `sessionStorage`, and sends it as `Authorization: Bearer` to the API.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The page served at `/` on the admin listener, put together at build time from the files
/// under `assets/dashboard/`: the head, the style sheet, the body's markup and the script,
/// inlined so that the page needs nothing else (the Content-Security-Policy allows only
/// inline style and script).
pub const PAGE: &str = concat!(
    include_str!("../assets/dashboard/head.html"),
    "<style>\n",
    include_str!("../assets/dashboard/dashboard.css"),
    "</style></head><body>\n",
    include_str!("../assets/dashboard/body.html"),
    "<script>\n",
    include_str!("../assets/dashboard/dashboard.js"),
    "</script></body></html>\n",
);

/// The dashboard page response.
pub fn page() -> Response<Full<Bytes>> {
    html(StatusCode::OK, Bytes::from_static(PAGE.as_bytes()))
}

/// The 401 answer to `/` without a valid token: a small form that opens `/?token=`.
pub fn login_page(wrong: bool) -> Response<Full<Bytes>> {
    let note = if wrong {
        r#"<p class="bad">That token is not the admin token.</p>"#
    } else {
        ""
    };
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard: admin token</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;margin:0;padding:2rem 1rem;background:#f6f7f9;color:#1d2330}}
form{{max-width:24rem;margin:auto;background:#fff;padding:1.2rem;border-radius:8px;box-shadow:0 1px 3px #0002}}
input,button{{font:inherit;width:100%;padding:.5rem;margin:.4rem 0}} .bad{{color:#b42318}}</style></head>
<body><form method="get" action="/"><h1>Switchyard</h1><p>This dashboard needs the admin token (<code>admin.token</code>).</p>{note}
<label for="token">Admin token</label><input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Open the dashboard</button></form></body></html>
"#
    );
    let mut response = html(StatusCode::UNAUTHORIZED, Bytes::from(body));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn html(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The token may be in the address: keep it out of caches and referrers, and allow
    // nothing but the page's own inline style and script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

/// The `token` parameter of a query string, percent-decoded.
pub fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_queries() {
        let check = |query: Option<&str>, want: Option<&str>| {
            assert_eq!(query_token(query).as_deref(), want, "{query:?}");
        };
        check(None, None);
        check(Some(""), None);
        check(Some("token=abc"), Some("abc"));
        check(Some("x=1&token=a%2Bb%3D&y"), Some("a+b="));
        check(Some("token=a+b"), Some("a b"));
        check(Some("token=%zz%4"), Some("%zz%4"));
        check(Some("tokens=abc"), None);
    }

    #[test]
    fn page_is_self_contained() {
        // No external assets: nothing is fetched from another origin.
        for needle in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
        assert_eq!(login_page(true).status(), StatusCode::UNAUTHORIZED);
    }
}
