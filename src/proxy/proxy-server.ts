// The listener: finds each request's room, picks its backend from the current ring and hands the
// request to the HTTP or WebSocket forwarder. Closes gracefully: in-flight HTTP finishes, every
// tunnel gets a close frame.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.js';
import { type ErrorCode, RoomringError } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import { compileRoomKey, type RoomKeyFn } from '../room/room-key.js';
import { ConnectionTracker } from './connections.js';
import { type ForwardOptions, HttpForwarder } from './http-forward.js';
import { endThenDestroy, replyError, replyErrorOnSocket } from './reply.js';
import { WebSocketForwarder } from './ws-forward.js';
import { CLOSE_GOING_AWAY, clientCloseFrame, serverCloseFrame } from './ws-frames.js';

type Placement = { backend: Backend; room: string | null } | { error: ErrorCode };

export class ProxyServer {
  readonly server: http.Server;
  readonly tracker = new ConnectionTracker();
  private readonly http: HttpForwarder;
  private readonly ws: WebSocketForwarder;
  private roomKeyFrom: RoomKeyFn;
  private onMissing: Config['room']['onMissing'];
  private closing = false;

  constructor(
    private readonly pool: Pool,
    config: Config,
  ) {
    this.roomKeyFrom = compileRoomKey(config.room.from);
    this.onMissing = config.room.onMissing;
    const options = forwardOptions(config);
    this.http = new HttpForwarder(pool, options);
    this.ws = new WebSocketForwarder(pool, this.tracker, options);
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

  /** Where the proxy would send a request for `room` now. */
  place(req: IncomingMessage): Placement {
    let room: string | null;
    try {
      room = this.roomKeyFrom(req);
    } catch (error) {
      if (error instanceof RoomringError) return { error: error.code };
      throw error;
    }
    if (room === null && this.onMissing === 'reject') return { error: 'ROOMRING_E_NO_ROOM' };
    const backend = room === null ? this.pool.pickRandom() : this.pool.pick(room);
    return backend === undefined ? { error: 'ROOMRING_E_NO_BACKEND' } : { backend, room };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.closing) {
      res.shouldKeepAlive = false;
      replyError(res, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const placement = this.place(req);
    if ('error' in placement) replyError(res, placement.error);
    else this.http.forward(req, res, placement.room, placement.backend);
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.closing) {
      replyErrorOnSocket(socket, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const placement = this.place(req);
    if ('error' in placement) replyErrorOnSocket(socket, placement.error);
    else this.ws.forward(req, socket, head, placement.room, placement.backend);
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
    for (const tunnel of this.tracker.all()) {
      tunnel.upstream.unpipe(tunnel.client);
      tunnel.client.unpipe(tunnel.upstream);
      tunnel.client.end(serverCloseFrame(CLOSE_GOING_AWAY));
      tunnel.upstream.end(clientCloseFrame(CLOSE_GOING_AWAY));
    }
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

function forwardOptions(config: Config): ForwardOptions {
  return { timeouts: { ...config.timeouts }, retries: config.failover.retries };
}
