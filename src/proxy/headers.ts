// Header handling per RFC 9110 section 7.6.1: hop-by-hop fields are not forwarded, nor any field
// named in Connection; X-Forwarded-For/-Proto/-Host are appended. Works on flat rawHeaders arrays
// so names keep their case and no header object is built per request.

/**
 * Where a request came from: its client socket (a TLS one has `encrypted`), or what the native
 * pipe reported of a connection it accepted.
 */
export interface Peer {
  readonly remoteAddress?: string | undefined;
  readonly encrypted?: boolean;
}

/** The parts of a request its forwarded headers come from (a ClientRequest or an IncomingMessage). */
export interface ForwardedRequest {
  readonly rawHeaders: readonly string[];
  readonly socket: Peer;
}

/**
 * Whether `name` begins with `lower` (lower-case letters, digits and '-'), ignoring the case of
 * letters, without building a lower-cased copy.
 */
export function startsWithField(name: string, lower: string): boolean {
  if (name.length < lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = name.charCodeAt(i);
    const l = lower.charCodeAt(i);
    if (c !== l && !(l >= 97 && l <= 122 && c === l - 32)) return false;
  }
  return true;
}

/** Whether field name `name` is `lower`, ignoring the case of letters. */
export function isField(name: string, lower: string): boolean {
  return name.length === lower.length && startsWithField(name, lower);
}

// What a field name means to the proxy. Names are classified by length and first letter before
// anything is lower-cased: most fields are none of these, and cost two comparisons.
const PLAIN = 0;
const HOP = 1;
const UPGRADE = 2;
const HOST = 3;
const FORWARDED_FOR = 4;
const FORWARDED_PROTO = 5;
const FORWARDED_HOST = 6;
const FORWARDED_OTHER = 7;
const CONNECTION = 8;

function kindOf(name: string): number {
  const first = name.charCodeAt(0) | 0x20;
  switch (name.length) {
    case 2:
      return isField(name, 'te') ? HOP : PLAIN;
    case 4:
      return isField(name, 'host') ? HOST : PLAIN;
    case 7:
      if (isField(name, 'trailer')) return HOP;
      return isField(name, 'upgrade') ? UPGRADE : PLAIN;
    case 10: {
      if (isField(name, 'connection')) return CONNECTION;
      if (isField(name, 'keep-alive')) return HOP;
      break;
    }
    case 17:
      if (isField(name, 'transfer-encoding')) return HOP;
      break;
  }
  // Every `Proxy-*` field is meant for the proxy in between, never the backend; a bare `Proxy`
  // header is dropped too, since CGI-style backends would read it as HTTP_PROXY ("httpoxy").
  if (first === 112 /* p */ && (isField(name, 'proxy') || startsWithField(name, 'proxy-'))) return HOP;
  if (first === 120 /* x */ && startsWithField(name, 'x-forwarded-')) {
    if (isField(name, 'x-forwarded-for')) return FORWARDED_FOR;
    if (isField(name, 'x-forwarded-proto')) return FORWARDED_PROTO;
    if (isField(name, 'x-forwarded-host')) return FORWARDED_HOST;
    return FORWARDED_OTHER;
  }
  return PLAIN;
}

/** Field names listed in a Connection header, lower-cased; none for the usual `keep-alive`/`close`. */
function connectionListed(raw: readonly string[]): Set<string> | undefined {
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (kindOf(raw[i] as string) !== CONNECTION) continue;
    const value = raw[i + 1] as string;
    // The usual values name no field: no split.
    if (isField(value, 'keep-alive') || isField(value, 'close') || isField(value, 'upgrade')) continue;
    for (const token of value.split(',')) {
      const field = token.trim().toLowerCase();
      if (field !== '' && field !== 'close' && field !== 'keep-alive' && field !== 'upgrade') {
        listed ??= new Set();
        listed.add(field);
      }
    }
  }
  return listed;
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
    switch (kindOf(name)) {
      case PLAIN:
        if (listed === undefined || !listed.has(name.toLowerCase())) out.push(name, value);
        break;
      case HOST:
        host = value;
        if (listed === undefined || !listed.has('host')) out.push(name, value);
        break;
      case UPGRADE:
        if (upgrade) out.push(name, value);
        break;
      case FORWARDED_FOR:
        forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
        break;
      case FORWARDED_PROTO:
        forwardedProto ??= value;
        break;
      case FORWARDED_HOST:
        forwardedHost ??= value;
        break;
      case FORWARDED_OTHER:
        out.push(name, value);
        break;
      default:
        // Hop-by-hop: not forwarded.
        break;
    }
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
    const kind = kindOf(name);
    if (kind === HOP || kind === UPGRADE || kind === CONNECTION) continue;
    if (listed?.has(name.toLowerCase())) continue;
    out.push(name, raw[i + 1] as string);
  }
  return out;
}

/** `http` or `https`, for WebSocket upgrades too, as nginx's `$scheme` gives it. */
function protocolOf(req: ForwardedRequest): string {
  return req.socket.encrypted === true ? 'https' : 'http';
}

/** Serialises a request head for writing straight onto a backend socket (WebSocket upgrades). */
export function requestHead(method: string, url: string, headers: readonly string[]): string {
  let head = `${method} ${url} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}
