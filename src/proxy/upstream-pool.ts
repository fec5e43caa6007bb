// Connections to backends for HTTP exchanges, kept alive between requests. Each UpstreamConnection
// registers its socket listeners once and passes events to its current owner (an exchange, or the
// pool while idle), so a request costs no listener or timer churn. Plain-TCP connections read into
// a buffer of their own (net's `onread`), not a fresh allocation per read; timeouts are checked by
// one sweep every 100 ms for all connections.

import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { Backend } from '../pool/pool.js';

/** What an exchange hears from the connection it holds. */
export interface UpstreamOwner {
  /** Bytes from the backend; `chunk` is valid during the call only, unless retain() is called. */
  upstreamData(chunk: Buffer): void;
  /** The connection failed (an error code, or a timeout code), or closed (`ECONNRESET`, after `upstreamClose`). */
  upstreamError(code: string): void;
  /** The backend closed the connection. */
  upstreamClose(): void;
  /** The socket's write buffer drained. */
  upstreamDrain(): void;
  /** No bytes for the connection's timeout. */
  upstreamTimeout(): void;
}

const SWEEP_MS = 100;
const READ_BUFFER = 16 * 1024;
let tick = 0;
const live = new Set<UpstreamConnection>();
let sweeper: NodeJS.Timeout | undefined;

function sweep(): void {
  tick++;
  for (const connection of live) connection.checkTimeout();
}

export class UpstreamConnection {
  readonly socket: Socket;
  owner: UpstreamOwner | undefined;
  /** Fired when the socket connected (or finished its TLS handshake), once. */
  onConnect: (() => void) | undefined;
  private timeoutMs = 0;
  private activeTick = 0;
  private buffer: Buffer | undefined;
  private retained = false;
  /** The pool list holding this connection while it is idle. */
  parkedIn: UpstreamConnection[] | undefined;

  constructor(readonly backend: Backend) {
    if (backend.tls) {
      this.socket = tls.connect({ host: backend.host, port: backend.port, servername: backend.host });
      this.socket.on('data', this.onData);
      this.socket.once('secureConnect', this.connected);
    } else {
      this.buffer = Buffer.allocUnsafe(READ_BUFFER);
      this.socket = net.connect({
        host: backend.host,
        port: backend.port,
        onread: { buffer: this.nextBuffer, callback: this.onRead },
      });
      this.socket.once('connect', this.connected);
    }
    this.socket.setNoDelay(true);
    this.socket.on('error', this.onError);
    this.socket.on('close', this.onClose);
    this.socket.on('drain', this.onDrain);
    live.add(this);
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, SWEEP_MS);
      sweeper.unref();
    }
  }

  /** Inactivity limit from now on (0: none); any byte from the backend restarts it. */
  setTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.activeTick = tick;
  }

  /** Traffic the other way (a request body going out) counts as activity too. */
  touch(): void {
    this.activeTick = tick;
  }

  /** The chunk passed to upstreamData stays referenced (queued for a write): reads go elsewhere. */
  retain(): void {
    this.retained = true;
  }

  get usable(): boolean {
    const { socket } = this;
    return !socket.destroyed && socket.writable && socket.readable;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** @internal From the sweep. */
  checkTimeout(): void {
    // One tick of slack: the limit is never cut short, and overshoots by up to SWEEP_MS.
    if (this.timeoutMs > 0 && (tick - this.activeTick - 1) * SWEEP_MS >= this.timeoutMs) {
      this.timeoutMs = 0;
      if (this.owner === undefined) this.drop();
      else this.owner.upstreamTimeout();
    }
  }

  /** Leaves the idle list (if in one) and closes: an idle connection that failed or timed out. */
  private drop(): void {
    const list = this.parkedIn;
    this.parkedIn = undefined;
    if (list !== undefined) {
      const at = list.indexOf(this);
      if (at !== -1) list.splice(at, 1);
    }
    this.socket.destroy();
  }

  private readonly nextBuffer = (): Buffer => {
    if (this.retained) {
      this.retained = false;
      this.buffer = Buffer.allocUnsafe(READ_BUFFER);
    }
    return this.buffer as Buffer;
  };

  private readonly onRead = (length: number, buffer: Uint8Array): boolean => {
    this.onData((buffer as Buffer).subarray(0, length));
    return true;
  };

  private readonly onData = (chunk: Buffer): void => {
    this.activeTick = tick;
    const owner = this.owner;
    // Bytes nobody asked for (on an idle pooled connection): the connection cannot be trusted.
    if (owner === undefined) this.drop();
    else owner.upstreamData(chunk);
  };

  private readonly connected = (): void => {
    const onConnect = this.onConnect;
    this.onConnect = undefined;
    onConnect?.();
  };

  private readonly onError = (error: NodeJS.ErrnoException): void => {
    if (this.owner === undefined) this.drop();
    else this.owner.upstreamError(error.code ?? 'ECONNRESET');
  };

  private readonly onClose = (): void => {
    live.delete(this);
    if (this.owner === undefined) this.drop();
    else this.owner.upstreamClose();
  };

  private readonly onDrain = (): void => {
    this.owner?.upstreamDrain();
  };
}

/** Idle connections per backend address, most recently used first. */
export class UpstreamPool {
  private readonly idle = new Map<string, UpstreamConnection[]>();

  constructor(private keepAliveMs: number) {}

  setKeepAlive(ms: number): void {
    this.keepAliveMs = ms;
  }

  /** A pooled connection to `backend`, or undefined when there is none. */
  take(backend: Backend): UpstreamConnection | undefined {
    const list = this.idle.get(keyOf(backend));
    while (list !== undefined && list.length > 0) {
      const connection = list.pop() as UpstreamConnection;
      connection.parkedIn = undefined;
      connection.setTimeout(0);
      if (connection.usable) return connection;
      connection.destroy();
    }
    return undefined;
  }

  /** A new connection (connecting: set `onConnect` to hear when it is open). */
  open(backend: Backend): UpstreamConnection {
    return new UpstreamConnection(backend);
  }

  /**
   * Returns a connection whose exchange finished cleanly, for the next request to `backend`.
   * Closed by the backend, failing, idle past keepAlive, or sending bytes nobody asked for, it is
   * dropped.
   */
  give(backend: Backend, connection: UpstreamConnection): void {
    connection.owner = undefined;
    if (this.keepAliveMs <= 0 || !connection.usable) {
      connection.destroy();
      return;
    }
    const key = keyOf(backend);
    let list = this.idle.get(key);
    if (list === undefined) {
      list = [];
      this.idle.set(key, list);
    }
    connection.parkedIn = list;
    connection.setTimeout(this.keepAliveMs);
    list.push(connection);
  }

  close(): void {
    for (const list of this.idle.values()) for (const connection of list) connection.destroy();
    this.idle.clear();
  }
}

function keyOf(backend: Backend): string {
  return `${backend.tls ? 's' : 'p'}:${backend.host}:${backend.port}`;
}
