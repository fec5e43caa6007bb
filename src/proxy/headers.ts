// Header handling per RFC 9110 section 7.6.1: hop-by-hop fields are not forwarded, nor any field
// named in Connection; X-Forwarded-For/-Proto/-Host are appended. Works on flat rawHeaders arrays
// so names keep their case and no header object is built per request.

import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

/** The parts of a request its forwarded headers come from (a ClientRequest or an IncomingMessage). */
export interface ForwardedRequest {
  readonly rawHeaders: readonly string[];
  readonly socket: Socket;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Field names listed in a Connection header, lower-cased; empty for the usual `keep-alive`/`close`. */
function connectionListed(raw: readonly string[]): Set<string> | undefined {
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const token of (raw[i + 1] as string).split(',')) {
        const field = token.trim().toLowerCase();
        if (field !== '' && field !== 'close' && field !== 'keep-alive' && field !== 'upgrade') {
          listed ??= new Set();
          listed.add(field);
        }
      }
    }
  }
  return listed;
}

function isHopByHop(lower: string, listed: Set<string> | undefined): boolean {
  return HOP_BY_HOP.has(lower) || listed?.has(lower) === true || isProxyField(lower);
}

/**
 * Every `Proxy-*` field is meant for the proxy in between, never the backend; a bare `Proxy`
 * header is dropped too, since CGI-style backends would read it as HTTP_PROXY ("httpoxy").
 */
function isProxyField(lower: string): boolean {
  return lower.charCodeAt(0) === 112 /* p */ && (lower === 'proxy' || lower.startsWith('proxy-'));
}

/**
 * The headers to send to a backend for `req`. With `upgrade`, Connection and Upgrade are kept
 * (as `Connection: Upgrade`) since they carry the WebSocket handshake itself.
 */
export function requestHeadersFor(req: ForwardedRequest, upgrade: boolean): string[] {
  const raw = req.rawHeaders;
  const listed = connectionListed(raw);
  const out: string[] = [];
  let forwardedFor: string | undefined;
  let forwardedProto: string | undefined;
  let forwardedHost: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 120 /* x */ && lower.startsWith('x-forwarded-')) {
      if (lower === 'x-forwarded-for')
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
      else if (lower === 'x-forwarded-proto') forwardedProto ??= value;
      else if (lower === 'x-forwarded-host') forwardedHost ??= value;
      else out.push(name, value);
      continue;
    }
    if (lower === 'host') host = value;
    if (upgrade && lower === 'upgrade') {
      out.push(name, value);
      continue;
    }
    if (isHopByHop(lower, listed)) continue;
    out.push(name, value);
  }
  if (upgrade) out.push('Connection', 'Upgrade');
  const clientIp = req.socket.remoteAddress ?? '';
  out.push('X-Forwarded-For', forwardedFor === undefined ? clientIp : `${forwardedFor}, ${clientIp}`);
  out.push('X-Forwarded-Proto', forwardedProto ?? protocolOf(req));
  if (forwardedHost !== undefined || host !== undefined)
    out.push('X-Forwarded-Host', forwardedHost ?? (host as string));
  return out;
}

/** The backend's response headers without hop-by-hop fields, for the client. */
export function responseHeadersFor(raw: readonly string[]): string[] {
  const listed = connectionListed(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (!isHopByHop(name.toLowerCase(), listed)) out.push(name, raw[i + 1] as string);
  }
  return out;
}

/** `http` or `https`, for WebSocket upgrades too, as nginx's `$scheme` gives it. */
function protocolOf(req: ForwardedRequest): string {
  return (req.socket as TLSSocket).encrypted === true ? 'https' : 'http';
}

/** Serialises a request head for writing straight onto a backend socket (WebSocket upgrades). */
export function requestHead(method: string, url: string, headers: readonly string[]): string {
  let head = `${method} ${url} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}
