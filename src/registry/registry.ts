// Where backends come from: a registry produces snapshots of the backend set; the pool consumes them.

import type { Config, HealthOverride } from '../config/schema.js';
import type { Verdict } from '../health/verdict.js';

export type BackendState = 'active' | 'draining';

/** One backend as a registry knows it. */
export interface BackendEntry {
  readonly id: string;
  readonly url: string;
  readonly weight: number;
  readonly state: BackendState;
  /** Health check settings of this backend, over the config's `health` section. */
  readonly health?: HealthOverride | undefined;
  /** Draining only: when its remaining rooms are moved (ms since the epoch, Redis server time). */
  readonly drainDeadline?: number | undefined;
}

/** The whole backend set at one moment; `epoch` grows with every change. */
export interface RegistrySnapshot {
  readonly epoch: number;
  readonly backends: readonly BackendEntry[];
  /** Shared health verdicts (Redis mode); absent where each process checks for itself. */
  readonly verdicts?: ReadonlyMap<string, Verdict>;
  /** Registry clock minus this process's clock, in ms (Redis mode), for deadlines in registry time. */
  readonly clockOffset?: number;
}

export type SnapshotListener = (snapshot: RegistrySnapshot) => void;

/** What a registry reports about itself for status pages. */
export interface RegistryStatus {
  mode: 'static' | 'redis';
  /** Redis mode: whether the registry answers now; static mode is always connected. */
  connected: boolean;
  /** When the registry stopped answering (the snapshot in force is stale since then). */
  staleSince: number | undefined;
  epoch: number;
  cluster?: string;
  leader?: boolean;
}

/** A discovery source. `watch` delivers the current snapshot at once, then every change. */
export interface Registry {
  readonly mode: 'static' | 'redis';
  watch(listener: SnapshotListener): Promise<void>;
  /** Applies a reloaded config (static backends, allow list); connections are kept. */
  reconfigure(config: Config): void;
  status(): RegistryStatus;
  close(): Promise<void>;
}
