// Reads one HTTP/1.1 response from a backend byte stream: the head (status line and raw headers),
// then the body by its framing (Content-Length, chunked, or until the connection closes).
// Interim 1xx responses are skipped. Pure: no sockets, so every framing case is unit-tested.

import { isField } from './headers.js';

export interface ResponseHead {
  status: number;
  statusText: string;
  /** Header names and values, alternating, as sent (latin1), like `IncomingMessage.rawHeaders`. */
  rawHeaders: string[];
  /** Whether the connection may carry another request after this response. */
  keepAlive: boolean;
  /** How the body is delimited: none (HEAD, 204, 304), Content-Length, chunked, or the close. */
  framing: BodyFraming;
}

export type BodyFraming = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseSink {
  head(head: ResponseHead): void;
  /** A piece of the (de-chunked) body. */
  body(chunk: Buffer): void;
  end(): void;
}

/** Thrown for a response the reader cannot frame; the exchange fails with it. */
export class ResponseFormatError extends Error {
  readonly code = 'ROOMRING_BAD_RESPONSE';
}

const MAX_HEAD = 64 * 1024;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
/** A chunk size: hex digits, at most 2^52 (13 digits). */
const HEX_SIZE = /^[0-9A-Fa-f]{1,13}$/;

type State =
  | 'head'
  | 'length'
  | 'chunk-size'
  | 'chunk-data'
  | 'chunk-crlf'
  | 'trailers'
  | 'until-close'
  | 'done';

export class ResponseReader {
  private state: State = 'head';
  private pending: Buffer | undefined;
  private remaining = 0;
  private keepAlive = false;

  /** `noBody`: the request was HEAD (the response has headers only). */
  constructor(
    private readonly sink: ResponseSink,
    private readonly noBody: boolean,
  ) {}

  get done(): boolean {
    return this.state === 'done';
  }

  /** Whether any byte of a final response was read (a head, or part of it). */
  get started(): boolean {
    return this.state !== 'head' || (this.pending?.length ?? 0) > 0;
  }

  /** The body runs until the backend closes the connection. */
  get endsAtClose(): boolean {
    return this.state === 'until-close';
  }

  /** Feeds bytes from the backend; bytes after the end of the response are ignored. */
  push(data: Buffer): void {
    let input = this.pending === undefined ? data : Buffer.concat([this.pending, data]);
    this.pending = undefined;
    while (input.length > 0 && this.state !== 'done') {
      input = this.step(input);
    }
  }

  /** The backend closed the connection: ends a close-delimited body, else the response is cut. */
  close(): boolean {
    if (this.state === 'until-close') {
      this.state = 'done';
      this.sink.end();
      return true;
    }
    return this.state === 'done';
  }

  private step(input: Buffer): Buffer {
    switch (this.state) {
      case 'head':
        return this.readHead(input);
      case 'length': {
        const take = Math.min(this.remaining, input.length);
        this.sink.body(input.subarray(0, take));
        this.remaining -= take;
        if (this.remaining === 0) this.finish();
        return input.subarray(take);
      }
      case 'until-close':
        this.sink.body(input);
        return input.subarray(input.length);
      case 'chunk-size': {
        const eol = input.indexOf(CRLF);
        if (eol === -1) return this.wait(input, 'chunk size line');
        const digits = input.toString('latin1', 0, eol).split(';')[0]?.trim() ?? '';
        // Hex digits only: parseInt would take '0x10' or '1zz' as sizes.
        if (!HEX_SIZE.test(digits)) throw new ResponseFormatError('bad chunk size');
        const size = Number.parseInt(digits, 16);
        this.remaining = size;
        this.state = size === 0 ? 'trailers' : 'chunk-data';
        return input.subarray(eol + 2);
      }
      case 'chunk-data': {
        const take = Math.min(this.remaining, input.length);
        this.sink.body(input.subarray(0, take));
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'chunk-crlf';
        return input.subarray(take);
      }
      case 'chunk-crlf':
        if (input.length < 2) return this.wait(input, 'chunk end');
        if (input[0] !== 13 || input[1] !== 10) throw new ResponseFormatError('bad chunk end');
        this.state = 'chunk-size';
        return input.subarray(2);
      case 'trailers': {
        // Trailer fields are dropped: the client already got its headers.
        const eol = input.indexOf(CRLF);
        if (eol === -1) return this.wait(input, 'trailer');
        if (eol === 0) this.finish();
        return input.subarray(eol + 2);
      }
      default:
        return input.subarray(input.length);
    }
  }

  private wait(input: Buffer, what: string): Buffer {
    if (input.length > MAX_HEAD) throw new ResponseFormatError(`${what} too long`);
    // A copy: `input` may be a view of a read buffer that the next read overwrites.
    this.pending = Buffer.from(input);
    return input.subarray(input.length);
  }

  private finish(): void {
    this.state = 'done';
    this.sink.end();
  }

  private readHead(input: Buffer): Buffer {
    const end = input.indexOf(HEAD_END);
    if (end === -1) return this.wait(input, 'response head');
    // One latin1 string for the head, scanned line by line: no regex or split per response.
    const text = input.toString('latin1', 0, end + 2);
    if (
      !text.startsWith('HTTP/1.') ||
      (text.charCodeAt(7) !== 48 && text.charCodeAt(7) !== 49) ||
      text.charCodeAt(8) !== 32
    ) {
      throw new ResponseFormatError('bad status line');
    }
    const status = threeDigits(text, 9);
    let eol = text.indexOf('\r\n');
    const afterStatus = text.charCodeAt(12);
    if (status < 0 || (eol !== 12 && afterStatus !== 32)) throw new ResponseFormatError('bad status line');
    const statusText = eol > 13 ? text.slice(13, eol) : '';
    const rawHeaders: string[] = [];
    let length: number | undefined;
    let chunked = false;
    let close = text.charCodeAt(7) === 48;
    let pos = eol + 2;
    while (pos < text.length) {
      eol = text.indexOf('\r\n', pos);
      const colon = text.indexOf(':', pos);
      if (colon <= pos || colon > eol) throw new ResponseFormatError('bad header line');
      const name = text.slice(pos, colon);
      const value = text.slice(colon + 1, eol).trim();
      pos = eol + 2;
      rawHeaders.push(name, value);
      // Only three names matter for framing.
      if (isField(name, 'content-length')) {
        const n = Number(value);
        if (value === '' || !Number.isSafeInteger(n) || n < 0 || (length !== undefined && length !== n)) {
          throw new ResponseFormatError('bad content-length');
        }
        length = n;
      } else if (isField(name, 'transfer-encoding')) {
        // Chunked alone: another coding (gzip, say) would reach the client undeclared, since the
        // field is this hop's, and a body not ending in chunked has no length this proxy can use.
        if (chunked || value.toLowerCase() !== 'chunked') {
          throw new ResponseFormatError('transfer coding other than chunked');
        }
        chunked = true;
      } else if (isField(name, 'connection')) {
        // HTTP/1.0 responses are never reused, keep-alive or not: only a `close` matters here.
        if (
          value
            .toLowerCase()
            .split(',')
            .some((t) => t.trim() === 'close')
        )
          close = true;
      }
    }
    const rest = input.subarray(end + 4);
    // Interim responses (100 Continue, 103 Early Hints) are not the answer: read on.
    if (status >= 100 && status < 200) return rest;
    const bodiless = this.noBody || status === 204 || status === 304;
    if (bodiless) this.state = 'done';
    else if (chunked) this.state = 'chunk-size';
    else if (length !== undefined) {
      this.state = length === 0 ? 'done' : 'length';
      this.remaining = length;
    } else {
      this.state = 'until-close';
      close = true;
    }
    this.keepAlive = !close;
    const framing: BodyFraming = bodiless
      ? 'none'
      : chunked
        ? 'chunked'
        : length !== undefined
          ? 'length'
          : 'close';
    this.sink.head({
      status,
      statusText,
      rawHeaders,
      keepAlive: this.keepAlive,
      framing,
    });
    if (this.state === 'done') this.sink.end();
    return rest;
  }
}

/** The number of three ASCII digits at `at`, or -1. */
function threeDigits(text: string, at: number): number {
  let n = 0;
  for (let i = at; i < at + 3; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (!(digit >= 0 && digit <= 9)) return -1;
    n = n * 10 + digit;
  }
  return n;
}
