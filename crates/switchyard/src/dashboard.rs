//! The admin dashboard at `/`: one self-contained HTML page (no build step, no external
//! assets, works offline) whose small script reads the JSON API and `/metrics` every two
//! seconds and redraws in place, without reloading the page.
//!
//! It shows the routes with live request rates, p99 latency and 5xx share (from the
//! differences between two `/metrics` samples, the same arithmetic as `switchyard status`);
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

/// The page served at `/` on the admin listener.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard</title>
<style>
 :root{--bg:#f6f7f9;--card:#fff;--line:#e5e7eb;--head:#eef0f4;--text:#1d2330;--muted:#6b7280}
 *{box-sizing:border-box}
 body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1rem;background:var(--bg);color:var(--text)}
 header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.3rem 1rem;margin-bottom:.5rem}
 h1{font-size:1.3rem;margin:0} h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
 table{border-collapse:collapse;width:100%;background:var(--card);box-shadow:0 1px 2px #0001;border-radius:6px;overflow:hidden}
 th,td{padding:.35rem .5rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
 th{background:var(--head);font-weight:600;white-space:nowrap}
 td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
 .ok{color:#0a7a35} .bad{color:#b42318} .warn{color:#a15c00} .muted{color:var(--muted)}
 .pill{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:12px;background:#e7f6ec;color:#0a7a35}
 .pill.bad{background:#fde8e7;color:#b42318} .pill.warn{background:#fff3e0;color:#a15c00}
 code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
 .wrap{overflow-x:auto} #banner{display:none;padding:.5rem .75rem;border-radius:6px;background:#fde8e7;color:#b42318;margin:.5rem 0}
 @media (max-width:640px){
  body{padding:.6rem}
  table,tbody,tr,td{display:block;width:100%} table{box-shadow:none;background:none}
  tr.head{display:none}
  tr{background:var(--card);margin:0 0 .6rem;border-radius:6px;box-shadow:0 1px 2px #0002}
  td{border:none;padding:.2rem .6rem;display:flex;gap:.6rem;justify-content:space-between;text-align:right}
  td.num{text-align:right}
  td::before{content:attr(data-label);font-weight:600;color:var(--muted);text-align:left;flex:none}
 }
</style></head><body>
<header><h1>Switchyard</h1><span id="source" class="muted"></span><span id="updated" class="muted">loading…</span></header>
<div id="banner"></div>
<h2>Routes</h2><div class="wrap" id="routes">loading…</div>
<h2>Upstreams</h2><div class="wrap" id="upstreams">loading…</div>
<h2>Registries</h2><div class="wrap" id="registries">loading…</div>
<h2>Usage <span class="muted">(last 5 minutes; routes with policies)</span></h2><div class="wrap" id="usage">loading…</div>
<script>
'use strict';
// The token: from ?token= (then dropped from the address bar), #token=, or this tab's storage.
const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
let token = params.get('token') || hash.get('token') || sessionStorage.getItem('switchyard-token');
if (params.has('token') || hash.has('token')) {
  if (token) sessionStorage.setItem('switchyard-token', token);
  history.replaceState(null, '', location.pathname);
}
const opts = token ? {headers: {Authorization: 'Bearer ' + token}, cache: 'no-store'} : {cache: 'no-store'};
const $ = id => document.getElementById(id);
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
// A table whose cells carry their column name, for the card layout on phones.
function table(head, rows) {
  const body = rows.length ? rows.map(cells => {
    const attrs = cells.attrs || '';
    return '<tr' + attrs + '>' + cells.map((c, i) => {
      const cell = typeof c === 'object' && c !== null ? c : {html: c};
      return '<td data-label="' + esc(head[i]) + '"' + (cell.cls ? ' class="' + cell.cls + '"' : '') + '><span>' + cell.html + '</span></td>';
    }).join('') + '</tr>';
  }).join('') : '<tr><td colspan="' + head.length + '" class="muted">none</td></tr>';
  // Numeric columns (those whose first cell is) are right-aligned, heading included.
  const numeric = i => rows.length && typeof rows[0][i] === 'object' && rows[0][i] !== null && /\bnum\b/.test(rows[0][i].cls || '');
  return '<table><tr class="head">' + head.map((h, i) => '<th' + (numeric(i) ? ' class="num"' : '') + '>' + esc(h) + '</th>').join('') + '</tr>' + body + '</table>';
}
function row(cells, attrs) { cells.attrs = attrs || ''; return cells; }
const yesno = (v, good, bad) => v === false ? '<span class="bad">' + bad + '</span>' : '<span class="ok">' + good + '</span>';
function ms(seconds) {
  if (seconds == null) return '—';
  return seconds < 0.001 ? (seconds * 1e6).toFixed(0) + ' µs' : seconds < 1 ? (seconds * 1e3).toFixed(1) + ' ms' : seconds.toFixed(2) + ' s';
}
function ago(ts) {
  if (!ts) return '—';
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  return s < 90 ? s.toFixed(0) + ' s ago' : s < 5400 ? (s / 60).toFixed(0) + ' min ago' : (s / 3600).toFixed(1) + ' h ago';
}

// === rates and p99 from /metrics deltas ===
function parseMetrics(text) {
  const routes = {};
  for (const line of text.split('\n')) {
    const m = /^(switchyard_requests_total|switchyard_request_duration_seconds_bucket)\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    const r = routes[labels.route] ??= {requests: 0, errors: 0, buckets: {}};
    const v = Number(m[3]);
    if (m[1] === 'switchyard_requests_total') { r.requests += v; if ((labels.code || '').startsWith('5')) r.errors += v; }
    else r.buckets[labels.le] = v;
  }
  return {at: performance.now(), routes};
}
function quantile(q, buckets) {
  const list = Object.entries(buckets).map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), n]).sort((a, b) => a[0] - b[0]);
  const total = list.length ? list[list.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = [0, 0];
  for (const [bound, count] of list) {
    if (count >= rank) {
      if (bound === Infinity) return lower[0];
      const width = count - lower[1];
      return lower[0] + (bound - lower[0]) * (width > 0 ? (rank - lower[1]) / width : 1);
    }
    lower = [bound, count];
  }
  return lower[0];
}
let previous = null;
function rates(sample) {
  const out = {};
  if (previous) {
    const secs = Math.max(0.001, (sample.at - previous.at) / 1000);
    for (const [name, now] of Object.entries(sample.routes)) {
      const then = previous.routes[name] || {requests: 0, errors: 0, buckets: {}};
      const n = Math.max(0, now.requests - then.requests);
      const delta = {};
      for (const [le, c] of Object.entries(now.buckets)) delta[le] = Math.max(0, c - (then.buckets[le] || 0));
      out[name] = {rate: n / secs, errors: n ? Math.max(0, now.errors - then.errors) / n : null, p99: quantile(0.99, delta)};
    }
  }
  previous = sample;
  return out;
}

async function api(path) {
  const r = await fetch(path, opts);
  if (r.status === 401) throw new Error('the admin token is missing or wrong: open /?token=…');
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return path === '/metrics' ? r.text() : r.json();
}

function drawRoutes(routes, live) {
  $('routes').innerHTML = table(['route', 'host', 'path', 'methods', 'upstream', 'req/s', 'p99', '5xx'],
    routes.map(r => {
      const l = live[r.name];
      return row([esc(r.name), esc(r.host || '*'), '<code>' + esc(r.path || (r.path_prefix + '…')) + '</code>',
        esc(r.methods.join(', ') || 'any'), esc(r.upstream),
        {cls: 'num', html: l ? l.rate.toFixed(1) : '—'}, {cls: 'num', html: ms(l && l.p99)},
        {cls: 'num' + (l && l.errors ? ' bad' : ''), html: l && l.errors != null ? (l.errors * 100).toFixed(1) + '%' : '—'}],
        ' data-route="' + esc(r.name) + '"');
    }));
}
function drawUpstreams(ups) {
  $('upstreams').innerHTML = table(['upstream', 'address', 'source', 'tier', 'health', 'registry / active / passive', 'stale', 'in flight'],
    ups.flatMap(u => {
      const name = esc(u.name) + (u.panic ? ' <span class="pill bad">panic</span>' : '');
      if (!u.endpoints.length) return [row([name, {cls: 'bad', html: 'no endpoints'}, esc((u.sources || []).map(s => s.registry + '/' + s.service).join(', ')), '—', '—', '—', '—', '—'], ' data-upstream="' + esc(u.name) + '"')];
      return u.endpoints.map(e => {
        const source = (u.sources || []).find(s => s.registry === e.source.registry && s.service === e.source.service) || {};
        return row([name, '<code>' + esc(e.address) + '</code>', esc(e.source.registry) + ' / ' + esc(e.source.service),
          e.priority + '.' + e.endpoint_priority + (e.serving ? ' <span class="pill">serving</span>' : ''),
          e.healthy ? '<span class="ok">healthy</span>' : '<span class="bad">unhealthy</span>',
          yesno(e.health.registry, 'ok', 'down') + ' / ' + yesno(e.health.active, 'ok', 'failing') + ' / ' + (e.health.ejected ? '<span class="bad">ejected</span>' : '<span class="ok">ok</span>'),
          e.stale ? '<span class="warn" title="' + esc(source.last_error || '') + '">stale</span>' : '<span class="ok">fresh</span>',
          {cls: 'num', html: String(e.in_flight)}],
          ' data-upstream="' + esc(u.name) + '" data-endpoint="' + esc(e.address) + '"');
      });
    }));
}
function drawRegistries(regs) {
  const cls = {ok: 'ok', syncing: 'warn', degraded: 'warn', down: 'bad'};
  $('registries').innerHTML = table(['registry', 'type', 'state', 'services', 'endpoints', 'last update', 'last error'],
    regs.map(r => row([esc(r.name), esc(r.type), '<span class="' + (cls[r.state] || '') + '">' + esc(r.state) + '</span>',
      {cls: 'num', html: String(r.services)}, {cls: 'num', html: String(r.endpoints)},
      '<span title="' + esc(r.last_update || '') + '">' + ago(r.last_update) + '</span>',
      {cls: 'bad', html: esc(r.last_error || '')}], ' data-registry="' + esc(r.name) + '"')));
}
function drawSource(src) {
  if (!src || src.state === 'off') { $('source').textContent = ''; return; }
  const cls = {ok: '', refused: 'warn', down: 'bad', connecting: 'warn'}[src.state] || 'warn';
  $('source').innerHTML = 'config: ' + esc(src.type) + ' <code>' + esc(src.prefix) + '</code> <span class="pill ' + cls + '">' +
    esc(src.state) + '</span> rev ' + esc(src.applied_revision ?? '—') + ' (' + src.objects + ' objects)';
  const problems = (src.refused ? src.refused.errors.map(e => 'refused revision ' + src.refused.revision + ': ' + e) : [])
    .concat(src.last_error ? ['config source: ' + src.last_error] : []);
  $('banner').style.display = problems.length ? 'block' : 'none';
  $('banner').innerHTML = problems.map(esc).join('<br>');
}
async function drawUsage() {
  try {
    const stats = await api('/api/stats?window=5m');
    const usage = (name, s) => [name, {cls: 'num', html: String(s.requests)}, ['2xx', '3xx', '4xx', '5xx'].map(c => s.status[c]).join(' / '),
      {cls: 'num', html: String(s.bytes_out)}, ['p50', 'p95', 'p99'].map(p => s.latency_ms[p] ?? '—').join(' / ')];
    $('usage').innerHTML = table(['route / consumer', 'requests', '2xx / 3xx / 4xx / 5xx', 'bytes out', 'latency ms p50 / p95 / p99'],
      stats.routes.flatMap(r => [usage('<b>' + esc(r.route) + '</b>', r)].concat(r.consumers.map(c => usage('&nbsp;&nbsp;' + esc(c.consumer), c)))));
  } catch (e) {
    $('usage').innerHTML = '<span class="muted">not available</span>';
  }
}
let refreshes = 0;
async function refresh() {
  try {
    const [ups, regs, routes, metrics] = await Promise.all(['/api/upstreams', '/api/registries', '/api/routes', '/metrics'].map(api));
    drawRoutes(routes, rates(parseMetrics(metrics)));
    drawUpstreams(ups);
    drawRegistries(regs);
    drawSource(await api('/api/config_source').catch(() => null));
    await drawUsage();
    refreshes += 1;
    document.body.dataset.refreshes = refreshes;
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('updated').innerHTML = '<span class="bad">' + esc(e.message || e) + '</span>';
  }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"##;

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
