// Error replies to clients: a status and a JSON body from the list of coded errors, on an HTTP
// response or, for a failed WebSocket upgrade, written raw onto the client socket.

import type { ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERROR_CODES, type ErrorCode, errorBody } from '../errors.js';

export function replyError(res: ServerResponse, code: ErrorCode): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(code);
  res.writeHead(ERROR_CODES[code].status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': body.length,
    'cache-control': 'no-store',
  });
  res.end(body);
}

export function replyErrorOnSocket(socket: Duplex, code: ErrorCode): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const status = ERROR_CODES[code].status;
  const body = errorBody(code);
  endThenDestroy(
    socket,
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${body.length}\r\n` +
      'Connection: close\r\n\r\n' +
      body.toString(),
  );
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
