// The Redis registry as a proxy sees it: subscribe to change notices first, then load a full
// snapshot in one round trip; reload on each notice (debounced) and periodically, since pub/sub is
// at-most-once. When Redis is away the last snapshot stays in force (static stability). The proxy
// holding the leader lease reaps backends whose heartbeats expired.

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { BackendConfig, Config, RegistryConfig } from '../config/schema.js';
import { parseVerdict, type Verdict } from '../health/verdict.js';
import { compileAllowList } from './allow.js';
import { readEntry } from './entry.js';
import { type RegistryKeys, registryKeys } from './keys.js';
import { RedisConnections } from './redis-connections.js';
import type { BackendEntry, Registry, RegistryStatus, SnapshotListener } from './registry.js';
import {
  HOLD_LEASE,
  membershipKeys,
  REAP,
  RELEASE_LEASE,
  runScript,
  SET_HEALTH,
  SNAPSHOT,
} from './scripts.js';

export interface RedisRegistryOptions {
  url: string;
  config: RegistryConfig;
  /** Entries from the config file, which exist without heartbeats; a registry entry of the same id wins. */
  staticBackends: readonly BackendConfig[];
  log: Logger;
}

const FIRST_LOAD_TIMEOUT_MS = 2000;
/** Entries (times two: the reply is a flat id/value list) parsed between event-loop turns. */
const PARSE_SLICE = 2 * 100;

export interface RedisRegistryEvents {
  /** This proxy took or lost the leader lease (the leader runs the shared health checks). */
  leader: [held: boolean];
  /** Some proxy saw this backend fail; the leader probes it at once. */
  suspect: [id: string];
}

export class RedisRegistry extends EventEmitter<RedisRegistryEvents> implements Registry {
  readonly mode = 'redis' as const;
  readonly keys: RegistryKeys;
  readonly connections: RedisConnections;
  private readonly holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  private listener: SnapshotListener | undefined;
  private staticBackends: readonly BackendConfig[];
  private allowed: ((host: string) => boolean) | undefined;
  private readonly warned = new Map<string, string>();
  private readonly parsed = new Map<string, { raw: string; entry: BackendEntry }>();
  private timers: NodeJS.Timeout[] = [];
  private debounceTimer: NodeJS.Timeout | undefined;
  private loading: Promise<void> | undefined;
  private reloadAgain = false;
  private isLeader = false;
  private epoch = 0;
  private lastLoadAt: number | undefined;
  private lastEntries: readonly BackendEntry[] = [];
  private lastVerdicts: ReadonlyMap<string, Verdict> = new Map();
  /** The verdicts as Redis holds them now (without the ones kept through a restart). */
  private storedVerdicts: ReadonlyMap<string, Verdict> = new Map();
  private recoverUntil: number | undefined;
  private closed = false;

  constructor(private readonly options: RedisRegistryOptions) {
    super();
    this.keys = registryKeys(options.config.cluster);
    this.staticBackends = options.staticBackends;
    this.allowed = compileAllowList(options.config.allow);
    this.connections = new RedisConnections(options.url, `roomring:${options.config.cluster}`);
  }

  private get log(): Logger {
    return this.options.log;
  }

  async watch(listener: SnapshotListener): Promise<void> {
    this.listener = listener;
    const { subscriber } = this.connections;
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.keys.events) this.scheduleReload();
      else if (channel === this.keys.suspects && this.isLeader) this.emit('suspect', message);
    });
    this.connections.on('lost', (reason) =>
      this.log.warn(
        { event: 'registry-lost', reason },
        `registry unreachable (${reason}); routing on the last snapshot (epoch ${this.epoch}) until it returns`,
      ),
    );
    this.connections.on('ready', () => {
      if (this.lastLoadAt !== undefined)
        this.log.info({ event: 'registry-regained' }, 'registry reachable again; resyncing');
      void this.reload();
    });
    // Subscribe before the first load, so no change between the two is missed.
    const subscribed = subscriber.subscribe(this.keys.events, this.keys.suspects).then(
      () => true,
      () => false,
    );
    const first = await withTimeout(
      subscribed.then(() => this.reload()).then(() => this.lastLoadAt !== undefined),
      FIRST_LOAD_TIMEOUT_MS,
    );
    if (first !== true) {
      this.log.warn(
        { event: 'registry-unreachable-at-start', static: this.staticBackends.length },
        `registry unreachable at start; routing on the ${this.staticBackends.length} static backend(s) until it answers`,
      );
      listener({ epoch: 0, backends: this.staticEntries(new Set()) });
    }
    this.timers.push(setInterval(() => void this.reload(), this.options.config.resync).unref());
    this.timers.push(setInterval(() => void this.lead(), this.options.config.reapInterval).unref());
  }

  /** Takes a reloaded config: static entries and the allow list change; the connection stays. */
  reconfigure(config: Config): void {
    this.staticBackends = config.backends;
    this.allowed = compileAllowList(config.registry?.allow);
    this.parsed.clear();
    void this.reload();
  }

  status(): RegistryStatus {
    return {
      mode: 'redis',
      cluster: this.options.config.cluster,
      connected: this.connections.connected,
      staleSince: this.connections.lostSince,
      epoch: this.epoch,
      leader: this.isLeader,
    };
  }

  private scheduleReload(): void {
    if (this.debounceTimer !== undefined) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      void this.reload();
    }, this.options.config.debounce);
  }

  /** Loads a snapshot; one load at a time, with one more queued if a notice came in meanwhile. */
  reload(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.loading !== undefined) {
      this.reloadAgain = true;
      return this.loading;
    }
    this.loading = this.load()
      .catch((error: unknown) =>
        this.log.debug({ err: error }, 'registry load failed; keeping the last snapshot'),
      )
      .finally(() => {
        this.loading = undefined;
        if (this.reloadAgain) {
          this.reloadAgain = false;
          void this.reload();
        }
      });
    return this.loading;
  }

  private async load(): Promise<void> {
    const reply = (await runScript(this.connections.commands, SNAPSHOT, membershipKeys(this.keys), [])) as [
      number,
      number,
      string[],
      string[],
      string[],
    ];
    const [epoch, serverNow, flat, , health] = reply;
    const clockOffset = serverNow - Date.now();
    const entries: BackendEntry[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < flat.length; i += 2) {
      // Large registries are parsed in slices, so the proxy's event loop never stalls on a reload.
      if (i > 0 && i % PARSE_SLICE === 0) await yieldToEventLoop();
      const id = flat[i] as string;
      const raw = flat[i + 1] as string;
      seen.add(id);
      const entry = this.entryOf(id, raw);
      if (entry !== undefined) entries.push(entry);
    }
    for (const id of this.parsed.keys()) if (!seen.has(id)) this.parsed.delete(id);
    for (const id of this.warned.keys()) if (!seen.has(id)) this.warned.delete(id);
    entries.push(...this.staticEntries(seen));
    const verdicts = readVerdicts(health);
    this.storedVerdicts = new Map(verdicts);
    this.keepThroughRestart(epoch, entries, verdicts);
    this.lastEntries = entries;
    this.lastVerdicts = verdicts;
    this.epoch = epoch;
    this.lastLoadAt = Date.now();
    this.listener?.({ epoch, backends: entries, verdicts, clockOffset });
  }

  /**
   * An epoch lower than the last one means Redis lost its data (a restart without persistence).
   * Backends re-register within a third of their ttl; until then, for one resync period, entries
   * known before are kept, so the ring never empties because Redis came back empty.
   */
  private keepThroughRestart(epoch: number, entries: BackendEntry[], verdicts: Map<string, Verdict>): void {
    if (this.lastLoadAt !== undefined && epoch < this.epoch) {
      this.recoverUntil = Date.now() + this.options.config.resync;
      this.log.warn(
        { event: 'registry-reset', epoch, was: this.epoch },
        'registry epoch went back (Redis lost its data); keeping known backends while they re-register',
      );
    }
    if (this.recoverUntil === undefined) return;
    if (Date.now() >= this.recoverUntil) {
      this.recoverUntil = undefined;
      return;
    }
    const present = new Set(entries.map((e) => e.id));
    for (const entry of this.lastEntries) if (!present.has(entry.id)) entries.push(entry);
    // Verdicts were lost with the data too; the leader writes them again, until then the last ones hold.
    for (const [id, verdict] of this.lastVerdicts) if (!verdicts.has(id)) verdicts.set(id, verdict);
  }

  /** Parses an entry, reusing the last result while its JSON is unchanged; warns once per bad version. */
  private entryOf(id: string, raw: string): BackendEntry | undefined {
    const cached = this.parsed.get(id);
    if (cached?.raw === raw) return cached.entry;
    const result = readEntry(id, raw, this.allowed);
    if (result.ok) {
      this.parsed.set(id, { raw, entry: result.entry });
      this.warned.delete(id);
      return result.entry;
    }
    this.parsed.delete(id);
    if (this.warned.get(id) !== raw) {
      this.warned.set(id, raw);
      this.log.warn(
        { event: 'registry-entry-skipped', backend: id, reason: result.reason },
        `skipping registry entry '${id}': ${result.reason}`,
      );
    }
    return undefined;
  }

  private staticEntries(registered: Set<string>): BackendEntry[] {
    return this.staticBackends
      .filter((b) => !registered.has(b.id))
      .map(({ id, url, weight, health }) => ({ id, url, weight, health, state: 'active' as const }));
  }

  /** Holds or takes the leader lease; the leader removes backends whose heartbeats expired. */
  private async lead(): Promise<void> {
    if (this.closed || !this.connections.connected) return;
    try {
      const { commands } = this.connections;
      const held =
        (await runScript(
          commands,
          HOLD_LEASE,
          [this.keys.leader],
          [this.holder, this.options.config.leaderLease],
        )) === 1;
      if (held !== this.isLeader) {
        this.isLeader = held;
        if (held) this.log.info({ event: 'leader' }, 'this proxy now holds the registry leader lease');
        this.emit('leader', held);
      }
      if (!held) return;
      const reaped = (await runScript(commands, REAP, membershipKeys(this.keys), [
        this.keys.events,
      ])) as string[];
      if (reaped.length > 0) {
        this.log.info(
          { event: 'backends-expired', backends: reaped },
          `removed ${reaped.length} backend(s) whose heartbeat expired`,
        );
      }
    } catch (error) {
      this.log.debug({ err: error }, 'leader step failed');
    }
  }

  /** Publishes the leader's verdict of a backend to every proxy (epoch bump and notice). */
  async writeVerdict(id: string, verdict: Verdict): Promise<void> {
    if (!this.isLeader) return;
    await runScript(this.connections.commands, SET_HEALTH, membershipKeys(this.keys), [
      this.keys.events,
      id,
      JSON.stringify(verdict),
    ]);
  }

  /** The verdict of `id` as the registry stores it, or undefined where it has none. */
  storedVerdict(id: string): Verdict | undefined {
    return this.storedVerdicts.get(id);
  }

  /** Tells the leader that this proxy saw `id` fail, so it probes at once. */
  reportSuspect(id: string): void {
    if (this.isLeader) this.emit('suspect', id);
    else this.connections.commands.publish(this.keys.suspects, id).catch(() => undefined);
  }

  /** This proxy's name in the registry (leader lease holder, load publisher). */
  get proxyId(): string {
    return this.holder;
  }

  get leader(): boolean {
    return this.isLeader;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.isLeader) this.emit('leader', false);
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.debounceTimer);
    if (this.isLeader && this.connections.connected) {
      await runScript(this.connections.commands, RELEASE_LEASE, [this.keys.leader], [this.holder]).catch(
        () => undefined,
      );
    }
    await this.connections.close();
  }
}

function readVerdicts(flat: string[]): Map<string, Verdict> {
  const verdicts = new Map<string, Verdict>();
  for (let i = 0; i < flat.length; i += 2) {
    const verdict = parseVerdict(flat[i + 1] as string);
    if (verdict !== undefined) verdicts.set(flat[i] as string, verdict);
  }
  return verdicts;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]);
}
