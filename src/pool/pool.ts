// Membership state: turns registry snapshots into one immutable ring and keeps local cool-offs of
// backends that refused connections. The request path reads `ring` and never waits on anything.

import { EventEmitter } from 'node:events';
import type { Verdict } from '../health/verdict.js';
import type { BackendEntry, RegistrySnapshot } from '../registry/registry.js';
import { Ring } from '../ring/ring.js';

/** A backend ready for forwarding: its entry plus the parsed address. */
export interface Backend extends BackendEntry {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
}

/** How health verdicts gate the ring: without active checks every backend counts as up. */
export interface HealthPolicy {
  enabled: boolean;
  /** Whether a backend with no verdict yet takes rooms. */
  initial: 'down' | 'up';
}

export interface CoolOffOptions {
  /** First cool-off after a refused connection, in ms; doubled per consecutive failure. */
  coolOff: number;
  /** Upper bound of the cool-off, in ms. */
  maxCoolOff: number;
}

interface Failure {
  count: number;
  until: number;
}

export type RouteReason = 'ring-owner' | 'failover' | 'random';

export interface PoolEvents {
  ring: [ring: Ring<Backend>, previous: Ring<Backend>];
  down: [backend: Backend, coolOffMs: number, count: number];
  up: [backend: Backend];
  /** The backend set changed (added, removed or changed entries), whether or not the ring did. */
  backends: [backends: Backend[]];
  /** A snapshot was applied (changed or not). */
  snapshot: [];
}

export class Pool extends EventEmitter<PoolEvents> {
  /** The current ring of backends that take new rooms; swapped whole on every change. */
  ring: Ring<Backend> = new Ring<Backend>([]);
  epoch = 0;
  private backends = new Map<string, Backend>();
  private verdicts: ReadonlyMap<string, Verdict> = new Map();
  private healthPolicy: HealthPolicy = { enabled: false, initial: 'up' };
  private readonly failures = new Map<string, Failure>();
  /** Registry clock minus this process's clock, from the last snapshot. */
  private clockOffset = 0;
  private readonly usable = (backend: Backend): boolean => !this.isCoolingOff(backend.id);

  constructor(private coolOff: CoolOffOptions) {
    super();
  }

  setCoolOff(options: CoolOffOptions): void {
    this.coolOff = options;
  }

  /** Applies a registry snapshot; the ring is rebuilt only when the member set really changed. */
  applySnapshot(snapshot: RegistrySnapshot): void {
    this.epoch = snapshot.epoch;
    const next = new Map<string, Backend>();
    let changed = snapshot.backends.length !== this.backends.size;
    for (const entry of snapshot.backends) {
      const previous = this.backends.get(entry.id);
      const backend = toBackend(entry, previous);
      if (backend !== previous) changed = true;
      next.set(entry.id, backend);
    }
    this.backends = next;
    for (const id of this.failures.keys()) if (!next.has(id)) this.failures.delete(id);
    if (snapshot.verdicts !== undefined) this.verdicts = snapshot.verdicts;
    if (snapshot.clockOffset !== undefined) this.clockOffset = snapshot.clockOffset;
    if (changed) this.emit('backends', [...next.values()]);
    this.rebuild();
    this.emit('snapshot');
  }

  /** The registry's clock (Redis server time) as this process estimates it: drain deadlines use it. */
  now(): number {
    return Date.now() + this.clockOffset;
  }

  /** Sets how verdicts gate the ring (from the `health` config). */
  setHealthPolicy(policy: HealthPolicy): void {
    this.healthPolicy = policy;
    this.rebuild();
  }

  /** Replaces the health verdicts (local checks, or the leader's verdicts from the registry). */
  setVerdicts(verdicts: ReadonlyMap<string, Verdict>): void {
    this.verdicts = verdicts;
    this.rebuild();
  }

  verdictOf(id: string): Verdict | undefined {
    return this.verdicts.get(id);
  }

  /** Why a backend takes no new rooms, or null when it is in the ring. */
  whyOut(id: string): string | null {
    const backend = this.backends.get(id);
    if (backend === undefined) return 'not registered';
    if (backend.state === 'draining') return 'draining';
    if (this.healthPolicy.enabled) {
      const verdict = this.verdicts.get(id);
      if (verdict === undefined || verdict.status === 'unknown') {
        if (this.healthPolicy.initial === 'down') return 'awaiting its first passed checks';
      } else if (verdict.status === 'down') {
        return `health check failed: ${verdict.reason}`;
      }
    }
    return null;
  }

  /**
   * Whether `id` may keep hosting rooms it already has (a lease names it): registered, not cooling
   * off, not failed by health checks, and, if draining, before its drain deadline.
   */
  canHost(id: string, now = this.now()): boolean {
    const backend = this.backends.get(id);
    if (backend === undefined || this.isCoolingOff(id)) return false;
    if (this.healthPolicy.enabled && this.verdicts.get(id)?.status === 'down') return false;
    return !(
      backend.state === 'draining' &&
      backend.drainDeadline !== undefined &&
      now >= backend.drainDeadline
    );
  }

  private rebuild(): void {
    const members = [...this.backends.values()].filter((b) => this.whyOut(b.id) === null);
    const candidate = new Ring(members);
    if (candidate.fingerprint() !== this.ring.fingerprint() || !sameAddresses(candidate, this.ring)) {
      const previous = this.ring;
      this.ring = candidate;
      this.emit('ring', candidate, previous);
    }
  }

  get(id: string): Backend | undefined {
    return this.backends.get(id);
  }

  list(): Backend[] {
    return [...this.backends.values()];
  }

  /** The backend for `room`: its ring owner, or the first successor not cooling off. */
  pick(room: string): Backend | undefined {
    if (this.failures.size === 0) return this.ring.ownerOf(room);
    return this.ring.ownerWhere(room, this.usable);
  }

  /** Like `pick`, also saying why this backend was chosen. */
  explain(room: string): { backend: Backend | undefined; reason: RouteReason } {
    const owner = this.ring.ownerOf(room);
    const backend = this.pick(room);
    return { backend, reason: backend === owner ? 'ring-owner' : 'failover' };
  }

  /** Any usable backend, for requests without a room under `onMissing: random`. */
  pickRandom(): Backend | undefined {
    const members = this.ring.members.filter(this.usable);
    return members[Math.floor(Math.random() * members.length)];
  }

  /** Records a refused or failed connection: the backend cools off, doubling per repeat. */
  reportFailure(backend: Backend): void {
    const failure = this.failures.get(backend.id) ?? { count: 0, until: 0 };
    failure.count++;
    const ms = Math.min(this.coolOff.coolOff * 2 ** (failure.count - 1), this.coolOff.maxCoolOff);
    failure.until = Date.now() + ms;
    this.failures.set(backend.id, failure);
    this.emit('down', backend, ms, failure.count);
  }

  /** Records a successful connection; clears any cool-off history. */
  reportSuccess(backend: Backend): void {
    this.clearCoolOff(backend.id);
  }

  /** Ends a backend's cool-off (it answered, or an active check passed). */
  clearCoolOff(id: string): void {
    const backend = this.backends.get(id);
    if (this.failures.size !== 0 && this.failures.delete(id) && backend !== undefined)
      this.emit('up', backend);
  }

  isCoolingOff(id: string): boolean {
    const failure = this.failures.get(id);
    return failure !== undefined && failure.until > Date.now();
  }
}

function toBackend(entry: BackendEntry, previous: Backend | undefined): Backend {
  if (
    previous !== undefined &&
    previous.url === entry.url &&
    previous.weight === entry.weight &&
    previous.state === entry.state &&
    JSON.stringify(previous.health) === JSON.stringify(entry.health) &&
    previous.drainDeadline === entry.drainDeadline
  ) {
    return previous;
  }
  const url = new URL(entry.url);
  const tls = url.protocol === 'https:' || url.protocol === 'wss:';
  return {
    id: entry.id,
    url: entry.url,
    weight: entry.weight,
    state: entry.state,
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? (tls ? 443 : 80) : Number(url.port),
    tls,
    health: entry.health,
    drainDeadline: entry.drainDeadline,
  };
}

function sameAddresses(a: Ring<Backend>, b: Ring<Backend>): boolean {
  return a.members.every((m, i) => m.url === b.members[i]?.url);
}
