// Operator commands against the registry (`roomring backends ...`): list, add, remove, drain, undrain.

import type { Redis } from 'ioredis';
import { sumLoads } from '../affinity/cluster-load.js';
import { parseVerdict } from '../health/verdict.js';
import { readEntry } from './entry.js';
import { type RegistryKeys, registryKeys } from './keys.js';
import { connectRedis, redisOptions } from './redis-connections.js';
import { DEREGISTER, membershipKeys, REGISTER, runScript, SET_FIELD, SNAPSHOT } from './scripts.js';

export interface BackendRow {
  id: string;
  url: string | null;
  weight: number | null;
  state: string | null;
  /** ms since the last heartbeat, or null for entries without heartbeats. */
  heartbeatAgeMs: number | null;
  ttlMs: number | null;
  epoch: number;
  /** Why proxies skip this entry, or null when it is usable. */
  invalid: string | null;
  /** Draining: when remaining rooms are moved (ms since the epoch, Redis time), or null. */
  drainDeadline: number | null;
  /** Live rooms and connections on this backend, summed over the proxies' published loads. */
  rooms: number;
  connections: number;
  /** The leader's health verdict ('up', 'down', 'unknown'), or null where no checks run. */
  health: string | null;
  healthReason: string | null;
}

export class RegistryAdmin {
  private readonly redis: Redis;
  private readonly keys: RegistryKeys;

  constructor(url: string, cluster: string) {
    this.keys = registryKeys(cluster);
    this.redis = connectRedis(url, {
      ...redisOptions('roomring:admin'),
      retryStrategy: () => null,
      enableOfflineQueue: true,
    });
    this.redis.on('error', () => {});
  }

  async list(): Promise<BackendRow[]> {
    const [epoch, now, flat, expires, health] = (await runScript(
      this.redis,
      SNAPSHOT,
      membershipKeys(this.keys),
      [],
    )) as [number, number, string[], string[], string[]];
    const verdicts = new Map<string, string>();
    for (let i = 0; i < health.length; i += 2) verdicts.set(health[i] as string, health[i + 1] as string);
    const loads = sumLoads(Object.values(await this.redis.hgetall(this.keys.load)));
    const deadlines = new Map<string, number>();
    for (let i = 0; i < expires.length; i += 2) deadlines.set(expires[i] as string, Number(expires[i + 1]));
    const rows: BackendRow[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const id = flat[i] as string;
      const raw = flat[i + 1] as string;
      const result = readEntry(id, raw);
      let fields: {
        url?: unknown;
        weight?: unknown;
        state?: unknown;
        ttl?: unknown;
        drainDeadline?: unknown;
      } = {};
      try {
        fields = JSON.parse(raw) as typeof fields;
      } catch {
        // Shown as invalid below.
      }
      const ttl = typeof fields.ttl === 'number' && fields.ttl > 0 ? fields.ttl : null;
      const deadline = deadlines.get(id);
      const verdict = parseVerdict(verdicts.get(id) ?? '');
      rows.push({
        id,
        url: typeof fields.url === 'string' ? fields.url : null,
        weight: typeof fields.weight === 'number' ? fields.weight : null,
        state: typeof fields.state === 'string' ? fields.state : null,
        heartbeatAgeMs: deadline !== undefined && ttl !== null ? Math.max(0, now - (deadline - ttl)) : null,
        ttlMs: ttl,
        epoch,
        invalid: result.ok ? null : result.reason,
        health: verdict?.status ?? null,
        healthReason: verdict?.reason ?? null,
        drainDeadline: typeof fields.drainDeadline === 'number' ? fields.drainDeadline : null,
        rooms: loads.get(id)?.rooms ?? 0,
        connections: loads.get(id)?.connections ?? 0,
      });
    }
    return rows.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Adds (or replaces) an entry that exists without heartbeats. */
  async add(id: string, url: string, weight = 1): Promise<void> {
    const entry = JSON.stringify({ url, weight, state: 'active' });
    const check = readEntry(id, entry);
    if (!check.ok) throw new Error(`cannot add '${id}': ${check.reason}`);
    await runScript(this.redis, REGISTER, membershipKeys(this.keys), [this.keys.events, id, entry, 0, 'put']);
  }

  async remove(id: string): Promise<boolean> {
    return (await runScript(this.redis, DEREGISTER, membershipKeys(this.keys), [this.keys.events, id])) === 1;
  }

  /** Starts draining: no new rooms; with `deadlineMs`, remaining rooms move after that long. */
  async drain(id: string, deadlineMs?: number): Promise<boolean> {
    let deadline: number | null = null;
    if (deadlineMs !== undefined) {
      const [seconds, micros] = await this.redis.time();
      deadline = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) + deadlineMs;
    }
    // The deadline is written first, so no proxy sees the drain without it.
    if (!(await this.set(id, 'drainDeadline', deadline))) return false;
    return this.set(id, 'state', 'draining');
  }

  async undrain(id: string): Promise<boolean> {
    if (!(await this.set(id, 'state', 'active'))) return false;
    return this.set(id, 'drainDeadline', null);
  }

  /** Sets one field of an entry (null removes it); returns false when there is no such backend. */
  async set(
    id: string,
    field: 'state' | 'weight' | 'drainDeadline',
    value: string | number | null,
  ): Promise<boolean> {
    const result = await runScript(this.redis, SET_FIELD, membershipKeys(this.keys), [
      this.keys.events,
      id,
      field,
      JSON.stringify(value),
    ]);
    return result !== -1;
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => undefined);
    this.redis.disconnect();
  }
}
