// Wires a running proxy together: config -> registry -> pool (ring) -> proxy listener, plus the
// process-level concerns: signals, reload, graceful shutdown, and never dying of a stray error.

import type { AddressInfo } from 'node:net';
import { AdminServer } from './admin/admin-server.js';
import { Metrics } from './admin/metrics.js';
import { buildStatus, type ProxyStatus } from './admin/status.js';
import type { LeaseStore } from './affinity/lease-store.js';
import { RoomKeeper } from './affinity/room-keeper.js';
import { type ConfigOverrides, loadConfigFile } from './config/load.js';
import type { Config } from './config/schema.js';
import { HealthCoordinator, type RemoteVerdicts } from './health-coordinator.js';
import { createLogger, type Logger } from './log.js';
import { Pool } from './pool/pool.js';
import { ConnectionTracker } from './proxy/connections.js';
import { nativePipeMissing } from './proxy/native-pipe.js';
import { ProxyServer } from './proxy/proxy-server.js';
import { RedisRegistry } from './registry/redis-registry.js';
import type { Registry } from './registry/registry.js';
import { StaticRegistry } from './registry/static-registry.js';
import { VERSION } from './version.js';

export interface DaemonOptions {
  logger?: Logger;
  /** The file the config came from, re-read on reload. */
  configFile?: string;
  overrides?: ConfigOverrides;
  /** Lease store to use without Redis (workers pass the primary's, over IPC). */
  leaseStore?: LeaseStore;
  /** Health verdicts decided elsewhere without Redis (workers get the primary's, over IPC). */
  remoteVerdicts?: RemoteVerdicts;
}

export class Daemon {
  readonly pool: Pool;
  readonly proxy: ProxyServer;
  readonly registry: Registry;
  readonly log: Logger;
  readonly health: HealthCoordinator;
  readonly rooms: RoomKeeper;
  readonly metrics: Metrics;
  readonly admin: AdminServer | undefined;
  readonly startedAt = Date.now();
  address: AddressInfo | undefined;
  adminAddress: AddressInfo | undefined;
  private lastSnapshotAt: number | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    private config: Config,
    private readonly options: DaemonOptions = {},
  ) {
    this.log = options.logger ?? createLogger(config.log.level);
    this.pool = new Pool(config.failover);
    this.registry = createRegistry(config, this.log);
    const tracker = new ConnectionTracker();
    this.rooms = new RoomKeeper(this.pool, tracker, this.registry, config, this.log, options.leaseStore);
    this.metrics = new Metrics({
      pool: this.pool,
      tracker,
      registryStatus: () => this.registry.status(),
      lastSnapshotAt: () => this.lastSnapshotAt,
    });
    this.proxy = new ProxyServer(this.pool, config, this.rooms.placer, tracker, this.metrics);
    this.health = new HealthCoordinator(
      this.pool,
      this.registry,
      config,
      this.log,
      (id, verdict) => this.metrics.healthTransition(id, verdict),
      options.remoteVerdicts,
    );
    if (this.registry instanceof RedisRegistry) {
      const { connections } = this.registry;
      connections.on('ready', () => {
        if (this.lastSnapshotAt !== undefined) this.metrics.registryReconnected();
      });
    }
    this.admin = config.admin && new AdminServer(config.admin, this.adminHandlers());
    this.pool.on('ring', (ring, previous) =>
      this.log.info(
        {
          event: 'ring',
          backends: ring.members.map((m) => m.id),
          fingerprint: ring.fingerprint(),
          was: previous.fingerprint(),
        },
        `ring rebuilt with ${ring.size} backend(s)`,
      ),
    );
    this.pool.on('down', (backend, ms, count) =>
      this.log.warn(
        { event: 'backend-down', backend: backend.id, coolOffMs: ms, failures: count },
        `backend ${backend.id} refused a connection; its rooms go to their successors for ${ms} ms`,
      ),
    );
    this.pool.on('up', (backend) =>
      this.log.info({ event: 'backend-up', backend: backend.id }, `backend ${backend.id} is answering again`),
    );
  }

  status(): ProxyStatus {
    const { address } = this;
    return buildStatus({
      version: VERSION,
      startedAt: this.startedAt,
      listen: () => (address === undefined ? '' : `${hostForUrl(address)}:${address.port}`),
      shuttingDown: () => this.proxy.shuttingDown,
      pool: this.pool,
      tracker: this.proxy.tracker,
      placer: this.rooms.placer,
      load: this.rooms.load,
      registry: () => this.registry.status(),
    });
  }

  /** Where `room` would go now and why (lease, ring owner, failover, bounded load); claims nothing. */
  async route(room: string): Promise<unknown> {
    const placement = await this.rooms.placer.explain(room);
    const backend = placement === undefined ? null : { id: placement.backend.id, url: placement.backend.url };
    return { room, backend, reason: placement?.reason ?? null, fingerprint: this.pool.ring.fingerprint() };
  }

  private adminHandlers() {
    return {
      status: () => this.status(),
      route: (room: string) => this.route(room),
      metrics: async () => ({
        contentType: this.metrics.registry.contentType,
        body: await this.metrics.registry.metrics(),
      }),
      healthy: () => !this.proxy.shuttingDown,
      reload: () => this.reload(),
    };
  }

  get currentConfig(): Config {
    return this.config;
  }

  async start(): Promise<AddressInfo> {
    await this.registry.watch((snapshot) => {
      this.lastSnapshotAt = Date.now();
      this.pool.applySnapshot(snapshot);
    });
    this.rooms.start();
    this.address = await this.proxy.listen(this.config.listen.port, this.config.listen.host);
    if (this.admin !== undefined) {
      this.adminAddress = await this.admin.listen();
      this.log.info(
        { event: 'admin', listen: `${this.adminAddress.address}:${this.adminAddress.port}` },
        `admin and dashboard on http://${hostForUrl(this.adminAddress)}:${this.adminAddress.port}/`,
      );
    }
    const missing = this.config.websocket.pipe === 'native' ? nativePipeMissing() : undefined;
    if (missing !== undefined)
      this.log.warn(
        { event: 'pipe', reason: missing },
        `websocket.pipe is native, but ${missing}: Node sockets forward WebSockets instead`,
      );
    this.log.info(
      {
        event: 'start',
        listen: `${this.address.address}:${this.address.port}`,
        registry: this.registry.mode,
        pipe: missing === undefined ? this.config.websocket.pipe : 'js',
        accept: this.proxy.acceptsInPipe ? 'pipe' : 'node',
      },
      `roomring listening on http://${hostForUrl(this.address)}:${this.address.port}`,
    );
    return this.address;
  }

  /**
   * Re-reads the config file (or takes `next`) and applies backends, room rules, timeouts and log
   * level without closing the listener or any connection. A config that fails validation is
   * refused and the running one stays.
   */
  reload(next?: Config): boolean {
    let config: Config;
    try {
      if (next !== undefined) config = next;
      else if (this.options.configFile !== undefined)
        config = loadConfigFile(this.options.configFile, this.options.overrides);
      else return false;
    } catch (error) {
      this.log.error(
        { event: 'reload-refused', err: (error as Error).message },
        'reload refused: config is invalid; keeping the running one',
      );
      return false;
    }
    if (config.listen.port !== this.config.listen.port || config.listen.host !== this.config.listen.host) {
      this.log.warn(
        { event: 'reload' },
        'listen address changes need a restart; keeping the current listener',
      );
    }
    this.config = config;
    this.log.level = config.log.level;
    this.pool.setCoolOff(config.failover);
    this.proxy.configure(config);
    for (const field of restartOnlyChanges(this.config, config)) {
      this.log.warn({ event: 'reload', field }, `${field} changes need a restart; the running value stays`);
    }
    if ((config.registry === undefined) !== (this.registry.mode === 'static')) {
      this.log.warn(
        { event: 'reload' },
        'switching between the static list and the Redis registry needs a restart',
      );
    }
    this.registry.reconfigure(config);
    this.health.reconfigure(config);
    this.rooms.reconfigure(config);
    if (config.admin !== undefined) this.admin?.configure(config.admin);
    this.log.info({ event: 'reload', backends: config.backends.length }, 'config reloaded');
    return true;
  }

  /** Graceful shutdown; resolves when everything is closed. Safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ event: 'shutdown', connections: this.proxy.tracker.size }, 'shutting down');
      await this.proxy.close(this.config.shutdownTimeout);
      await this.admin?.close();
      this.health.stop();
      await this.rooms.stop();
      await this.registry.close();
      this.log.info({ event: 'stopped' }, 'stopped');
    })();
    return this.stopping;
  }
}

/** Starts a daemon from a config file and ties it to the process: signals and stray errors. */
export async function runDaemon(configFile: string, overrides: ConfigOverrides = {}): Promise<Daemon> {
  const config = loadConfigFile(configFile, overrides);
  const daemon = new Daemon(config, { configFile, overrides });
  attachToProcess(daemon);
  await daemon.start();
  return daemon;
}

export function attachToProcess(daemon: Daemon, onStopped: () => void = () => process.exit(0)): void {
  const shutdown = (signal: string): void => {
    daemon.log.info({ event: 'signal', signal }, `received ${signal}`);
    daemon.stop().then(onStopped, (error: unknown) => {
      daemon.log.error({ err: error }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => daemon.reload());
  // A stray error is logged, never fatal: the proxy keeps serving the connections it has.
  process.on('unhandledRejection', (reason) =>
    daemon.log.error({ err: reason, event: 'unhandled-rejection' }, 'unhandled rejection'),
  );
  process.on('uncaughtException', (error) =>
    daemon.log.error({ err: error, event: 'uncaught-exception' }, 'uncaught exception'),
  );
}

/** Settings a reload cannot apply to a running process (it keeps its connections and listeners). */
function restartOnlyChanges(before: Config, after: Config): string[] {
  const changed: string[] = [];
  const { allow: _a, ...registryBefore } = before.registry ?? { allow: undefined };
  const { allow: _b, ...registryAfter } = after.registry ?? { allow: undefined };
  for (const key of new Set([...Object.keys(registryBefore), ...Object.keys(registryAfter)])) {
    const a = (registryBefore as Record<string, unknown>)[key];
    const b = (registryAfter as Record<string, unknown>)[key];
    if (before.registry !== undefined && after.registry !== undefined && a !== b)
      changed.push(`registry.${key}`);
  }
  if (before.admin?.host !== after.admin?.host || before.admin?.port !== after.admin?.port)
    changed.push('admin address');
  return changed;
}

function createRegistry(config: Config, log: Logger): Registry {
  if (config.registry === undefined) return new StaticRegistry(config.backends);
  const url = process.env.REDIS_URL || config.registry.redis;
  return new RedisRegistry({ url, config: config.registry, staticBackends: config.backends, log });
}

function hostForUrl(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]` : address.address;
}
