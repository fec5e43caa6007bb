// The Redis registry end to end: real redis-server (throwaway, killed and restarted), real proxy
// processes, real `roomring register` sidecars and backends.
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  addBackend,
  backendsCli,
  onCleanup,
  request,
  ringSizeOf,
  runCli,
  spawnCli,
  startBackends,
  startProxy,
  startRedis,
  type TestProxy,
  type TestRedis,
  waitUntil,
} from './helpers.js';

const CLUSTER = 'chat-test';

/** Ring-level behaviour: room leases off, so every request shows where the ring sends its room. */
function registryConfig(redis: TestRedis, extra: Record<string, unknown> = {}) {
  return {
    room: { from: [{ path: '/rooms/:room' }] },
    placement: { affinity: 'off' },
    registry: {
      redis: redis.url,
      cluster: CLUSTER,
      resync: '1s',
      reapInterval: '200ms',
      leaderLease: '1s',
      ...extra,
    },
  };
}

function register(redis: TestRedis, id: string, url: string, ttl = '1s') {
  const sidecar = spawnCli([
    'register',
    '--redis',
    redis.url,
    '--cluster',
    CLUSTER,
    '--id',
    id,
    '--url',
    url,
    '--ttl',
    ttl,
  ]);
  return sidecar;
}

async function servedBy(proxy: TestProxy, room: string): Promise<string> {
  const res = await request(`${proxy.url}/rooms/${room}`);
  return res.status === 200 ? String(res.headers['x-served-by']) : `status ${res.status}`;
}

function lastFingerprint(proxy: TestProxy): string | undefined {
  return [...proxy.output().matchAll(/"fingerprint":"([0-9a-f]+)"/g)].at(-1)?.[1];
}

const rooms = Array.from({ length: 60 }, (_, i) => `room-${i}`);

describe('Redis registry', () => {
  it('starts empty (503), then routes once a backend registers; two proxies agree on every room', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const p1 = await startProxy(registryConfig(redis));
    const p2 = await startProxy(registryConfig(redis));
    const empty = await request(`${p1.url}/rooms/lobby`);
    expect(empty.status).toBe(503);
    expect(JSON.parse(empty.body).error.code).toBe('ROOMRING_E_NO_BACKEND');

    const sidecars = backends.map((b) => register(redis, b.id, b.url));
    await Promise.all(sidecars.map((s) => s.waitFor(/registered/)));
    await waitUntil(
      async () => (await servedBy(p1, 'x')).startsWith('b') && (await servedBy(p2, 'x')).startsWith('b'),
    );
    await waitUntil(() => ringSizeOf(p1) === 3 && ringSizeOf(p2) === 3);
    expect(lastFingerprint(p1)).toBe(lastFingerprint(p2));
    const seen = new Set<string>();
    for (const room of rooms) {
      const [a, b] = [await servedBy(p1, room), await servedBy(p2, room)];
      expect(a).toBe(b);
      seen.add(a);
    }
    expect(seen).toEqual(new Set(['b1', 'b2', 'b3']));
    // `route` reads the same registry and agrees with the proxies.
    for (const room of rooms.slice(0, 5)) {
      const route = await runCli(['route', room, '--config', p1.configFile, '--json']);
      expect(route.code).toBe(0);
      const routed = JSON.parse(route.output) as { backend: { id: string }; fingerprint: string };
      expect(routed.backend.id).toBe(await servedBy(p1, room));
      expect(routed.fingerprint).toBe(lastFingerprint(p1));
    }

    // `backends list --json` shows what the proxies route on.
    const list = await backendsCli(redis, CLUSTER, 'list', ['--json']);
    expect(list.code).toBe(0);
    const rows = JSON.parse(list.output) as {
      id: string;
      state: string;
      heartbeatAgeMs: number | null;
      epoch: number;
    }[];
    expect(rows.map((r) => r.id)).toEqual(['b1', 'b2', 'b3']);
    expect(rows.every((r) => r.state === 'active' && r.heartbeatAgeMs !== null && r.epoch >= 3)).toBe(true);

    // A sidecar stopped with SIGTERM deregisters; both proxies drop the backend, other rooms stay.
    const before = new Map<string, string>();
    for (const room of rooms) before.set(room, await servedBy(p1, room));
    await sidecars[0]?.stop();
    await waitUntil(() => ringSizeOf(p1) === 2 && ringSizeOf(p2) === 2);
    for (const room of rooms) {
      const now = await servedBy(p1, room);
      expect(await servedBy(p2, room)).toBe(now);
      if (before.get(room) !== 'b1') expect(now).toBe(before.get(room));
      else expect(now).not.toBe('b1');
    }
  });

  it('reaps a backend whose heartbeats stop (SIGKILLed sidecar) on every proxy', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2']);
    const p1 = await startProxy(registryConfig(redis));
    const p2 = await startProxy(registryConfig(redis));
    const sidecars = backends.map((b) => register(redis, b.id, b.url, '600ms'));
    await waitUntil(() => ringSizeOf(p1) === 2 && ringSizeOf(p2) === 2);
    sidecars[1]?.child.kill('SIGKILL');
    await waitUntil(
      () => /removed 1 backend\(s\) whose heartbeat expired/.test(p1.output() + p2.output()),
      5000,
    );
    await waitUntil(() => ringSizeOf(p1) === 1 && ringSizeOf(p2) === 1);
    // Exactly one proxy holds the lease and reaps.
    const leaders = [p1, p2].filter((p) => /now holds the registry leader lease/.test(p.output()));
    expect(leaders).toHaveLength(1);
    for (const room of rooms.slice(0, 10)) expect(await servedBy(p2, room)).toBe('b1');
  });

  it('keeps routing on the last snapshot while Redis is down and resyncs when it returns', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy(registryConfig(redis));
    const sidecars = backends.map((b) => register(redis, b.id, b.url, '900ms'));
    await waitUntil(() => ringSizeOf(proxy) === 3);
    const before = new Map<string, string>();
    for (const room of rooms) before.set(room, await servedBy(proxy, room));

    await redis.stop();
    await waitUntil(() => /registry unreachable/.test(proxy.output()));
    // Zero failed requests, zero moved rooms, across several reconnect attempts and resyncs.
    for (let round = 0; round < 3; round++) {
      for (const room of rooms) expect(await servedBy(proxy, room)).toBe(before.get(room));
      await new Promise((r) => setTimeout(r, 400));
    }
    expect(proxy.output().match(/registry unreachable/g)).toHaveLength(1);

    // Redis returns empty: sidecars re-register, the proxy resyncs, the ring never empties meanwhile.
    await redis.start();
    await waitUntil(() => /registry reachable again/.test(proxy.output()), 8000);
    await Promise.all(
      sidecars.map((s) => waitUntil(() => (s.output().match(/registered/g) ?? []).length >= 1)),
    );
    for (let round = 0; round < 3; round++) {
      for (const room of rooms) expect(await servedBy(proxy, room)).toBe(before.get(room));
      await new Promise((r) => setTimeout(r, 300));
    }
    const list = await backendsCli(redis, CLUSTER, 'list', ['--json']);
    expect((JSON.parse(list.output) as unknown[]).length).toBe(3);
  });

  it('starts on the static backends while Redis is down and joins the registry when it can', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['s1', 'r1']);
    await redis.stop();
    const proxy = await startProxy({
      ...registryConfig(redis),
      backends: [{ id: 's1', url: backends[0]?.url }],
    });
    expect(proxy.output()).toMatch(/registry unreachable at start; routing on the 1 static backend/);
    expect(await servedBy(proxy, 'lobby')).toBe('s1');
    await redis.start();
    const admin = await backendsCli(redis, CLUSTER, 'add', [
      '--id',
      'r1',
      '--url',
      backends[1]?.url as string,
      '--weight',
      '1000',
    ]);
    expect(admin.code).toBe(0);
    await waitUntil(() => ringSizeOf(proxy) === 2, 8000);
    const seen = new Set<string>();
    for (const room of rooms) seen.add(await servedBy(proxy, room));
    expect(seen.has('r1')).toBe(true);
  });

  it('skips bad registry entries with one warning each and keeps routing', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['good']);
    const proxy = await startProxy(registryConfig(redis, { allow: ['127.0.0.0/8', 'localhost'] }));
    const client = new Redis(redis.url);
    onCleanup(() => client.disconnect());
    const key = `roomring:{${CLUSTER}}:backends`;
    await client.hset(key, {
      good: JSON.stringify({ url: backends[0]?.url, weight: 1, state: 'active' }),
      'bad-json': '{not json',
      'bad-url': JSON.stringify({ url: 'ftp://127.0.0.1:1' }),
      'bad-weight': JSON.stringify({ url: 'http://127.0.0.1:1', weight: -2 }),
      'bad-field': JSON.stringify({ url: 'http://127.0.0.1:1', surprise: true }),
      outside: JSON.stringify({ url: 'http://203.0.113.9:80' }),
    });
    await client.incr(`roomring:{${CLUSTER}}:epoch`);
    await client.publish(`roomring:{${CLUSTER}}:events`, '{}');
    await waitUntil(() => ringSizeOf(proxy) === 1);
    await waitUntil(() => (proxy.output().match(/skipping registry entry/g) ?? []).length >= 5);
    for (const id of ['bad-json', 'bad-url', 'bad-weight', 'bad-field', 'outside']) {
      expect(proxy.output()).toContain(`skipping registry entry '${id}'`);
    }
    expect(proxy.output()).toMatch(/outside registry\.allow/);
    // Further resyncs do not repeat the warnings.
    await new Promise((r) => setTimeout(r, 1500));
    expect(proxy.output().match(/skipping registry entry/g)).toHaveLength(5);
    expect(await servedBy(proxy, 'lobby')).toBe('good');
    expect(proxy.child.exitCode).toBeNull();
  });

  it('drains and undrains through the admin CLI: no new rooms while draining', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2']);
    const proxy = await startProxy(registryConfig(redis));
    for (const b of backends) await addBackend(redis, CLUSTER, b);
    await waitUntil(() => ringSizeOf(proxy) === 2);
    const drain = await backendsCli(redis, CLUSTER, 'drain', ['--id', 'b1']);
    expect(drain.code).toBe(0);
    await waitUntil(() => ringSizeOf(proxy) === 1);
    for (const room of rooms) expect(await servedBy(proxy, room)).toBe('b2');
    await backendsCli(redis, CLUSTER, 'undrain', ['--id', 'b1']);
    await waitUntil(async () => (await Promise.all(rooms.map((r) => servedBy(proxy, r)))).includes('b1'));
    const missing = await backendsCli(redis, CLUSTER, 'remove', ['--id', 'ghost']);
    expect(missing.code).toBe(2);
    const noRedis = await runCli(['backends', 'list', '--cluster', CLUSTER], { REDIS_URL: '' });
    expect(noRedis.code).toBe(2);
  });
});

describe('registerBackend (library API)', () => {
  it('registers, drains, undrains and deregisters a backend from inside a Node process', async () => {
    const { registerBackend } = await import('../src/index.js');
    const redis = await startRedis();
    const backends = await startBackends(['lib1', 'lib2']);
    const proxy = await startProxy(registryConfig(redis));
    const handles = backends.map((b) =>
      registerBackend({
        redis: redis.url,
        cluster: CLUSTER,
        id: b.id,
        url: b.url,
        ttl: 1000,
        meta: { zone: 'a' },
      }),
    );
    onCleanup(() => Promise.all(handles.map((h) => h.close())));
    await Promise.all(handles.map((h) => h.ready));
    await waitUntil(() => ringSizeOf(proxy) === 2);
    await handles[0]?.drain();
    await waitUntil(() => ringSizeOf(proxy) === 1);
    for (const room of rooms.slice(0, 10)) expect(await servedBy(proxy, room)).toBe('lib2');
    // Heartbeats keep the operator's drain: the entry stays draining.
    await new Promise((r) => setTimeout(r, 700));
    expect(ringSizeOf(proxy)).toBe(1);
    await handles[0]?.undrain();
    await waitUntil(() => ringSizeOf(proxy) === 2);
    await handles[1]?.close();
    await waitUntil(() => ringSizeOf(proxy) === 1);
    const list = await backendsCli(redis, CLUSTER, 'list', ['--json']);
    expect((JSON.parse(list.output) as { id: string }[]).map((r) => r.id)).toEqual(['lib1']);
  });
});
