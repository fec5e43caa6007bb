// Registry figures: how fast a registration reaches every proxy (pub/sub notice -> snapshot -> ring),
// and what loading 1,000 registered backends and rebuilding the ring costs the event loop.
// Usage: npm run build && node bench/registry.js   (needs redis-server on PATH)
import { fork, spawn } from 'node:child_process';
import net from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Pool } from '../dist/pool/index.js';
import { RedisRegistry, RegistryAdmin, registryKeys } from '../dist/registry/index.js';

const PROXIES = 3;
const REGISTRATIONS = Number(process.env.BENCH_REGISTRATIONS ?? 200);
const now = () => performance.timeOrigin + performance.now();

const port = await new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
const redis = spawn(
  'redis-server',
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
await new Promise((resolve) =>
  redis.stdout.on('data', (d) => String(d).includes('Ready to accept') && resolve()),
);
const url = `redis://127.0.0.1:${port}`;
const children = [];
const cleanup = () => {
  for (const c of children) c.kill();
  redis.kill('SIGKILL');
};
process.on('exit', cleanup);

try {
  // 1. Propagation: register a backend, time until every watcher process has it.
  const cluster = 'bench-latency';
  const watchers = await Promise.all(
    Array.from({ length: PROXIES }, () => {
      const child = fork(new URL('./registry-watcher.js', import.meta.url), [url, cluster], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(child);
      return new Promise((resolve) => child.on('message', (m) => m.ready && resolve(child)));
    }),
  );
  const admin = new RegistryAdmin(url, cluster);
  const delays = [];
  for (let i = 0; i < REGISTRATIONS; i++) {
    const id = `b${i}`;
    const arrived = watchers.map(
      (child) =>
        new Promise((resolve) => {
          const on = (m) => {
            if (m.ids?.includes(id)) {
              child.off('message', on);
              resolve(m.at);
            }
          };
          child.on('message', on);
        }),
    );
    const start = now();
    await admin.add(id, `http://127.0.0.1:${20000 + i}`);
    const times = await Promise.all(arrived);
    for (const t of times) delays.push(t - start);
  }
  await admin.close();
  delays.sort((a, b) => a - b);
  const pct = (p) => delays[Math.min(delays.length - 1, Math.floor((p / 100) * delays.length))].toFixed(1);

  // 2. Scale: 1,000 registered backends, cold snapshot load + parse + ring rebuild in this process.
  const big = 'bench-scale';
  const client = new Redis(url);
  const keys = registryKeys(big);
  const fields = {};
  for (let i = 0; i < 1000; i++)
    fields[`node-${String(i).padStart(4, '0')}`] = JSON.stringify({
      url: `http://10.0.${i >> 8}.${i & 255}:8080`,
      weight: 1,
      state: 'active',
      ttl: 5000,
    });
  await client.hset(keys.backends, fields);
  await client.incr(keys.epoch);
  await client.quit();
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  const pool = new Pool({ coolOff: 1000, maxCoolOff: 10000 });
  let applyMs = 0;
  let loadedAt = 0;
  const started = now();
  histogram.enable();
  const registry = new RedisRegistry({
    url,
    config: { redis: url, cluster: big, resync: 60000, debounce: 10, leaderLease: 5000, reapInterval: 60000 },
    staticBackends: [],
    log: pino({ level: 'silent' }),
  });
  await registry.watch((snapshot) => {
    const t = now();
    pool.applySnapshot(snapshot);
    applyMs = now() - t;
    loadedAt = now();
  });
  await new Promise((r) => setTimeout(r, 50));
  histogram.disable();
  await registry.close();
  const rows = [
    [
      'registration reaches all proxies, p50',
      `${pct(50)} ms`,
      `${PROXIES} proxy processes × ${REGISTRATIONS} registrations`,
    ],
    ['registration reaches all proxies, p99', `${pct(99)} ms`, 'target ≤ 100 ms'],
    ['registration reaches all proxies, max', `${delays.at(-1).toFixed(1)} ms`, ''],
    [
      '1,000 backends: connect + first snapshot + ring',
      `${(loadedAt - started).toFixed(1)} ms`,
      'includes the Redis connection',
    ],
    [
      '1,000 backends: ring rebuild (applySnapshot)',
      `${applyMs.toFixed(2)} ms`,
      `ring size ${pool.ring.size}`,
    ],
    ['1,000 backends: longest event-loop block', `${(histogram.max / 1e6).toFixed(1)} ms`, 'target ≤ 20 ms'],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  console.log(`\nregistry figures (node ${process.version})\n`);
  for (const [what, value, note] of rows)
    console.log(`${what.padEnd(width)}  ${value.padStart(10)}  ${note}`);
} finally {
  cleanup();
}
process.exit(0);
