// Forwards a WebSocket upgrade: opens a raw TCP (or TLS) connection to the backend, writes the
// handshake, then pipes bytes both ways. After the upgrade the proxy does no per-message work.
// The backend's answer (101, or a 404 with a body) reaches the client as the backend wrote it.
//
// With the native pipe, a plain-TCP backend given by IP address is connected to by the pipe
// itself: the client socket goes there at once and no Node socket is made for the backend. A
// connect that fails, or a backend that does not answer in time, gives the client back here, and
// failover and error answers go on as on the JavaScript path. A client the pipe accepted itself
// comes as its descriptor, and has a Node socket only if it comes back or takes the JavaScript path.

import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Backend, Pool } from '../pool/pool.js';
import type { ClientRequest } from './client-exchange.js';
import type { ConnectionTracker } from './connections.js';
import { CONNECT_ERRORS, nextBackend } from './failover.js';
import { requestHead, requestHeadersFor } from './headers.js';
import type { ForwardOptions } from './http-forward.js';
import { type Accepted, isAccepted, nativePipe, socketOf } from './native-pipe.js';
import { type ProxyObserver, statusOfHead } from './observer.js';
import { destroyOnError, isSocket, replyErrorOnSocket } from './reply.js';
import { ByteTunnel, PipedTunnel, type PipeHandover } from './tunnel.js';

const CONNECT_TIMEOUT = 'ROOMRING_CONNECT_TIMEOUT';

export class WebSocketForwarder {
  /** Where tunnels go after their 101, made once per options rather than per tunnel. */
  private handover: PipeHandover | undefined;
  /** Upgrades whose backend connection is being opened (by the pipe or Node), and who waits for none. */
  private connecting = 0;
  private onSettled: (() => void)[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly tracker: ConnectionTracker,
    private options: ForwardOptions,
    private readonly observer?: ProxyObserver,
  ) {
    this.handover = this.handoverFor(options);
  }

  setOptions(options: ForwardOptions): void {
    this.options = options;
    this.handover = this.handoverFor(options);
  }

  forward(
    req: ClientRequest,
    socket: Duplex | Accepted,
    head: Buffer,
    room: string | null,
    backend: Backend,
  ): void {
    // The client's socket: a new one when the native pipe gives the client back, or makes one of
    // a descriptor it accepted.
    let client = socket;
    const handshake = requestHead(req.method, req.url, requestHeadersFor(req, true));
    const tried = new Set<string>();
    let pending: Socket | undefined;
    // Until the tunnel is open, a client that goes away only needs the pending connection closed.
    const onClientGone = (): void => {
      pending?.destroy();
    };
    /** A connection to `target` failed with `code` before anything was sent: fail over, or answer. */
    const failed = (target: Backend, code: string): void => {
      // A client already gone needs no answer. (A descriptor the pipe accepted is a socket by now.)
      if (isAccepted(client) || client.destroyed) return;
      if (CONNECT_ERRORS.has(code)) {
        this.pool.reportFailure(target);
        const next = tried.size <= this.options.retries ? nextBackend(this.pool, room, tried) : undefined;
        if (next !== undefined) {
          attempt(next);
          return;
        }
      }
      const reply =
        code === CONNECT_TIMEOUT ? 'ROOMRING_E_BACKEND_TIMEOUT' : 'ROOMRING_E_BACKEND_UNREACHABLE';
      this.observer?.error(reply);
      replyErrorOnSocket(client, reply);
    };
    const attempt = (target: Backend): void => {
      tried.add(target.id);
      const inPipe = this.connectInPipe(client, target, handshake, head, room, (code, back) => {
        client = back;
        back.on('error', destroyOnError);
        if (code === undefined) {
          this.observer?.error('ROOMRING_E_BACKEND_TIMEOUT');
          replyErrorOnSocket(back, 'ROOMRING_E_BACKEND_TIMEOUT');
        } else failed(target, code);
      });
      if (inPipe) return;
      const socket = isAccepted(client) ? socketOf(client) : client;
      if (socket === undefined) return;
      if (socket !== client) socket.on('error', destroyOnError);
      client = socket;
      const upstream = this.connect(target);
      pending = upstream;
      socket.on('error', onClientGone);
      socket.once('close', onClientGone);
      const connectEvent = target.tls ? 'secureConnect' : 'connect';
      // Shutdown waits for this connect as for the pipe's (settled()): until the tunnel is
      // tracked, the client is answered or fails over, or the connection is dropped.
      this.connecting++;
      const onClosed = (): void => {
        upstream.off(connectEvent, onConnect);
        upstream.off('error', onError);
        this.settleOne();
      };
      const onError = (error: NodeJS.ErrnoException): void => {
        upstream.off(connectEvent, onConnect);
        upstream.off('close', onClosed);
        socket.off('error', onClientGone);
        socket.off('close', onClientGone);
        failed(target, error.code ?? '');
        this.settleOne();
      };
      // Once connected, the tunnel handles errors: no listener of this attempt stays behind.
      const onConnect = (): void => {
        upstream.off('error', onError);
        upstream.off('close', onClosed);
        socket.off('error', onClientGone);
        socket.off('close', onClientGone);
        this.open(socket, upstream, head, handshake, room, target);
        this.settleOne();
      };
      upstream.once(connectEvent, onConnect);
      upstream.once('error', onError);
      upstream.once('close', onClosed);
    };
    attempt(backend);
  }

  /**
   * Starts the tunnel in the native pipe, which connects to the backend itself: false when it
   * cannot (no pipe, TLS, a backend host that is not an IP address, a client socket it cannot
   * take). `onBack` gets the client socket back with the connect's error code, or with no code
   * when the backend did not answer within `timeouts.response`.
   */
  private connectInPipe(
    client: Duplex | Accepted,
    target: Backend,
    handshake: string,
    head: Buffer,
    room: string | null,
    onBack: (code: string | undefined, client: Socket) => void,
  ): boolean {
    const pipe = this.handover?.pipe;
    if (pipe === undefined || target.tls || !(isAccepted(client) || isSocket(client))) return false;
    const { connect, response, idle } = this.options.timeouts;
    let tunnel: PipedTunnel | undefined;
    let pending = true;
    // Once per connect: it is open (and tracked), or its client came back (and the next attempt,
    // if any, is counted already), or the pipe closed it.
    const settle = (): void => {
      if (!pending) return;
      pending = false;
      this.settleOne();
    };
    const id = pipe.connect(
      client,
      target.host,
      target.port,
      head.length === 0 ? handshake : Buffer.concat([Buffer.from(handshake, 'latin1'), head]),
      { connectMs: connect, answerMs: response, idleMs: idle },
      {
        connected: () => {
          this.pool.reportSuccess(target);
          tunnel = new PipedTunnel(room, target.id, pipe, (closed) => this.tracker.remove(closed));
          tunnel.id = id ?? 0;
          this.tracker.add(tunnel);
          settle();
        },
        answered: (status) => {
          tunnel?.answered(status);
          this.observer?.upgrade(target.id, status);
        },
        failed: (code, back) => {
          onBack(code, back);
          settle();
        },
        unanswered: (back) => {
          tunnel?.pipeClosed();
          onBack(undefined, back);
        },
        closed: () => {
          tunnel?.pipeClosed();
          settle();
        },
      },
    );
    if (id === undefined) return false;
    this.connecting++;
    return true;
  }

  /** One connect (the pipe's or Node's) is over. */
  private settleOne(): void {
    if (--this.connecting === 0) for (const resolve of this.onSettled.splice(0)) resolve();
  }

  /** Resolves once no upgrade waits for its backend connection (it is then tracked, or answered). */
  settled(): Promise<void> {
    if (this.connecting === 0) return Promise.resolve();
    return new Promise((resolve) => this.onSettled.push(resolve));
  }

  private handoverFor(options: ForwardOptions): PipeHandover | undefined {
    if (options.pipe !== 'native') return undefined;
    const pipe = nativePipe();
    // The pipe is one per process: its setting follows the latest options.
    pipe?.moveAfter(options.threadAfter);
    pipe?.halfCloseAfter(options.halfClose);
    return (
      pipe && {
        pipe,
        idleMs: options.timeouts.idle,
        replace: (from, to) => this.tracker.replace(from, to),
      }
    );
  }

  private connect(backend: Backend): Socket {
    const socket = backend.tls
      ? tls.connect({ host: backend.host, port: backend.port, servername: backend.host })
      : net.connect({ host: backend.host, port: backend.port });
    const { connect } = this.options.timeouts;
    if (connect > 0) {
      // A timer rather than a socket timeout: it must not outlive the connect phase.
      const timer = setTimeout(() => {
        socket.destroy(Object.assign(new Error('backend connect timeout'), { code: CONNECT_TIMEOUT }));
      }, connect);
      const clear = (): void => {
        clearTimeout(timer);
        socket.off(backend.tls ? 'secureConnect' : 'connect', clear);
        socket.off('close', clear);
      };
      socket.once(backend.tls ? 'secureConnect' : 'connect', clear);
      socket.once('close', clear);
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
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    this.pool.reportSuccess(backend);
    const { idle, response } = this.options.timeouts;
    upstream.setNoDelay(true);
    const { observer } = this;
    const tunnel = new ByteTunnel(
      room,
      backend.id,
      client,
      upstream,
      (closed) => this.tracker.remove(closed),
      observer && ((first: Buffer) => observer.upgrade(backend.id, statusOfHead(first))),
      this.handover,
    );
    tunnel.halfCloseMs = this.options.halfClose;
    this.tracker.add(tunnel);
    if (idle > 0) upstream.setTimeout(idle, () => tunnel.close());
    tunnel.start(handshake, head);
    // A backend that accepts the connection but never answers the handshake gets `timeouts.response`,
    // as an HTTP request does; then the client is answered 504 instead of waiting forever.
    if (response > 0) {
      tunnel.limitAnswer(response, () => {
        tunnel.release();
        this.tracker.remove(tunnel);
        upstream.destroy();
        this.observer?.error('ROOMRING_E_BACKEND_TIMEOUT');
        replyErrorOnSocket(client, 'ROOMRING_E_BACKEND_TIMEOUT');
      });
    }
  }
}
