// Error replies written raw onto a client socket that is closed after them (a failed WebSocket
// upgrade, a request llhttp refused): a status and a JSON body from the list of coded errors.
// Replies inside a keep-alive exchange are ClientExchange.replyError.

import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode, errorBody } from '../errors.js';

let dateText = '';
let dateSecond = 0;

/** The IMF-fixdate of this second, for responses that come without a Date (RFC 9110 6.6.1). */
export function httpDate(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString();
  }
  return dateText;
}

/**
 * A whole error response for `code`; `connection` is the Connection field's value, if any. The
 * answer to a HEAD request (`noBody`) has the same fields and no body (RFC 9110 9.3.2): bytes after
 * its head would be read as the next response on a kept connection.
 */
export function errorResponse(code: ErrorCode, connection: string | undefined, noBody = false): string {
  const status = ERROR_CODES[code].status;
  const body = errorBody(code);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${body.length}\r\n` +
    'Cache-Control: no-store\r\n' +
    `Date: ${httpDate()}\r\n` +
    (connection === undefined ? '' : `Connection: ${connection}\r\n`) +
    `\r\n${noBody ? '' : body.toString('latin1')}`
  );
}

export function replyErrorOnSocket(socket: Duplex, code: ErrorCode): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  endThenDestroy(socket, errorResponse(code, 'close'));
}

/** How long a client that does not read its last bytes keeps its socket. */
const LINGER_MS = 5000;

/**
 * Writes `data` and closes the socket once it is written. `end()` alone closes only our half: a
 * client that never closes its own would hold the socket open for good.
 */
export function endThenDestroy(socket: Duplex, data?: string | Buffer): void {
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(timer));
  socket.once('finish', () => socket.destroy());
  socket.end(data);
}

/**
 * Ends our side and reads and drops whatever the client still sends, until it closes or
 * LINGER_MS pass: a socket closed with unread bytes sends a reset, which can discard the last
 * response at the client before it was read.
 */
export function lingerThenDestroy(socket: Duplex): void {
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(timer));
  socket.once('end', () => socket.destroy());
  socket.on('data', () => {});
  socket.resume();
  socket.end();
}

/** A plain net.Socket (or TLS socket) rather than another kind of Duplex. */
export function isSocket(duplex: Duplex): duplex is Socket {
  return typeof (duplex as Socket).setNoDelay === 'function';
}

/** An 'error' listener that only destroys the socket: the error needs nothing else. */
export function destroyOnError(this: Socket): void {
  this.destroy();
}
