// Forwards a WebSocket upgrade: opens a raw TCP (or TLS) connection to the backend, writes the
// handshake, then pipes bytes both ways. After the upgrade the proxy does no per-message work.
// The backend's answer (101, or a 404 with a body) reaches the client as the backend wrote it.

import type { IncomingMessage } from 'node:http';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Backend, Pool } from '../pool/pool.js';
import type { ConnectionTracker, Tunnel } from './connections.js';
import { requestHead, requestHeadersFor } from './headers.js';
import type { ForwardOptions } from './http-forward.js';
import { replyErrorOnSocket } from './reply.js';

const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ROOMRING_CONNECT_TIMEOUT',
]);

export class WebSocketForwarder {
  constructor(
    private readonly pool: Pool,
    private readonly tracker: ConnectionTracker,
    private options: ForwardOptions,
  ) {}

  setOptions(options: ForwardOptions): void {
    this.options = options;
  }

  forward(req: IncomingMessage, client: Duplex, head: Buffer, room: string | null, backend: Backend): void {
    const handshake = requestHead(req.method ?? 'GET', req.url ?? '/', requestHeadersFor(req, true));
    let upstream: Socket | undefined;
    // Until the tunnel is open, a client error only needs the pending upstream closed.
    const onClientGone = (): void => {
      upstream?.destroy();
    };
    client.on('error', onClientGone);
    client.once('close', onClientGone);
    const attempt = (target: Backend, tries: number): void => {
      upstream = this.connect(target);
      const socket = upstream;
      socket.once('connect', () => this.open(client, socket, head, handshake, room, target));
      socket.once('error', (error: NodeJS.ErrnoException) => {
        if (socket.readyState === 'opening' || error.code === 'ROOMRING_CONNECT_TIMEOUT') {
          if (CONNECT_ERRORS.has(error.code ?? '')) {
            this.pool.reportFailure(target);
            const next = room === null ? this.pool.pickRandom() : this.pool.pick(room);
            if (next !== undefined && next !== target && tries < this.options.retries && !client.destroyed) {
              attempt(next, tries + 1);
              return;
            }
          }
          replyErrorOnSocket(
            client,
            error.code === 'ROOMRING_CONNECT_TIMEOUT'
              ? 'ROOMRING_E_BACKEND_TIMEOUT'
              : 'ROOMRING_E_BACKEND_UNREACHABLE',
          );
        }
      });
    };
    attempt(backend, 0);
  }

  private connect(backend: Backend): Socket {
    const socket = backend.tls
      ? tls.connect({ host: backend.host, port: backend.port, servername: backend.host })
      : net.connect({ host: backend.host, port: backend.port });
    const { connect } = this.options.timeouts;
    if (connect > 0) {
      socket.setTimeout(connect, () => {
        const error = Object.assign(new Error('backend connect timeout'), {
          code: 'ROOMRING_CONNECT_TIMEOUT',
        });
        socket.destroy(error);
      });
    }
    return socket;
  }

  private open(
    client: Duplex,
    upstream: Socket,
    head: Buffer,
    handshake: string,
    room: string | null,
    backend: Backend,
  ): void {
    this.pool.reportSuccess(backend);
    const { idle } = this.options.timeouts;
    upstream.setTimeout(0);
    upstream.setNoDelay(true);
    (client as Socket).setNoDelay?.(true);
    if (idle > 0) {
      upstream.setTimeout(idle, () => {
        upstream.destroy();
        client.destroy();
      });
    }
    const tunnel: Tunnel = { room, backendId: backend.id, client, upstream };
    this.tracker.add(tunnel);
    const close = (): void => {
      this.tracker.remove(tunnel);
      upstream.destroy();
      client.destroy();
    };
    upstream.on('error', close);
    upstream.once('close', close);
    client.on('error', close);
    client.once('close', close);
    upstream.write(handshake);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  }
}
