// The few WebSocket frames the proxy writes itself (RFC 6455 section 5.5.1): close frames sent on
// shutdown or drain, to the client unmasked and to the backend masked, as the roles require.

import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';

/** A close frame as a server sends it to a client (unmasked). */
export function serverCloseFrame(code: number): Buffer {
  return Buffer.from([0x88, 0x02, code >> 8, code & 0xff]);
}

/** A close frame as a client sends it to a server (masked with a random key). */
export function clientCloseFrame(code: number): Buffer {
  const mask = randomBytes(4);
  return Buffer.from([
    0x88,
    0x82,
    mask[0] as number,
    mask[1] as number,
    mask[2] as number,
    mask[3] as number,
    (code >> 8) ^ (mask[0] as number),
    (code & 0xff) ^ (mask[1] as number),
  ]);
}

/** How long a closing peer gets to answer the close handshake before its socket is destroyed. */
export const CLOSE_GRACE_MS = 2000;

/** 1001: the endpoint is going away (proxy shutdown). */
export const CLOSE_GOING_AWAY = 1001;
/** 1012: service restart (backend drained); clients should reconnect. */
export const CLOSE_SERVICE_RESTART = 1012;

/** The two ends of a proxied WebSocket. */
export interface TunnelEnds {
  readonly client: Duplex;
  readonly upstream: Duplex;
  detach(): void;
}

/**
 * Closes a tunnel as both peers expect: stops the byte pipe, sends the client a close frame with
 * `code` and the backend a masked one, then ends both sockets. A frame the backend was still
 * writing is cut: callers use this only when the connection has to go anyway.
 */
export function closeTunnel(tunnel: TunnelEnds, code: number, graceMs = CLOSE_GRACE_MS): void {
  const { client, upstream } = tunnel;
  tunnel.detach();
  client.end(serverCloseFrame(code));
  upstream.end(clientCloseFrame(code));
  // Unpiped sockets are paused and would never read the peer's FIN: drain them so they close.
  client.resume();
  upstream.resume();
  const timer = setTimeout(() => {
    client.destroy();
    upstream.destroy();
  }, graceMs);
  timer.unref();
  client.once('close', () => upstream.destroy());
  upstream.once('close', () => clearTimeout(timer));
}
