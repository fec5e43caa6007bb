// Live rooms and connections per backend as the whole cluster sees them: this proxy's own
// tunnels plus what every other proxy publishes to the registry. Bounded load and `backends list`
// read it. A room open on two proxies counts once per proxy: an upper bound, which is the safe side.

import type { Redis } from 'ioredis';
import type { BackendLoad, ConnectionTracker } from '../proxy/connections.js';
import type { RegistryKeys } from '../registry/keys.js';
import { lua, runScript } from '../registry/scripts.js';
import type { LoadView } from './placement.js';

/** KEYS: load. ARGV: proxy, JSON, stale ms. Stamps with Redis time and prunes proxies gone silent. */
const PUBLISH_LOAD = lua(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local others = {}
for i = 1, #all, 2 do
  local at = tonumber(string.match(all[i + 1], '^(%d+)|'))
  if not at or now - at > tonumber(ARGV[3]) then redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then table.insert(others, all[i + 1]) end
end
return others
`);

/** Sums published loads: `at|{"id":[rooms,connections]}` values. */
export function sumLoads(values: readonly string[]): Map<string, BackendLoad> {
  const totals = new Map<string, BackendLoad>();
  for (const value of values) {
    try {
      const loads = JSON.parse(value.slice(value.indexOf('|') + 1)) as Record<string, [number, number]>;
      for (const [id, [rooms, connections]] of Object.entries(loads)) {
        const total = totals.get(id) ?? { rooms: 0, connections: 0 };
        total.rooms += Number(rooms) || 0;
        total.connections += Number(connections) || 0;
        totals.set(id, total);
      }
    } catch {
      // A malformed value from some writer is ignored, never fatal.
    }
  }
  return totals;
}

export interface SharedLoad {
  redis: Redis;
  keys: RegistryKeys;
  proxyId: string;
}

export class ClusterLoad implements LoadView {
  private others = new Map<string, BackendLoad>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tracker: ConnectionTracker,
    private readonly shared: SharedLoad | undefined,
    private readonly intervalMs = 2000,
  ) {}

  start(): void {
    if (this.shared === undefined || this.timer !== undefined) return;
    this.timer = setInterval(() => void this.publish(), this.intervalMs);
    this.timer.unref();
    void this.publish();
  }

  /** Publishes this proxy's loads and reads everyone else's, in one round trip. */
  async publish(): Promise<void> {
    if (this.shared === undefined) return;
    const mine: Record<string, [number, number]> = {};
    for (const [id, load] of this.tracker.loads()) mine[id] = [load.rooms, load.connections];
    try {
      const others = (await runScript(
        this.shared.redis,
        PUBLISH_LOAD,
        [this.shared.keys.load],
        [this.shared.proxyId, JSON.stringify(mine), this.intervalMs * 5],
      )) as string[];
      this.others = sumLoads(others);
    } catch {
      // Redis away: keep the last figures; the registry logs the outage once.
    }
  }

  loadOf(backendId: string): BackendLoad {
    const local = this.tracker.loadOf(backendId);
    const remote = this.others.get(backendId);
    return {
      rooms: local.rooms + (remote?.rooms ?? 0),
      connections: local.connections + (remote?.connections ?? 0),
    };
  }

  roomsOf(backendId: string): number {
    return this.loadOf(backendId).rooms;
  }

  totalRooms(): number {
    let total = 0;
    for (const load of this.tracker.loads().values()) total += load.rooms;
    for (const load of this.others.values()) total += load.rooms;
    return total;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
