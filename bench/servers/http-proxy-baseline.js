// The Node baseline: a bare `http-proxy` with a keep-alive agent, hashing the `room` query
// parameter onto the backends (mod n, no consistent hashing). `node http-proxy-baseline.js <port> <backend-port>...`
import http from 'node:http';
import httpProxy from 'http-proxy';

const [port, ...backendPorts] = process.argv.slice(2).map(Number);
const targets = backendPorts.map((p) => `http://127.0.0.1:${p}`);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: 1024 });
const proxy = httpProxy.createProxyServer({ xfwd: true });

function targetOf(url) {
  const at = url.indexOf('room=');
  if (at === -1) return targets[0];
  let end = url.indexOf('&', at);
  if (end === -1) end = url.length;
  let h = 2166136261;
  for (let i = at + 5; i < end; i++) h = Math.imul(h ^ url.charCodeAt(i), 16777619);
  return targets[(h >>> 0) % targets.length];
}

proxy.on('error', (_error, _req, res) => {
  if (res && typeof res.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502);
    res.end();
  } else res?.destroy?.();
});

const server = http.createServer((req, res) => proxy.web(req, res, { target: targetOf(req.url), agent }));
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => socket.destroy());
  proxy.ws(req, socket, head, { target: targetOf(req.url) });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`http-proxy listening on ${port}\n`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
