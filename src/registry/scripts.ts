// The registry protocol's Lua scripts. Every membership change runs in one script that changes the
// data, bumps the epoch and publishes a notice, atomically; times come from Redis `TIME`, so no
// proxy's or backend's clock ever matters.

import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RegistryKeys } from './keys.js';

export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

export function lua(source: string): LuaScript {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

const NOTIFY = `
local function notify(change, ids)
  local epoch = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', ARGV[1], cjson.encode({ epoch = epoch, change = change, ids = ids }))
  return epoch
end
`;

/**
 * KEYS: backends, expires, epoch. ARGV: channel, id, entry JSON, ttl ms (0: no heartbeat), mode.
 * mode 'heartbeat' refreshes an existing entry and keeps its state and weight (an operator's drain
 * survives the backend's heartbeats); 'put' writes the entry as given. Returns {changed, epoch}.
 */
export const REGISTER = lua(`${NOW}${NOTIFY}
local id, entry, ttl, mode = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if ttl > 0 then redis.call('ZADD', KEYS[2], now + ttl, id) else redis.call('ZREM', KEYS[2], id) end
local existing = redis.call('HGET', KEYS[1], id)
if existing == entry then return {0, tonumber(redis.call('GET', KEYS[3]) or '0')} end
if existing and mode == 'heartbeat' then
  local ok, old = pcall(cjson.decode, existing)
  local ok2, new = pcall(cjson.decode, entry)
  if ok and ok2 and type(old) == 'table' and type(new) == 'table' then
    if old.url == new.url and old.ttl == new.ttl then
      return {0, tonumber(redis.call('GET', KEYS[3]) or '0')}
    end
    new.state = old.state or new.state
    new.weight = old.weight or new.weight
    entry = cjson.encode(new)
  end
end
redis.call('HSET', KEYS[1], id, entry)
return {1, notify(existing and 'update' or 'register', {id})}
`);

/** KEYS: backends, expires, epoch, health. ARGV: channel, id. Returns 1 when the entry existed. */
export const DEREGISTER = lua(`${NOTIFY}
local removed = redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
if removed == 0 then return 0 end
notify('deregister', {ARGV[2]})
return 1
`);

/**
 * KEYS: backends, expires, epoch. ARGV: channel, id, field, value as JSON (null removes the field).
 * Returns 1 on change, 0 when unchanged, -1 when there is no such backend.
 */
export const SET_FIELD = lua(`${NOTIFY}
local existing = redis.call('HGET', KEYS[1], ARGV[2])
if not existing then return -1 end
local ok, entry = pcall(cjson.decode, existing)
if not ok or type(entry) ~= 'table' then return redis.error_reply('entry ' .. ARGV[2] .. ' is not valid JSON') end
local value = cjson.decode(ARGV[4])
if value == cjson.null then value = nil end
if entry[ARGV[3]] == value then return 0 end
entry[ARGV[3]] = value
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
notify(ARGV[3], {ARGV[2]})
return 1
`);

/** KEYS: backends, expires, epoch, health. ARGV: channel. Removes entries past their heartbeat deadline. */
export const REAP = lua(`${NOW}${NOTIFY}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
if #ids == 0 then return ids end
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[4], id)
end
notify('expire', ids)
return ids
`);

/**
 * KEYS: backends, expires, epoch, health.
 * Returns {epoch, now, backends (flat hash), expires (flat zset), health (flat hash)}: one round trip.
 */
export const SNAPSHOT = lua(`${NOW}
return {
  tonumber(redis.call('GET', KEYS[3]) or '0'),
  now,
  redis.call('HGETALL', KEYS[1]),
  redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
  redis.call('HGETALL', KEYS[4])
}
`);

/**
 * KEYS: backends, expires, epoch, health. ARGV: channel, id, verdict JSON.
 * Writes the leader's verdict of a backend (registered, or listed in the proxies' config files);
 * returns 1 when it changed.
 */
export const SET_HEALTH = lua(`${NOTIFY}
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[3] then return 0 end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
notify('health', {ARGV[2]})
return 1
`);

/** KEYS: leader. ARGV: holder id, lease ms. Takes or renews the lease; returns 1 when held. */
export const HOLD_LEASE = lua(`
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
`);

/** KEYS: leader. ARGV: holder id. Gives the lease up if still held. */
export const RELEASE_LEASE = lua(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

/** Runs a script by SHA, loading it on first use (or after a Redis restart emptied the script cache). */
export async function runScript(
  redis: Redis,
  script: LuaScript,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  try {
    return await redis.evalsha(script.sha, keys.length, ...keys, ...args);
  } catch (error) {
    if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error;
    return redis.eval(script.source, keys.length, ...keys, ...args);
  }
}

/** The KEYS list most scripts take, in their order. */
export function membershipKeys(keys: RegistryKeys): string[] {
  return [keys.backends, keys.expires, keys.epoch, keys.health];
}
