// Where backends come from: a registry produces snapshots of the backend set; the pool consumes them.

export type BackendState = 'active' | 'draining';

/** One backend as a registry knows it. */
export interface BackendEntry {
  readonly id: string;
  readonly url: string;
  readonly weight: number;
  readonly state: BackendState;
}

/** The whole backend set at one moment; `epoch` grows with every change. */
export interface RegistrySnapshot {
  readonly epoch: number;
  readonly backends: readonly BackendEntry[];
}

export type SnapshotListener = (snapshot: RegistrySnapshot) => void;

/** A discovery source. `watch` delivers the current snapshot at once, then every change. */
export interface Registry {
  readonly mode: string;
  watch(listener: SnapshotListener): Promise<void>;
  close(): Promise<void>;
}
