// The backend side of the registry: register, heartbeat every ttl/3, re-register after Redis comes
// back empty, drain, and deregister on close. Used by `roomring register` and by Node backends
// through `registerBackend()`.

import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { registryKeys } from './keys.js';
import { connectRedis, redisOptions } from './redis-connections.js';
import { DEREGISTER, membershipKeys, REGISTER, runScript, SET_FIELD } from './scripts.js';

export interface RegisterOptions {
  /** Redis URL, e.g. redis://127.0.0.1:6379. */
  redis: string;
  /** Cluster namespace; the proxies' `registry.cluster`. */
  cluster?: string;
  id: string;
  url: string;
  weight?: number;
  /** Heartbeat ttl in ms: the entry is removed when no heartbeat came for this long. Default 5000. */
  ttl?: number;
  meta?: Record<string, unknown>;
}

export interface AgentEvents {
  registered: [epoch: number];
  error: [error: Error];
}

/** A registered backend: heartbeats until closed. */
export class BackendRegistration extends EventEmitter<AgentEvents> {
  /** Resolves after the first successful registration. */
  readonly ready: Promise<void>;
  private readonly redis: Redis;
  private readonly keys;
  private readonly entry: string;
  private readonly ttl: number;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: RegisterOptions) {
    super();
    this.keys = registryKeys(options.cluster ?? 'default');
    this.ttl = options.ttl ?? 5000;
    const fields: Record<string, unknown> = {
      url: options.url,
      weight: options.weight ?? 1,
      state: 'active',
      ttl: this.ttl,
    };
    if (options.meta !== undefined) fields.meta = options.meta;
    this.entry = JSON.stringify(fields);
    this.redis = connectRedis(options.redis, redisOptions(`roomring:agent:${options.id}`));
    // Failed attempts are retried by the heartbeat; listeners may watch 'error', the process never dies of it.
    this.redis.on('error', () => {});
    this.redis.on('ready', () => void this.beat());
    this.ready = new Promise((resolve) => this.once('registered', () => resolve()));
    this.timer = setInterval(() => void this.beat(), Math.max(Math.floor(this.ttl / 3), 50));
    this.timer.unref();
  }

  /** One heartbeat; re-creates the entry when it is missing (a Redis restart, or reaped while away). */
  private async beat(): Promise<void> {
    if (this.closed || this.redis.status !== 'ready') return;
    try {
      const [, epoch] = (await runScript(this.redis, REGISTER, membershipKeys(this.keys), [
        this.keys.events,
        this.options.id,
        this.entry,
        this.ttl,
        'heartbeat',
      ])) as [number, number];
      this.emit('registered', epoch);
    } catch (error) {
      if (this.listenerCount('error') > 0) this.emit('error', error as Error);
    }
  }

  /** Stops new rooms going to this backend; live rooms stay. */
  async drain(): Promise<void> {
    await this.setState('draining');
  }

  async undrain(): Promise<void> {
    await this.setState('active');
  }

  private async setState(state: 'active' | 'draining'): Promise<void> {
    await this.ready;
    await runScript(this.redis, SET_FIELD, membershipKeys(this.keys), [
      this.keys.events,
      this.options.id,
      'state',
      JSON.stringify(state),
    ]);
  }

  /** Deregisters (when Redis is reachable) and closes the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    if (this.redis.status === 'ready') {
      await runScript(this.redis, DEREGISTER, membershipKeys(this.keys), [
        this.keys.events,
        this.options.id,
      ]).catch(() => undefined);
      await this.redis.quit().catch(() => undefined);
    }
    this.redis.disconnect();
  }
}

/** Registers a backend and keeps it registered with heartbeats until `close()`. */
export function registerBackend(options: RegisterOptions): BackendRegistration {
  return new BackendRegistration(options);
}
