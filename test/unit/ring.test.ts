import { describe, expect, it } from 'vitest';
import { murmur3 } from '../../src/ring/hash.js';
import { Ring, type RingMember } from '../../src/ring/ring.js';

const rooms = Array.from({ length: 100_000 }, (_, i) => `room-${i}-${(i * 2654435761) % 1000003}`);
const members = (n: number, prefix = 'b'): RingMember[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, weight: 1 }));
const owners = (ring: Ring, list: string[]) => list.map((room) => ring.ownerOf(room)?.id);

describe('murmur3', () => {
  it('matches the reference MurmurHash3 x86_32 vectors', () => {
    expect(murmur3('', 0)).toBe(0);
    expect(murmur3('hello', 0)).toBe(0x248bfa47);
    expect(murmur3('The quick brown fox jumps over the lazy dog', 0)).toBe(0x2e4ff723);
    expect(murmur3('', 1)).toBe(0x514e28b7);
  });

  it('hashes the UTF-8 bytes of non-ASCII text', () => {
    // Same bytes, same hash: 'é' as one code point is the two bytes C3 A9.
    expect(murmur3('café')).toBe(murmur3('caf\u00e9'));
    expect(murmur3('😀')).not.toBe(murmur3('\ud83d'));
  });
});

describe('Ring', () => {
  it('gives an empty ring no owner', () => {
    expect(new Ring([]).ownerOf('x')).toBeUndefined();
  });

  it('depends only on the member set, never its order', () => {
    const list = members(10);
    const a = new Ring(list);
    const b = new Ring([...list].reverse());
    const c = new Ring([...list.slice(5), ...list.slice(0, 5)]);
    const sample = rooms.slice(0, 5000);
    expect(owners(b, sample)).toEqual(owners(a, sample));
    expect(owners(c, sample)).toEqual(owners(a, sample));
    expect(b.fingerprint()).toBe(a.fingerprint());
  });

  it('moves only the removed backend rooms when one is removed', () => {
    const before = new Ring(members(10));
    const after = new Ring(members(10).filter((m) => m.id !== 'b3'));
    let moved = 0;
    let collateral = 0;
    for (const room of rooms) {
      const was = before.ownerOf(room)?.id;
      const now = after.ownerOf(room)?.id;
      if (was !== now) {
        moved++;
        if (was !== 'b3') collateral++;
      }
    }
    expect(collateral).toBe(0);
    expect(moved).toBeGreaterThan(rooms.length / 10 - 1000);
  });

  it('moves rooms only to a newly added backend', () => {
    const before = new Ring(members(10));
    const after = new Ring([...members(10), { id: 'new', weight: 1 }]);
    let toNew = 0;
    for (const room of rooms) {
      const was = before.ownerOf(room)?.id;
      const now = after.ownerOf(room)?.id;
      if (was !== now) {
        expect(now).toBe('new');
        toNew++;
      }
    }
    // About 1/11 of rooms go to the new backend.
    expect(toNew / rooms.length).toBeGreaterThan(0.08);
    expect(toNew / rooms.length).toBeLessThan(0.1);
  });

  it('balances 100,000 rooms over 10 equal backends within max/mean 1.05', () => {
    const ring = new Ring(members(10));
    const counts = new Map<string, number>();
    for (const room of rooms) {
      const id = ring.ownerOf(room)?.id as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const max = Math.max(...counts.values());
    expect(counts.size).toBe(10);
    expect(max / (rooms.length / 10)).toBeLessThanOrEqual(1.05);
  });

  it('honours weights', () => {
    const ring = new Ring([
      { id: 'a', weight: 1 },
      { id: 'b', weight: 2 },
      { id: 'c', weight: 1 },
    ]);
    const counts = new Map<string, number>();
    for (const room of rooms) {
      const id = ring.ownerOf(room)?.id as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const share = (id: string) => (counts.get(id) ?? 0) / rooms.length;
    expect(share('b')).toBeGreaterThan(0.48);
    expect(share('b')).toBeLessThan(0.52);
    expect(share('a')).toBeGreaterThan(0.23);
    expect(share('c')).toBeGreaterThan(0.23);
  });

  it('changing one weight moves rooms only to or from that backend', () => {
    const before = new Ring(members(5));
    const after = new Ring(members(5).map((m) => (m.id === 'b2' ? { ...m, weight: 3 } : m)));
    for (const room of rooms.slice(0, 20_000)) {
      const was = before.ownerOf(room)?.id;
      const now = after.ownerOf(room)?.id;
      if (was !== now) expect(now).toBe('b2');
    }
  });

  it('lists successors owner first, in the order rooms fail over', () => {
    const ring = new Ring(members(6));
    for (const room of rooms.slice(0, 500)) {
      const order = ring.successors(room);
      expect(order).toHaveLength(6);
      expect(order[0]).toBe(ring.ownerOf(room));
      // Removing the owner hands the room to the second in line.
      const without = new Ring(members(6).filter((m) => m.id !== order[0]?.id));
      expect(without.ownerOf(room)?.id).toBe(order[1]?.id);
      expect(ring.ownerWhere(room, (m) => m.id !== order[0]?.id)?.id).toBe(order[1]?.id);
    }
  });

  it('fingerprints the member set', () => {
    expect(new Ring(members(3)).fingerprint()).toBe(new Ring(members(3)).fingerprint());
    expect(new Ring(members(3)).fingerprint()).not.toBe(new Ring(members(4)).fingerprint());
    expect(new Ring(members(3)).fingerprint()).not.toBe(
      new Ring(members(3).map((m, i) => (i === 0 ? { ...m, weight: 2 } : m))).fingerprint(),
    );
  });

  it('refuses duplicate ids and non-positive weights', () => {
    expect(
      () =>
        new Ring([
          { id: 'a', weight: 1 },
          { id: 'a', weight: 1 },
        ]),
    ).toThrow(/twice/);
    expect(() => new Ring([{ id: 'a', weight: 0 }])).toThrow(/positive/);
    expect(() => new Ring([{ id: 'a', weight: -1 }])).toThrow(/positive/);
  });
});
