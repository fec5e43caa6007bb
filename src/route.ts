// `roomring route`: where a room would go now, computed as a proxy computes it: from the config's
// backends, or with a registry from its current snapshot (entries and shared health verdicts).

import { pino } from 'pino';
import type { Config } from './config/schema.js';
import { type Backend, Pool, type RouteReason } from './pool/pool.js';
import { RedisRegistry } from './registry/redis-registry.js';
import type { RegistrySnapshot } from './registry/registry.js';

export interface RoutePreview {
  room: string;
  backend: Backend | undefined;
  reason: RouteReason;
  fingerprint: string;
  epoch: number;
}

export async function previewRoute(config: Config, room: string): Promise<RoutePreview> {
  const pool = new Pool(config.failover);
  // Verdicts exist only in the registry; without one this command runs no checks and assumes all up.
  const shared = config.registry !== undefined && config.health !== undefined;
  pool.setHealthPolicy({ enabled: shared, initial: config.health?.initial ?? 'up' });
  pool.applySnapshot(await currentSnapshot(config));
  const { backend, reason } = pool.explain(room);
  return { room, backend, reason, fingerprint: pool.ring.fingerprint(), epoch: pool.epoch };
}

async function currentSnapshot(config: Config): Promise<RegistrySnapshot> {
  if (config.registry === undefined) {
    return { epoch: 1, backends: config.backends.map((b) => ({ ...b, state: 'active' as const })) };
  }
  const registry = new RedisRegistry({
    url: process.env.REDIS_URL || config.registry.redis,
    config: config.registry,
    staticBackends: config.backends,
    log: pino({ level: 'silent' }),
  });
  try {
    let snapshot: RegistrySnapshot | undefined;
    await registry.watch((s) => {
      snapshot = s;
    });
    if (snapshot === undefined || !registry.status().connected) {
      throw new Error(`registry at ${config.registry.redis} is unreachable`);
    }
    return snapshot;
  } finally {
    await registry.close();
  }
}
