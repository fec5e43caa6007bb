// The `/status` document: what one proxy process knows, read-only.

import type { ClusterLoad } from '../affinity/cluster-load.js';
import type { Placer } from '../affinity/placement.js';
import type { Verdict } from '../health/verdict.js';
import type { Pool } from '../pool/pool.js';
import type { ConnectionTracker } from '../proxy/connections.js';
import type { RegistryStatus } from '../registry/registry.js';

export interface BackendStatus {
  id: string;
  url: string;
  weight: number;
  state: string;
  /** Whether new rooms may go to it; `out` says why not. */
  inRing: boolean;
  out: string | null;
  /** Share of new rooms the ring gives it (weight over the ring's total weight). */
  share: number;
  health: Verdict | null;
  coolingOff: boolean;
  drainDeadline: number | null;
  /** On this process. */
  rooms: number;
  connections: number;
  /** Over the cluster (this process plus what the other proxies publish). */
  clusterRooms: number;
  clusterConnections: number;
}

export interface ProxyStatus {
  version: string;
  pid: number;
  uptimeMs: number;
  listen: string;
  shuttingDown: boolean;
  registry: RegistryStatus;
  ring: { fingerprint: string; size: number; epoch: number };
  placement: { affinity: boolean; cachedLeases: number };
  connections: number;
  backends: BackendStatus[];
}

export interface StatusSources {
  version: string;
  startedAt: number;
  listen: () => string;
  shuttingDown: () => boolean;
  pool: Pool;
  tracker: ConnectionTracker;
  placer: Placer;
  load: ClusterLoad;
  registry: () => RegistryStatus;
}

export function buildStatus(s: StatusSources): ProxyStatus {
  const { pool, tracker, load } = s;
  const totalWeight = pool.ring.members.reduce((sum, m) => sum + m.weight, 0);
  const backends = pool.list().map((backend): BackendStatus => {
    const out = pool.whyOut(backend.id);
    const local = tracker.loadOf(backend.id);
    const cluster = load.loadOf(backend.id);
    return {
      id: backend.id,
      url: backend.url,
      weight: backend.weight,
      state: backend.state,
      inRing: out === null,
      out,
      share: out === null && totalWeight > 0 ? backend.weight / totalWeight : 0,
      health: pool.verdictOf(backend.id) ?? null,
      coolingOff: pool.isCoolingOff(backend.id),
      drainDeadline: backend.drainDeadline ?? null,
      rooms: local.rooms,
      connections: local.connections,
      clusterRooms: cluster.rooms,
      clusterConnections: cluster.connections,
    };
  });
  return {
    version: s.version,
    pid: process.pid,
    uptimeMs: Date.now() - s.startedAt,
    listen: s.listen(),
    shuttingDown: s.shuttingDown(),
    registry: s.registry(),
    ring: { fingerprint: pool.ring.fingerprint(), size: pool.ring.size, epoch: pool.epoch },
    placement: { affinity: s.placer.affinity, cachedLeases: s.placer.cachedRooms },
    connections: tracker.size,
    backends: backends.sort((a, b) => (a.id < b.id ? -1 : 1)),
  };
}
