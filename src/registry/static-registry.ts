// The embedded registry: the backends listed in the config file, replaced on reload.

import type { BackendConfig, Config } from '../config/schema.js';
import type {
  BackendEntry,
  Registry,
  RegistrySnapshot,
  RegistryStatus,
  SnapshotListener,
} from './registry.js';

export class StaticRegistry implements Registry {
  readonly mode = 'static' as const;
  private snapshot: RegistrySnapshot;
  private readonly listeners = new Set<SnapshotListener>();

  constructor(backends: readonly BackendConfig[]) {
    this.snapshot = { epoch: 1, backends: toEntries(backends) };
  }

  async watch(listener: SnapshotListener): Promise<void> {
    this.listeners.add(listener);
    listener(this.snapshot);
  }

  /** Replaces the backend list (config reload) and tells every watcher. */
  reconfigure(config: Config): void {
    this.snapshot = { epoch: this.snapshot.epoch + 1, backends: toEntries(config.backends) };
    for (const listener of this.listeners) listener(this.snapshot);
  }

  status(): RegistryStatus {
    return { mode: 'static', connected: true, staleSince: undefined, epoch: this.snapshot.epoch };
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}

function toEntries(backends: readonly BackendConfig[]): BackendEntry[] {
  return backends.map(({ id, url, weight, health }) => ({
    id,
    url,
    weight,
    health,
    state: 'active' as const,
  }));
}
