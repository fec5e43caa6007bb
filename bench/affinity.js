// Room-lease cost: Redis commands per new room and the latency a first join adds, measured through
// a real proxy process with a Redis registry. Usage: npm run build && node bench/affinity.js
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import WebSocket from 'ws';

const ROOMS = Number(process.env.BENCH_ROOMS ?? 300);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const children = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const waitFor = (child, text) =>
  new Promise((resolve) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes(text)) resolve();
    });
  });

const redisPort = await freePort();
const redis = spawn(
  'redis-server',
  ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
children.push(redis);
await waitFor(redis, 'Ready to accept');
const redisUrl = `redis://127.0.0.1:${redisPort}`;
const backend = fork(path.join(root, 'test/fixtures/backend.mjs'), ['b1', '0'], {
  stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
});
children.push(backend);
const backendPort = await new Promise((resolve) => backend.once('message', (m) => resolve(m.port)));
const client = new Redis(redisUrl);
await client.hset(
  'roomring:{bench}:backends',
  'b1',
  JSON.stringify({ url: `http://127.0.0.1:${backendPort}` }),
);

const proxyPort = await freePort();
const dir = mkdtempSync(path.join(tmpdir(), 'roomring-bench-'));
const config = path.join(dir, 'roomring.yaml');
writeFileSync(
  config,
  `listen: {host: 127.0.0.1, port: ${proxyPort}}\nroom: {from: [{path: /rooms/:room}]}\nregistry: {redis: "${redisUrl}", cluster: bench}\nlog: {level: warn}\n`,
);
const proxy = spawn(
  process.execPath,
  [path.join(root, 'bin/roomring.js'), 'start', '--config', config, '--log-level', 'info'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
children.push(proxy);
await waitFor(proxy, 'roomring listening on');
await new Promise((r) => setTimeout(r, 300));

async function join(room) {
  const start = performance.now();
  const ws = new WebSocket(`ws://127.0.0.1:${proxyPort}/rooms/${room}/ws`);
  await new Promise((resolve, reject) => {
    ws.once('message', resolve);
    ws.once('error', reject);
  });
  const ms = performance.now() - start;
  return { ws, ms };
}

async function commandCounts() {
  const info = await client.info('commandstats');
  const counts = {};
  for (const [, name, calls] of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) counts[name] = Number(calls);
  return counts;
}
const diff = (a, b) =>
  Object.fromEntries(
    Object.entries(b)
      .map(([k, v]) => [k, v - (a[k] ?? 0)])
      .filter(([, v]) => v > 0),
  );

// Warm up the connection pool and JIT with a few joins of one room.
for (let i = 0; i < 20; i++) (await join('warm')).ws.close();

const before = await commandCounts();
const first = [];
const open = [];
for (let i = 0; i < ROOMS; i++) {
  const { ws, ms } = await join(`new-${i}`);
  first.push(ms);
  open.push(ws);
}
const afterFirst = await commandCounts();
const again = [];
for (let i = 0; i < ROOMS; i++) {
  const { ws, ms } = await join(`new-${i}`);
  again.push(ms);
  open.push(ws);
}
const afterAgain = await commandCounts();
for (const ws of open) ws.close();

const pct = (list, p) => {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};
const firstCmds = diff(before, afterFirst);
const againCmds = diff(afterFirst, afterAgain);
const perRoom = (cmds) =>
  Object.entries(cmds)
    .filter(([, v]) => v / ROOMS >= 0.1)
    .map(([k, v]) => `${k} ${(v / ROOMS).toFixed(2)}`)
    .join(', ') || 'none';
console.log(
  `\nroom leases through one proxy process (Redis registry), ${ROOMS} rooms, node ${process.version}\n`,
);
console.log(
  `first join of a new room   p50 ${pct(first, 50).toFixed(2)} ms  p99 ${pct(first, 99).toFixed(2)} ms`,
);
console.log(
  `join of a leased room      p50 ${pct(again, 50).toFixed(2)} ms  p99 ${pct(again, 99).toFixed(2)} ms`,
);
console.log(`added by the lease claim   p50 ${(pct(first, 50) - pct(again, 50)).toFixed(2)} ms`);
console.log(`Redis commands per new room (first join):  ${perRoom(firstCmds)}`);
console.log(`Redis commands per join of a cached room:  ${perRoom(againCmds)}`);
console.log(
  '(background, not per room: one SNAPSHOT per resync, one PUBLISH_LOAD every 2 s, one RENEW per 500 live rooms every leaseTtl/3)',
);
await client.quit();
process.exit(0);
