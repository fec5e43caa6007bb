// What the request path reports as it works, for metrics. Calls are cheap and synchronous.

import type { PlacementReason } from '../affinity/placement.js';
import type { ErrorCode } from '../errors.js';

export interface ProxyObserver {
  /** A backend answered an HTTP request with `status`. */
  response(backendId: string, status: number): void;
  /** A backend answered a WebSocket upgrade with `status` (101 when it switched protocols). */
  upgrade(backendId: string, status: number): void;
  /** The proxy answered a client with a coded error. */
  error(code: ErrorCode): void;
  /** A placement that asked the lease store took this long. */
  placement(seconds: number, reason: PlacementReason | 'store-unreachable'): void;
}

/** Reads the status of an HTTP response from the first bytes a backend sent ('HTTP/1.1 101 ...'). */
export function statusOfHead(chunk: Buffer): number {
  if (chunk.length < 12 || chunk.toString('latin1', 0, 5) !== 'HTTP/') return 0;
  const status = Number(chunk.toString('latin1', 9, 12));
  return Number.isInteger(status) ? status : 0;
}
