// Failover of one request: which connection failures move it to another backend, and which
// backend it moves to. Shared by the HTTP and WebSocket forwarders.

import type { Backend, Pool } from '../pool/pool.js';

/** Failures before anything was sent: the backend processed nothing, so another may take it. */
export const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ROOMRING_CONNECT_TIMEOUT',
]);

/**
 * The backend a request moves to after `tried` refused it: the room's next ring successor that
 * is neither tried nor cooling off (a random such backend without a room). Skipping the tried
 * ones matters when a cool-off is short or over: the owner would otherwise be picked again.
 */
export function nextBackend(
  pool: Pool,
  room: string | null,
  tried: ReadonlySet<string>,
): Backend | undefined {
  const usable = (backend: Backend): boolean => !tried.has(backend.id) && !pool.isCoolingOff(backend.id);
  if (room !== null) return pool.ring.ownerWhere(room, usable);
  const members = pool.ring.members.filter(usable);
  return members[Math.floor(Math.random() * members.length)];
}
