// Forwards one HTTP request to a backend over pooled keep-alive connections, streaming both bodies.
// The request body is piped only once the backend connection is open, so a refused connection can
// be retried on the ring successor without losing a byte.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import { CONNECT_ERRORS, nextBackend } from './failover.js';
import { requestHeadersFor, responseHeadersFor } from './headers.js';
import type { ProxyObserver } from './observer.js';
import { replyError } from './reply.js';

export interface ForwardTimeouts {
  connect: number;
  response: number;
  idle: number;
  keepAlive: number;
}

export interface ForwardOptions {
  timeouts: ForwardTimeouts;
  retries: number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

function hasNoBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
}

/** Idempotent and without a body: safe to send again after the backend dropped it. */
function isRetriable(req: IncomingMessage): boolean {
  return IDEMPOTENT.has(req.method ?? '') && hasNoBody(req);
}

/**
 * Streams a response body to the client with back-pressure: what `pipe` does, with two listeners
 * instead of pipe's bookkeeping on both streams, since this runs once per request.
 */
function relay(from: IncomingMessage, to: ServerResponse): void {
  const resume = (): void => {
    from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', resume);
    }
  });
  from.once('end', () => to.end());
}

class TimeoutError extends Error {
  readonly code: string;
  constructor(phase: 'connect' | 'response') {
    super(`backend ${phase} timeout`);
    this.code = phase === 'connect' ? 'ROOMRING_CONNECT_TIMEOUT' : 'ROOMRING_RESPONSE_TIMEOUT';
  }
}

/** One client request on its way through one or more attempts. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly room: string | null;
  readonly headers: string[];
  /** Backends this request was sent to, so a failover never returns to one. */
  readonly tried: Set<string>;
  /** Whether the one resend after a stale pooled connection was used. */
  resent: boolean;
}

export class HttpForwarder {
  private httpAgent: http.Agent;
  private httpsAgent: https.Agent;

  constructor(
    private readonly pool: Pool,
    private options: ForwardOptions,
    private readonly observer?: ProxyObserver,
  ) {
    this.httpAgent = new http.Agent(agentOptions(options.timeouts));
    this.httpsAgent = new https.Agent(agentOptions(options.timeouts));
  }

  /** New options apply to new requests; pooled connections are kept. */
  setOptions(options: ForwardOptions): void {
    this.options = options;
  }

  forward(req: IncomingMessage, res: ServerResponse, room: string | null, backend: Backend): void {
    const headers = requestHeadersFor(req, false);
    this.attempt({ req, res, room, headers, tried: new Set(), resent: false }, backend);
  }

  private attempt(exchange: Exchange, backend: Backend): void {
    const { req, res } = exchange;
    const { timeouts } = this.options;
    exchange.tried.add(backend.id);
    const proxyReq = (backend.tls ? https : http).request({
      host: backend.host,
      port: backend.port,
      method: req.method,
      path: req.url,
      headers: exchange.headers,
      setHost: false,
      agent: backend.tls ? this.httpsAgent : this.httpAgent,
      servername: backend.tls ? backend.host : undefined,
    });
    let connected = false;
    let responded = false;
    let failed = false;
    // The client went away: drop the backend exchange too, so no pooled socket is left half-used.
    const onClientClose = (): void => {
      if (!res.writableFinished) proxyReq.destroy();
    };
    res.once('close', onClientClose);

    const send = (): void => {
      connected = true;
      // Replaces the agent's idle timer, which is meant for pooled sockets (0: no limit).
      proxyReq.setTimeout(timeouts.response);
      // Most requests carry no body: ending at once skips the stream plumbing of a pipe.
      if (hasNoBody(req)) proxyReq.end();
      else req.pipe(proxyReq);
    };
    proxyReq.once('socket', (socket: Socket) => {
      if (!socket.connecting) {
        send();
        return;
      }
      // A new socket carries the agent's keep-alive timeout; only `timeouts.connect` bounds connecting.
      socket.setTimeout(0);
      const timer =
        timeouts.connect > 0
          ? setTimeout(() => proxyReq.destroy(new TimeoutError('connect')), timeouts.connect)
          : undefined;
      socket.once('connect', () => {
        clearTimeout(timer);
        send();
      });
      socket.once('close', () => clearTimeout(timer));
    });

    proxyReq.once('response', (proxyRes) => {
      responded = true;
      this.pool.reportSuccess(backend);
      this.observer?.response(backend.id, proxyRes.statusCode ?? 0);
      // From here only silence counts, so a long stream that keeps moving is never cut.
      proxyReq.setTimeout(timeouts.idle);
      proxyRes.once('error', () => res.destroy());
      proxyRes.once('aborted', () => res.destroy());
      res.writeHead(
        proxyRes.statusCode ?? 502,
        proxyRes.statusMessage,
        responseHeadersFor(proxyRes.rawHeaders),
      );
      relay(proxyRes, res);
    });

    proxyReq.on('timeout', () => proxyReq.destroy(new TimeoutError(connected ? 'response' : 'connect')));

    proxyReq.on('error', (error: NodeJS.ErrnoException) => {
      // One verdict per attempt: a later error must not touch a resend or failover under way.
      if (failed) return;
      failed = true;
      res.off('close', onClientClose);
      if (responded || res.destroyed) {
        res.destroy();
        return;
      }
      this.onAttemptFailed(exchange, backend, error.code ?? '', connected, proxyReq.reusedSocket);
    });
  }

  /** Resends, fails over to the next backend, or answers the client with a coded error. */
  private onAttemptFailed(
    exchange: Exchange,
    backend: Backend,
    code: string,
    connected: boolean,
    reusedSocket: boolean,
  ): void {
    // A pooled socket the backend closed as we reused it: nothing was processed, try once more.
    if (
      reusedSocket &&
      code === 'ECONNRESET' &&
      IDEMPOTENT.has(exchange.req.method ?? '') &&
      !exchange.resent
    ) {
      exchange.resent = true;
      this.attempt(exchange, backend);
      return;
    }
    // A backend dying as we connect may accept and then reset: for an idempotent request without a
    // body nothing is lost by sending it on (RFC 9110 section 9.2.2), so it fails over like a refusal.
    const resetBeforeAnswer = code === 'ECONNRESET' && !reusedSocket && isRetriable(exchange.req);
    if ((!connected && CONNECT_ERRORS.has(code)) || resetBeforeAnswer) {
      this.pool.reportFailure(backend);
      const next =
        exchange.tried.size <= this.options.retries
          ? nextBackend(this.pool, exchange.room, exchange.tried)
          : undefined;
      if (next !== undefined) {
        this.attempt(exchange, next);
        return;
      }
    }
    const error = errorCodeOf(code);
    this.observer?.error(error);
    replyError(exchange.res, error);
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

function errorCodeOf(code: string): ErrorCode {
  return code === 'ROOMRING_RESPONSE_TIMEOUT' || code === 'ROOMRING_CONNECT_TIMEOUT'
    ? 'ROOMRING_E_BACKEND_TIMEOUT'
    : 'ROOMRING_E_BACKEND_UNREACHABLE';
}

function agentOptions(timeouts: ForwardTimeouts): http.AgentOptions {
  // `timeout` here only closes idle pooled sockets; in-flight requests use their own timers.
  return { keepAlive: true, maxFreeSockets: 1024, scheduling: 'lifo', timeout: timeouts.keepAlive };
}
