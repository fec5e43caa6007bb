// Live rooms stay whole: room leases across two proxies on a throwaway Redis, scale-out without
// splits (and with leases off, the splits they prevent), racing first joins, and real draining.
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  addBackend,
  backendsCli,
  backendsConfig,
  type OpenSocket,
  openSocket,
  ringSizeOf,
  runCli,
  startBackends,
  startProxy,
  startRedis,
  type TestBackend,
  type TestProxy,
  waitUntil,
} from './helpers.js';

const CLUSTER = 'rooms';
const ringSize = (proxy: TestProxy, n: number) => ringSizeOf(proxy) === n;
const ws = (proxy: TestProxy, room: string) => `${proxy.url.replace('http', 'ws')}/rooms/${room}/ws`;

/** The close code each socket opened by joinAll ended with. */
const closeCodes = new Map<OpenSocket, number>();

/** Opens one socket per room through each proxy, in batches; returns room -> servers seen. */
async function joinAll(
  proxies: TestProxy[],
  rooms: string[],
  keep: OpenSocket[] = [],
): Promise<Map<string, Set<string>>> {
  const seen = new Map<string, Set<string>>();
  for (let i = 0; i < rooms.length; i += 50) {
    await Promise.all(
      rooms.slice(i, i + 50).flatMap((room) =>
        proxies.map(async (proxy) => {
          const socket = await openSocket(ws(proxy, room));
          socket.ws.on('close', (code) => closeCodes.set(socket, code));
          keep.push(socket);
          const set = seen.get(room) ?? new Set<string>();
          set.add(socket.hello.server);
          seen.set(room, set);
        }),
      ),
    );
  }
  return seen;
}

async function scaleOut(affinity: 'on' | 'off') {
  const redis = await startRedis();
  const backends = await startBackends(['b1', 'b2', 'b3', 'b4']);
  for (const b of backends.slice(0, 3)) await addBackend(redis, CLUSTER, b);
  const config = {
    room: { from: [{ path: '/rooms/:room' }] },
    registry: { redis: redis.url, cluster: CLUSTER, resync: '1s' },
    placement: { affinity },
  };
  const proxies = [await startProxy(config), await startProxy(config)];
  await waitUntil(() => proxies.every((p) => ringSize(p, 3)));
  const rooms = Array.from({ length: 300 }, (_, i) => `live-${i}`);
  const open: OpenSocket[] = [];
  const first = await joinAll(proxies, rooms, open);
  const homes = new Map([...first].map(([room, servers]) => [room, [...servers][0] as string]));

  await addBackend(redis, CLUSTER, backends[3] as TestBackend);
  await waitUntil(() => proxies.every((p) => ringSize(p, 4)));
  const again = await joinAll(proxies, rooms, open);
  let split = 0;
  for (const room of rooms) {
    const servers = new Set([...(first.get(room) ?? []), ...(again.get(room) ?? [])]);
    if (servers.size > 1) split++;
  }
  const fresh = await joinAll(
    proxies,
    Array.from({ length: 200 }, (_, i) => `new-${i}`),
  );
  const onNew = [...fresh.values()].filter((servers) => servers.has('b4')).length;
  for (const socket of open) socket.ws.close();
  return { first, homes, split, fresh, onNew };
}

describe('room leases', () => {
  it('scale-out splits no live room: 3 backends, 300 rooms through two proxies, then a 4th backend', async () => {
    const { first, split, fresh, onNew } = await scaleOut('on');
    expect([...first.values()].every((servers) => servers.size === 1)).toBe(true);
    expect(split).toBe(0);
    // New rooms do reach the new backend, in about its fair share (1/4 of 200).
    expect([...fresh.values()].every((servers) => servers.size === 1)).toBe(true);
    expect(onNew).toBeGreaterThan(25);
    expect(onNew).toBeLessThan(80);
  });

  it('with affinity off the same scale-out splits live rooms (what leases prevent)', async () => {
    const { split } = await scaleOut('off');
    // About a quarter of the 300 rooms move on the ring; each has a socket left on its old server.
    expect(split).toBeGreaterThan(30);
  });

  it('100 brand-new rooms joined at the same instant through two proxies end on one backend each', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    for (const b of backends) await addBackend(redis, CLUSTER, b);
    const config = {
      room: { from: [{ path: '/rooms/:room' }] },
      registry: { redis: redis.url, cluster: CLUSTER },
    };
    const proxies = [await startProxy(config), await startProxy(config)];
    await waitUntil(() => proxies.every((p) => ringSize(p, 3)));
    const rooms = Array.from({ length: 100 }, (_, i) => `race-${i}`);
    const sockets = await Promise.all(rooms.flatMap((room) => proxies.map((p) => openSocket(ws(p, room)))));
    for (let i = 0; i < rooms.length; i++) {
      expect(sockets[2 * i]?.hello.server).toBe(sockets[2 * i + 1]?.hello.server);
    }
    for (const s of sockets) s.ws.close();
  });

  it('keeps a live room on its backend across a reload that adds backends, without Redis', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3', 'b4', 'b5', 'b6']);
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends.slice(0, 2)),
    });
    const rooms = Array.from({ length: 40 }, (_, i) => `mem-${i}`);
    const open: OpenSocket[] = [];
    const first = await joinAll([proxy], rooms, open);
    writeFileSync(
      proxy.configFile,
      stringify({
        listen: { host: '127.0.0.1', port: proxy.port },
        room: { from: [{ path: '/rooms/:room' }] },
        backends: backendsConfig(backends),
      }),
    );
    proxy.child.kill('SIGHUP');
    await waitUntil(() => ringSize(proxy, 6));
    const again = await joinAll([proxy], rooms, open);
    for (const room of rooms) expect(again.get(room)).toEqual(first.get(room));
    const fresh = await joinAll(
      [proxy],
      Array.from({ length: 60 }, (_, i) => `other-${i}`),
    );
    expect(
      [...fresh.values()].some((servers) => [...servers].some((s) => ['b3', 'b4', 'b5', 'b6'].includes(s))),
    ).toBe(true);
    for (const socket of open) socket.ws.close();
  });
});

describe('draining', () => {
  it('keeps live rooms on a draining backend, then at the deadline closes them with 1012 and moves each room whole', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    for (const b of backends) await addBackend(redis, CLUSTER, b);
    const config = {
      room: { from: [{ path: '/rooms/:room' }] },
      registry: { redis: redis.url, cluster: CLUSTER, resync: '1s' },
      placement: { drainWindow: '600ms' },
    };
    const proxies = [await startProxy(config), await startProxy(config)];
    await waitUntil(() => proxies.every((p) => ringSize(p, 3)));
    const rooms = Array.from({ length: 60 }, (_, i) => `drain-${i}`);
    const open: OpenSocket[] = [];
    const first = await joinAll(proxies, rooms, open);
    const onB1 = rooms.filter((room) => first.get(room)?.has('b1'));
    expect(onB1.length).toBeGreaterThan(5);

    const drain = await backendsCli(redis, CLUSTER, 'drain', ['--id', 'b1', '--deadline', '3s']);
    expect(drain.code).toBe(0);
    await waitUntil(() => proxies.every((p) => ringSize(p, 2)));
    // Draining: new users of live rooms still reach b1; new rooms never do.
    const during = await joinAll(proxies, onB1, open);
    for (const room of onB1) expect(during.get(room)).toEqual(new Set(['b1']));
    const fresh = await joinAll(
      proxies,
      Array.from({ length: 40 }, (_, i) => `fresh-${i}`),
      open,
    );
    expect([...fresh.values()].some((servers) => servers.has('b1'))).toBe(false);
    // The registry shows what is left on b1 (each proxy publishes its live rooms and connections).
    await waitUntil(async () => {
      const list = await backendsCli(redis, CLUSTER, 'list', ['--json']);
      const b1 = (JSON.parse(list.output) as { id: string; connections: number; state: string }[]).find(
        (r) => r.id === 'b1',
      );
      return b1?.state === 'draining' && (b1?.connections ?? 0) >= onB1.length * 2;
    }, 6000);

    // At the deadline every socket on b1 is closed with 1012, spread over the window.
    const b1Sockets = open.filter((s) => s.hello.server === 'b1');
    expect(b1Sockets.length).toBe(onB1.length * 4);
    await waitUntil(() => b1Sockets.every((s) => closeCodes.has(s)), 6000);
    expect(new Set(b1Sockets.map((s) => closeCodes.get(s)))).toEqual(new Set([1012]));
    expect(open.filter((s) => s.hello.server !== 'b1').some((s) => closeCodes.has(s))).toBe(false);
    // Clients reconnect: each room moves, whole, to one backend that is not b1.
    const moved = await joinAll(proxies, onB1, open);
    for (const room of onB1) {
      expect(moved.get(room)?.size).toBe(1);
      expect(moved.get(room)?.has('b1')).toBe(false);
    }
    for (const socket of open) socket.ws.close();
  });
});

describe('plan and bounded load', () => {
  it('plans a removal and an addition against the live registry without changing it', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2', 'b3']);
    for (const b of backends) await addBackend(redis, CLUSTER, b);
    const config = {
      room: { from: [{ path: '/rooms/:room' }] },
      registry: { redis: redis.url, cluster: CLUSTER, resync: '1s' },
    };
    const proxy = await startProxy(config);
    await waitUntil(() => ringSize(proxy, 3));
    const open: OpenSocket[] = [];
    const rooms = Array.from({ length: 40 }, (_, i) => `plan-${i}`);
    const seen = await joinAll([proxy], rooms, open);
    const onB1 = rooms.filter((r) => seen.get(r)?.has('b1'));
    const plan = async (args: string[]) => {
      const out = await runCli(['plan', '--redis', redis.url, '--cluster', CLUSTER, ...args, '--json']);
      expect(out.code).toBe(0);
      return JSON.parse(out.output) as {
        liveRooms: number;
        affected: { rooms: number; connections: number };
        destinations: Record<string, number>;
        ringMoves: number;
        shares: { id: string; after: number }[];
      };
    };
    // Loads are published every 2 s: wait until b1's connections show.
    await waitUntil(async () => (await plan(['--remove', 'b1'])).affected.connections === onB1.length, 6000);
    const removal = await plan(['--remove', 'b1']);
    expect(removal.liveRooms).toBe(40);
    expect(removal.affected.rooms).toBe(onB1.length);
    expect(removal.destinations.b1).toBeUndefined();
    expect(Object.values(removal.destinations).reduce((a, b) => a + b, 0)).toBe(onB1.length);
    const addition = await plan(['--add', `b4=${backends[0]?.url}`]);
    expect(addition.affected.rooms).toBe(0);
    expect(addition.ringMoves).toBeGreaterThan(0);
    expect(addition.shares.find((s) => s.id === 'b4')?.after).toBeCloseTo(0.25);
    const list = await backendsCli(redis, CLUSTER, 'list', ['--json']);
    expect((JSON.parse(list.output) as unknown[]).length).toBe(3);
    const bad = await runCli(['plan', '--redis', redis.url, '--cluster', CLUSTER]);
    expect(bad.code).toBe(2);
    for (const socket of open) socket.ws.close();
  });

  it('bounds live rooms per backend with loadFactor, never moving a live room', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({
      room: { from: [{ path: '/rooms/:room' }] },
      backends: backendsConfig(backends),
      placement: { loadFactor: 1.1, affinity: 'on' },
    });
    const open: OpenSocket[] = [];
    const counts = new Map<string, number>();
    const homes = new Map<string, string>();
    for (let i = 0; i < 45; i++) {
      const socket = await openSocket(ws(proxy, `bounded-${i}`));
      open.push(socket);
      homes.set(`bounded-${i}`, socket.hello.server);
      counts.set(socket.hello.server, (counts.get(socket.hello.server) ?? 0) + 1);
      // Each new room is placed under ceil(1.1 × (rooms + 1) / 3).
      expect(Math.max(...counts.values())).toBeLessThanOrEqual(Math.ceil((1.1 * (i + 1)) / 3));
    }
    // Joining the same rooms again lands with their first users, bound or not.
    for (let i = 0; i < 45; i += 5) {
      const again = await openSocket(ws(proxy, `bounded-${i}`));
      open.push(again);
      expect(again.hello.server).toBe(homes.get(`bounded-${i}`));
    }
    for (const socket of open) socket.ws.close();
  });
});
