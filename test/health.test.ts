// Health checking end to end: real backends whose /health can be switched to fail, real proxies,
// and for the shared verdict two proxies on a throwaway Redis, including killing the leader.
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  addBackend,
  backendsCli,
  backendsConfig,
  onCleanup,
  request,
  ringSizeOf,
  startBackends,
  startProxy,
  startRedis,
  type TestBackend,
  type TestProxy,
  waitUntil,
} from './helpers.js';

const HEALTH = { path: '/health', interval: '200ms', timeout: '200ms', fall: 2, rise: 2 };
/** These tests look at ring membership: room leases off, so each request shows the ring's choice. */
const RING_ONLY = { affinity: 'off' };
const rooms = Array.from({ length: 60 }, (_, i) => `room-${i}`);

async function servedBy(proxy: TestProxy, room: string): Promise<string> {
  const res = await request(`${proxy.url}/rooms/${room}`);
  return res.status === 200 ? String(res.headers['x-served-by']) : `status ${res.status}`;
}

async function owners(proxy: TestProxy): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  for (const room of rooms) map.set(room, await servedBy(proxy, room));
  return map;
}

async function setHealth(backend: TestBackend | undefined, query: string): Promise<void> {
  await request(`${backend?.url}/set-health?${query}`);
}

const ringSize = (proxy: TestProxy, n: number) => ringSizeOf(proxy) === n;
const count = (proxy: TestProxy, pattern: RegExp) =>
  (proxy.output().match(new RegExp(pattern, 'g')) ?? []).length;

describe('health checks without Redis', () => {
  it('takes a failing backend out within interval × fall + 1 s, moves only its rooms, and brings it back after rise passes', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends),
      health: HEALTH,
      placement: RING_ONLY,
    });
    await waitUntil(() => ringSize(proxy, 3));
    const before = await owners(proxy);
    expect(new Set(before.values())).toEqual(new Set(['b1', 'b2', 'b3']));

    await setHealth(backends[0], 'status=503');
    // How fast is measured by bench/failover.js; here only that it happens (a loaded CI machine
    // must not turn a timing into a failure).
    await waitUntil(() => /backend b1 is down: status 503/.test(proxy.output()), 5000);
    const during = await owners(proxy);
    for (const room of rooms) {
      if (before.get(room) === 'b1') expect(during.get(room)).not.toBe('b1');
      else expect(during.get(room)).toBe(before.get(room));
    }

    await setHealth(backends[0], 'status=200');
    await waitUntil(() => count(proxy, /backend b1 is up: passed 2 check/) === 2, 3000);
    expect(await owners(proxy)).toEqual(before);
  });

  it('gives a new backend no rooms until it passed its checks, and never admits a flapping one', async () => {
    const backends = await startBackends(['b1', 'b2']);
    await setHealth(backends[1], 'flap=1');
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends),
      health: HEALTH,
      placement: RING_ONLY,
    });
    // Before any check passed: no backend takes rooms.
    expect((await request(`${proxy.url}/rooms/x`)).status).toBe(503);
    await waitUntil(() => ringSize(proxy, 1));
    // b2 alternates pass/fail faster than rise: 2 s of checks, it never enters the ring.
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 250));
      expect(await servedBy(proxy, rooms[i] as string)).toBe('b1');
    }
    expect(proxy.output()).not.toMatch(/backend b2 is up/);
    expect(proxy.output()).not.toMatch(/ring rebuilt with 2 backend/);
  });

  it('passive: rooms of a SIGKILLed backend succeed on their successor at once; the active check confirms it down', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends),
      health: { ...HEALTH, interval: '5s', rise: 1 },
    });
    await waitUntil(() => ringSize(proxy, 3));
    const before = await owners(proxy);
    const victimRoom = [...before].find(([, b]) => b === 'b1')?.[0] as string;
    await backends[0]?.kill('SIGKILL');
    const res = await request(`${proxy.url}/rooms/${victimRoom}`);
    expect(res.status).toBe(200);
    expect(res.headers['x-served-by']).not.toBe('b1');
    // The passive failure triggers an immediate probe, long before the 5 s interval.
    await waitUntil(() => /backend b1 is down: ECONNREFUSED/.test(proxy.output()), 4000);
    const after = await owners(proxy);
    for (const room of rooms) if (before.get(room) !== 'b1') expect(after.get(room)).toBe(before.get(room));
  });
});

describe('one verdict in Redis mode', () => {
  it('has all proxies drop a failing backend together, send its rooms to the same successor, and survives the leader dying', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const config = {
      room: { from: [{ path: '/rooms/:room' }] },
      registry: {
        redis: redis.url,
        cluster: 'health',
        resync: '1s',
        reapInterval: '200ms',
        leaderLease: '1s',
      },
      health: HEALTH,
      placement: RING_ONLY,
    };
    for (const b of backends) await addBackend(redis, 'health', b);
    const p1 = await startProxy(config);
    const p2 = await startProxy(config);
    await waitUntil(() => ringSize(p1, 3) && ringSize(p2, 3), 5000);
    const leader = /now holds the registry leader lease/.test(p1.output()) ? p1 : p2;
    const follower = leader === p1 ? p2 : p1;
    // Only the leader checks and logs transitions.
    expect(follower.output()).not.toMatch(/backend b\d is up/);
    const before = await owners(p1);

    await setHealth(backends[1], 'status=500');
    await waitUntil(() => ringSize(p1, 2) && ringSize(p2, 2), 5000);
    const a = await owners(p1);
    const b = await owners(p2);
    expect(a).toEqual(b);
    for (const room of rooms) {
      if (before.get(room) === 'b2') expect(a.get(room)).not.toBe('b2');
      else expect(a.get(room)).toBe(before.get(room));
    }
    const list = await backendsCli(redis, 'health', 'list', ['--json']);
    const b2 = (JSON.parse(list.output) as { id: string; health: string; healthReason: string }[]).find(
      (r) => r.id === 'b2',
    );
    expect(b2).toMatchObject({ health: 'down', healthReason: 'status 500' });

    // The leader dies; the follower takes the lease within its time and keeps checking.
    leader.child.kill('SIGKILL');
    await waitUntil(() => /now holds the registry leader lease/.test(follower.output()), 3000);
    await setHealth(backends[1], 'status=200');
    await waitUntil(() => count(follower, /backend b2 is up/) >= 1, 3000);
    await waitUntil(
      async () => (await owners(follower)).size === rooms.length && ringSize(follower, 3),
      3000,
    );
    expect(await owners(follower)).toEqual(before);
  });
});

describe('verdicts through a Redis restart', () => {
  it('checks file-listed backends in Redis mode and writes their verdicts again after Redis comes back empty', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['s1', 's2']);
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends),
      registry: {
        redis: redis.url,
        cluster: 'restart',
        resync: '500ms',
        reapInterval: '200ms',
        leaderLease: '1s',
      },
      health: HEALTH,
      placement: RING_ONLY,
    });
    // Backends from the file get verdicts like registered ones (initial: down needs them).
    await waitUntil(() => ringSize(proxy, 2), 5000);
    const before = await owners(proxy);
    await redis.stop();
    await redis.start();
    const client = new Redis(redis.url);
    onCleanup(() => client.disconnect());
    // The leader writes the lost verdicts again; the ring never empties meanwhile.
    await waitUntil(
      async () => Object.keys(await client.hgetall('roomring:{restart}:health')).length === 2,
      6000,
    );
    expect(await owners(proxy)).toEqual(before);
    // Past the recovery window (one resync), the ring still holds both: no request gets a 503.
    const until = Date.now() + 1500;
    while (Date.now() < until) expect(await owners(proxy)).toEqual(before);
    expect(ringSizeOf(proxy)).toBe(2);
  });
});
