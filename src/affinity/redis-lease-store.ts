// Room leases in Redis: `roomring:{C}:room:R` -> backend id with a PX lease. Claim, compare-and-set
// and renewal are Lua scripts, so racing proxies always agree on one backend per room.

import type { Redis } from 'ioredis';
import type { RegistryKeys } from '../registry/keys.js';
import { type LuaScript, lua, runScript } from '../registry/scripts.js';
import type { Lease, LeaseStore } from './lease-store.js';

/** KEYS: room. ARGV: candidate, ttl. Returns {backend, pttl}: the existing lease, or the candidate's new one. */
const CLAIM = lua(`
local current = redis.call('GET', KEYS[1])
if current then return {current, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], tonumber(ARGV[2])}
`);

/** KEYS: room. ARGV: expected, next, ttl. */
const REPLACE = lua(`
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return {current, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {ARGV[2], tonumber(ARGV[3])}
`);

/** KEYS: rooms. ARGV: ttl, then one backend per room. Returns the rooms leased to another backend. */
const RENEW = lua(`
local moved = {}
for i, key in ipairs(KEYS) do
  local want = ARGV[i + 1]
  local current = redis.call('GET', key)
  if not current or current == want then
    redis.call('SET', key, want, 'PX', ARGV[1])
  else
    table.insert(moved, i)
  end
end
return moved
`);

/** KEYS: room. ARGV: backend. */
const RELEASE = lua(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

/** Rooms renewed per script call: bounded, so one renewal never blocks Redis for long. */
const RENEW_BATCH = 500;

export class RedisLeaseStore implements LeaseStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RegistryKeys,
  ) {}

  private async lease(script: LuaScript, room: string, args: (string | number)[]): Promise<Lease> {
    const [backendId, ttlMs] = (await runScript(this.redis, script, [this.keys.room(room)], args)) as [
      string,
      number,
    ];
    return { backendId, ttlMs: Math.max(0, ttlMs) };
  }

  async peek(room: string): Promise<Lease | undefined> {
    const key = this.keys.room(room);
    const [[, backendId], [, ttlMs]] = (await this.redis.multi().get(key).pttl(key).exec()) as [
      [unknown, string | null],
      [unknown, number],
    ];
    return backendId === null ? undefined : { backendId, ttlMs: Math.max(0, ttlMs) };
  }

  claim(room: string, candidate: string, ttlMs: number): Promise<Lease> {
    return this.lease(CLAIM, room, [candidate, ttlMs]);
  }

  replace(room: string, expected: string, next: string, ttlMs: number): Promise<Lease> {
    return this.lease(REPLACE, room, [expected, next, ttlMs]);
  }

  async renew(leases: ReadonlyMap<string, string>, ttlMs: number): Promise<string[]> {
    const entries = [...leases];
    const moved: string[] = [];
    for (let i = 0; i < entries.length; i += RENEW_BATCH) {
      const batch = entries.slice(i, i + RENEW_BATCH);
      const indexes = (await runScript(
        this.redis,
        RENEW,
        batch.map(([room]) => this.keys.room(room)),
        [ttlMs, ...batch.map(([, backendId]) => backendId)],
      )) as number[];
      for (const index of indexes) moved.push(batch[index - 1]?.[0] as string);
    }
    return moved;
  }

  async release(room: string, backendId: string): Promise<void> {
    await runScript(this.redis, RELEASE, [this.keys.room(room)], [backendId]);
  }

  async close(): Promise<void> {
    // The connection belongs to the registry.
  }
}
