// WebSocket (and small HTTP) load client, run as a forked child and driven over IPC so its CPU
// never lands on the orchestrator. Every loop is bounded in time.
//
// Commands ({cmd, ...} in, {ok, ...} or {error} out):
//   upgrades   {url, seconds, concurrency, rooms}  open + close-handshake loop; counts completed upgrades
//   throughput {url, seconds, window, size, warmup, pids}  one connection, `window` echoes in flight
//   open       {url, conns, rooms}                 opens idle connections, records each one's backend
//   echo       {seconds, rate, size}               open-loop echoes over the open connections
//   httpCheck  {url, rooms}                        one GET per room, records X-Backend
//   closeAll   {}                                  closes the open connections
import http from 'node:http';
import WebSocket from 'ws';
import { treeCpu } from '../lib/procs.js';

const OPTIONS = { perMessageDeflate: false, handshakeTimeout: 10000 };
let open = []; // { ws, room, backend, pending: bigint[] }
const httpBackends = new Map(); // room -> backend id seen over HTTP

const roomName = (i) => `room-${i}`;
const sep = (url) => (url.includes('?') ? '&' : '?');

function connect(url, room) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}${sep(url)}room=${encodeURIComponent(room)}`, OPTIONS);
    let backend = '';
    ws.once('upgrade', (res) => {
      backend = String(res.headers['x-backend'] ?? '');
    });
    ws.once('open', () => resolve({ ws, room, backend, pending: [] }));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
}

async function upgrades({ url, seconds, concurrency, rooms }) {
  const deadline = Date.now() + seconds * 1000;
  let count = 0;
  let errors = 0;
  let next = 0;
  const worker = async () => {
    while (Date.now() < deadline) {
      const room = roomName(next++ % rooms);
      try {
        const conn = await connect(url, room);
        await new Promise((resolve) => {
          conn.ws.once('close', resolve);
          conn.ws.close(1000);
        });
        count++;
      } catch {
        errors++;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  return { count, errors, seconds: elapsed };
}

/**
 * One connection with `window` echoes in flight. Counting starts after `warmup` seconds, so the
 * figure is the established connection's (its upgrade is measured by `upgrades`); with `pids`,
 * the proxy's CPU seconds over the counted window are read here too.
 */
async function throughput({ url, seconds, window, size, warmup = 0, pids = [] }) {
  const conn = await connect(url, roomName(0));
  const payload = Buffer.alloc(size, 120);
  let sent = 0;
  let received = 0;
  let stopping = false;
  let started = process.hrtime.bigint();
  let counted0 = 0;
  let cpu0 = treeCpu(pids);
  const mark = () => {
    started = process.hrtime.bigint();
    counted0 = sent + received;
    cpu0 = treeCpu(pids);
  };
  if (warmup > 0) setTimeout(mark, warmup * 1000);
  await new Promise((resolve) => {
    conn.ws.on('message', () => {
      received++;
      if (!stopping) {
        conn.ws.send(payload);
        sent++;
      } else if (received === sent) resolve();
    });
    for (let i = 0; i < window; i++) {
      conn.ws.send(payload);
      sent++;
    }
    setTimeout(
      () => {
        stopping = true;
        if (received === sent) resolve();
        setTimeout(resolve, 2000).unref();
      },
      (warmup + seconds) * 1000,
    );
  });
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuSeconds = treeCpu(pids) - cpu0;
  conn.ws.terminate();
  // Messages through the proxy: each echo is one message in and one out.
  return { echoes: received, messages: sent + received - counted0, seconds: elapsed, cpuSeconds };
}

async function openConnections({ url, conns, rooms, batch = 100 }) {
  let errors = 0;
  for (let start = 0; start < conns; start += batch) {
    const wave = [];
    for (let i = start; i < Math.min(conns, start + batch); i++) {
      wave.push(
        connect(url, roomName(i % rooms)).then(
          (conn) => {
            conn.ws.on('message', () => {
              const sentAt = conn.pending.shift();
              if (sentAt !== undefined) latencies.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
            });
            conn.ws.on('error', () => {});
            open.push(conn);
          },
          () => {
            errors++;
          },
        ),
      );
    }
    await Promise.all(wave);
  }
  const byRoom = new Map();
  for (const conn of open) {
    if (!byRoom.has(conn.room)) byRoom.set(conn.room, new Set());
    byRoom.get(conn.room).add(conn.backend);
  }
  for (const [room, backend] of httpBackends) byRoom.get(room)?.add(backend);
  let split = 0;
  for (const backends of byRoom.values()) if (backends.size > 1) split++;
  const perBackend = {};
  for (const conn of open) perBackend[conn.backend] = (perBackend[conn.backend] ?? 0) + 1;
  return { opened: open.length, errors, rooms: byRoom.size, split, perBackend };
}

let latencies = [];

async function echo({ seconds, rate, size }) {
  latencies = [];
  for (const conn of open) conn.pending = [];
  const payload = Buffer.alloc(size, 121);
  const tickMs = 2;
  const perTick = rate * (tickMs / 1000);
  let carry = 0;
  let cursor = 0;
  let sent = 0;
  const started = Date.now();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      if (Date.now() - started >= seconds * 1000) {
        clearInterval(timer);
        resolve();
        return;
      }
      carry += perTick;
      while (carry >= 1 && open.length > 0) {
        carry--;
        const conn = open[cursor++ % open.length];
        conn.pending.push(process.hrtime.bigint());
        conn.ws.send(payload);
        sent++;
      }
    }, tickMs);
  });
  // Let the last echoes arrive (bounded).
  const waitUntil = Date.now() + 3000;
  while (latencies.length < sent && Date.now() < waitUntil) await new Promise((r) => setTimeout(r, 20));
  const sorted = Float64Array.from(latencies).sort();
  const pct = (p) =>
    sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  return { sent, received: sorted.length, p50: pct(0.5), p99: pct(0.99), max: sorted.at(-1) ?? Number.NaN };
}

async function httpCheck({ url, rooms }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const get = (room) =>
    new Promise((resolve, reject) => {
      const req = http.get(`${url}${sep(url)}room=${encodeURIComponent(room)}`, { agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.headers['x-backend'] ?? '')));
      });
      req.setTimeout(5000, () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
  let errors = 0;
  const all = [];
  for (let i = 0; i < rooms; i++) {
    const room = roomName(i);
    all.push(
      get(room).then(
        (backend) => httpBackends.set(room, backend),
        () => errors++,
      ),
    );
  }
  await Promise.all(all);
  agent.destroy();
  return { checked: httpBackends.size, errors };
}

async function closeAll() {
  const closing = open.map(
    (conn) =>
      new Promise((resolve) => {
        if (conn.ws.readyState === WebSocket.CLOSED) return resolve();
        const timer = setTimeout(() => {
          conn.ws.terminate();
          resolve();
        }, 3000);
        conn.ws.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        conn.ws.close(1000);
      }),
  );
  await Promise.all(closing);
  const closed = open.length;
  open = [];
  httpBackends.clear();
  return { closed };
}

const COMMANDS = { upgrades, throughput, open: openConnections, echo, httpCheck, closeAll };

process.on('message', async (message) => {
  try {
    const result = await COMMANDS[message.cmd](message);
    process.send({ ok: true, ...result });
  } catch (error) {
    process.send({ ok: false, error: String(error?.stack ?? error) });
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ ready: true });
