// `roomring plan`: what adding or removing a backend would do, computed against the live registry
// (entries, health verdicts, room leases and the proxies' published loads). Changes nothing.

import type { Redis } from 'ioredis';
import { sumLoads } from './affinity/cluster-load.js';
import { parseVerdict } from './health/verdict.js';
import { readEntry } from './registry/entry.js';
import { registryKeys } from './registry/keys.js';
import { connectRedis, redisOptions } from './registry/redis-connections.js';
import type { BackendEntry } from './registry/registry.js';
import { membershipKeys, runScript, SNAPSHOT } from './registry/scripts.js';
import { Ring, type RingMember } from './ring/ring.js';

export type PlannedChange = { add: { id: string; url: string; weight: number } } | { remove: string };

export interface PlanReport {
  change: PlannedChange;
  epoch: number;
  fingerprint: { before: string; after: string };
  /** Share of new rooms per backend, before and after. */
  shares: { id: string; before: number; after: number }[];
  liveRooms: number;
  /** Live rooms (with a lease) and their connections on the backend being removed: they would move. */
  affected: { rooms: number; connections: number };
  /** Where the affected rooms would go, by backend. */
  destinations: Record<string, number>;
  /** Live rooms whose ring owner changes: what would split without leases (placement.affinity: off). */
  ringMoves: number;
}

const SCAN_BATCH = 1000;

export async function planChange(url: string, cluster: string, change: PlannedChange): Promise<PlanReport> {
  const redis = connectRedis(url, { ...redisOptions('roomring:plan'), retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    const keys = registryKeys(cluster);
    const [epoch, , flat, , health] = (await runScript(redis, SNAPSHOT, membershipKeys(keys), [])) as [
      number,
      number,
      string[],
      string[],
      string[],
    ];
    const down = new Set<string>();
    for (let i = 0; i < health.length; i += 2) {
      if (parseVerdict(health[i + 1] as string)?.status === 'down') down.add(health[i] as string);
    }
    const members: BackendEntry[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const result = readEntry(flat[i] as string, flat[i + 1] as string);
      if (result.ok && result.entry.state === 'active' && !down.has(result.entry.id))
        members.push(result.entry);
    }
    const before = new Ring<RingMember>(members);
    const after = new Ring<RingMember>(
      'add' in change
        ? [...members.filter((m) => m.id !== change.add.id), { id: change.add.id, weight: change.add.weight }]
        : members.filter((m) => m.id !== change.remove),
    );
    const leases = await readLeases(redis, keys.room(''));
    const loads = sumLoads(Object.values(await redis.hgetall(keys.load)));
    const removed = 'remove' in change ? change.remove : undefined;
    const destinations: Record<string, number> = {};
    let affectedRooms = 0;
    let ringMoves = 0;
    for (const [room, backendId] of leases) {
      if (before.ownerOf(room)?.id !== after.ownerOf(room)?.id) ringMoves++;
      if (backendId === removed) {
        affectedRooms++;
        const to = after.ownerOf(room)?.id ?? '(none)';
        destinations[to] = (destinations[to] ?? 0) + 1;
      }
    }
    const ids = [...new Set([...before.members, ...after.members].map((m) => m.id))].sort();
    return {
      change,
      epoch,
      fingerprint: { before: before.fingerprint(), after: after.fingerprint() },
      shares: ids.map((id) => ({ id, before: shareOf(before, id), after: shareOf(after, id) })),
      liveRooms: leases.size,
      affected: {
        rooms: affectedRooms,
        connections: removed === undefined ? 0 : (loads.get(removed)?.connections ?? 0),
      },
      destinations,
      ringMoves,
    };
  } finally {
    redis.disconnect();
  }
}

function shareOf(ring: Ring<RingMember>, id: string): number {
  const total = ring.members.reduce((sum, m) => sum + m.weight, 0);
  const member = ring.members.find((m) => m.id === id);
  return member === undefined || total === 0 ? 0 : member.weight / total;
}

/** Every live room lease of the cluster: room -> backend id (SCAN, never KEYS). */
async function readLeases(redis: Redis, prefix: string): Promise<Map<string, string>> {
  const leases = new Map<string, string>();
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_BATCH);
    cursor = next;
    if (found.length > 0) {
      const values = await redis.mget(...found);
      found.forEach((key, i) => {
        const value = values[i];
        if (value !== null && value !== undefined) leases.set(key.slice(prefix.length), value);
      });
    }
  } while (cursor !== '0');
  return leases;
}

export function formatPlan(report: PlanReport): string {
  const what =
    'add' in report.change
      ? `add ${report.change.add.id} (${report.change.add.url})`
      : `remove ${report.change.remove}`;
  const lines = [
    `plan: ${what}, against epoch ${report.epoch}; nothing is changed`,
    `ring ${report.fingerprint.before} -> ${report.fingerprint.after}`,
    '',
    'new rooms per backend:',
    ...report.shares.map(
      (s) =>
        `  ${s.id.padEnd(16)} ${(s.before * 100).toFixed(1).padStart(5)}% -> ${(s.after * 100).toFixed(1).padStart(5)}%`,
    ),
    '',
    `live rooms (leases): ${report.liveRooms}`,
  ];
  if ('remove' in report.change) {
    lines.push(
      `affected on ${report.change.remove}: ${report.affected.rooms} live room(s), ${report.affected.connections} connection(s)`,
      ...Object.entries(report.destinations).map(([id, n]) => `  ${n} room(s) -> ${id}`),
    );
  } else {
    lines.push('affected: 0 live rooms (leases keep them where they are; new rooms follow the new ring)');
  }
  lines.push(
    `without leases (placement.affinity: off), ${report.ringMoves} live room(s) would change server`,
  );
  return `${lines.join('\n')}\n`;
}
