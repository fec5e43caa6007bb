// Every Redis key and channel name roomring uses, namespaced per cluster. The `{cluster}` hash tag
// keeps one cluster's keys in one Redis Cluster slot, so its Lua scripts may touch them all.

export interface RegistryKeys {
  /** hash: backend id -> entry JSON (url, weight, state, ttl, meta) */
  readonly backends: string;
  /** zset: backend id -> heartbeat deadline, ms of Redis server time; entries without heartbeats are absent */
  readonly expires: string;
  /** hash: backend id -> shared health verdict JSON */
  readonly health: string;
  /** counter: bumped with every membership change */
  readonly epoch: string;
  /** pub/sub channel: change notices */
  readonly events: string;
  /** pub/sub channel: backends a proxy saw fail, for the leader to probe at once */
  readonly suspects: string;
  /** hash: proxy -> `serverTimeMs|{backend: [rooms, connections]}`, each proxy's live load */
  readonly load: string;
  /** string with PX lease: the proxy that reaps expired heartbeats and runs shared health checks */
  readonly leader: string;
  /** the affinity lease of one room */
  room(room: string): string;
}

const CLUSTER = /^[A-Za-z0-9._-]{1,64}$/;

export function isValidClusterName(cluster: string): boolean {
  return CLUSTER.test(cluster);
}

export function registryKeys(cluster: string): RegistryKeys {
  if (!isValidClusterName(cluster)) throw new RangeError(`invalid cluster name '${cluster}'`);
  const prefix = `roomring:{${cluster}}:`;
  return {
    backends: `${prefix}backends`,
    expires: `${prefix}expires`,
    health: `${prefix}health`,
    epoch: `${prefix}epoch`,
    events: `${prefix}events`,
    suspects: `${prefix}suspects`,
    leader: `${prefix}leader`,
    load: `${prefix}load`,
    room: (room) => `${prefix}room:${room}`,
  };
}
