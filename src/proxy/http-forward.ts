// Forwards one HTTP request to a backend over pooled keep-alive connections, streaming both bodies.
// The request body is piped only once the backend connection is open, so a refused connection can
// be retried on the ring successor without losing a byte.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import type { Backend, Pool } from '../pool/pool.js';
import { requestHeadersFor, responseHeadersFor } from './headers.js';
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
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ROOMRING_CONNECT_TIMEOUT',
]);

class TimeoutError extends Error {
  readonly code: string;
  constructor(phase: 'connect' | 'response') {
    super(`backend ${phase} timeout`);
    this.code = phase === 'connect' ? 'ROOMRING_CONNECT_TIMEOUT' : 'ROOMRING_RESPONSE_TIMEOUT';
  }
}

export class HttpForwarder {
  private httpAgent: http.Agent;
  private httpsAgent: https.Agent;

  constructor(
    private readonly pool: Pool,
    private options: ForwardOptions,
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
    this.attempt(req, res, room, backend, headers, 0);
  }

  private attempt(
    req: IncomingMessage,
    res: ServerResponse,
    room: string | null,
    backend: Backend,
    headers: string[],
    attempt: number,
  ): void {
    const { timeouts } = this.options;
    const proxyReq = (backend.tls ? https : http).request({
      host: backend.host,
      port: backend.port,
      method: req.method,
      path: req.url,
      headers,
      setHost: false,
      agent: backend.tls ? this.httpsAgent : this.httpAgent,
      servername: backend.tls ? backend.host : undefined,
    });
    let connected = false;
    let responded = false;
    // The client went away: drop the backend exchange too, so no pooled socket is left half-used.
    const onClientClose = (): void => {
      if (!res.writableFinished) proxyReq.destroy();
    };
    res.once('close', onClientClose);

    const send = (): void => {
      connected = true;
      if (timeouts.response > 0) proxyReq.setTimeout(timeouts.response);
      req.pipe(proxyReq);
    };
    proxyReq.once('socket', (socket: Socket) => {
      if (!socket.connecting) {
        send();
        return;
      }
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
      proxyReq.setTimeout(timeouts.idle);
      proxyRes.once('error', () => res.destroy());
      proxyRes.once('aborted', () => res.destroy());
      res.writeHead(
        proxyRes.statusCode ?? 502,
        proxyRes.statusMessage,
        responseHeadersFor(proxyRes.rawHeaders),
      );
      proxyRes.pipe(res);
    });

    proxyReq.once('timeout', () => proxyReq.destroy(new TimeoutError(connected ? 'response' : 'connect')));

    proxyReq.once('error', (error: NodeJS.ErrnoException) => {
      if (responded || res.destroyed) {
        res.destroy();
        return;
      }
      const code = error.code ?? '';
      res.off('close', onClientClose);
      // A pooled socket the backend closed as we reused it: nothing was processed, try once more.
      if (
        proxyReq.reusedSocket &&
        code === 'ECONNRESET' &&
        IDEMPOTENT.has(req.method ?? '') &&
        attempt === 0
      ) {
        this.attempt(req, res, room, backend, headers, attempt + 1);
        return;
      }
      if (!connected && CONNECT_ERRORS.has(code)) {
        this.pool.reportFailure(backend);
        const next = room === null ? this.pool.pickRandom() : this.pool.pick(room);
        if (next !== undefined && next !== backend && attempt < this.options.retries) {
          this.attempt(req, res, room, next, headers, attempt + 1);
          return;
        }
      }
      replyError(res, errorCodeOf(code));
    });
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
