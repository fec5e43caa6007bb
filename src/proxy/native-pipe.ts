// The native byte pipe (native/pipe.cc): forwards the bytes of upgraded plain-TCP WebSockets on a
// thread of its own, without Node streams. Built by `npm install` on Linux; where it was not built
// (another OS, no compiler) `nativePipe()` is undefined and tunnels stay on Node sockets.

import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

interface Binding {
  start(onClosed: (ids: number[]) => void): void;
  add(clientFd: number, upstreamFd: number, idleMs: number): number;
  closeWith(id: number, toClient: Buffer, toUpstream: Buffer, graceMs: number): void;
  destroy(id: number): void;
}

/** The pipe as tunnels use it. */
export interface NativePipe {
  /**
   * Takes over both sockets: the pipe forwards between copies of their descriptors, and the Node
   * sockets are destroyed. `onClosed` runs once, when the pipe has closed both. Undefined when a
   * socket has no descriptor (TLS, or already closed): the caller keeps forwarding itself.
   */
  adopt(client: Socket, upstream: Socket, idleMs: number, onClosed: () => void): number | undefined;
  /** Sends each side its last bytes, ends both, and closes when the client has ended or after `graceMs`. */
  closeWith(id: number, toClient: Buffer, toUpstream: Buffer, graceMs: number): void;
  /** Closes both sockets now. */
  destroy(id: number): void;
}

const BUILD = '../../build/Release/roomring_pipe.node';

let loaded: NativePipe | null | undefined;
let missing: string | undefined;

/** The native pipe, or undefined where it is not built. */
export function nativePipe(): NativePipe | undefined {
  if (loaded === undefined) loaded = load();
  return loaded ?? undefined;
}

/** Why `nativePipe()` is undefined, for the start log; undefined when the pipe is there. */
export function nativePipeMissing(): string | undefined {
  nativePipe();
  return missing;
}

function load(): NativePipe | null {
  if (process.platform !== 'linux') {
    missing = `the native pipe is built on Linux only, not on ${process.platform}`;
    return null;
  }
  let binding: Binding;
  try {
    binding = createRequire(import.meta.url)(BUILD) as Binding;
  } catch (error) {
    const detail = error instanceof Error ? error.message.split('\n')[0] : String(error);
    missing = `the native addon did not load (${detail}); \`npm run install\` builds it`;
    return null;
  }
  if (typeof binding.start !== 'function') {
    missing = 'the native addon has no start function: rebuild it with `npm run install`';
    return null;
  }
  const closed = new Map<number, () => void>();
  // Open tunnels keep the process alive, as their sockets did: shutdown waits for them.
  let alive: NodeJS.Timeout | undefined;
  binding.start((ids) => {
    let failure: unknown;
    for (const id of ids) {
      const onClosed = closed.get(id);
      closed.delete(id);
      try {
        onClosed?.();
      } catch (error) {
        failure ??= error;
      }
    }
    if (closed.size === 0 && alive !== undefined) {
      clearInterval(alive);
      alive = undefined;
    }
    // Thrown outside the native callback, where Node reports it as any uncaught exception.
    if (failure !== undefined) {
      process.nextTick(() => {
        throw failure;
      });
    }
  });
  return {
    adopt(client, upstream, idleMs, onClosed) {
      const clientFd = descriptorOf(client);
      const upstreamFd = descriptorOf(upstream);
      if (clientFd === undefined || upstreamFd === undefined) return undefined;
      let id: number;
      try {
        id = binding.add(clientFd, upstreamFd, idleMs);
      } catch {
        // Out of descriptors, or the pipe thread stopped: the sockets stay with Node.
        return undefined;
      }
      closed.set(id, onClosed);
      alive ??= setInterval(() => {}, 1 << 30);
      client.destroy();
      upstream.destroy();
      return id;
    },
    closeWith: (id, toClient, toUpstream, graceMs) => binding.closeWith(id, toClient, toUpstream, graceMs),
    destroy: (id) => binding.destroy(id),
  };
}

/** The socket's file descriptor, for a plain TCP socket that is open. */
function descriptorOf(socket: Socket): number | undefined {
  // `_handle` is the libuv TCP handle behind a net.Socket. A TLS socket's bytes are not the
  // WebSocket's bytes, so it never goes to the pipe.
  if ((socket as Socket & { encrypted?: boolean }).encrypted === true) return undefined;
  const handle = (socket as Socket & { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 && !socket.destroyed ? fd : undefined;
}
