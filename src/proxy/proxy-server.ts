// The listener: finds each request's room, picks its backend from the current ring and hands the
// request to the HTTP or WebSocket forwarder. Closes gracefully: in-flight HTTP finishes, every
// tunnel gets a close frame.
//
// With the native pipe, Node binds the listening socket and the pipe accepts on it: a connection
// comes here with its first head, an upgrade goes straight back to the pipe (no Node socket is
// made for it), a bodiless HTTP/1.1 request goes back to the pipe, which forwards it and reads the
// connection's next head (PipedExchange), and any other connection gets a Node socket and a
// ClientConnection that starts with the bytes the pipe read.

import cluster from 'node:cluster';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Placer } from '../affinity/placement.js';
import type { Config } from '../config/schema.js';
import { type ErrorCode, RoomringError } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import type { Ring } from '../ring/ring.js';
import { compileRoomKey, type RoomKeyFn, type RoomSource } from '../room/room-key.js';
import { ClientConnection, type ConnectionHandler, type TickLimits } from './client-connection.js';
import { type ClientExchange, ClientRequest } from './client-exchange.js';
import { ConnectionTracker } from './connections.js';
import { canForwardInPipe, type ForwardOptions, HttpForwarder } from './http-forward.js';
import {
  type Accepted,
  type AcceptLimits,
  type AcceptListener,
  bareIp,
  isAccepted,
  type NativePipe,
  nativePipe,
  socketOf,
} from './native-pipe.js';
import type { ProxyObserver } from './observer.js';
import { destroyOnError, replyErrorOnSocket } from './reply.js';
import { firstHead, type ParsedHead } from './request-parser.js';
import { WebSocketForwarder } from './ws-forward.js';
import { CLOSE_GOING_AWAY } from './ws-frames.js';

type Target = { backend: Backend; room: string | null } | { error: ErrorCode };

/** How often idle keep-alive connections and slow request heads are looked for. */
const SWEEP_MS = 1000;

export class ProxyServer implements ConnectionHandler {
  readonly server: net.Server;
  private readonly connections = new Set<ClientConnection>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly http: HttpForwarder;
  private readonly ws: WebSocketForwarder;
  private roomKeyFrom: RoomKeyFn;
  private onMissing: Config['room']['onMissing'];
  private ticks: TickLimits;
  private acceptLimits: AcceptLimits;
  private readonly pipeMode: Config['websocket']['pipe'];
  /** The native pipe's listener, when the pipe accepts the connections. */
  private accepting: { pipe: NativePipe; id: number } | undefined;
  private closing = false;
  /** On shutdown, once no client connection is left. */
  private onIdle: (() => void) | undefined;
  /** Upgrades whose backend is being chosen (a lease claim), and who waits for none. */
  private placing = 0;
  private onPlaced: (() => void) | undefined;
  /** Requests the native pipe is forwarding (PipedExchange), which shutdown waits for. */
  private piped = 0;
  /** The last ring looked at by `ringPipeable`, and its answer. */
  private pipeRing: Ring<Backend> | undefined;
  private pipeRingOk = false;

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
    this.ticks = ticksOf(config);
    this.acceptLimits = acceptLimitsOf(config);
    this.pipeMode = config.websocket.pipe;
    const options = forwardOptions(config);
    this.http = new HttpForwarder(pool, options, observer);
    this.ws = new WebSocketForwarder(pool, this.tracker, options, observer);
    // Clients are served on plain TCP with llhttp (ClientConnection). allowHalfOpen: a client's
    // FIN is handled there (an idle connection ends, one with a request in flight is dropped),
    // not answered by Node on its own. There is no total request time: long uploads and streams
    // are bounded by `timeouts.idle` on the backend side.
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket: Socket) => {
      this.connections.add(new ClientConnection(socket, this));
    });
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /** Runs every SWEEP_MS, so client timeouts cost no timer per request (they are ±1 s). */
  private sweep(): void {
    for (const connection of this.connections) connection.tick(this.ticks);
  }

  /** Applies room rules and timeouts from a reloaded config; open connections are kept. */
  configure(config: Config): void {
    this.roomKeyFrom = compileRoomKey(config.room.from);
    this.onMissing = config.room.onMissing;
    this.ticks = ticksOf(config);
    this.acceptLimits = acceptLimitsOf(config);
    if (this.accepting !== undefined) this.accepting.pipe.limits(this.accepting.id, this.acceptLimits);
    const options = forwardOptions(config);
    this.http.setOptions(options);
    this.ws.setOptions(options);
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    const own = this.listenOwnInPipe(port, host);
    if (own !== undefined) return own;
    const address = await new Promise<AddressInfo>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
    this.acceptInPipe();
    return address;
  }

  /** Whether the native pipe accepts the connections (else Node does). */
  get acceptsInPipe(): boolean {
    return this.accepting !== undefined;
  }

  /**
   * Lets the native pipe accept on the listening socket, then closes Node's server: the pipe's
   * copy of the descriptor keeps the socket listening. (A connection Node accepted meanwhile is
   * served as any other.)
   */
  private acceptInPipe(): void {
    const pipe = this.pipeMode === 'native' ? nativePipe() : undefined;
    if (pipe === undefined) return;
    const id = pipe.listen(this.server, this.acceptLimits, this.acceptListener);
    if (id === undefined) return;
    this.accepting = { pipe, id };
    this.server.close();
  }

  private readonly acceptListener: AcceptListener = {
    accepted: (accepted) => this.accepted(accepted),
    // The pipe's main loop stopped (its epoll failed): Node accepts on the socket again, its own
    // (exclusive: a cluster worker's too, rather than a socket of the primary's).
    back: (fd) => {
      this.accepting = undefined;
      if (!this.closing) this.server.listen({ fd, exclusive: true });
    },
  };

  /**
   * In a cluster worker, node:cluster would have the primary own the listening socket (and hand
   * each connection over): with the native pipe, the worker binds a socket of its own with
   * SO_REUSEPORT instead, the kernel spreads connections over the workers, and its pipe accepts
   * them. Undefined where that does not apply (not a worker, no pipe, port 0, a host name): Node
   * listens as usual.
   */
  private listenOwnInPipe(port: number, host: string): AddressInfo | undefined {
    if (!cluster.isWorker || port === 0 || this.pipeMode !== 'native') return undefined;
    const pipe = nativePipe();
    const id = pipe?.listenOwn(host, port, this.acceptLimits, this.acceptListener);
    if (pipe === undefined || id === undefined) return undefined;
    this.accepting = { pipe, id };
    const ip = bareIp(host);
    return { address: ip, family: net.isIPv6(ip) ? 'IPv6' : 'IPv4', port };
  }

  /** A connection the pipe accepted, with its next head (unless it came late). */
  private accepted(accepted: Accepted): void {
    try {
      const first = accepted.late ? undefined : firstHead(accepted.bytes);
      if (first?.head.upgrade === true && first.head.method !== 'CONNECT') {
        const req = new ClientRequest(first.head, accepted);
        this.upgrade(req, accepted, accepted.bytes.subarray(first.used));
        return;
      }
      if (first !== undefined && !this.closing && this.accepting !== undefined && this.ringPipeable) {
        const req = new ClientRequest(first.head, accepted);
        if (pipeable(req, first.head)) {
          this.routeInPipe(req, accepted, accepted.bytes.subarray(first.used));
          return;
        }
      }
      this.serveInNode(accepted);
    } catch (error) {
      // A descriptor nobody took is closed, not leaked.
      socketOf(accepted)?.destroy();
      throw error;
    }
  }

  /**
   * Whether the pipe can reach every backend of the current ring (plain TCP, by IP address), so
   * that a request it forwards can fail over without Node. Worked out once per ring.
   */
  private get ringPipeable(): boolean {
    const ring = this.pool.ring;
    if (ring !== this.pipeRing) {
      this.pipeRing = ring;
      this.pipeRingOk = ring.members.every(canForwardInPipe);
    }
    return this.pipeRingOk;
  }

  /** Serves an accepted connection on a Node socket, starting with the bytes the pipe read. */
  private serveInNode(accepted: Accepted): void {
    const socket = socketOf(accepted);
    if (socket === undefined) return;
    const connection = new ClientConnection(socket, this);
    this.connections.add(connection);
    connection.data(accepted.bytes);
    if (accepted.late) connection.timeOutHead();
  }

  /** Routes a bodiless request, then lets the pipe forward it (or serves it in Node when the pipe cannot). */
  private routeInPipe(req: ClientRequest, accepted: Accepted, rest: Buffer): void {
    const target = this.target(req);
    if (!(target instanceof Promise)) {
      if (!this.forwardInPipe(req, accepted, rest, target)) this.serveInNode(accepted);
      return;
    }
    // Shutdown waits for requests whose backend is still being chosen.
    this.placing++;
    target
      .then((t) => {
        if (!this.forwardInPipe(req, accepted, rest, t)) this.serveInNode(accepted);
      })
      .catch(() => socketOf(accepted)?.destroy())
      .finally(() => {
        if (--this.placing === 0) this.onPlaced?.();
      });
  }

  /**
   * Gives a routed request back to the pipe, to forward or to answer with the routing error; false
   * (nothing taken) when the pipe cannot reach the backend (TLS, a host name) or has stopped.
   */
  private forwardInPipe(req: ClientRequest, accepted: Accepted, rest: Buffer, target: Target): boolean {
    const pipe = this.accepting?.pipe;
    if (pipe === undefined || ('backend' in target && !canForwardInPipe(target.backend))) return false;
    const routed = 'error' in target ? undefined : target;
    const exchange = this.http.inPipe(
      pipe,
      accepted,
      req,
      rest,
      req.keepAlive && !this.closing,
      this.pipedDone,
      routed?.room ?? null,
      routed?.backend,
    );
    if (exchange === undefined) return false;
    this.piped++;
    if ('error' in target) {
      this.observer?.error(target.error);
      exchange.replyError(target.error);
    }
    return true;
  }

  private readonly pipedDone = (): void => {
    this.piped--;
    this.checkIdle();
  };

  /** On shutdown: resolves once no client connection or piped request is left. */
  private checkIdle(): void {
    if (this.connections.size === 0 && this.piped === 0) this.onIdle?.();
  }

  get shuttingDown(): boolean {
    return this.closing;
  }

  /**
   * Where a request goes: synchronously when the answer is known (a cached lease, or the ring),
   * else a promise that asks the lease store once for the room's first connection here.
   */
  target(req: RoomSource): Target | Promise<Target> {
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

  /** @internal ConnectionHandler: a request's turn has come. */
  request(exchange: ClientExchange): void {
    if (this.closing) {
      exchange.replyError('ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const target = this.target(exchange.request);
    if (target instanceof Promise)
      target.then((t) => this.sendRequest(exchange, t)).catch(() => exchange.abandon());
    else this.sendRequest(exchange, target);
  }

  private sendRequest(exchange: ClientExchange, target: Target): void {
    if (exchange.done) return;
    if ('error' in target) {
      this.observer?.error(target.error);
      exchange.replyError(target.error);
    } else this.http.forward(exchange, target.room, target.backend);
  }

  /**
   * @internal ConnectionHandler: an upgrade request owns its client from here (a socket, or a
   * descriptor the native pipe accepted).
   */
  upgrade(req: ClientRequest, client: Socket | Accepted, head: Buffer): void {
    if (!isAccepted(client)) client.on('error', destroyOnError);
    if (this.closing) {
      replyError(client, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    const target = this.target(req);
    if (target instanceof Promise) {
      // Shutdown waits for the upgrades whose backend is still being chosen.
      this.placing++;
      target
        .then((t) => this.sendUpgrade(req, client, head, t))
        .catch(() => drop(client))
        .finally(() => {
          if (--this.placing === 0) this.onPlaced?.();
        });
    } else this.sendUpgrade(req, client, head, target);
  }

  private sendUpgrade(req: ClientRequest, client: Socket | Accepted, head: Buffer, target: Target): void {
    if (this.closing) {
      replyError(client, 'ROOMRING_E_SHUTTING_DOWN');
      return;
    }
    if ('error' in target) {
      this.observer?.error(target.error);
      replyError(client, target.error);
    } else if (isAccepted(client) || !client.destroyed)
      this.ws.forward(req, client, head, target.room, target.backend);
  }

  /** @internal ConnectionHandler */
  closed(connection: ClientConnection): void {
    this.connections.delete(connection);
    this.checkIdle();
  }

  /** @internal ConnectionHandler: counted with the other error replies. */
  refused(code: ErrorCode): void {
    this.observer?.error(code);
  }

  /**
   * Stops accepting, lets in-flight HTTP requests finish, sends every tunnel a 1001 close frame
   * (to the client unmasked, to the backend masked), and resolves when all is closed or the
   * timeout has passed (then whatever is left is destroyed).
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.http.stopping = true;
    clearInterval(this.sweeper);
    const { accepting } = this;
    accepting?.pipe.unlisten(accepting.id);
    // Node's server closes once its connections have; those the pipe accepted are waited for here.
    const idle = (): Promise<void> =>
      new Promise<void>((resolve) => {
        this.onIdle = resolve;
        this.checkIdle();
      });
    const serverClosed =
      accepting === undefined ? new Promise<void>((resolve) => this.server.close(() => resolve())) : idle();
    // Tunnels in the native pipe are no longer the server's connections: they are waited for
    // apart, after the upgrades whose backend connection the pipe is still opening.
    const placed = new Promise<void>((resolve) => {
      this.onPlaced = resolve;
      if (this.placing === 0) resolve();
    });
    // A request whose backend was being chosen went to the pipe or to Node meanwhile: once
    // every placement is done, what the pipe accepted is waited for once more.
    const closed = serverClosed
      .then(() => placed)
      .then(() => (accepting === undefined ? undefined : idle()))
      .then(() => this.ws.settled())
      .then(() => this.tracker.empty());
    for (const connection of this.connections) connection.shutdown();
    for (const tunnel of this.tracker.all()) tunnel.closeWith(CLOSE_GOING_AWAY);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    await Promise.race([closed, timeout]);
    clearTimeout(timer);
    for (const connection of this.connections) connection.destroy();
    for (const tunnel of this.tracker.all()) tunnel.destroy();
    this.http.close();
  }
}

/**
 * Whether the pipe may forward a request: HTTP/1.1 without a body (so nothing but the head goes
 * to the backend) and without `Expect: 100-continue`. Others are served in Node.
 */
function pipeable(req: ClientRequest, head: ParsedHead): boolean {
  return (
    !head.upgrade &&
    head.versionMajor === 1 &&
    head.versionMinor === 1 &&
    req.method !== 'CONNECT' &&
    !req.hasBody &&
    !req.expectsContinue
  );
}

/** Answers an upgrade's client with an error (making a socket of a descriptor first). */
function replyError(client: Socket | Accepted, code: ErrorCode): void {
  if (!isAccepted(client)) {
    replyErrorOnSocket(client, code);
    return;
  }
  const socket = socketOf(client);
  if (socket === undefined) return;
  socket.on('error', destroyOnError);
  replyErrorOnSocket(socket, code);
}

/** Closes an upgrade's client without an answer. */
function drop(client: Socket | Accepted): void {
  if (isAccepted(client)) socketOf(client)?.destroy();
  else client.destroy();
}

function ticksOf(config: Config): TickLimits {
  const { keepAlive, headTimeout, sendTimeout } = config.listen;
  return {
    keepAlive: Math.ceil(keepAlive / SWEEP_MS),
    head: Math.ceil(headTimeout / SWEEP_MS),
    send: Math.ceil(sendTimeout / SWEEP_MS),
  };
}

function acceptLimitsOf(config: Config): AcceptLimits {
  return {
    headMs: config.listen.headTimeout,
    idleMs: config.listen.keepAlive,
    sendMs: config.listen.sendTimeout,
  };
}

function withBackend(backend: Backend | undefined, room: string | null): Target {
  return backend === undefined ? { error: 'ROOMRING_E_NO_BACKEND' } : { backend, room };
}

function forwardOptions(config: Config): ForwardOptions {
  return {
    timeouts: { ...config.timeouts },
    retries: config.failover.retries,
    pipe: config.websocket.pipe,
    threadAfter: config.websocket.threadAfter,
    halfClose: config.websocket.halfCloseTimeout,
  };
}
