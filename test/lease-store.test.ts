// One contract for both lease stores: in memory and in a throwaway Redis.
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { LeaseStore } from '../src/affinity/lease-store.js';
import { MemoryLeaseStore } from '../src/affinity/lease-store.js';
import { RedisLeaseStore } from '../src/affinity/redis-lease-store.js';
import { registryKeys } from '../src/registry/keys.js';
import { onCleanup, startRedis } from './helpers.js';

const stores: { name: string; make(): Promise<LeaseStore> }[] = [
  { name: 'memory', make: async () => new MemoryLeaseStore() },
  {
    name: 'redis',
    make: async () => {
      const redis = await startRedis();
      const client = new Redis(redis.url);
      onCleanup(() => client.disconnect());
      return new RedisLeaseStore(client, registryKeys('leases'));
    },
  },
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const { name, make } of stores) {
  describe(`lease store: ${name}`, () => {
    it('gives the first claimant the lease and every later one the winner', async () => {
      const store = await make();
      const first = await store.claim('room', 'b1', 1000);
      expect(first.backendId).toBe('b1');
      const second = await store.claim('room', 'b2', 1000);
      expect(second.backendId).toBe('b1');
      expect(second.ttlMs).toBeGreaterThan(0);
      expect(second.ttlMs).toBeLessThanOrEqual(1000);
    });

    it('agrees on one winner when many claim at once', async () => {
      const store = await make();
      const claims = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.claim('busy', `b${i}`, 1000)),
      );
      expect(new Set(claims.map((c) => c.backendId)).size).toBe(1);
    });

    it('lets a lease lapse after its ttl, then the next claim wins', async () => {
      const store = await make();
      await store.claim('room', 'b1', 100);
      await sleep(150);
      expect((await store.claim('room', 'b2', 1000)).backendId).toBe('b2');
    });

    it('replaces only a lease that still names the expected backend', async () => {
      const store = await make();
      await store.claim('room', 'dead', 1000);
      const results = await Promise.all([
        store.replace('room', 'dead', 'b2', 1000),
        store.replace('room', 'dead', 'b3', 1000),
      ]);
      // Both racers end on the one that won the compare-and-set.
      expect(results[0]?.backendId).toBe(results[1]?.backendId);
      expect((await store.replace('room', 'dead', 'b4', 1000)).backendId).toBe(results[0]?.backendId);
    });

    it('renews live rooms, re-creates lost leases and reports rooms leased elsewhere', async () => {
      const store = await make();
      await store.claim('a', 'b1', 100);
      await store.claim('c', 'b9', 1000);
      const moved = await store.renew(
        new Map([
          ['a', 'b1'],
          ['b', 'b2'],
          ['c', 'b3'],
        ]),
        1000,
      );
      expect(moved).toEqual(['c']);
      await sleep(150);
      expect((await store.claim('a', 'x', 1000)).backendId).toBe('b1');
      expect((await store.claim('b', 'x', 1000)).backendId).toBe('b2');
    });

    it('releases a lease only for the backend it names', async () => {
      const store = await make();
      await store.claim('room', 'b1', 1000);
      await store.release('room', 'b2');
      expect((await store.claim('room', 'x', 1000)).backendId).toBe('b1');
      await store.release('room', 'b1');
      expect((await store.claim('room', 'x', 1000)).backendId).toBe('x');
    });
  });
}

describe('memory lease store', () => {
  it('forgets lapsed leases on renewal, so rooms seen once do not pile up', async () => {
    const store = new MemoryLeaseStore();
    for (let i = 0; i < 100; i++) await store.claim(`once-${i}`, 'b1', 50);
    await store.claim('live', 'b1', 50);
    await new Promise((r) => setTimeout(r, 80));
    await store.renew(new Map([['live', 'b1']]), 1000);
    expect(store.size).toBe(1);
    await store.renew(new Map(), 1000);
    expect(store.size).toBe(1);
  });
});

describe('Placer with memory leases', () => {
  it('lets the leases of rooms without live connections lapse even when no room is live', async () => {
    const { Placer } = await import('../src/affinity/placement.js');
    const { Pool } = await import('../src/pool/pool.js');
    const pool = new Pool({ coolOff: 1000, maxCoolOff: 1000 });
    pool.applySnapshot({
      epoch: 1,
      backends: [{ id: 'b1', url: 'http://127.0.0.1:1', weight: 1, state: 'active' }],
    });
    const store = new MemoryLeaseStore();
    const placer = new Placer(
      pool,
      store,
      { affinity: true, leaseTtl: 50 },
      { roomsOf: () => 0, totalRooms: () => 0 },
    );
    for (let i = 0; i < 20; i++) expect((await placer.place(`http-only-${i}`))?.backend.id).toBe('b1');
    expect(store.size).toBe(20);
    await new Promise((r) => setTimeout(r, 80));
    await placer.renew(new Map());
    expect(store.size).toBe(0);
    expect(placer.cachedRooms).toBe(0);
  });
});
