// The one place a process's Redis connections are created and owned: one for commands, one for the
// subscription. Reconnects with capped exponential back-off, and reports loss and return once each.

import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';

/**
 * Creates a Redis client. ioredis is loaded on first use, so a proxy without a registry never
 * pays its memory (about 24 MB of RSS per process).
 */
export function connectRedis(url: string, options: RedisOptions): Redis {
  const { Redis: Client } = createRequire(import.meta.url)('ioredis') as typeof import('ioredis');
  return new Client(url, options);
}

export interface ConnectionEvents {
  lost: [error: string];
  ready: [];
}

/** Back-off between reconnect attempts: 50 ms doubling to 2 s; never gives up. */
export function reconnectDelay(attempt: number): number {
  return Math.min(50 * 2 ** Math.min(attempt, 10), 2000);
}

export function redisOptions(connectionName: string): RedisOptions {
  return {
    connectionName,
    retryStrategy: reconnectDelay,
    // A command issued while Redis is away fails fast instead of queueing: callers keep what they had.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    lazyConnect: false,
  };
}

export class RedisConnections extends EventEmitter<ConnectionEvents> {
  readonly commands: Redis;
  readonly subscriber: Redis;
  /** When the connection was lost, or undefined while connected. */
  lostSince: number | undefined;
  private everReady = false;
  private closed = false;

  constructor(url: string, name: string) {
    super();
    this.commands = connectRedis(url, redisOptions(`${name}:commands`));
    this.subscriber = connectRedis(url, redisOptions(`${name}:events`));
    this.lostSince = Date.now();
    this.commands.on('ready', () => {
      this.lostSince = undefined;
      this.everReady = true;
      this.emit('ready');
    });
    // ioredis emits 'error' on every failed attempt; without listeners that would crash the process.
    const onError = (error: Error): void => this.markLost(error.message);
    this.commands.on('error', onError);
    this.subscriber.on('error', () => {});
    this.commands.on('close', () => this.markLost('connection closed'));
  }

  get connected(): boolean {
    return this.lostSince === undefined;
  }

  get hasConnected(): boolean {
    return this.everReady;
  }

  private markLost(reason: string): void {
    if (this.closed || this.lostSince !== undefined) return;
    this.lostSince = Date.now();
    this.emit('lost', reason);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([quit(this.commands), quit(this.subscriber)]);
  }
}

async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    await Promise.race([client.quit(), new Promise((resolve) => setTimeout(resolve, 500))]);
  }
  client.disconnect();
}
