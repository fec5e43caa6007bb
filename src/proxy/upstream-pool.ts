// Idle keep-alive connections to backends, per backend address, most recently used first. A
// pooled socket that the backend closes, or that sits idle past `keepAlive`, is dropped.

import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { Backend } from '../pool/pool.js';

export class UpstreamPool {
  private readonly idle = new Map<string, Socket[]>();

  constructor(private keepAliveMs: number) {}

  setKeepAlive(ms: number): void {
    this.keepAliveMs = ms;
  }

  /** A pooled connection to `backend`, or undefined when there is none. */
  take(backend: Backend): Socket | undefined {
    const list = this.idle.get(keyOf(backend));
    while (list !== undefined && list.length > 0) {
      const socket = list.pop() as Socket;
      socket.removeListener('close', onIdleClose);
      socket.removeListener('error', onIdleClose);
      socket.removeListener('data', onIdleClose);
      socket.removeListener('timeout', onIdleClose);
      socket.setTimeout(0);
      (socket as PooledSocket)[DROP] = undefined;
      if (!socket.destroyed && socket.writable && socket.readable) return socket;
    }
    return undefined;
  }

  /** A new connection (connecting: the caller waits for 'connect' / 'secureConnect'). */
  open(backend: Backend): Socket {
    const socket = backend.tls
      ? tls.connect({ host: backend.host, port: backend.port, servername: backend.host })
      : net.connect({ host: backend.host, port: backend.port });
    socket.setNoDelay(true);
    return socket;
  }

  /** Returns a connection whose exchange finished cleanly, for the next request to `backend`. */
  give(backend: Backend, socket: Socket): void {
    if (this.keepAliveMs <= 0 || socket.destroyed) {
      socket.destroy();
      return;
    }
    const key = keyOf(backend);
    let list = this.idle.get(key);
    if (list === undefined) {
      list = [];
      this.idle.set(key, list);
    }
    const pool = list;
    const drop = (): void => {
      const at = pool.indexOf(socket);
      if (at !== -1) pool.splice(at, 1);
      socket.destroy();
    };
    (socket as PooledSocket)[DROP] = drop;
    // Closed by the backend, failing, idle too long, or sending bytes nobody asked for: dropped.
    socket.on('close', onIdleClose);
    socket.on('error', onIdleClose);
    socket.on('data', onIdleClose);
    socket.on('timeout', onIdleClose);
    socket.setTimeout(this.keepAliveMs);
    pool.push(socket);
  }

  close(): void {
    for (const list of this.idle.values()) for (const socket of list) socket.destroy();
    this.idle.clear();
  }
}

const DROP = Symbol('drop');
type PooledSocket = Socket & { [DROP]?: () => void };

function onIdleClose(this: PooledSocket): void {
  this[DROP]?.();
}

function keyOf(backend: Backend): string {
  return `${backend.tls ? 's' : 'p'}:${backend.host}:${backend.port}`;
}
