// Keeps live rooms whole: owns placement (leases in memory or Redis), renews the leases of rooms
// with live connections here, publishes this proxy's load, and enforces drain deadlines by closing
// a drained backend's remaining WebSockets (1012) spread over a window, so clients reconnect in
// waves and each room moves, as a whole, to the one backend every proxy's ring agrees on.

import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Pool } from '../pool/pool.js';
import type { ConnectionTracker } from '../proxy/connections.js';
import { CLOSE_SERVICE_RESTART } from '../proxy/ws-frames.js';
import { RedisRegistry } from '../registry/redis-registry.js';
import type { Registry } from '../registry/registry.js';
import { ClusterLoad } from './cluster-load.js';
import { type LeaseStore, MemoryLeaseStore } from './lease-store.js';
import { type PlacementOptions, Placer } from './placement.js';
import { RedisLeaseStore } from './redis-lease-store.js';

const DRAIN_CHECK_MS = 250;

export class RoomKeeper {
  readonly placer: Placer;
  readonly load: ClusterLoad;
  private readonly store: LeaseStore;
  private renewTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  /** Backends whose drain deadline passed and whose tunnels are being closed. */
  private readonly drained = new Set<string>();
  private readonly closing: NodeJS.Timeout[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly tracker: ConnectionTracker,
    registry: Registry,
    private config: Config,
    private readonly log: Logger,
    /** Where leases live without Redis: this process's memory unless given (workers share the primary's). */
    localStore?: LeaseStore,
  ) {
    if (registry instanceof RedisRegistry) {
      const { commands } = registry.connections;
      this.store = new RedisLeaseStore(commands, registry.keys);
      this.load = new ClusterLoad(tracker, {
        redis: commands,
        keys: registry.keys,
        proxyId: registry.proxyId,
      });
    } else {
      this.store = localStore ?? new MemoryLeaseStore();
      this.load = new ClusterLoad(tracker, undefined);
    }
    this.placer = new Placer(pool, this.store, placementOptions(config), this.load);
  }

  start(): void {
    this.load.start();
    this.scheduleRenewal();
    this.drainTimer = setInterval(() => this.enforceDrains(), DRAIN_CHECK_MS);
    this.drainTimer.unref();
  }

  reconfigure(config: Config): void {
    const ttlChanged = config.placement.leaseTtl !== this.config.placement.leaseTtl;
    this.config = config;
    this.placer.configure(placementOptions(config));
    if (ttlChanged) this.scheduleRenewal();
  }

  private scheduleRenewal(): void {
    clearInterval(this.renewTimer);
    this.renewTimer = setInterval(() => void this.renew(), Math.max(this.config.placement.leaseTtl / 3, 100));
    this.renewTimer.unref();
  }

  /** Renews leases of rooms with live connections here (batched). */
  async renew(): Promise<void> {
    try {
      await this.placer.renew(this.tracker.liveRooms());
    } catch (error) {
      this.log.debug({ err: error }, 'lease renewal failed; retrying next round');
    }
  }

  /** At a draining backend's deadline, closes its remaining tunnels spread over the drain window. */
  private enforceDrains(): void {
    const now = this.pool.now();
    for (const backend of this.pool.list()) {
      const due =
        backend.state === 'draining' && backend.drainDeadline !== undefined && now >= backend.drainDeadline;
      if (!due) {
        this.drained.delete(backend.id);
        continue;
      }
      if (this.drained.has(backend.id)) continue;
      this.drained.add(backend.id);
      const tunnels = this.tracker.tunnelsTo(backend.id);
      const window = this.config.placement.drainWindow;
      this.log.info(
        { event: 'drain-deadline', backend: backend.id, connections: tunnels.length, windowMs: window },
        `drain deadline of ${backend.id}: closing ${tunnels.length} WebSocket(s) over ${window} ms`,
      );
      const released = new Set<string>();
      tunnels.forEach((tunnel, i) => {
        // Even spread with a little jitter: clients reconnect in waves, not all at once.
        const delay = tunnels.length <= 1 ? 0 : (window * (i + Math.random() * 0.5)) / tunnels.length;
        const timer = setTimeout(() => {
          if (tunnel.room !== null && !released.has(tunnel.room)) {
            released.add(tunnel.room);
            this.placer.release(tunnel.room, backend.id).catch(() => undefined);
          }
          tunnel.closeWith(CLOSE_SERVICE_RESTART);
        }, delay);
        timer.unref();
        this.closing.push(timer);
      });
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.renewTimer);
    clearInterval(this.drainTimer);
    for (const timer of this.closing) clearTimeout(timer);
    this.load.stop();
    await this.store.close();
  }
}

function placementOptions(config: Config): PlacementOptions {
  return {
    affinity: config.placement.affinity === 'on',
    leaseTtl: config.placement.leaseTtl,
    loadFactor: config.placement.loadFactor,
  };
}
