// Forwards one HTTP request to a backend over pooled keep-alive connections, streaming both bodies.
// The backend side is hand-written on node:net (one write for the request head, ResponseReader for
// the response): Node's http client and agent cost more CPU per request than the rest of the proxy.
// The request body is sent only once the backend connection is open, so a refused connection can
// be retried on the ring successor without losing a byte.
//
// A bodiless HTTP/1.1 request on a connection the native pipe accepted is forwarded by the pipe
// itself (PipedExchange): JavaScript routes it and writes its head, the pipe does the I/O, and
// failures come back here for the same failover and error answers.

import { isIP } from 'node:net';
import type { ErrorCode } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import type { AbortListener, ClientExchange, ClientRequest } from './client-exchange.js';
import { CONNECT_ERRORS, nextBackend } from './failover.js';
import { requestHeadersFor, responseHeadersFor } from './headers.js';
import {
  type Accepted,
  bareIp,
  type ExchangeListener,
  type ForwardLimits,
  type NativePipe,
  type PipeRoute,
} from './native-pipe.js';
import type { ProxyObserver } from './observer.js';
import { errorResponse } from './reply.js';
import {
  type ResponseFormatError,
  type ResponseHead,
  ResponseReader,
  type ResponseSink,
} from './response-reader.js';
import { type UpstreamConnection, type UpstreamOwner, UpstreamPool } from './upstream-pool.js';

export interface ForwardTimeouts {
  connect: number;
  response: number;
  idle: number;
  keepAlive: number;
}

export interface ForwardOptions {
  timeouts: ForwardTimeouts;
  retries: number;
  /** What forwards an upgraded WebSocket's bytes (see native-pipe.ts). */
  pipe: 'native' | 'js';
  /** With the native pipe: how long a tunnel stays on the main thread (ms). */
  threadAfter: number;
  /** How long a WebSocket stays open once one side ended and the other has not (ms; 0: no limit). */
  halfClose: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Idempotent and without a body: safe to send again after the backend dropped it. */
function isRetriable(req: ClientRequest): boolean {
  return IDEMPOTENT.has(req.method) && !req.hasBody;
}

/** The head of a request as a backend gets it (without a body's framing field). */
function backendHead(req: ClientRequest, headers: readonly string[]): string {
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return head;
}

/** What follows a failed attempt: the same backend once more, another backend, or an error answer. */
type AfterFailure = { resend: true } | { backend: Backend } | { error: ErrorCode };

/** One client request on its way through one or more attempts. */
interface Exchange {
  readonly client: ClientExchange;
  readonly room: string | null;
  readonly headers: string[];
  /** Backends this request was sent to, so a failover never returns to one. */
  readonly tried: Set<string>;
  /** Whether the one resend after a stale pooled connection was used. */
  resent: boolean;
}

export class HttpForwarder {
  private readonly upstream: UpstreamPool;
  /** The native pipe, once it has forwarded a request (its pooled connections close with this). */
  private pipe: NativePipe | undefined;
  /** `pipeLimits`, made once per options. */
  private limits: ForwardLimits | undefined;
  /** Set when the proxy stops: an answer not yet begun closes its connection. */
  stopping = false;

  constructor(
    private readonly pool: Pool,
    private options: ForwardOptions,
    private readonly observer?: ProxyObserver,
  ) {
    this.upstream = new UpstreamPool(options.timeouts.keepAlive);
  }

  /** New options apply to new requests; pooled connections are kept. */
  setOptions(options: ForwardOptions): void {
    this.options = options;
    this.limits = undefined;
    this.upstream.setKeepAlive(options.timeouts.keepAlive);
  }

  forward(client: ClientExchange, room: string | null, backend: Backend): void {
    const headers = requestHeadersFor(client.request, false);
    this.attempt({ client, room, headers, tried: new Set(), resent: false }, backend);
  }

  /** @internal Starts one attempt of an exchange on `backend`. */
  attempt(exchange: Exchange, backend: Backend): void {
    exchange.tried.add(backend.id);
    new Attempt(this, exchange, backend, this.options.timeouts).start();
  }

  /** @internal */
  get upstreamPool(): UpstreamPool {
    return this.upstream;
  }

  /** @internal The backend answered: it is healthy, and metrics count the status. */
  answered(backend: Backend, status: number): void {
    this.pool.reportSuccess(backend);
    this.observer?.response(backend.id, status);
  }

  /** Resends, fails over to the next backend, or answers the client with a coded error. */
  onAttemptFailed(
    exchange: Exchange,
    backend: Backend,
    code: string,
    connected: boolean,
    reusedSocket: boolean,
  ): void {
    const retriable = isRetriable(exchange.client.request);
    const after = this.afterFailure({ ...exchange, retriable }, backend, code, connected, reusedSocket);
    if ('resend' in after) {
      exchange.resent = true;
      this.attempt(exchange, backend);
    } else if ('backend' in after) this.attempt(exchange, after.backend);
    else exchange.client.replyError(after.error);
  }

  /** @internal What follows a failed attempt (an error answer is counted here). */
  afterFailure(
    exchange: Pick<Exchange, 'room' | 'tried' | 'resent'> & { retriable: boolean },
    backend: Backend,
    code: string,
    connected: boolean,
    reusedSocket: boolean,
  ): AfterFailure {
    const { retriable } = exchange;
    // A pooled socket the backend closed as we reused it: nothing was processed, try once more.
    if (reusedSocket && code === 'ECONNRESET' && retriable && !exchange.resent) return { resend: true };
    // A backend dying as we connect may accept and then reset: for an idempotent request without a
    // body nothing is lost by sending it on (RFC 9110 section 9.2.2), so it fails over like a refusal.
    const resetBeforeAnswer = code === 'ECONNRESET' && !reusedSocket && retriable;
    if ((!connected && CONNECT_ERRORS.has(code)) || resetBeforeAnswer) {
      this.pool.reportFailure(backend);
      const next =
        exchange.tried.size <= this.options.retries
          ? nextBackend(this.pool, exchange.room, exchange.tried)
          : undefined;
      if (next !== undefined) return { backend: next };
    }
    const error = errorCodeOf(code);
    this.observer?.error(error);
    return { error };
  }

  /**
   * Hands a request on a connection the native pipe accepted back to the pipe, which forwards it
   * (`send()`) or answers it (`replyError()`). Undefined when the pipe cannot take it: the
   * connection is still the caller's.
   */
  inPipe(
    pipe: NativePipe,
    accepted: Accepted,
    request: ClientRequest,
    rest: Buffer,
    keepAlive: boolean,
    onDone: () => void,
    room: string | null,
    backend: Backend | undefined,
  ): PipedExchange | undefined {
    const exchange = new PipedExchange(this, pipe, request, keepAlive, onDone, room);
    const id = pipe.exchange(
      accepted,
      rest,
      { noBody: exchange.noBody, keepAlive, retriable: exchange.retriable },
      exchange,
      backend === undefined ? undefined : exchange.route(backend),
    );
    if (id === undefined) return undefined;
    this.pipe = pipe;
    exchange.id = id;
    return exchange;
  }

  /** @internal An exchange in the pipe that cannot go on: answered 502, and counted. */
  unreachable(exchange: PipedExchange): void {
    this.observer?.error('ROOMRING_E_BACKEND_UNREACHABLE');
    exchange.replyError('ROOMRING_E_BACKEND_UNREACHABLE');
  }

  /** @internal The limits of an attempt in the pipe, from the options. */
  get pipeLimits(): ForwardLimits {
    if (this.limits === undefined) {
      const { connect, response, idle, keepAlive } = this.options.timeouts;
      this.limits = { connectMs: connect, responseMs: response, idleMs: idle, poolMs: keepAlive };
    }
    return this.limits;
  }

  close(): void {
    this.upstream.close();
    this.pipe?.dropPool();
  }
}

/**
 * A request the native pipe forwards: JavaScript picks the backend and writes the head, the pipe
 * does the rest. A failed attempt comes back for the same failover and error answers as Attempt's
 * (the pipe has already sent a request again once after a stale pooled connection).
 */
export class PipedExchange implements ExchangeListener {
  id = 0;
  readonly resent = true;
  /** The backends tried: the first alone, and a set only once there is a failover. */
  private firstTried: string | undefined;
  private moreTried: Set<string> | undefined;
  private backend: Backend | undefined;
  /** The head every attempt sends; the request itself is not kept. */
  private readonly head: string;
  readonly retriable: boolean;
  /** A HEAD request: its answers have no body. */
  readonly noBody: boolean;

  constructor(
    private readonly forwarder: HttpForwarder,
    private readonly pipe: NativePipe,
    request: ClientRequest,
    private readonly keepAlive: boolean,
    private readonly onDone: () => void,
    readonly room: string | null,
  ) {
    this.head = `${backendHead(request, requestHeadersFor(request, false))}Connection: keep-alive\r\n\r\n`;
    this.retriable = isRetriable(request);
    this.noBody = request.method === 'HEAD';
  }

  get tried(): Set<string> {
    if (this.moreTried === undefined) {
      this.moreTried = new Set();
      if (this.firstTried !== undefined) this.moreTried.add(this.firstTried);
    }
    return this.moreTried;
  }

  /**
   * Where and what an attempt on `backend` sends (a plain-TCP backend given by IP address: see
   * `canForwardInPipe`); the backend counts as tried.
   */
  route(backend: Backend): PipeRoute {
    this.backend = backend;
    if (this.firstTried === undefined && this.moreTried === undefined) this.firstTried = backend.id;
    else this.tried.add(backend.id);
    return { ip: backend.host, port: backend.port, head: this.head, limits: this.forwarder.pipeLimits };
  }

  private attempt(backend: Backend): void {
    const route = this.route(backend);
    try {
      this.pipe.forward(this.id, route);
    } catch {
      // Not an address the pipe takes: the exchange is answered rather than left waiting.
      this.forwarder.unreachable(this);
    }
  }

  /** Answers with a coded JSON error (counted by the caller). */
  replyError(code: ErrorCode): void {
    // Once the proxy stops, the pipe closes the connection after this answer: the answer says so.
    const keepAlive = this.keepAlive && !this.forwarder.stopping;
    this.pipe.reply(this.id, errorResponse(code, keepAlive ? undefined : 'close', this.noBody), keepAlive);
  }

  /** @internal ExchangeListener */
  attemptFailed(code: string, connected: boolean, stale: boolean): void {
    const backend = this.backend as Backend;
    let after: ReturnType<HttpForwarder['afterFailure']>;
    try {
      after = this.forwarder.afterFailure(this, backend, code, connected, stale);
    } catch (error) {
      // The exchange waits for an answer: it gets one before the error goes on.
      this.forwarder.unreachable(this);
      throw error;
    }
    if ('error' in after) this.replyError(after.error);
    else if ('backend' in after) {
      // A backend the pipe cannot reach (it came into the ring meanwhile) gets no attempt here.
      if (canForwardInPipe(after.backend)) this.attempt(after.backend);
      else this.forwarder.unreachable(this);
    }
  }

  /** @internal ExchangeListener */
  finished(status: number): void {
    if (status > 0 && this.backend !== undefined) this.forwarder.answered(this.backend, status);
    this.onDone();
  }
}

/** Whether the native pipe can forward to `backend`: plain TCP to an IP address. */
export function canForwardInPipe(backend: Backend): boolean {
  return !backend.tls && isIP(bareIp(backend.host)) !== 0;
}

/**
 * One try of an exchange on one backend connection: writes the request head (one write) and body,
 * reads the response with ResponseReader, streams it to the client with back-pressure, and
 * returns the connection to the pool when both messages are complete. The request body starts
 * only once the connection is open, so a refused connection loses nothing.
 */
class Attempt implements ResponseSink, UpstreamOwner, AbortListener {
  private connection: UpstreamConnection | undefined;
  private reused = false;
  private connected = false;
  private responded = false;
  private settled = false;
  private requestSent = false;
  private bytesRead = false;
  private keepAlive = false;
  /** The client socket is backed up and a 'drain' listener waits (one at a time). */
  private awaitingDrain = false;
  private connectTimer: NodeJS.Timeout | undefined;
  private readonly reader: ResponseReader;
  /** The client socket's 'drain' listener, made only when the response backs up. */
  private drainListener: (() => void) | undefined;

  constructor(
    private readonly forwarder: HttpForwarder,
    private readonly exchange: Exchange,
    private readonly backend: Backend,
    private readonly timeouts: ForwardTimeouts,
  ) {
    this.reader = new ResponseReader(this, exchange.client.request.method === 'HEAD');
  }

  start(): void {
    const pool = this.forwarder.upstreamPool;
    const pooled = pool.take(this.backend);
    const connection = pooled ?? pool.open(this.backend);
    this.connection = connection;
    this.reused = pooled !== undefined;
    connection.owner = this;
    this.exchange.client.onAbort = this;
    if (this.reused) {
      this.onConnected();
      return;
    }
    connection.onConnect = () => this.onConnected();
    if (this.timeouts.connect > 0) {
      this.connectTimer = setTimeout(() => this.fail('ROOMRING_CONNECT_TIMEOUT'), this.timeouts.connect);
    }
  }

  private onConnected(): void {
    clearTimeout(this.connectTimer);
    const connection = this.connection as UpstreamConnection;
    const { client } = this.exchange;
    const req = client.request;
    this.connected = true;
    connection.setTimeout(this.timeouts.response);
    const chunked = req.chunked;
    let head = backendHead(req, this.exchange.headers);
    if (chunked) head += 'Transfer-Encoding: chunked\r\n';
    connection.socket.write(`${head}Connection: keep-alive\r\n\r\n`, 'latin1');
    if (!req.hasBody) {
      this.requestSent = true;
      return;
    }
    // Closures only for a request with a body.
    client.readBody(chunked ? (chunk) => this.sendChunk(chunk) : (chunk) => this.sendBytes(chunk), () =>
      this.bodyEnded(),
    );
  }

  private sendBytes(chunk: Buffer): void {
    const connection = this.connection as UpstreamConnection;
    // A body still going out keeps the exchange alive: the backend answers once it has it.
    connection.touch();
    if (!connection.socket.write(chunk)) this.exchange.client.pauseBody();
  }

  private sendChunk(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const connection = this.connection as UpstreamConnection;
    connection.touch();
    const socket = connection.socket;
    // Corked, the size line, the data and the CRLF leave in one writev.
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const more = socket.write('\r\n', 'latin1');
    socket.uncork();
    if (!more) this.exchange.client.pauseBody();
  }

  upstreamDrain(): void {
    this.exchange.client.resumeBody();
  }

  private bodyEnded(): void {
    if (this.exchange.client.request.chunked) this.connection?.socket.write('0\r\n\r\n', 'latin1');
    this.requestSent = true;
    if (this.reader.done) this.release();
  }

  upstreamData(chunk: Buffer): void {
    this.bytesRead = true;
    // Corked, the response head and the body bytes of this chunk leave in one writev.
    const out = this.exchange.client.socket;
    out.cork();
    try {
      this.reader.push(chunk);
    } catch (error) {
      this.fail((error as ResponseFormatError).code);
    } finally {
      out.uncork();
    }
    // What the client socket could not take at once still points into the read buffer.
    if (out.writableLength > 0) this.connection?.retain();
  }

  head(head: ResponseHead): void {
    this.responded = true;
    this.keepAlive = head.keepAlive;
    this.forwarder.answered(this.backend, head.status);
    // From here only silence counts, so a long stream that keeps moving is never cut.
    this.connection?.setTimeout(this.timeouts.idle);
    this.exchange.client.writeHead(
      head.status,
      head.statusText,
      responseHeadersFor(head.rawHeaders),
      head.framing,
    );
  }

  body(chunk: Buffer): void {
    const { client } = this.exchange;
    if (!client.write(chunk) && !this.awaitingDrain) {
      this.awaitingDrain = true;
      this.connection?.socket.pause();
      this.drainListener ??= () => this.resumeResponse();
      client.socket.once('drain', this.drainListener);
    }
  }

  private resumeResponse(): void {
    this.awaitingDrain = false;
    this.connection?.socket.resume();
  }

  end(): void {
    // The connection goes back to the pool first: a pipelined request next in line may take it.
    // A backend that answered before the whole request body was sent has a half-sent request on
    // its connection: that one is closed instead, and so is the client's (ClientExchange).
    if (this.requestSent) this.release();
    else this.drop();
    this.exchange.client.end();
  }

  /** Settles without returning the connection to the pool. */
  private drop(): void {
    if (this.settled) return;
    this.settled = true;
    this.detach();
    this.connection?.destroy();
  }

  /** Both messages are complete: the connection goes back to the pool, or is closed. */
  private release(): void {
    if (this.settled) return;
    this.settled = true;
    const connection = this.connection as UpstreamConnection;
    this.detach();
    if (this.keepAlive && this.requestSent) this.forwarder.upstreamPool.give(this.backend, connection);
    else connection.destroy();
  }

  private detach(): void {
    clearTimeout(this.connectTimer);
    const { client } = this.exchange;
    if (client.onAbort === this) client.onAbort = undefined;
    if (this.drainListener !== undefined) client.socket.off('drain', this.drainListener);
    client.stopBody();
    const connection = this.connection;
    if (connection === undefined) return;
    if (connection.owner === this) connection.owner = undefined;
    connection.onConnect = undefined;
    connection.setTimeout(0);
    connection.socket.resume();
  }

  upstreamError(code: string): void {
    this.fail(code);
  }

  upstreamClose(): void {
    if (this.settled) return;
    // A body that runs until the connection closes ends here; anything else was cut short.
    if (this.reader.close()) return;
    this.fail('ECONNRESET');
  }

  upstreamTimeout(): void {
    this.fail(this.connected ? 'ROOMRING_RESPONSE_TIMEOUT' : 'ROOMRING_CONNECT_TIMEOUT');
  }

  /** The client went away: the backend exchange is dropped too, so no pooled socket is left half-used. */
  clientAborted(): void {
    this.drop();
  }

  /** One verdict per attempt: a later error must not touch a resend or failover under way. */
  private fail(code: string): void {
    if (this.settled) return;
    this.settled = true;
    this.detach();
    this.connection?.destroy();
    const { client } = this.exchange;
    if (this.responded || client.done) {
      client.abandon();
      return;
    }
    // A pooled connection that failed before answering anything: treated as a stale keep-alive.
    const stale = this.reused && !this.bytesRead;
    this.forwarder.onAttemptFailed(
      this.exchange,
      this.backend,
      stale && code === 'EPIPE' ? 'ECONNRESET' : code,
      this.connected,
      stale,
    );
  }
}

function errorCodeOf(code: string): ErrorCode {
  return code === 'ROOMRING_RESPONSE_TIMEOUT' || code === 'ROOMRING_CONNECT_TIMEOUT'
    ? 'ROOMRING_E_BACKEND_TIMEOUT'
    : 'ROOMRING_E_BACKEND_UNREACHABLE';
}
