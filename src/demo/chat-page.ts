// The demo's chat page: one room, its history, the server that hosts it, a WebSocket through the proxy.

const escapeHtml = (text: string): string =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );

export function chatPage(server: string, room: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(room)} · roomring demo</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  header { display: flex; justify-content: space-between; align-items: baseline; }
  .server { background: #eef4ff; border: 1px solid #b8cdf5; border-radius: 1rem; padding: .2rem .8rem; font-weight: 600; }
  #log { list-style: none; padding: 0; border: 1px solid #ddd; border-radius: .5rem; min-height: 12rem; }
  #log li { padding: .4rem .8rem; border-bottom: 1px solid #f0f0f0; }
  #log li.system { color: #777; font-style: italic; }
  form { display: flex; gap: .5rem; } input { flex: 1; padding: .5rem; } button { padding: .5rem 1rem; }
</style>
</head>
<body>
<header><h1>Room <span id="room">${escapeHtml(room)}</span></h1><span class="server" id="server">hosted by ${escapeHtml(server)}</span></header>
<p>Open this page in another tab: both tabs reach <b>${escapeHtml(server)}</b>, which keeps this room's last 10 messages in its memory.</p>
<ul id="log"></ul>
<form id="send"><input id="text" autocomplete="off" placeholder="Say something"><button>Send</button></form>
<script>
  const log = document.getElementById('log');
  const add = (text, cls) => { const li = document.createElement('li'); li.textContent = text; if (cls) li.className = cls; log.appendChild(li); };
  const url = new URL(location.pathname.replace(/\\/$/, '') + '/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(url);
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === 'hello') {
      document.getElementById('server').textContent = 'hosted by ' + msg.server;
      add('connected to ' + msg.server + ' (' + msg.history.length + ' earlier messages)', 'system');
      msg.history.forEach((m) => add(m.text));
    } else add(msg.text);
  };
  ws.onclose = () => add('disconnected', 'system');
  document.getElementById('send').onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById('text');
    if (input.value && ws.readyState === 1) ws.send(input.value);
    input.value = '';
  };
</script>
</body>
</html>
`;
}
