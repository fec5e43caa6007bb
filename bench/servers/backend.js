// A cheap benchmark backend: `node backend.js <id> <port>`.
// HTTP: a tiny fixed response naming the backend in X-Backend. WebSocket: echoes every message;
// the 101 response names the backend in X-Backend, so clients can check room stickiness.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const [id = 'b', port = '0'] = process.argv.slice(2);
const body = Buffer.from('ok\n');
const headers = {
  'Content-Type': 'text/plain',
  'Content-Length': String(body.length),
  'X-Backend': id,
};

const server = http.createServer((req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200, headers);
    res.end(body);
    return;
  }
  req.resume();
  req.on('end', () => {
    res.writeHead(200, headers);
    res.end(body);
  });
});
// Longer than any proxy's pooled-connection timeout, so the backend never closes a pooled socket first.
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.maxHeadersCount = 100;

const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });
wss.on('headers', (lines) => lines.push(`X-Backend: ${id}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => ws.terminate());
});

server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`backend ${id} listening on ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
