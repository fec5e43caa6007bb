// Room leases: room -> the backend that hosts it while it is live. Two stores with one contract:
// in process memory (one proxy, no Redis) and in Redis (every proxy of a cluster).

/** A lease as read or won: the backend it names and how long it still runs. */
export interface Lease {
  readonly backendId: string;
  /** Milliseconds until the lease lapses unless renewed. */
  readonly ttlMs: number;
}

export interface LeaseStore {
  /** Reads a room's lease without claiming one (status pages, `route`). */
  peek(room: string): Promise<Lease | undefined>;
  /**
   * Returns the room's lease; when there is none, first records `candidate` for `ttlMs` (SET NX).
   * Racing callers all get the one winner. One round trip.
   */
  claim(room: string, candidate: string, ttlMs: number): Promise<Lease>;
  /** Moves a lease from `expected` to `next` only if it still names `expected` (compare-and-set). */
  replace(room: string, expected: string, next: string, ttlMs: number): Promise<Lease>;
  /**
   * Extends the leases of live rooms (batched); a lease that vanished (store restarted) is
   * re-created. Returns the rooms whose lease names another backend now.
   */
  renew(leases: ReadonlyMap<string, string>, ttlMs: number): Promise<string[]>;
  /** Deletes a room's lease if it names `backendId` (a drained room that moves on). */
  release(room: string, backendId: string): Promise<void>;
  close(): Promise<void>;
}

/** Leases in process memory: the same behaviour for one process, without Redis. */
export class MemoryLeaseStore implements LeaseStore {
  private readonly leases = new Map<string, { backendId: string; expiresAt: number }>();

  /** Leases held, lapsed ones included until the next renewal sweeps them. */
  get size(): number {
    return this.leases.size;
  }

  private live(room: string): { backendId: string; expiresAt: number } | undefined {
    const lease = this.leases.get(room);
    if (lease !== undefined && lease.expiresAt <= Date.now()) {
      this.leases.delete(room);
      return undefined;
    }
    return lease;
  }

  async peek(room: string): Promise<Lease | undefined> {
    const lease = this.live(room);
    return lease && { backendId: lease.backendId, ttlMs: lease.expiresAt - Date.now() };
  }

  async claim(room: string, candidate: string, ttlMs: number): Promise<Lease> {
    const lease = this.live(room);
    if (lease !== undefined) return { backendId: lease.backendId, ttlMs: lease.expiresAt - Date.now() };
    this.leases.set(room, { backendId: candidate, expiresAt: Date.now() + ttlMs });
    return { backendId: candidate, ttlMs };
  }

  async replace(room: string, expected: string, next: string, ttlMs: number): Promise<Lease> {
    const lease = this.live(room);
    if (lease !== undefined && lease.backendId !== expected) {
      return { backendId: lease.backendId, ttlMs: lease.expiresAt - Date.now() };
    }
    this.leases.set(room, { backendId: next, expiresAt: Date.now() + ttlMs });
    return { backendId: next, ttlMs };
  }

  async renew(leases: ReadonlyMap<string, string>, ttlMs: number): Promise<string[]> {
    const moved: string[] = [];
    for (const [room, backendId] of leases) {
      const lease = this.live(room);
      if (lease === undefined || lease.backendId === backendId) {
        this.leases.set(room, { backendId, expiresAt: Date.now() + ttlMs });
      } else {
        moved.push(room);
      }
    }
    // Expired leases of rooms nobody renews are dropped here, so the map stays the size of live rooms.
    for (const room of this.leases.keys()) this.live(room);
    return moved;
  }

  async release(room: string, backendId: string): Promise<void> {
    if (this.live(room)?.backendId === backendId) this.leases.delete(room);
  }

  async close(): Promise<void> {
    this.leases.clear();
  }
}
