// Prometheus metrics, `roomring_` names. The request path only bumps plain counters in maps
// (ProxyObserver); prom-client reads them when scraped, so a request pays no label hashing.

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { PlacementReason } from '../affinity/placement.js';
import type { ErrorCode } from '../errors.js';
import type { Verdict } from '../health/verdict.js';
import type { Pool } from '../pool/pool.js';
import type { ConnectionTracker } from '../proxy/connections.js';
import type { ProxyObserver } from '../proxy/observer.js';
import type { RegistryStatus } from '../registry/registry.js';

type Counts = Map<string, number>;

function bump(counts: Counts, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/** Sets a counter to the totals kept in `counts`, keyed `label1\tlabel2`. */
function exportCounts(counter: Counter<string>, counts: Counts, names: readonly string[]): void {
  counter.reset();
  for (const [key, value] of counts) {
    const parts = key.split('\t');
    counter.inc(Object.fromEntries(names.map((name, i) => [name, parts[i] ?? ''])), value);
  }
}

export interface MetricsSources {
  pool: Pool;
  tracker: ConnectionTracker;
  registryStatus: () => RegistryStatus;
  lastSnapshotAt: () => number | undefined;
}

export class Metrics implements ProxyObserver {
  readonly registry = new Registry();
  private readonly requests: Counts = new Map();
  private readonly upgrades: Counts = new Map();
  private readonly errors: Counts = new Map();
  private readonly transitions: Counts = new Map();
  private readonly placements: Histogram<string>;
  private readonly rebuilds: Counter<string>;
  private readonly reconnects: Counter<string>;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    const { requests, upgrades, errors, transitions } = this;
    new Counter({
      name: 'roomring_requests_total',
      help: 'HTTP responses from backends, by backend and status',
      labelNames: ['backend', 'status'],
      registers,
      collect() {
        exportCounts(this, requests, ['backend', 'status']);
      },
    });
    new Counter({
      name: 'roomring_upgrades_total',
      help: 'WebSocket upgrade answers from backends, by backend and status (101: switched)',
      labelNames: ['backend', 'status'],
      registers,
      collect() {
        exportCounts(this, upgrades, ['backend', 'status']);
      },
    });
    new Counter({
      name: 'roomring_errors_total',
      help: 'Error replies the proxy sent itself, by error code',
      labelNames: ['code'],
      registers,
      collect() {
        exportCounts(this, errors, ['code']);
      },
    });
    new Counter({
      name: 'roomring_health_transitions_total',
      help: 'Health verdict changes decided by this process, by backend and new status',
      labelNames: ['backend', 'status'],
      registers,
      collect() {
        exportCounts(this, transitions, ['backend', 'status']);
      },
    });
    new Gauge({
      name: 'roomring_live_connections',
      help: 'Open proxied WebSockets on this process, by backend',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const [backend, load] of sources.tracker.loads()) this.set({ backend }, load.connections);
      },
    });
    new Gauge({
      name: 'roomring_piped_connections',
      help: 'Open proxied WebSockets whose bytes the native pipe forwards',
      registers,
      collect() {
        let piped = 0;
        for (const tunnel of sources.tracker.all()) if (tunnel.piped) piped++;
        this.set(piped);
      },
    });
    new Gauge({
      name: 'roomring_live_rooms',
      help: 'Rooms with open WebSockets on this process, by backend',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const [backend, load] of sources.tracker.loads()) this.set({ backend }, load.rooms);
      },
    });
    new Gauge({
      name: 'roomring_backend_in_ring',
      help: 'Whether a backend takes new rooms (1) or not (0)',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const backend of sources.pool.list())
          this.set({ backend: backend.id }, sources.pool.whyOut(backend.id) === null ? 1 : 0);
      },
    });
    new Gauge({
      name: 'roomring_ring_backends',
      help: 'Backends in the current ring',
      registers,
      collect() {
        this.set(sources.pool.ring.size);
      },
    });
    new Gauge({
      name: 'roomring_registry_connected',
      help: 'Whether the registry answers (1) or the proxy routes on its last snapshot (0)',
      registers,
      collect() {
        this.set(sources.registryStatus().connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'roomring_registry_snapshot_age_seconds',
      help: 'Time since the registry snapshot in force was loaded (registry lag)',
      registers,
      collect() {
        const at = sources.lastSnapshotAt();
        this.set(at === undefined ? 0 : (Date.now() - at) / 1000);
      },
    });
    this.rebuilds = new Counter({ name: 'roomring_ring_rebuilds_total', help: 'Ring rebuilds', registers });
    this.reconnects = new Counter({
      name: 'roomring_registry_reconnects_total',
      help: 'Times the registry connection came back after a loss',
      registers,
    });
    this.placements = new Histogram({
      name: 'roomring_placement_seconds',
      help: 'Placements that asked the lease store (first connection of a room here), by outcome',
      labelNames: ['reason'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    // The event loop's lag is sampled every 100 ms (prom-client's 10 ms wakes an idle proxy 100
    // times a second, for half its idle CPU).
    collectDefaultMetrics({
      register: this.registry,
      prefix: 'roomring_',
      eventLoopMonitoringPrecision: 100,
    });
    sources.pool.on('ring', () => this.rebuilds.inc());
  }

  response(backendId: string, status: number): void {
    bump(this.requests, `${backendId}\t${status}`);
  }

  upgrade(backendId: string, status: number): void {
    bump(this.upgrades, `${backendId}\t${status}`);
  }

  error(code: ErrorCode): void {
    bump(this.errors, code);
  }

  placement(seconds: number, reason: PlacementReason | 'store-unreachable'): void {
    this.placements.observe({ reason }, seconds);
  }

  healthTransition(backendId: string, verdict: Verdict): void {
    bump(this.transitions, `${backendId}\t${verdict.status}`);
  }

  registryReconnected(): void {
    this.reconnects.inc();
  }
}
