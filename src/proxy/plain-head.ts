// A quick reader for the plain request heads nearly every client sends (a browser's WebSocket
// handshake, curl's GET), in front of llhttp for the heads the native pipe reads whole. It takes
// a strict subset of HTTP/1.x only, and for it finds what llhttp finds: anything outside the subset
// (undefined here) goes to llhttp, which stays the judge of every unusual head. Reading such a head
// here costs a string and a scan instead of a native parser's reset, callbacks and arrays.
//
// The subset: a common method, an origin-form target of RFC 3986 path and query characters,
// HTTP/1.1 or 1.0, CRLF line ends, field names of token characters right before their colon,
// values of visible ASCII and spaces with no trailing space, at most 100 fields in 8 KiB, and no
// Content-Length, Transfer-Encoding or Proxy-Connection (so no body and no framing question).

import { maxHeaderSize } from 'node:http';
import { isField } from './headers.js';

/** What llhttp reports of a head at on_headers_complete, for the subset read here (HTTP/1.x only). */
export interface PlainHead {
  method: string;
  url: string;
  rawHeaders: string[];
  versionMinor: number;
  /** llhttp's upgrade flag: an Upgrade field with `upgrade` among Connection's tokens. */
  upgrade: boolean;
  /** llhttp_should_keep_alive(). */
  keepAlive: boolean;
  /** Bytes up to the end of the head's blank line. */
  used: number;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);
/**
 * Within llhttp's own limit (Node's --max-http-header-size, 16 KiB unless set lower), so that a
 * head over it still gets llhttp's 431.
 */
const MAX_BYTES = Math.min(8192, maxHeaderSize);
const MAX_FIELDS = 100;
const CR = 13;
const LF = 10;
const SP = 32;
const COLON = 58;
const SLASH = 47;

function table(chars: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 48; c <= 57; c++) t[c] = 1;
  for (let c = 65; c <= 90; c++) t[c] = 1;
  for (let c = 97; c <= 122; c++) t[c] = 1;
  for (const ch of chars) t[ch.charCodeAt(0)] = 1;
  return t;
}

/** RFC 3986 unreserved, sub-delims, ':' '@' (pchar), '/', '?' and '%'. */
const TARGET = table("-._~!$&'()*+,;=:@/?%");
/** RFC 9110 tchar. */
const TOKEN = table("!#$%&'*+-.^_`|~");

/** The head at the start of `bytes` when it is in the subset above; else undefined (ask llhttp). */
export function readPlainHead(bytes: Buffer): PlainHead | undefined {
  const text = bytes.toString('latin1', 0, Math.min(bytes.length, MAX_BYTES));
  const blank = text.indexOf('\r\n\r\n');
  if (blank < 0) return undefined;
  // The fields end with the last one's CRLF; the blank line's is past it.
  const end = blank + 2;
  // The scans below need no bound of their own: each stops at a character the blank line's CR
  // (at `blank`) ends at the latest. With no space at all, `method` is not a method.
  const methodEnd = text.indexOf(' ');
  const method = text.slice(0, methodEnd);
  if (!METHODS.has(method) || text.charCodeAt(methodEnd + 1) !== SLASH) return undefined;
  let i = methodEnd + 1;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === SP) break;
    if (TARGET[c] !== 1) return undefined;
  }
  const url = text.slice(methodEnd + 1, i);
  const version = text.slice(i + 1, i + 11);
  let versionMinor: number;
  if (version === 'HTTP/1.1\r\n') versionMinor = 1;
  else if (version === 'HTTP/1.0\r\n') versionMinor = 0;
  else return undefined;
  const rawHeaders: string[] = [];
  let upgradeField = false;
  let close = false;
  let keepAlive = false;
  let upgradeToken = false;
  for (let p = i + 11; p < end; ) {
    if (rawHeaders.length === MAX_FIELDS * 2) return undefined;
    let q = p;
    while (q < end && TOKEN[text.charCodeAt(q)] === 1) q++;
    if (q === p || text.charCodeAt(q) !== COLON) return undefined;
    const name = text.slice(p, q);
    q++;
    while (text.charCodeAt(q) === SP) q++;
    const valueStart = q;
    for (;;) {
      const c = text.charCodeAt(q);
      if (c === CR) break;
      // Control characters (HTAB, a bare LF, NaN past the end) and obs-text are llhttp's to judge.
      if (!(c >= SP && c <= 126)) return undefined;
      q++;
    }
    if (q === valueStart || text.charCodeAt(q - 1) === SP || text.charCodeAt(q + 1) !== LF) return undefined;
    const value = text.slice(valueStart, q);
    p = q + 2;
    switch (name.length) {
      case 7:
        if (isField(name, 'upgrade')) upgradeField = true;
        break;
      case 10:
        if (isField(name, 'connection')) {
          for (const token of value.split(',')) {
            const t = token.trim().toLowerCase();
            if (t === 'close') close = true;
            else if (t === 'keep-alive') keepAlive = true;
            else if (t === 'upgrade') upgradeToken = true;
            else return undefined;
          }
        }
        break;
      case 14:
        if (isField(name, 'content-length')) return undefined;
        break;
      case 16:
        if (isField(name, 'proxy-connection')) return undefined;
        break;
      case 17:
        if (isField(name, 'transfer-encoding')) return undefined;
        break;
    }
    rawHeaders.push(name, value);
  }
  return {
    method,
    url,
    rawHeaders,
    versionMinor,
    upgrade: upgradeField && upgradeToken,
    keepAlive: versionMinor === 1 ? !close : keepAlive,
    used: blank + 4,
  };
}
