// `--workers N`: N proxy processes (node:cluster) on one port that route identically, since each
// builds the same ring from the same snapshots. The primary owns the admin listener and answers
// for all: status and metrics are gathered from every worker; reload and shutdown reach them all.
// Without Redis it also holds the room leases every worker shares and runs the health checks whose
// verdicts every worker routes on.

import cluster, { type Worker } from 'node:cluster';
import net from 'node:net';
import { AggregatorRegistry } from 'prom-client';
import { AdminServer } from './admin/admin-server.js';
import type { ProxyStatus } from './admin/status.js';
import { answerLeaseRequest, IpcLeaseStore, isLeaseRequest } from './affinity/ipc-lease-store.js';
import { MemoryLeaseStore } from './affinity/lease-store.js';
import { IpcVerdicts, SharedHealth, type SuspectMessage } from './cluster-health.js';
import { type ConfigOverrides, loadConfigFile } from './config/load.js';
import type { Config } from './config/schema.js';
import { attachToProcess, Daemon } from './daemon.js';
import { createLogger, type Logger } from './log.js';

type Request =
  | { id: number; kind: 'status' }
  | { id: number; kind: 'route'; room: string }
  | { id: number; kind: 'reload' };
type Reply = { id: number; result: unknown };

/** Starts the primary: forks `workers` proxies and serves the admin API for all of them. */
export async function runCluster(
  configFile: string,
  overrides: ConfigOverrides,
  workers: number,
): Promise<void> {
  if (cluster.isWorker) {
    await runWorker(configFile, overrides);
    return;
  }
  const config = loadConfigFile(configFile, overrides);
  const log = createLogger(config.log.level);
  const primary = new Primary(configFile, overrides, config, log, workers);
  await primary.start();
}

class Primary {
  private readonly aggregator = new AggregatorRegistry();
  /** Without Redis, the one lease store all workers share (over IPC), so they agree on live rooms. */
  private readonly leases = new MemoryLeaseStore();
  /** Without Redis, the one health checker whose verdicts every worker routes on. */
  private health: SharedHealth | undefined;
  private admin: AdminServer | undefined;
  private stopping = false;
  private nextId = 1;
  private readonly pending = new Map<number, (result: unknown) => void>();

  constructor(
    private readonly configFile: string,
    private readonly overrides: ConfigOverrides,
    private config: Config,
    private readonly log: Logger,
    private readonly count: number,
  ) {}

  async start(): Promise<void> {
    await portIsFree(this.config.listen.port, this.config.listen.host);
    if (this.config.registry === undefined) {
      this.health = new SharedHealth(this.config, this.log, (message) => {
        for (const worker of this.workers()) worker.send(message);
      });
    }
    cluster.on('message', (worker, message: Reply) => {
      const verdicts = this.health?.receive(message as SuspectMessage);
      if (verdicts !== undefined && worker.isConnected()) worker.send(verdicts);
      if (isLeaseRequest(message)) {
        void answerLeaseRequest(this.leases, message).then((reply) => {
          if (worker.isConnected()) worker.send(reply);
        });
        return;
      }
      const resolve = this.pending.get(message.id);
      if (resolve !== undefined) {
        this.pending.delete(message.id);
        resolve(message.result);
      }
    });
    cluster.on('exit', (worker, code, signal) => {
      if (this.stopping) return;
      this.log.error(
        { event: 'worker-exit', worker: worker.id, code, signal },
        'a worker died; starting another',
      );
      cluster.fork();
    });
    const ready = Array.from({ length: this.count }, () => {
      const worker = cluster.fork();
      return new Promise<void>((resolve, reject) => {
        // A worker says so once its daemon is up: its socket may be its own (the native pipe's,
        // with SO_REUSEPORT), of which node:cluster knows nothing.
        const onMessage = (message: { listening?: boolean }): void => {
          if (message?.listening !== true) return;
          worker.off('message', onMessage);
          resolve();
        };
        worker.on('message', onMessage);
        worker.once('exit', (code) => reject(new Error(`worker exited with code ${code} while starting`)));
      });
    });
    await Promise.all(ready);
    if (this.config.admin !== undefined) {
      this.admin = new AdminServer(this.config.admin, {
        status: () => this.status(),
        route: (room) => this.ask(this.workers()[0], { kind: 'route', room }),
        metrics: async () => ({
          contentType: this.aggregator.contentType,
          body: await this.aggregator.clusterMetrics(),
        }),
        healthy: () => !this.stopping,
        reload: () => this.reload(),
      });
      await this.admin.listen();
    }
    this.log.info(
      {
        event: 'start',
        workers: this.count,
        listen: `${this.config.listen.host}:${this.config.listen.port}`,
      },
      `roomring listening on http://${this.config.listen.host}:${this.config.listen.port} with ${this.count} workers`,
    );
    process.on('SIGHUP', () => void this.reload());
    process.once('SIGTERM', () => void this.stop('SIGTERM'));
    process.once('SIGINT', () => void this.stop('SIGINT'));
  }

  private workers(): Worker[] {
    return Object.values(cluster.workers ?? {}).filter((w): w is Worker => w?.isConnected() === true);
  }

  private ask(
    worker: Worker | undefined,
    request: { kind: 'status' } | { kind: 'route'; room: string } | { kind: 'reload' },
  ): Promise<unknown> {
    if (worker === undefined) return Promise.resolve(null);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, 2000);
      this.pending.set(id, (result) => {
        clearTimeout(timer);
        resolve(result);
      });
      worker.send({ ...request, id, roomring: true });
    });
  }

  /** One status for the whole process group: per-backend figures summed over the workers. */
  private async status(): Promise<unknown> {
    const statuses = (await Promise.all(this.workers().map((w) => this.ask(w, { kind: 'status' })))).filter(
      (s): s is ProxyStatus => s !== null,
    );
    const [first] = statuses;
    if (first === undefined) return { workers: 0, shuttingDown: this.stopping };
    const backends = first.backends.map((backend) => {
      const all = statuses.map((s) => s.backends.find((b) => b.id === backend.id));
      const sum = (pick: (b: (typeof all)[number]) => number) => all.reduce((n, b) => n + pick(b), 0);
      return {
        ...backend,
        rooms: sum((b) => b?.rooms ?? 0),
        connections: sum((b) => b?.connections ?? 0),
        clusterRooms: sum((b) => b?.rooms ?? 0) + (backend.clusterRooms - backend.rooms),
        clusterConnections:
          sum((b) => b?.connections ?? 0) + (backend.clusterConnections - backend.connections),
      };
    });
    return {
      ...first,
      pid: process.pid,
      shuttingDown: this.stopping,
      connections: statuses.reduce((n, s) => n + s.connections, 0),
      backends,
      workers: statuses.map((s) => ({
        pid: s.pid,
        connections: s.connections,
        fingerprint: s.ring.fingerprint,
      })),
    };
  }

  /** Validates the config here first; only a valid one reaches the workers. */
  private async reload(): Promise<boolean> {
    try {
      this.config = loadConfigFile(this.configFile, this.overrides);
    } catch (error) {
      this.log.error(
        { event: 'reload-refused', err: (error as Error).message },
        'reload refused: config is invalid; keeping the running one',
      );
      return false;
    }
    const results = await Promise.all(this.workers().map((w) => this.ask(w, { kind: 'reload' })));
    this.health?.apply(this.config);
    if (this.config.admin !== undefined) this.admin?.configure(this.config.admin);
    this.log.info({ event: 'reload', workers: results.length }, 'config reloaded in every worker');
    return results.every((ok) => ok === true);
  }

  private async stop(signal: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info(
      { event: 'signal', signal },
      `received ${signal}; stopping ${this.workers().length} workers`,
    );
    const exits = this.workers().map(
      (worker) =>
        new Promise<void>((resolve) => {
          worker.once('exit', () => resolve());
          worker.process.kill('SIGTERM');
        }),
    );
    await Promise.all(exits);
    this.health?.stop();
    await this.admin?.close();
    this.log.info({ event: 'stopped' }, 'stopped');
    process.exit(0);
  }
}

/** A worker: a whole daemon without its own admin listener, answering the primary's questions. */
/**
 * Fails when something listens on the proxy's port already. The workers' native pipes bind it
 * with SO_REUSEPORT, which would share the port with another such listener (a second `--workers`
 * roomring, say) rather than fail: a plain bind here first makes that an EADDRINUSE at start.
 */
function portIsFree(port: number, host: string): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve()));
  });
}

async function runWorker(configFile: string, overrides: ConfigOverrides): Promise<void> {
  const config = loadConfigFile(configFile, overrides);
  const daemon = new Daemon(
    { ...config, admin: undefined },
    { configFile, overrides, leaseStore: new IpcLeaseStore(), remoteVerdicts: new IpcVerdicts() },
  );
  AggregatorRegistry.setRegistries([daemon.metrics.registry]);
  // Constructing one installs prom-client's listener that answers the primary's metrics requests.
  new AggregatorRegistry();
  attachToProcess(daemon);
  process.on('message', (message: Request & { roomring?: boolean }) => {
    if (message.roomring !== true) return;
    const answer = async (): Promise<unknown> => {
      if (message.kind === 'status') return daemon.status();
      if (message.kind === 'route') return daemon.route(message.room);
      return daemon.reload();
    };
    answer().then(
      (result) => process.send?.({ id: message.id, result }),
      () => process.send?.({ id: message.id, result: null }),
    );
  });
  await daemon.start();
  process.send?.({ listening: true });
}
