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

// === rates, p99 and 5xx share: computed by the gateway (/api/routes?window=) ===
function rates(routes) {
  const out = {};
  for (const r of routes) {
    if (r.requests_per_second == null) continue;
    out[r.name] = {rate: r.requests_per_second, errors: r.error_ratio, p99: r.p99_ms == null ? null : r.p99_ms / 1000};
  }
  return out;
}

async function api(path) {
  const r = await fetch(path, opts);
  if (r.status === 401) throw new Error('the admin token is missing or wrong: open /?token=…');
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
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
// A small inline SVG line chart of `values` (null = no data, drawn as 0), scaled to its
// own maximum, with the latest value next to it. No external asset: allowed by the CSP.
function spark(values, cls, fmt) {
  const w = 160, h = 34, pts = values.map(v => (v == null || !isFinite(v)) ? 0 : v);
  const max = Math.max(1e-9, ...pts);
  const step = pts.length > 1 ? w / (pts.length - 1) : 0;
  const line = pts.map((v, i) => (i * step).toFixed(1) + ',' + (h - 2 - (v / max) * (h - 4)).toFixed(1)).join(' ');
  const last = values.length ? values[values.length - 1] : null;
  return {html: '<svg class="spark ' + cls + '" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + ' ' + h +
    '" data-points="' + pts.length + '" data-max="' + max + '"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="' +
    line + '"/></svg> <span class="muted">' + esc(fmt(last)) + '</span>'};
}
const num = d => v => v == null ? '-' : (+v).toFixed(d);
// The last 15 minutes (/api/history?window=15m): per route requests/s, p99 and 5xx ratio;
// per upstream healthy endpoints; per registry the updates it sent each second.
async function drawHistory() {
  const h = await api('/api/history?window=15m');
  const samples = h.samples || [];
  const keys = part => [...new Set(samples.flatMap(s => Object.keys(s[part] || {})))].sort();
  const at = (s, part, name, field) => s[part] && s[part][name] ? s[part][name][field] : null;
  const rows = keys('routes').map(name => row([esc(name),
    spark(samples.map(s => at(s, 'routes', name, 'rps')), 'rps', v => num(1)(v) + '/s'),
    spark(samples.map(s => at(s, 'routes', name, 'p99_ms')), 'lat', v => num(1)(v) + ' ms'),
    spark(samples.map(s => at(s, 'routes', name, 'error_ratio')), 'err', v => v == null ? '-' : (v * 100).toFixed(1) + '%'),
  ], ' data-history-route="' + esc(name) + '"'));
  const upRows = keys('upstreams').map(name => row(['upstream ' + esc(name),
    spark(samples.map(s => at(s, 'upstreams', name, 'healthy')), 'ok', v => num(0)(v) + ' healthy'), '', '',
  ], ' data-history-upstream="' + esc(name) + '"'));
  const regRows = keys('registries').map(name => row(['registry ' + esc(name),
    spark(samples.map(s => at(s, 'registries', name, 'updates')), 'upd', v => num(0)(v) + ' updates/s'), '', '',
  ], ' data-history-registry="' + esc(name) + '"'));
  $('history').innerHTML = table(['Route / upstream / registry', 'Requests/s · healthy · updates', 'p99', '5xx ratio'], rows.concat(upRows, regRows));
  const events = h.events || [];
  // Per registry: when it last went down and last came back; per upstream: its last tier change.
  const last = {};
  for (const e of events) {
    const key = e.kind + ' ' + e.name;
    const entry = last[key] || (last[key] = {kind: e.kind, name: e.name, down: null, up: null, change: null});
    if (e.kind === 'registry' && e.to === 'down') entry.down = e.at;
    else if (e.kind === 'registry' && e.to === 'ok' && e.from != null) entry.up = e.at;
    entry.change = e;
  }
  const when = t => t == null ? '—' : esc(new Date(t * 1000).toLocaleTimeString());
  const timeline = Object.values(last).sort((a, b) => (a.kind + a.name).localeCompare(b.kind + b.name)).map(t => row([
    esc(t.kind), esc(t.name), t.kind === 'registry' ? when(t.down) : '—', t.kind === 'registry' ? when(t.up) : '—',
    when(t.change.at) + ' ' + esc((t.change.from ?? 'none') + ' → ' + (t.change.to ?? 'none')),
  ], ' data-timeline="' + esc(t.kind) + '"'));
  $('timeline').innerHTML = table(['What', 'Name', 'Last down', 'Last up', 'Last change'], timeline);
  $('events').innerHTML = table(['When', 'What', 'Name', 'Change'], events.slice().reverse().map(e => row([
    when(e.at), esc(e.kind), esc(e.name),
    esc((e.from ?? 'none') + ' → ' + (e.to ?? 'none')),
  ], ' data-event="' + esc(e.kind) + '"')));
}
async function refresh() {
  try {
    const [ups, regs, routes] = await Promise.all(['/api/upstreams', '/api/registries', '/api/routes?window=10s'].map(api));
    drawRoutes(routes, rates(routes));
    drawUpstreams(ups);
    drawRegistries(regs);
    drawSource(await api('/api/config_source').catch(() => null));
    await drawUsage();
    await drawHistory().catch(e => { $('history').textContent = String(e.message || e); });
    refreshes += 1;
    document.body.dataset.refreshes = refreshes;
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('updated').innerHTML = '<span class="bad">' + esc(e.message || e) + '</span>';
  }
}
refresh(); setInterval(refresh, 2000);
