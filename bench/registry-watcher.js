// One watching proxy's registry, as its own process: reports every snapshot's ids and arrival time over IPC.
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { RedisRegistry } from '../dist/registry/index.js';

const [url, cluster] = process.argv.slice(2);
const registry = new RedisRegistry({
  url,
  config: { redis: url, cluster, resync: 5000, debounce: 10, leaderLease: 5000, reapInterval: 1000 },
  staticBackends: [],
  log: pino({ level: 'silent' }),
});
await registry.watch((snapshot) => {
  const at = performance.timeOrigin + performance.now();
  process.send?.({ at, ids: snapshot.backends.map((b) => b.id) });
});
process.send?.({ ready: true });
process.on('disconnect', () => registry.close().then(() => process.exit(0)));
