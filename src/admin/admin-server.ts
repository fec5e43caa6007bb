// The admin listener: GET /status, /route?room=R, /metrics, /healthz and the dashboard at /;
// POST /reload. A bearer token (header or ?token=) guards everything when one is configured.

import { timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AdminConfig } from '../config/schema.js';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import { DASHBOARD_HTML } from './dashboard.js';

export interface AdminHandlers {
  status(): Promise<unknown> | unknown;
  route(room: string): Promise<unknown>;
  metrics(): Promise<{ contentType: string; body: string }>;
  /** False while shutting down: an outer load balancer stops sending traffic. */
  healthy(): boolean;
  reload(): Promise<boolean> | boolean;
}

export class AdminServer {
  readonly server: http.Server;

  constructor(
    private config: AdminConfig,
    private readonly handlers: AdminHandlers,
  ) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => fail(res, 'ROOMRING_E_ADMIN', String(error)));
    });
  }

  /** A reload may change the token; the address needs a restart. */
  configure(config: AdminConfig): void {
    this.config = { ...config, host: this.config.host, port: this.config.port };
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.port, this.config.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    if (!this.authorized(req, url)) {
      fail(res, 'ROOMRING_E_UNAUTHORIZED');
      return;
    }
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'GET /':
        res
          .writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
          .end(DASHBOARD_HTML);
        return;
      case 'GET /status':
        json(res, 200, await this.handlers.status());
        return;
      case 'GET /route': {
        const room = url.searchParams.get('room');
        if (room === null || room === '') {
          fail(res, 'ROOMRING_E_NO_ROOM', 'Give the room as ?room=R.');
          return;
        }
        json(res, 200, await this.handlers.route(room));
        return;
      }
      case 'GET /metrics': {
        const { contentType, body } = await this.handlers.metrics();
        res.writeHead(200, { 'content-type': contentType }).end(body);
        return;
      }
      case 'GET /healthz': {
        const ok = this.handlers.healthy();
        json(res, ok ? 200 : 503, { ok });
        return;
      }
      case 'POST /reload': {
        const ok = await this.handlers.reload();
        if (ok) json(res, 200, { reloaded: true });
        else
          fail(
            res,
            'ROOMRING_E_CONFIG',
            'The config failed validation; the running one stays. See the log.',
            422,
          );
        return;
      }
      default:
        fail(res, 'ROOMRING_E_NOT_FOUND', `No admin endpoint ${route}.`);
    }
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    const token = this.config.token;
    if (token === undefined) return true;
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice(7) : (url.searchParams.get('token') ?? '');
    const a = Buffer.from(given);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function fail(
  res: ServerResponse,
  code: ErrorCode,
  message: string = ERROR_CODES[code].message,
  status: number = ERROR_CODES[code].status,
): void {
  json(res, status, { error: { code, message } });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
    .end(text);
}
