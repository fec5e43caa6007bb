// One request from a client and the response the proxy writes back for it, on the client's own
// socket: the request's body is held until a backend connection takes it (so a refused connection
// can fail over without losing a byte), and the response head is written in the client's framing.

import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { isField, type Peer } from './headers.js';
import { errorResponse, httpDate } from './reply.js';
import type { ParsedHead } from './request-parser.js';
import type { BodyFraming } from './response-reader.js';

/** What a request's connection does for it; implemented by ClientConnection. */
export interface ExchangeOwner {
  readonly socket: Socket;
  /** Whether the connection closes after the current response (shutdown, client FIN). */
  readonly closing: boolean;
  /** Re-decides whether the socket reads (body back-pressure changed). */
  updateFlow(): void;
  /** The response is complete (or the exchange was abandoned). */
  finished(exchange: ClientExchange): void;
}

/** A request head; header values are latin1 strings, as node:http gives them. */
export class ClientRequest {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly httpVersionMinor: number;
  readonly keepAlive: boolean;
  /** The body comes in chunked framing (llhttp accepts Transfer-Encoding only ending in chunked). */
  readonly chunked: boolean;
  /** A body follows the head (chunked, or a Content-Length above 0). */
  readonly hasBody: boolean;
  readonly expectsContinue: boolean;
  private lowered: Record<string, string> | undefined;

  constructor(
    head: ParsedHead,
    readonly socket: Peer,
  ) {
    this.method = head.method;
    this.url = head.url;
    this.rawHeaders = head.rawHeaders;
    this.httpVersionMinor = head.versionMajor === 1 ? head.versionMinor : 1;
    this.keepAlive = head.keepAlive;
    let chunked = false;
    let length = false;
    let expectsContinue = false;
    const raw = head.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      if (isField(name, 'transfer-encoding')) chunked = true;
      else if (isField(name, 'content-length')) length = raw[i + 1] !== '0';
      else if (isField(name, 'expect'))
        expectsContinue = (raw[i + 1] as string).toLowerCase() === '100-continue';
    }
    this.chunked = chunked;
    this.hasBody = chunked || length;
    this.expectsContinue = expectsContinue;
  }

  /** The first value of the field `name` (lower-cased), as it came. */
  firstHeader(name: string): string | undefined {
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) if (isField(raw[i] as string, name)) return raw[i + 1];
    return undefined;
  }

  /**
   * Header values by lower-cased name, built on first use: repeated fields joined with ', '
   * (cookies with '; '), as node:http joins them.
   */
  get headers(): Record<string, string> {
    if (this.lowered !== undefined) return this.lowered;
    const headers: Record<string, string> = Object.create(null);
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as string).toLowerCase();
      const value = raw[i + 1] as string;
      const seen = headers[name];
      headers[name] = seen === undefined ? value : `${seen}${name === 'cookie' ? '; ' : ', '}${value}`;
    }
    this.lowered = headers;
    return headers;
  }
}

/** What forwards an exchange, told when its client goes away (an object, not a closure per request). */
export interface AbortListener {
  clientAborted(): void;
}

/** Request body bytes held before a consumer attaches, per exchange, before reading pauses. */
const BODY_HIGH_WATER = 64 * 1024;

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');

export class ClientExchange {
  /** The whole request (head and body) has been read. */
  complete = false;
  headersSent = false;
  /** The response is complete, or the exchange was given up. */
  done = false;
  /** The connection closes after this response. */
  closeAfter = false;
  /** Told once if the client goes away before the response is complete. */
  onAbort: AbortListener | undefined;
  private pending: Buffer[] | undefined;
  private pendingBytes = 0;
  private onChunk: ((chunk: Buffer) => void) | undefined;
  private onEnd: (() => void) | undefined;
  private bodyPaused = false;
  private chunkedResponse = false;

  constructor(
    readonly request: ClientRequest,
    private readonly owner: ExchangeOwner,
  ) {}

  get socket(): Socket {
    return this.owner.socket;
  }

  /** Whether this exchange wants the socket to stop reading (its held or consumed body is backed up). */
  get backedUp(): boolean {
    return !this.complete && (this.bodyPaused || this.pendingBytes > BODY_HIGH_WATER);
  }

  // Request body: the connection pushes, a backend attempt consumes.

  /** @internal From the parser. */
  pushBody(chunk: Buffer): void {
    if (this.onChunk !== undefined) {
      this.onChunk(chunk);
      return;
    }
    if (this.done) return;
    if (this.pending === undefined) this.pending = [chunk];
    else this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes > BODY_HIGH_WATER) this.owner.updateFlow();
  }

  /** @internal From the parser: the request is complete. */
  endBody(): void {
    this.complete = true;
    this.onEnd?.();
  }

  /** Hands the body to `onChunk` (held chunks first), then calls `onEnd`. */
  readBody(onChunk: (chunk: Buffer) => void, onEnd: () => void): void {
    if (
      this.request.expectsContinue &&
      this.request.httpVersionMinor >= 1 &&
      !this.complete &&
      !this.headersSent
    )
      this.socket.write(CONTINUE);
    const held = this.pending;
    this.pending = undefined;
    this.pendingBytes = 0;
    if (held !== undefined) for (const chunk of held) onChunk(chunk);
    if (this.complete) {
      onEnd();
      this.owner.updateFlow();
      return;
    }
    this.onChunk = onChunk;
    this.onEnd = onEnd;
    this.owner.updateFlow();
  }

  /** The consumer lets go of the body (its attempt ended); what still arrives is held or dropped. */
  stopBody(): void {
    this.onChunk = undefined;
    this.onEnd = undefined;
  }

  pauseBody(): void {
    if (this.bodyPaused) return;
    this.bodyPaused = true;
    this.owner.updateFlow();
  }

  resumeBody(): void {
    if (!this.bodyPaused) return;
    this.bodyPaused = false;
    this.owner.updateFlow();
  }

  // Response.

  /**
   * Writes the response head: the backend's end-to-end fields, a Date if it sent none, and the
   * framing and Connection fields of this client's hop. Callers cork the socket around it, so the
   * head and the first body bytes leave in one writev.
   */
  writeHead(status: number, statusText: string, headers: readonly string[], framing: BodyFraming): void {
    const { request } = this;
    let keepAlive = this.reusable;
    const unknownLength = framing === 'chunked' || framing === 'close';
    let rechunk = false;
    if (unknownLength) {
      // HTTP/1.1 clients get chunks, HTTP/1.0 clients a body up to the close.
      if (request.httpVersionMinor >= 1) rechunk = true;
      else keepAlive = false;
    }
    let head = `HTTP/1.1 ${status} ${statusText}\r\n`;
    let dated = false;
    let lengthWritten = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i] as string;
      if (isField(name, 'date')) dated = true;
      else if (isField(name, 'content-length')) {
        // Void beside chunking (RFC 9112 6.3); repeats, all equal (the reader checked), are sent once.
        if (unknownLength || lengthWritten) continue;
        lengthWritten = true;
      }
      head += `${name}: ${headers[i + 1]}\r\n`;
    }
    if (!dated) head += `Date: ${httpDate()}\r\n`;
    if (rechunk) head += 'Transfer-Encoding: chunked\r\n';
    const connection = this.connectionField(keepAlive);
    if (connection !== undefined) head += `Connection: ${connection}\r\n`;
    this.chunkedResponse = rechunk;
    this.closeAfter = !keepAlive;
    this.headersSent = true;
    this.socket.write(`${head}\r\n`, 'latin1');
  }

  /** Writes a piece of the body; false when the client is backed up (wait for the socket's drain). */
  write(chunk: Buffer): boolean {
    const socket = this.socket;
    if (!this.chunkedResponse) return socket.write(chunk);
    if (chunk.length === 0) return true;
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const more = socket.write('\r\n', 'latin1');
    socket.uncork();
    return more;
  }

  end(): void {
    if (this.done) return;
    if (this.chunkedResponse) this.socket.write('0\r\n\r\n', 'latin1');
    this.finish();
  }

  /** Answers with a coded JSON error, or cuts the connection if a response has begun. */
  replyError(code: ErrorCode): void {
    if (this.done) return;
    if (this.headersSent) {
      this.abandon();
      return;
    }
    const keepAlive = this.reusable;
    this.closeAfter = !keepAlive;
    this.headersSent = true;
    const noBody = this.request.method === 'HEAD';
    this.socket.write(errorResponse(code, this.connectionField(keepAlive), noBody), 'latin1');
    this.finish();
  }

  /**
   * Whether the connection may carry another request after this response, framing aside. The
   * rest of a request body still coming cannot be skipped safely, so then it closes.
   */
  private get reusable(): boolean {
    return this.request.keepAlive && !this.owner.closing && this.complete;
  }

  /** The Connection field of this hop: `close`, `keep-alive` for an HTTP/1.0 client, else none. */
  private connectionField(keepAlive: boolean): string | undefined {
    if (!keepAlive) return 'close';
    return this.request.httpVersionMinor === 0 ? 'keep-alive' : undefined;
  }

  /** Gives up on the response mid-way: the client's connection is closed. */
  abandon(): void {
    if (this.done) return;
    this.closeAfter = true;
    this.socket.destroy();
    this.finish();
  }

  /** @internal The client went away: the consumer is told once. */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.stopBody();
    const onAbort = this.onAbort;
    this.onAbort = undefined;
    onAbort?.clientAborted();
  }

  private finish(): void {
    this.done = true;
    this.onAbort = undefined;
    this.stopBody();
    // The response ended before its request did: the rest of the body cannot be skipped safely.
    if (!this.complete) this.closeAfter = true;
    this.owner.finished(this);
  }
}
