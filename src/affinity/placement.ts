// Placement: which backend a room goes to. With affinity on, a live room keeps the backend its
// lease names across ring changes; only a room without a lease follows the ring (optionally under
// a load bound). Leases are cached; a cache miss costs one store round trip, never more.

import type { Backend, Pool } from '../pool/pool.js';
import type { LeaseStore } from './lease-store.js';

export type PlacementReason = 'lease' | 'ring-owner' | 'failover' | 'bounded-load';

export interface Placement {
  readonly backend: Backend;
  readonly reason: PlacementReason;
}

export interface PlacementOptions {
  affinity: boolean;
  /** Lease time: a room empty everywhere for this long follows the ring again. */
  leaseTtl: number;
  /** Bounded load by room: a new room skips backends above ceil(c × average) live rooms. */
  loadFactor?: number | undefined;
}

/** Live rooms per backend, as the cluster sees them. */
export interface LoadView {
  roomsOf(backendId: string): number;
  totalRooms(): number;
}

interface CachedLease {
  backendId: string;
  /** The lease cannot lapse before this (its remaining ttl when read, less a margin). */
  validUntil: number;
}

/** The cache is trusted for 90% of a lease's remaining time, leaving room for clock drift. */
const CACHE_MARGIN = 0.9;

export class Placer {
  private readonly cache = new Map<string, CachedLease>();
  private readonly pending = new Map<string, Promise<Placement | undefined>>();

  constructor(
    private readonly pool: Pool,
    private store: LeaseStore | undefined,
    private options: PlacementOptions,
    private readonly load: LoadView,
  ) {}

  configure(options: PlacementOptions, store: LeaseStore | undefined = this.store): void {
    this.options = options;
    this.store = store;
    if (!options.affinity) this.cache.clear();
  }

  get affinity(): boolean {
    return this.options.affinity && this.store !== undefined;
  }

  /**
   * The answer without I/O when there is one: a cached lease of a backend that can host, or the
   * ring's choice when affinity is off. Undefined means `place()` must ask the lease store.
   */
  placeNow(room: string): Placement | undefined {
    if (!this.affinity) {
      const owner = this.pool.ring.ownerOf(room);
      const backend = this.pool.pick(room);
      return backend && { backend, reason: backend === owner ? 'ring-owner' : 'failover' };
    }
    const cached = this.cache.get(room);
    if (cached === undefined) return undefined;
    const now = Date.now();
    if (cached.validUntil <= now || !this.pool.canHost(cached.backendId, now)) {
      this.cache.delete(room);
      return undefined;
    }
    const backend = this.pool.get(cached.backendId);
    return backend && { backend, reason: 'lease' };
  }

  /** Places a room: its lease if it has one that can host, else a new lease on the ring's choice. */
  place(room: string): Promise<Placement | undefined> {
    const known = this.placeNow(room);
    if (known !== undefined || !this.affinity) return Promise.resolve(known);
    // Concurrent first joins of one room on this proxy share one store round trip.
    let pending = this.pending.get(room);
    if (pending === undefined) {
      pending = this.placeWithStore(room).finally(() => this.pending.delete(room));
      this.pending.set(room, pending);
    }
    return pending;
  }

  /** Where `room` would go now and why, without claiming a lease. */
  async explain(room: string): Promise<Placement | undefined> {
    if (!this.affinity) return this.placeNow(room);
    const lease = await (this.store as LeaseStore).peek(room);
    const backend = lease && this.pool.get(lease.backendId);
    if (backend !== undefined && this.pool.canHost(backend.id)) return { backend, reason: 'lease' };
    return this.choose(room);
  }

  /** Extends the leases of rooms with live connections here; call every leaseTtl / 3. */
  async renew(live: ReadonlyMap<string, string>): Promise<void> {
    // Runs with no live room too: lapsed leases (rooms that only saw HTTP) leave the cache and the
    // memory store here, so neither grows with every room ever seen.
    this.sweep();
    if (!this.affinity) return;
    const ttl = this.options.leaseTtl;
    const moved = new Set(await (this.store as LeaseStore).renew(live, ttl));
    const validUntil = Date.now() + ttl * CACHE_MARGIN;
    for (const [room, backendId] of live) {
      if (moved.has(room)) this.cache.delete(room);
      else this.cache.set(room, { backendId, validUntil });
    }
  }

  /** Forgets a room's lease (a drained room moves on): the next join takes a new one. */
  async release(room: string, backendId: string): Promise<void> {
    this.cache.delete(room);
    if (this.affinity) await (this.store as LeaseStore).release(room, backendId);
  }

  /** Drops cached leases of rooms whose lease time ran out; keeps the cache the size of live rooms. */
  sweep(now = Date.now()): void {
    for (const [room, lease] of this.cache) if (lease.validUntil <= now) this.cache.delete(room);
  }

  get cachedRooms(): number {
    return this.cache.size;
  }

  private async placeWithStore(room: string): Promise<Placement | undefined> {
    const choice = this.choose(room);
    if (choice === undefined) return undefined;
    const store = this.store as LeaseStore;
    const ttl = this.options.leaseTtl;
    let lease = await store.claim(room, choice.backend.id, ttl);
    if (lease.backendId !== choice.backend.id && !this.pool.canHost(lease.backendId)) {
      // The lease names a backend that cannot host any more: move it, racing proxies agree via CAS.
      lease = await store.replace(room, lease.backendId, choice.backend.id, ttl);
    }
    const reason = lease.backendId === choice.backend.id ? choice.reason : 'lease';
    return this.accept(room, lease.backendId, lease.ttlMs, reason);
  }

  private accept(
    room: string,
    backendId: string,
    ttlMs: number,
    reason: PlacementReason,
  ): Placement | undefined {
    const backend = this.pool.get(backendId);
    if (backend === undefined) return undefined;
    this.cache.set(room, { backendId, validUntil: Date.now() + ttlMs * CACHE_MARGIN });
    return { backend, reason };
  }

  /** The ring's choice for a new room: owner, or failover, or the first successor under the load bound. */
  private choose(room: string): Placement | undefined {
    const owner = this.pool.ring.ownerOf(room);
    const picked = this.pool.pick(room);
    if (picked === undefined) return undefined;
    const factor = this.options.loadFactor;
    if (factor === undefined || this.pool.ring.size < 2) {
      return { backend: picked, reason: picked === owner ? 'ring-owner' : 'failover' };
    }
    const bound = Math.ceil((factor * (this.load.totalRooms() + 1)) / this.pool.ring.size);
    for (const backend of this.pool.ring.successors(room)) {
      if (this.pool.isCoolingOff(backend.id)) continue;
      if (this.load.roomsOf(backend.id) < bound) {
        return { backend, reason: backend === owner ? 'ring-owner' : 'bounded-load' };
      }
    }
    return { backend: picked, reason: picked === owner ? 'ring-owner' : 'failover' };
  }
}
