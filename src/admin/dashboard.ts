// The admin dashboard: one self-contained page that polls /status and draws the ring (each
// backend's share of new rooms as an arc), live rooms and connections, health and drain states.

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>roomring</title>
<style>
  :root { font: 15px/1.4 system-ui, sans-serif; color: #1d2330; background: #f6f7fb; }
  body { margin: 0; padding: 1.5rem 2rem; }
  header { display: flex; gap: 2rem; align-items: baseline; flex-wrap: wrap; }
  h1 { margin: 0; font-size: 1.4rem; }
  .meta { color: #5a6275; font-size: .9rem; }
  .meta b { color: #1d2330; }
  main { display: grid; grid-template-columns: minmax(280px, 380px) 1fr; gap: 2rem; margin-top: 1.5rem; align-items: start; }
  .card { background: #fff; border-radius: .8rem; box-shadow: 0 1px 3px #0002; padding: 1rem 1.2rem; }
  svg text { font: 600 13px system-ui, sans-serif; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #eceef4; }
  th { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: #5a6275; }
  th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: .2rem; margin-right: .4rem; vertical-align: -1px; }
  .pill { border-radius: 1rem; padding: .1rem .6rem; font-size: .8rem; font-weight: 600; }
  .up { background: #dff5e4; color: #1b6b33; } .down { background: #fde2e1; color: #9b1c1c; }
  .draining { background: #fff1d6; color: #8a5300; } .waiting { background: #e8eaf0; color: #4b5368; }
  .stale, .meta b.stale { color: #9b1c1c; font-weight: 600; }
  path.out { opacity: .35; }
  @media (max-width: 800px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>roomring</h1>
  <span class="meta">ring <b id="fingerprint">…</b></span>
  <span class="meta">registry <b id="registry">…</b></span>
  <span class="meta">live connections <b id="connections">…</b></span>
  <span class="meta">uptime <b id="uptime">…</b></span>
  <span class="meta" id="poll"></span>
</header>
<main>
  <section class="card"><svg id="ring" viewBox="-130 -130 260 260" role="img" aria-label="ring of backends"><circle r="100" fill="none" stroke="#e8eaf0" stroke-width="26"/></svg></section>
  <section class="card">
    <table>
      <thead><tr><th>backend</th><th>state</th><th class="num">share</th><th class="num">rooms</th><th class="num">connections</th><th>health</th></tr></thead>
      <tbody id="backends"></tbody>
    </table>
  </section>
</main>
<script>
  const COLORS = ['#4c6ef5', '#12b886', '#fab005', '#e64980', '#7950f2', '#15aabf', '#fd7e14', '#82c91e'];
  const token = new URLSearchParams(location.search).get('token');
  const headers = token ? { authorization: 'Bearer ' + token } : {};
  const el = (id) => document.getElementById(id);
  const colorOf = (i) => COLORS[i % COLORS.length];
  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  function arc(start, end, r) {
    const a = (t) => [Math.sin(t * 2 * Math.PI) * r, -Math.cos(t * 2 * Math.PI) * r];
    const [x1, y1] = a(start), [x2, y2] = a(end);
    if (end - start >= 0.9999) return 'M 0 ' + -r + ' A ' + r + ' ' + r + ' 0 1 1 -0.01 ' + -r;
    return 'M ' + x1 + ' ' + y1 + ' A ' + r + ' ' + r + ' 0 ' + (end - start > 0.5 ? 1 : 0) + ' 1 ' + x2 + ' ' + y2;
  }
  function stateOf(b) {
    if (b.state === 'draining') return ['draining', 'draining'];
    if (b.health && b.health.status === 'down') return ['down', 'down'];
    if (b.coolingOff) return ['down', 'cooling off'];
    if (!b.inRing) return ['waiting', b.out || 'out'];
    return ['up', 'in ring'];
  }
  function draw(status) {
    el('fingerprint').textContent = status.ring.fingerprint + ' (' + status.ring.size + ' backends, epoch ' + status.ring.epoch + ')';
    const reg = status.registry;
    el('registry').textContent = reg.mode === 'static' ? 'static' : reg.mode + (reg.cluster ? ' ' + reg.cluster : '') + (reg.connected ? ' connected' : ' stale');
    el('registry').className = reg.connected ? '' : 'stale';
    el('connections').textContent = status.connections;
    el('uptime').textContent = duration(status.uptimeMs);
    const svg = el('ring');
    let t = 0, parts = '<circle r="100" fill="none" stroke="#e8eaf0" stroke-width="26"/>';
    status.backends.forEach((b, i) => {
      if (b.share <= 0) return;
      const mid = t + b.share / 2;
      const out = stateOf(b)[0] !== 'up';
      parts += '<path data-backend="' + esc(b.id) + '"' + (out ? ' class="out"' : '') + ' d="' + arc(t, t + b.share, 100) + '" fill="none" stroke="' + colorOf(i) + '" stroke-width="26"><title>' + esc(b.id + ': ' + (b.share * 100).toFixed(1) + '% of new rooms') + '</title></path>';
      const x = Math.sin(mid * 2 * Math.PI) * 100, y = -Math.cos(mid * 2 * Math.PI) * 100;
      if (b.share >= 0.04) parts += '<text x="' + x + '" y="' + (y + 4) + '" text-anchor="middle" fill="#fff">' + esc(b.id) + '</text>';
      t += b.share;
    });
    const rooms = status.backends.reduce((n, b) => n + b.clusterRooms, 0);
    parts += '<text y="-4" text-anchor="middle" style="font-size:22px">' + rooms + '</text>';
    parts += '<text y="16" text-anchor="middle" fill="#5a6275">live rooms</text>';
    svg.innerHTML = parts;
    el('backends').innerHTML = status.backends.map((b, i) => {
      const [cls, label] = stateOf(b);
      const health = b.health ? esc(b.health.status + ': ' + b.health.reason) : '—';
      return '<tr data-backend="' + esc(b.id) + '"><td><span class="swatch" style="background:' + colorOf(i) + '"></span>' + esc(b.id) +
        '<div class="meta">' + esc(b.url) + '</div></td><td><span class="pill ' + cls + '">' + esc(label) + '</span></td>' +
        '<td class="num">' + (b.share * 100).toFixed(1) + '%</td><td class="num">' + b.clusterRooms + '</td>' +
        '<td class="num">' + b.clusterConnections + '</td><td>' + health + '</td></tr>';
    }).join('');
  }
  function duration(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (h < 1) return m + ' min ' + (s % 60) + ' s';
    if (d < 1) return h + ' h ' + (m % 60) + ' min';
    return d + ' d ' + (h % 24) + ' h';
  }
  function polled(problem) {
    el('poll').textContent = problem || '';
    el('poll').className = problem ? 'meta stale' : 'meta';
  }
  async function refresh() {
    try {
      const res = await fetch('status', { headers });
      if (res.ok) {
        draw(await res.json());
        polled('');
      } else {
        polled('/status answered ' + res.status + (res.status === 401 ? ': open the page with ?token=…' : '') + '; figures may be stale');
      }
    } catch (e) {
      polled('no answer from /status; figures may be stale');
    }
    setTimeout(refresh, 1000);
  }
  refresh();
</script>
</body>
</html>
`;
