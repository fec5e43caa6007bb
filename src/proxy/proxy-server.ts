// The listener: finds each request's room, picks its backend from the current ring and hands the
// request to the HTTP or WebSocket forwarder. Closes gracefully: in-flight HTTP finishes, every
// tunnel gets a close frame.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Placer } from '../affinity/placement.js';
import type { Config } from '../config/schema.js';
import { type ErrorCode, RoomringError } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import { compileRoomKey, type RoomKeyFn } from '../room/room-key.js';
import { ConnectionTracker } from './connections.js';
import { type ForwardOptions, HttpForwarder } from './http-forward.js';
import type { ProxyObserver } from './observer.js';
import { endThenDestroy, replyError, replyErrorOnSocket } from './reply.js';
import { WebSocketForwarder } from './ws-forward.js';
import { CLOSE_GOING_AWAY, closeTunnel } from './ws-frames.js';

type Target = { backend: Backend; room: string | null } | { error: ErrorCode };

export class ProxyServer {
  readonly server: http.Server;
  private readonly http: HttpForwarder;
  private readonly ws: WebSocketForwarder;
  private roomKeyFrom: RoomKeyFn;
  private onMissing: Config['room']['onMissing'];
  private closing = false;

  constructor(
    private readonly pool: Pool,
    config: Config,
    /** Where rooms go (leases when affinity is on); without one, the ring decides alone. */
    private readonly placer?: Placer,
    readonly tracker: ConnectionTracker = new ConnectionTracker(),
    private readonly observer?: ProxyObserver,
  ) {
    this.roomKeyFrom = compileRoomKey(config.room.from);
    this.onMissing = config.room.onMissing;
    const options = forwardOptions(config);
    this.http = new HttpForwarder(pool, options, observer);
    this.ws = new WebSocketForwarder(pool, this.tracker, options, observer);
    // requestTimeout 0: long uploads and streams are bounded by `timeouts.idle`, not a total.
    this.server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 5000 });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on('clientError', (_error: Error, socket: Duplex) => {
      if (socket.writable)
        endThenDestroy(socket, 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Applies room rules and timeouts from a reloaded config; open connections are kept. */
  configure(config: Config): void {
    this.roomKeyFrom = compileRoomKey(config.room.from);
    this.onMissing = config.room.onMissing;
    const options = forwardOptions(config);
    this.http.setOptions(options);
    this.ws.setOptions(options);
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  get shuttingDown(): boolean {
    return this.closing;
  }

  /**
   * Where a request goes: synchronously when the answer is known (a cached lease, or the ring),
   * else a promise that asks the lease store once for the room's first connection here.
   */
  target(req: IncomingMessage): Target | Promise<Target> {
    let room: string | null;
    try {
      room = this.roomKeyFrom(req);
    } catch (error) {
      if (error instanceof RoomringError) return { error: error.code };
      throw error;
    }
    if (room === null) {
      if (this.onMissing === 'reject') return { error: 'ROOMRING_E_NO_ROOM' };
      return withBackend(this.pool.pickRandom(), null);
    }
    if (this.placer === undefined) return withBackend(this.pool.pick(room), room);
    const known = this.placer.placeNow(room);
    if (known !== undefined || !this.placer.affinity) return withBackend(known?.backend, room);
    const placed = room;
    const started = performance.now();
    return this.placer.place(placed).then(
      (placement) => {
        this.observer?.placement((performance.now() - started) / 1000, placement?.reason ?? 'ring-owner');
        return withBackend(placement?.backend, placed);
      },
      // The lease store is unreachable: the ring still answers (static stability).
      () => {
        this.observer?.placement((performance.now() - started) / 1000, 'store-unreachable');
        return withBackend(this.pool.pick(placed), placed);
      },
    );
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.closing) {
      res.shouldKeepAlive = false;
      replyError(res, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const target = this.target(req);
    if (target instanceof Promise) target.then((t) => this.sendRequest(req, res, t));
    else this.sendRequest(req, res, target);
  }

  private sendRequest(req: IncomingMessage, res: ServerResponse, target: Target): void {
    if ('error' in target) {
      this.observer?.error(target.error);
      replyError(res, target.error);
    } else if (!res.destroyed) this.http.forward(req, res, target.room, target.backend);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.closing) {
      replyErrorOnSocket(socket, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const target = this.target(req);
    if (target instanceof Promise) target.then((t) => this.sendUpgrade(req, socket, head, t));
    else this.sendUpgrade(req, socket, head, target);
  }

  private sendUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: Target): void {
    if ('error' in target) {
      this.observer?.error(target.error);
      replyErrorOnSocket(socket, target.error);
    } else if (!socket.destroyed) this.ws.forward(req, socket, head, target.room, target.backend);
  }

  /**
   * Stops accepting, lets in-flight HTTP requests finish, sends every tunnel a 1001 close frame
   * (to the client unmasked, to the backend masked), and resolves when all is closed or the
   * timeout has passed (then whatever is left is destroyed).
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const tunnel of this.tracker.all()) closeTunnel(tunnel, CLOSE_GOING_AWAY);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    await Promise.race([closed, timeout]);
    clearTimeout(timer);
    this.server.closeAllConnections();
    for (const tunnel of this.tracker.all()) {
      tunnel.client.destroy();
      tunnel.upstream.destroy();
    }
    this.http.close();
  }
}

function withBackend(backend: Backend | undefined, room: string | null): Target {
  return backend === undefined ? { error: 'ROOMRING_E_NO_BACKEND' } : { backend, room };
}

function forwardOptions(config: Config): ForwardOptions {
  return { timeouts: { ...config.timeouts }, retries: config.failover.retries };
}
