// The request parser facing clients: llhttp, through the binding node:http itself is built on, in
// its strict mode (no lenient flags: conflicting Content-Length/Transfer-Encoding, obs-fold, bare
// LF and bad chunk sizes are all errors). Driving it directly spares each request the
// IncomingMessage and ServerResponse streams, which cost more CPU than the rest of the proxy.
// This file is the only one that touches the binding.

import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { isField } from './headers.js';
import { readPlainHead } from './plain-head.js';

/** A request head as llhttp read it. */
export interface ParsedHead {
  method: string;
  url: string;
  /** Names and values alternating, as sent (values read as latin1, like node:http). */
  rawHeaders: string[];
  versionMajor: number;
  versionMinor: number;
  /**
   * HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`; false for an
   * upgrade to another protocol than WebSocket, which is served as plain HTTP and ends its
   * connection (llhttp reads nothing after it).
   */
  keepAlive: boolean;
  /**
   * A WebSocket handshake (a bodiless GET with `Connection: upgrade` and `Upgrade: websocket`), or
   * CONNECT. Any other `Upgrade` (h2c, say, or one with a body) is not taken up.
   */
  upgrade: boolean;
}

export interface ParserEvents {
  /** After llhttp read from a consumed socket: the bytes used, or the error (see execute()). */
  executed(result: number | ParseError): void;
  /** The first byte of a request arrived. */
  begin(): void;
  /** A request head is complete; return true to stop parsing after it (an upgrade). */
  head(head: ParsedHead): boolean;
  body(chunk: Buffer): void;
  end(): void;
}

/** A request llhttp refused; `code` is llhttp's (HPE_HEADER_OVERFLOW, HPE_INVALID_METHOD…). */
export interface ParseError extends Error {
  code: string;
  bytesParsed: number;
}

/** Node's binding class (lib/_http_common.js exports it); only what is used here. */
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | ParseError;
  finish(): number | ParseError | undefined;
  consume(handle: object): void;
  unconsume(): void;
  getCurrentBuffer(): Buffer;
  close(): void;
  [callback: number]: unknown;
}

/** The libuv stream under a net.Socket, as node:http's server drives it. */
interface StreamHandle {
  isStreamBase?: boolean;
  _consumed?: boolean;
  reading: boolean;
  readStart(): number;
  readStop(): number;
}

interface NativeParserClass {
  new (): NativeParser;
  REQUEST: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
  kLenientNone: number;
}

function loadBinding(): NativeParserClass {
  const parser = (createRequire(import.meta.url)('_http_common') as { HTTPParser?: NativeParserClass })
    .HTTPParser;
  if (typeof parser !== 'function' || typeof parser.kOnHeadersComplete !== 'number') {
    throw new Error(
      `node ${process.version} does not expose llhttp's HTTPParser: roomring is tested on Node 20, 22 and 24`,
    );
  }
  return parser;
}

const HTTPParser = loadBinding();

/** llhttp's method numbers (llhttp.h, HTTP_ALL_METHOD_MAP). */
const METHODS = [
  'DELETE',
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'COPY',
  'LOCK',
  'MKCOL',
  'MOVE',
  'PROPFIND',
  'PROPPATCH',
  'SEARCH',
  'UNLOCK',
  'BIND',
  'REBIND',
  'UNBIND',
  'ACL',
  'REPORT',
  'MKACTIVITY',
  'CHECKOUT',
  'MERGE',
  'M-SEARCH',
  'NOTIFY',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'PATCH',
  'PURGE',
  'MKCALENDAR',
  'LINK',
  'UNLINK',
  'SOURCE',
  'PRI',
  'DESCRIBE',
  'ANNOUNCE',
  'SETUP',
  'PLAY',
  'PAUSE',
  'TEARDOWN',
  'GET_PARAMETER',
  'SET_PARAMETER',
  'REDIRECT',
  'RECORD',
  'FLUSH',
  'QUERY',
];

/** Header pairs kept per request, as node:http keeps them (`maxHeadersCount` 2000). */
const MAX_HEADER_PAIRS = 2000;

/** Return value of on_headers_complete: no body follows, stop parsing (llhttp's upgrade pause). */
const STOP_AFTER_HEAD = 2;

/** Native parsers kept for reuse, as node:http keeps them: one connection per upgrade is common. */
const spare: NativeParser[] = [];
const MAX_SPARE = 1000;
/** The async_hooks resource the binding wants for its callbacks: one for all. */
const RESOURCE = {};
const OWNER = Symbol('owner');

type OwnedParser = NativeParser & { [OWNER]: RequestParser | undefined };

// The binding calls these as methods of the native parser; each is installed once per native
// parser and finds the RequestParser through it, so a connection allocates no callbacks.

function onMessageBegin(this: OwnedParser): void {
  this[OWNER]?.events.begin();
}

function onHeaders(this: OwnedParser, headers: string[], url: string): void {
  this[OWNER]?.addPartial(headers, url);
}

function onHeadersComplete(
  this: OwnedParser,
  versionMajor: number,
  versionMinor: number,
  headers: string[] | undefined,
  method: number,
  url: string | undefined,
  _status: unknown,
  _statusText: unknown,
  upgrade: boolean,
  keepAlive: boolean,
): number {
  const owner = this[OWNER];
  if (owner === undefined) return 0;
  const stop = owner.events.head(
    parsedHead(
      METHODS[method] ?? 'UNKNOWN',
      url ?? owner.takePartialUrl(),
      limited(headers ?? owner.takePartialHeaders()),
      versionMajor,
      versionMinor,
      upgrade,
      keepAlive,
    ),
  );
  return stop ? STOP_AFTER_HEAD : 0;
}

/** A head from what llhttp reports at on_headers_complete (or readPlainHead() in its place). */
function parsedHead(
  method: string,
  url: string,
  rawHeaders: string[],
  versionMajor: number,
  versionMinor: number,
  upgrade: boolean,
  keepAlive: boolean,
): ParsedHead {
  const taken = upgrade && (method === 'CONNECT' || isWebSocketHandshake(method, rawHeaders));
  return {
    method,
    url,
    rawHeaders,
    versionMajor,
    versionMinor,
    keepAlive: keepAlive && upgrade === taken,
    upgrade: taken,
  };
}

/**
 * Whether an upgrade request is a WebSocket handshake: a GET (RFC 6455 4.1) without a body whose
 * Upgrade names websocket.
 */
function isWebSocketHandshake(method: string, rawHeaders: readonly string[]): boolean {
  if (method !== 'GET') return false;
  let websocket = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const value = rawHeaders[i + 1] as string;
    if (isField(name, 'upgrade')) {
      websocket ||= value.split(',').some((token) => token.trim().toLowerCase() === 'websocket');
    } else if (
      isField(name, 'transfer-encoding') ||
      (isField(name, 'content-length') && value.trim() !== '0')
    ) {
      return false;
    }
  }
  return websocket;
}

function onBody(this: OwnedParser, chunk: Buffer): void {
  this[OWNER]?.events.body(chunk);
}

function onMessageComplete(this: OwnedParser): void {
  const owner = this[OWNER];
  if (owner === undefined) return;
  // Trailer fields arrive through kOnHeaders; they are not forwarded.
  owner.takePartialHeaders();
  owner.takePartialUrl();
  owner.events.end();
}

function onExecute(this: OwnedParser, result: number | ParseError): void {
  this[OWNER]?.events.executed(result);
}

function limited(rawHeaders: string[]): string[] {
  if (rawHeaders.length > MAX_HEADER_PAIRS * 2) rawHeaders.length = MAX_HEADER_PAIRS * 2;
  return rawHeaders;
}

function newParser(): OwnedParser {
  const native = new HTTPParser() as OwnedParser;
  native[OWNER] = undefined;
  native[HTTPParser.kOnMessageBegin] = onMessageBegin;
  native[HTTPParser.kOnHeaders] = onHeaders;
  native[HTTPParser.kOnHeadersComplete] = onHeadersComplete;
  native[HTTPParser.kOnBody] = onBody;
  native[HTTPParser.kOnMessageComplete] = onMessageComplete;
  native[HTTPParser.kOnExecute] = onExecute;
  return native;
}

export class RequestParser {
  private readonly native = (spare.pop() as OwnedParser | undefined) ?? newParser();
  private released = false;
  /** Head pieces when llhttp delivers the head in more than one callback (long or fragmented heads). */
  private partialHeaders: string[] | undefined;
  private partialUrl = '';

  constructor(readonly events: ParserEvents) {
    // maxHeaderSize 0 is Node's default (--max-http-header-size, 16 KiB).
    this.native.initialize(HTTPParser.REQUEST, RESOURCE, 0, HTTPParser.kLenientNone);
    this.native[OWNER] = this;
  }

  /** @internal */
  addPartial(headers: string[], url: string): void {
    this.partialHeaders ??= [];
    if (this.partialHeaders.length < MAX_HEADER_PAIRS * 2) this.partialHeaders.push(...headers);
    this.partialUrl += url;
  }

  /** @internal */
  takePartialHeaders(): string[] {
    const headers = this.partialHeaders ?? [];
    this.partialHeaders = undefined;
    return headers;
  }

  /** @internal */
  takePartialUrl(): string {
    const url = this.partialUrl;
    this.partialUrl = '';
    return url;
  }

  private handle: StreamHandle | undefined;

  /**
   * Lets llhttp read the socket itself, in C++, as node:http's server does: no JS stream work
   * per read, and the 'data' event is never emitted. False if the socket cannot be consumed
   * (then feed execute() from 'data').
   */
  consume(socket: Socket): boolean {
    const handle = (socket as unknown as { _handle?: StreamHandle | null })._handle;
    if (handle == null || handle.isStreamBase !== true || handle._consumed === true) return false;
    handle._consumed = true;
    this.native.consume(handle);
    this.handle = handle;
    return true;
  }

  /** Gives the socket's reads back to its JS stream (before an upgrade's handover). */
  unconsume(): void {
    if (this.handle === undefined) return;
    this.native.unconsume();
    this.handle._consumed = false;
    this.handle = undefined;
  }

  /** Stops or restarts reading a consumed socket (back-pressure). */
  setReading(reading: boolean): void {
    const handle = this.handle;
    if (handle === undefined || handle.reading === reading) return;
    handle.reading = reading;
    if (reading) handle.readStart();
    else handle.readStop();
  }

  get consuming(): boolean {
    return this.handle !== undefined;
  }

  /** The buffer of the read being parsed, inside `executed` of a consumed socket. */
  currentBuffer(): Buffer {
    return this.native.getCurrentBuffer();
  }

  /** Starts afresh, for a new connection's bytes. */
  restart(): void {
    this.native.initialize(HTTPParser.REQUEST, RESOURCE, 0, HTTPParser.kLenientNone);
    this.partialHeaders = undefined;
    this.partialUrl = '';
  }

  /** Parses `data`: the bytes used (fewer than given after a stopping head), or the error. */
  execute(data: Buffer): number | ParseError {
    return this.native.execute(data);
  }

  /** The client closed its side: an error when it did so inside a request. */
  finish(): ParseError | undefined {
    const result = this.native.finish();
    return typeof result === 'object' ? result : undefined;
  }

  /**
   * Done with this connection: the native parser is kept for another one, or closed. Either
   * happens on the next turn of the loop, since this may run inside one of its own callbacks.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.unconsume();
    const native = this.native;
    native[OWNER] = undefined;
    setImmediate(() => {
      if (spare.length < MAX_SPARE) spare.push(native);
      else native.close();
    });
  }
}

/** Reads the first head of a connection the native pipe accepted (see `firstUpgrade`). */
class HeadProbe implements ParserEvents {
  private found: ParsedHead | undefined;
  private readonly parser = new RequestParser(this);

  /** @internal ParserEvents: only the first head is wanted, and parsing stops after it. */
  head(head: ParsedHead): boolean {
    this.found = head;
    return true;
  }

  executed(): void {}
  begin(): void {}
  body(): void {}
  end(): void {}

  read(bytes: Buffer): { head: ParsedHead; used: number } | undefined {
    this.found = undefined;
    this.parser.restart();
    const used = this.parser.execute(bytes);
    const head = this.found;
    this.found = undefined;
    return typeof used === 'number' && head !== undefined ? { head, used } : undefined;
  }
}

let probe: HeadProbe | undefined;

/**
 * The first request in `bytes` when it is an upgrade whose head is complete and valid, with the
 * number of bytes its head took (what follows belongs to the upgraded protocol); else undefined.
 */
export function firstUpgrade(bytes: Buffer): { head: ParsedHead; used: number } | undefined {
  const read = firstHead(bytes);
  return read?.head.upgrade === true ? read : undefined;
}

/**
 * The first request head in `bytes` when it is complete and valid, with the number of bytes it
 * took; else undefined.
 */
export function firstHead(bytes: Buffer): { head: ParsedHead; used: number } | undefined {
  const plain = readPlainHead(bytes);
  if (plain !== undefined) {
    const { method, url, rawHeaders, versionMinor, upgrade, keepAlive, used } = plain;
    return { head: parsedHead(method, url, rawHeaders, 1, versionMinor, upgrade, keepAlive), used };
  }
  return llhttpHead(bytes);
}

/** firstHead() as llhttp alone reads it. @internal (tests compare readPlainHead() with it) */
export function llhttpHead(bytes: Buffer): { head: ParsedHead; used: number } | undefined {
  probe ??= new HeadProbe();
  return probe.read(bytes);
}
