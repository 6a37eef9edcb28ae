//! The admin dashboard: one self-contained HTML page (no build step, no external assets)
//! that reads the JSON API and refreshes itself every two seconds.

/// The page served at `/` on the admin listener.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:1rem;background:#f6f7f9;color:#1d2330}
 h1{font-size:1.3rem;margin:.2rem 0 1rem} h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
 table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
 th,td{padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
 th{background:#eef0f4;font-weight:600} .ok{color:#0a7a35} .bad{color:#b42318} .warn{color:#a15c00}
 .muted{color:#6b7280} code{font-size:13px} .wrap{overflow-x:auto}
</style></head><body>
<h1>Switchyard <span id="updated" class="muted"></span></h1>
<h2>Upstreams</h2><div class="wrap" id="upstreams">loading…</div>
<h2>Registries</h2><div class="wrap" id="registries">loading…</div>
<h2>Routes</h2><div class="wrap" id="routes">loading…</div>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get('token');
const opts = token ? {headers: {Authorization: 'Bearer ' + token}} : {};
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function table(head, rows) {
  return '<table><tr>' + head.map(h => '<th>' + h + '</th>').join('') + '</tr>' +
    (rows.length ? rows.join('') : '<tr><td colspan="' + head.length + '" class="muted">none</td></tr>') + '</table>';
}
async function refresh() {
  try {
    const [ups, regs, routes] = await Promise.all(['upstreams', 'registries', 'routes']
      .map(p => fetch('/api/' + p, opts).then(r => r.json())));
    document.getElementById('upstreams').innerHTML = table(
      ['upstream', 'address', 'source', 'tier', 'health', 'stale', 'in flight'],
      ups.flatMap(u => u.endpoints.length ? u.endpoints.map(e => '<tr data-endpoint="' + esc(e.address) + '"><td>' + esc(u.name) +
        (u.panic ? ' <span class="bad">panic</span>' : '') + '</td><td><code>' + esc(e.address) + '</code></td><td>' +
        esc(e.source.registry) + ' / ' + esc(e.source.service) + '</td><td>' + e.priority + '.' + e.endpoint_priority +
        (e.serving ? ' <span class="ok">serving</span>' : '') + '</td><td class="' + (e.healthy ? 'ok' : 'bad') + '">' +
        (e.healthy ? 'healthy' : 'unhealthy') + ' <span class="muted">(registry ' + (e.health.registry ? 'ok' : 'down') +
        ', active ' + (e.health.active ? 'ok' : 'failing') + (e.health.ejected ? ', ejected' : '') + ')</span></td><td class="' +
        (e.stale ? 'warn">stale' : 'ok">fresh') + '</td><td>' + e.in_flight + '</td></tr>')
        : ['<tr><td>' + esc(u.name) + '</td><td colspan="6" class="bad">no endpoints</td></tr>']));
    document.getElementById('registries').innerHTML = table(
      ['registry', 'type', 'state', 'services', 'endpoints', 'last update', 'last error'],
      regs.map(r => '<tr><td>' + esc(r.name) + '</td><td>' + esc(r.type) + '</td><td class="' +
        ({ok: 'ok', syncing: 'warn', degraded: 'warn', down: 'bad'}[r.state] || '') + '">' + esc(r.state) + '</td><td>' +
        r.services + '</td><td>' + r.endpoints + '</td><td>' + esc(r.last_update || '—') + '</td><td class="bad">' +
        esc(r.last_error || '') + '</td></tr>'));
    document.getElementById('routes').innerHTML = table(
      ['route', 'host', 'path', 'methods', 'upstream'],
      routes.map(r => '<tr><td>' + esc(r.name) + '</td><td>' + esc(r.host || '*') + '</td><td><code>' +
        esc(r.path || (r.path_prefix + '…')) + '</code></td><td>' + esc(r.methods.join(', ') || 'any') + '</td><td>' +
        esc(r.upstream) + '</td></tr>'));
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'admin API unreachable: ' + e;
  }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"#;
