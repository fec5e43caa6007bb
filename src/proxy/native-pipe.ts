// The native byte pipe (native/pipe.cc): forwards the bytes of plain-TCP WebSockets without Node
// streams, first in a loop on the main thread, then, once a tunnel has been open for
// `moveAfter()`, on a thread of its own. A tunnel enters it in one of two ways: `adopt()` takes both
// sockets of a tunnel whose backend has answered, `connect()` takes the client socket of an upgrade
// and opens the backend connection itself, so that side never has a Node socket. The pipe can also
// accept the listener's connections (`listen()`): each comes to JavaScript as a descriptor with its
// first request head, so an upgrade goes back to `connect()` without ever having a Node socket.
// A plain HTTP request on such a connection can go back too (`exchange()`, then `forward()` or
// `reply()`): the pipe sends the head JavaScript wrote to the backend on a pooled connection,
// rewrites the response head for the client and re-frames its body, then reads the connection's
// next head, so a keep-alive client never has a Node socket either.
// Built by `npm install` on Linux; where it was not built (another OS, no compiler) `nativePipe()`
// is undefined, tunnels stay on Node sockets and Node accepts.

import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import net, { type Socket } from 'node:net';
import os from 'node:os';
import { Duplex } from 'node:stream';

interface Binding {
  start(
    onEvents: (events: Float64Array, payloads: (string | number)[], bytes: Buffer | undefined) => void,
  ): void;
  moveAfter(ms: number): void;
  halfCloseAfter(ms: number): void;
  add(clientFd: number, upstreamFd: number, idleMs: number): number;
  connect(
    clientFd: number,
    ip: string,
    port: number,
    handshake: Buffer | string,
    connectMs: number,
    answerMs: number,
    idleMs: number,
    owned: boolean,
  ): number;
  listen(fd: number, headMs: number, idleMs: number, sendMs: number): number;
  unlisten(id: number): void;
  limits(id: number, headMs: number, idleMs: number, sendMs: number): void;
  closeWith(id: number, toClient: Buffer, toUpstream: Buffer, graceMs: number): void;
  destroy(id: number): void;
  exchange(
    fd: number,
    rest: Buffer,
    noBody: boolean,
    keepAlive: boolean,
    retriable: boolean,
    ...route: RouteArgs
  ): number;
  forward(id: number, ...route: RouteArgs): void;
  reply(id: number, response: string, keepAlive: boolean): void;
  release(fd: number): void;
  dropPool(): void;
  bindReusePort(ip: string, port: number): number;
}

/** An attempt as the bindings take it (ip '' for none); see `routeArgs`. */
type RouteArgs = [
  ip: string,
  port: number,
  head: string,
  connectMs: number,
  responseMs: number,
  idleMs: number,
  poolMs: number,
];

/** The bindings' arguments for an attempt, or for none. */
function routeArgs(route: PipeRoute | undefined): RouteArgs {
  if (route === undefined) return ['', 0, '', 0, 0, 0, 0];
  const { limits } = route;
  return [
    bareIp(route.ip),
    route.port,
    route.head,
    limits.connectMs,
    limits.responseMs,
    limits.idleMs,
    limits.poolMs,
  ];
}

// Event kinds, as pipe.cc numbers them; each event is four numbers: id, kind, a, b.
const CLOSED = 0;
const CONNECTED = 1;
const ANSWERED = 2;
const CONNECT_FAILED = 3;
const ANSWER_TIMED_OUT = 4;
const INCOMING = 5;
const INCOMING_LATE = 6;
const LISTENER_BACK = 7;
const EXCHANGE_DONE = 8;
const EXCHANGE_FAILED = 9;

/** Failure codes of an exchange's attempt besides errno values, as pipe.cc numbers them. */
const EXCHANGE_CODES = new Map([
  [-1, 'ROOMRING_CONNECT_TIMEOUT'],
  [-2, 'ROOMRING_RESPONSE_TIMEOUT'],
  [-3, 'ROOMRING_BAD_RESPONSE'],
]);

/** The code of a connect that did not finish within its time, as the JavaScript path names it. */
export const PIPE_CONNECT_TIMEOUT = 'ROOMRING_CONNECT_TIMEOUT';

/** What a tunnel started by `connect()` hears from the pipe, in this order. */
export interface ConnectListener {
  /** The backend connection is open; the handshake is on its way and the client is read. */
  connected(): void;
  /** The backend's first bytes came; `status` is their status line's (0 if they have none). */
  answered(status: number): void;
  /**
   * The connection failed (`code`: an errno name such as ECONNREFUSED, or PIPE_CONNECT_TIMEOUT)
   * before anything was sent: `client` is the client's socket again, unread since the upgrade.
   */
  failed(code: string, client: Socket): void;
  /** The backend sent nothing within `answerMs`: its connection is closed, `client` is back. */
  unanswered(client: Socket): void;
  /** The pipe closed both sockets. */
  closed(): void;
}

/** What an HTTP exchange in the pipe (`exchange()`) hears from it. */
export interface ExchangeListener {
  /**
   * An attempt failed before the response began (`code`: an errno name, or the JavaScript path's
   * ROOMRING_CONNECT_TIMEOUT, ROOMRING_RESPONSE_TIMEOUT, ROOMRING_BAD_RESPONSE); `connected`: the
   * connection was open; `stale`: a pooled one that failed before it sent anything. The exchange
   * waits for `forward()` (failover) or `reply()`.
   */
  attemptFailed(code: string, connected: boolean, stale: boolean): void;
  /** The exchange is over: answered (`status`), or abandoned, or its client gone (`status` 0 if no answer came). */
  finished(status: number): void;
}

/** What an HTTP exchange's request is, for the pipe. */
export interface ExchangeRequest {
  /** A HEAD request: the response has no body. */
  noBody: boolean;
  /** The client's connection stays open after the response. */
  keepAlive: boolean;
  /** Idempotent and bodiless: sent once more after a pooled connection turned out stale. */
  retriable: boolean;
}

/** Limits of an exchange's attempt, in ms; 0 for none. */
export interface ForwardLimits {
  connectMs: number;
  /** Silence awaiting the response head. */
  responseMs: number;
  /** Silence once the response has begun. */
  idleMs: number;
  /** How long an idle backend connection stays pooled (0: none is kept). */
  poolMs: number;
}

/** An attempt of an exchange: the backend (an IP literal), the whole request head, the limits. */
export interface PipeRoute {
  ip: string;
  port: number;
  head: string;
  limits: ForwardLimits;
}

/** Limits of a tunnel started by `connect()`, in ms; 0 for none. */
export interface ConnectLimits {
  connectMs: number;
  answerMs: number;
  idleMs: number;
}

/** Limits of the connections a listener accepts, in ms; 0 for none. */
export interface AcceptLimits {
  /** From a connection's first byte to the end of its head; past it, the connection comes `late`. */
  headMs: number;
  /** Silence before the first byte; past it, the connection is closed. */
  idleMs: number;
  /** A client that takes none of a response waiting for it this long is dropped. */
  sendMs: number;
}

/** A connection the pipe accepted, with what it read: at least a whole head, unless `late`. */
export interface Accepted {
  /**
   * The connection's descriptor, now JavaScript's: `connect()` it or make a socket of it with
   * `socketOf()`; either sets it to -1, so that it has one owner only.
   */
  fd: number;
  bytes: Buffer;
  remoteAddress: string;
  remotePort: number;
  /** Its head did not end within `headMs`. */
  late: boolean;
}

/** What a listener hears from the pipe. */
export interface AcceptListener {
  accepted(accepted: Accepted): void;
  /** The pipe's main loop stopped: `fd` is the listening socket, still listening, to accept on again. */
  back(fd: number): void;
}

/** Whether a client is a descriptor the pipe accepted rather than a stream. */
export function isAccepted(client: Duplex | Accepted): client is Accepted {
  return !(client instanceof Duplex);
}

/** The pipe as tunnels use it. */
export interface NativePipe {
  /**
   * Takes over both sockets: the pipe forwards between copies of their descriptors, and the Node
   * sockets are destroyed. `onClosed` runs once, when the pipe has closed both. Undefined when a
   * socket has no descriptor (TLS, or already closed): the caller keeps forwarding itself.
   */
  adopt(client: Socket, upstream: Socket, idleMs: number, onClosed: () => void): number | undefined;
  /**
   * Takes over the client socket of an upgrade and connects to `ip`:`port` (an IP literal), sends
   * `handshake` (a string goes as latin1), then forwards. The Node socket is destroyed. Undefined
   * when the pipe cannot take it (no descriptor, bytes buffered in Node either way, a host that is
   * not an IP literal).
   */
  connect(
    client: Socket | Accepted,
    ip: string,
    port: number,
    handshake: Buffer | string,
    limits: ConnectLimits,
    listener: ConnectListener,
  ): number | undefined;
  /**
   * Accepts the connections of `server`'s listening socket (on a copy of it), each reported to
   * the listener: the caller then closes `server`, so Node stops accepting. Undefined when the
   * server has no descriptor of its own (a cluster worker's).
   */
  listen(server: net.Server, limits: AcceptLimits, listener: AcceptListener): number | undefined;
  /**
   * Accepts on a listening socket of its own on `ip`:`port` (an IP literal), bound with
   * SO_REUSEPORT, so that each cluster worker has one and the kernel spreads connections over
   * them. Undefined when the pipe cannot (not an IP literal, its main loop stopped); an error
   * (EADDRINUSE...) is thrown when the address cannot be bound.
   */
  listenOwn(ip: string, port: number, limits: AcceptLimits, listener: AcceptListener): number | undefined;
  /**
   * Stops accepting; connections whose head is still awaited are closed, and those reported
   * before still reach the listener.
   */
  unlisten(id: number): void;
  /** New limits for a listener. */
  limits(id: number, limits: AcceptLimits): void;
  /** Sends each side its last bytes, ends both, and closes when the client has ended or after `graceMs`. */
  closeWith(id: number, toClient: Buffer, toUpstream: Buffer, graceMs: number): void;
  /** Closes both sockets now. */
  destroy(id: number): void;
  /** How long a tunnel is forwarded on the main thread before it moves to the pipe thread. */
  moveAfter(ms: number): void;
  /** How long a tunnel stays open once one side ended and the other has not (0: no limit). */
  halfCloseAfter(ms: number): void;
  /**
   * Gives an accepted connection back to the pipe for one HTTP request, whose head JavaScript has
   * read (`rest`: the bytes after it), and sends it on `route` when given; else `forward()` or
   * `reply()` follows. Undefined when the pipe cannot take it (its main loop stopped): the
   * caller still owns the descriptor.
   */
  exchange(
    client: Accepted,
    rest: Buffer,
    request: ExchangeRequest,
    listener: ExchangeListener,
    route?: PipeRoute,
  ): number | undefined;
  /** Sends an exchange's request again, on the route given (a failover). */
  forward(id: number, route: PipeRoute): void;
  /** Answers an exchange's client with a whole response of JavaScript's own. */
  reply(id: number, response: string, keepAlive: boolean): void;
  /** Closes the idle pooled backend connections of the exchanges. */
  dropPool(): void;
}

const BUILD = '../../build/Release/roomring_pipe.node';

/** The loaded binding's release(), for socketOf(). */
let releaseFd: ((fd: number) => void) | undefined;

let loaded: NativePipe | null | undefined;
let missing: string | undefined;

/** The native pipe, or undefined where it is not built. */
export function nativePipe(): NativePipe | undefined {
  if (loaded === undefined) loaded = load();
  return loaded ?? undefined;
}

/** Why `nativePipe()` is undefined, for the start log; undefined when the pipe is there. */
export function nativePipeMissing(): string | undefined {
  nativePipe();
  return missing;
}

type Listener = Partial<ConnectListener> & Partial<AcceptListener> & Partial<ExchangeListener>;

function load(): NativePipe | null {
  if (process.platform !== 'linux') {
    missing = `the native pipe is built on Linux only, not on ${process.platform}`;
    return null;
  }
  let binding: Binding;
  try {
    binding = createRequire(import.meta.url)(BUILD) as Binding;
  } catch (error) {
    const detail = error instanceof Error ? error.message.split('\n')[0] : String(error);
    missing = `the native addon did not load (${detail}); \`npm run install\` builds it`;
    return null;
  }
  if (
    typeof binding.start !== 'function' ||
    typeof binding.connect !== 'function' ||
    typeof binding.moveAfter !== 'function' ||
    typeof binding.halfCloseAfter !== 'function' ||
    typeof binding.exchange !== 'function' ||
    typeof binding.bindReusePort !== 'function'
  ) {
    missing = 'the native addon is from another version: rebuild it with `npm run install`';
    return null;
  }
  releaseFd = (fd) => binding.release(fd);
  const listeners = new Map<number, Listener>();
  // Open tunnels keep the process alive, as their sockets did: shutdown waits for them.
  let alive: NodeJS.Timeout | undefined;
  const track = (id: number, listener: Listener): void => {
    listeners.set(id, listener);
    alive ??= setInterval(() => {}, 1 << 30);
  };
  binding.start((events, payloads, all) => {
    let failure: unknown;
    let p = 0;
    let offset = 0;
    for (let i = 0; i + 3 < events.length; i += 4) {
      const id = events[i] as number;
      const kind = events[i + 1] as number;
      const a = events[i + 2] as number;
      const b = events[i + 3] as number;
      const listener = listeners.get(id);
      if (
        kind === CLOSED ||
        kind === CONNECT_FAILED ||
        kind === ANSWER_TIMED_OUT ||
        kind === LISTENER_BACK ||
        kind === EXCHANGE_DONE
      )
        listeners.delete(id);
      try {
        if (kind === INCOMING || kind === INCOMING_LATE) {
          const remoteAddress = payloads[p++] as string;
          const length = payloads[p++] as number;
          const bytes = all === undefined ? Buffer.alloc(0) : all.subarray(offset, offset + length);
          offset += length;
          if (listener?.accepted === undefined) {
            binding.release(b);
            closeFd(b);
          } else
            listener.accepted({ fd: b, bytes, remoteAddress, remotePort: a, late: kind === INCOMING_LATE });
        } else if (kind === LISTENER_BACK) {
          if (listener?.back === undefined) closeFd(b);
          else listener.back(b);
        } else if (kind === EXCHANGE_DONE) listener?.finished?.(a);
        else if (kind === EXCHANGE_FAILED)
          listener?.attemptFailed?.(EXCHANGE_CODES.get(a) ?? errnoName(a), (b & 1) !== 0, (b & 2) !== 0);
        else if (kind === CLOSED) listener?.closed?.();
        else if (kind === CONNECTED) listener?.connected?.();
        else if (kind === ANSWERED) listener?.answered?.(a);
        else if (kind === CONNECT_FAILED || kind === ANSWER_TIMED_OUT) {
          const client = socketOf(b);
          if (client === undefined) listener?.closed?.();
          else if (listener === undefined) client.destroy();
          else if (kind === CONNECT_FAILED)
            listener.failed?.(a === 0 ? PIPE_CONNECT_TIMEOUT : errnoName(a), client);
          else listener.unanswered?.(client);
        }
      } catch (error) {
        failure ??= error;
      }
    }
    if (listeners.size === 0 && alive !== undefined) {
      clearInterval(alive);
      alive = undefined;
    }
    // Thrown outside the native callback, where Node reports it as any uncaught exception.
    if (failure !== undefined) {
      process.nextTick(() => {
        throw failure;
      });
    }
  });
  return {
    adopt(client, upstream, idleMs, onClosed) {
      const clientFd = descriptorOf(client);
      const upstreamFd = descriptorOf(upstream);
      if (clientFd === undefined || upstreamFd === undefined) return undefined;
      let id: number;
      try {
        id = binding.add(clientFd, upstreamFd, idleMs);
      } catch {
        // Out of descriptors, or the pipe's main loop stopped: the sockets stay with Node.
        return undefined;
      }
      track(id, { closed: onClosed });
      client.destroy();
      upstream.destroy();
      return id;
    },
    connect(client, ip, port, handshake, limits, listener) {
      const owned = !(client instanceof net.Socket);
      const fd = owned ? (client.fd >= 0 ? client.fd : undefined) : descriptorOf(client);
      // Bytes Node has read would not reach the backend, nor those it has still to write the client.
      if (fd === undefined || (!owned && (client.readableLength > 0 || client.writableLength > 0)))
        return undefined;
      let id: number;
      try {
        // Throws for a host that is not an IP literal, before it takes anything.
        id = binding.connect(
          fd,
          bareIp(ip),
          port,
          handshake,
          limits.connectMs,
          limits.answerMs,
          limits.idleMs,
          owned,
        );
      } catch {
        return undefined;
      }
      track(id, listener);
      if (owned) client.fd = -1;
      else client.destroy();
      return id;
    },
    listen(server, limits, listener) {
      // `_handle` is the libuv TCP handle of a listening net.Server; a cluster worker's has no fd.
      const fd = (server as net.Server & { _handle?: { fd?: number } | null })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) return undefined;
      let id: number;
      try {
        id = binding.listen(fd, limits.headMs, limits.idleMs, limits.sendMs);
      } catch {
        return undefined;
      }
      track(id, listener);
      return id;
    },
    listenOwn(ip, port, limits, listener) {
      const address = bareIp(ip);
      if (net.isIP(address) === 0) return undefined;
      const fd = binding.bindReusePort(address, port);
      let id: number;
      try {
        id = binding.listen(fd, limits.headMs, limits.idleMs, limits.sendMs);
      } catch {
        return undefined;
      } finally {
        // The pipe listens on its own copy.
        closeFd(fd);
      }
      track(id, listener);
      return id;
    },
    // The listener is forgotten when the pipe reports it closed, after what it reported before.
    unlisten: (id) => binding.unlisten(id),
    limits: (id, limits) => binding.limits(id, limits.headMs, limits.idleMs, limits.sendMs),
    closeWith: (id, toClient, toUpstream, graceMs) => binding.closeWith(id, toClient, toUpstream, graceMs),
    destroy: (id) => binding.destroy(id),
    moveAfter: (ms) => binding.moveAfter(ms),
    halfCloseAfter: (ms) => binding.halfCloseAfter(ms),
    exchange(client, rest, request, listener, route) {
      if (client.fd < 0) return undefined;
      let id: number;
      try {
        id = binding.exchange(
          client.fd,
          rest,
          request.noBody,
          request.keepAlive,
          request.retriable,
          ...routeArgs(route),
        );
      } catch {
        return undefined;
      }
      client.fd = -1;
      track(id, listener);
      return id;
    },
    forward: (id, route) => binding.forward(id, ...routeArgs(route)),
    reply: (id, response, keepAlive) => binding.reply(id, response, keepAlive),
    dropPool: () => binding.dropPool(),
  };
}

/** An IP literal without the brackets of an IPv6 URL host. */
export function bareIp(ip: string): string {
  return ip.startsWith('[') ? ip.slice(1, -1) : ip;
}

/** The socket's file descriptor, for a plain TCP socket that is open. */
function descriptorOf(socket: Socket): number | undefined {
  // `_handle` is the libuv TCP handle behind a net.Socket. A TLS socket's bytes are not the
  // WebSocket's bytes, so it never goes to the pipe.
  if ((socket as Socket & { encrypted?: boolean }).encrypted === true) return undefined;
  const handle = (socket as Socket & { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 && !socket.destroyed ? fd : undefined;
}

/**
 * A Node socket for a descriptor the pipe handed over (an accepted connection's, which is then
 * the socket's); undefined (and closed) if none can be made, or if the descriptor has an owner.
 */
export function socketOf(from: number | Accepted): Socket | undefined {
  const fd = typeof from === 'number' ? from : from.fd;
  if (typeof from !== 'number') from.fd = -1;
  if (fd < 0) return undefined;
  // An accepted connection is still registered with the pipe, parked: it lets go of it first.
  if (typeof from !== 'number') releaseFd?.(fd);
  try {
    return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  } catch {
    closeFd(fd);
    return undefined;
  }
}

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed.
  }
}

// Where two names share a number (EAGAIN, EWOULDBLOCK), the first is the one libuv reports.
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(os.constants.errno))
  if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);

function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}
