// One proxied WebSocket after its handshake was sent: bytes both ways with back-pressure, ends
// passed on, and one close for both sockets. Hand-rolled instead of two `pipe()` calls: a tunnel
// lives for hours and there are many, so it keeps a handful of listeners and nothing else: the
// listeners are shared by all tunnels and find theirs through the socket.
//
// A plain-TCP tunnel whose backend switched protocols (101) is handed to the native pipe, when
// there is one (native-pipe.ts), 250–500 ms later and once nothing is queued on either socket:
// from then on its bytes never reach JavaScript, and a PipedTunnel stands for it in the tracker.

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../errors.js';
import type { Tunnel } from './connections.js';
import type { NativePipe } from './native-pipe.js';
import { statusOfHead } from './observer.js';
import { endThenDestroy, errorResponse, isSocket, replyErrorOnSocket } from './reply.js';
import {
  CLOSE_GOING_AWAY,
  CLOSE_GRACE_MS,
  clientCloseFrame,
  closeTunnel,
  serverCloseFrame,
} from './ws-frames.js';

/**
 * The answer to an upgrade whose backend has not answered yet, when its tunnel is closed with a
 * close `code`: no WebSocket exists yet, so the client gets an HTTP error rather than a frame.
 */
function unansweredError(code: number): ErrorCode {
  return code === CLOSE_GOING_AWAY ? 'ROOMRING_E_SHUTTING_DOWN' : 'ROOMRING_E_NO_BACKEND';
}

const NOTHING = Buffer.alloc(0);

/** Where a tunnel's bytes go after the 101: the native pipe, with the tunnel's idle limit. */
export interface PipeHandover {
  readonly pipe: NativePipe;
  readonly idleMs: number;
  /** The tunnel now stands as `to` (the tracker swaps them; counts stay). */
  replace(from: Tunnel, to: Tunnel): void;
}

/**
 * A tunnel in the native pipe: ids and close calls only. The ByteTunnel it came from, and the
 * destroyed Node sockets with it, are left to the garbage collector.
 */
export class PipedTunnel implements Tunnel {
  readonly piped = true;
  private closed = false;
  private closing = false;
  /** The status of the backend's answer (0: bytes that were no status line); none yet: undefined. */
  private status: number | undefined;
  /** The tunnel's id in the pipe, set once the pipe took it. */
  id = 0;

  constructor(
    readonly room: string | null,
    readonly backendId: string,
    private readonly pipe: NativePipe,
    private readonly onClose: (tunnel: Tunnel) => void,
  ) {}

  /** The backend answered the handshake with `status`. */
  answered(status: number): void {
    this.status = status;
  }

  /**
   * A close frame with `code` each way after a 101, then both sockets end; an upgrade still waiting
   * for its answer gets an HTTP error instead, and one answered otherwise (a 404, say) just ends.
   */
  closeWith(code: number): void {
    // One close each way, even when a drain and a shutdown both ask.
    if (this.closed || this.closing) return;
    this.closing = true;
    if (this.status === 101) {
      this.pipe.closeWith(this.id, serverCloseFrame(code), clientCloseFrame(code), CLOSE_GRACE_MS);
    } else {
      const reply =
        this.status === undefined
          ? Buffer.from(errorResponse(unansweredError(code), 'close'), 'latin1')
          : NOTHING;
      this.pipe.closeWith(this.id, reply, NOTHING, CLOSE_GRACE_MS);
    }
  }

  destroy(): void {
    if (!this.closed) this.pipe.destroy(this.id);
  }

  /** @internal The pipe closed both sockets. */
  pipeClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }
}

const TUNNEL = Symbol('tunnel');
type TunnelSocket = Duplex & { [TUNNEL]?: ByteTunnel };

const tunnelOf = (socket: Duplex): ByteTunnel | undefined => (socket as TunnelSocket)[TUNNEL];

function upstreamData(this: Duplex, chunk: Buffer): void {
  tunnelOf(this)?.fromUpstream(chunk);
}

function clientData(this: Duplex, chunk: Buffer): void {
  const tunnel = tunnelOf(this);
  if (tunnel !== undefined && !tunnel.upstream.write(chunk)) this.pause();
}

/** Bytes of a client whose backend refused the upgrade: read, so its FIN is seen, and dropped. */
function ignore(): void {}

/** A socket drained: the other side may send again. */
function drained(this: Duplex): void {
  tunnelOf(this)?.peerOf(this).resume();
}

// Tunnels go to the native pipe once they have lived PIPE_AFTER_MS to 2 × PIPE_AFTER_MS after
// their 101: a WebSocket that opens and closes at once is cheaper kept on its Node sockets than
// handed over. Two generations, swapped on each tick: `due` is offered, `fresh` waits one tick.
const PIPE_AFTER_MS = 250;
let fresh = new Set<ByteTunnel>();
let due = new Set<ByteTunnel>();
let pipeTicker: NodeJS.Timeout | undefined;

function awaitPipe(tunnel: ByteTunnel): void {
  fresh.add(tunnel);
  pipeTicker ??= setInterval(offerDue, PIPE_AFTER_MS).unref();
}

function offerDue(): void {
  const offered = due;
  due = fresh;
  fresh = new Set();
  // A tunnel with bytes still queued stays due for the next tick.
  for (const tunnel of offered) if (tunnel.offerToPipe() === 'later') due.add(tunnel);
  if (due.size === 0 && pipeTicker !== undefined) {
    clearInterval(pipeTicker);
    pipeTicker = undefined;
  }
}

/** A socket ended: the end is passed on, and the other side has `halfCloseMs` to end its own. */
function ended(this: Duplex): void {
  const tunnel = tunnelOf(this);
  if (tunnel === undefined) return;
  tunnel.peerOf(this).end();
  tunnel.halfClosed();
}

function onSocketClose(this: Duplex): void {
  tunnelOf(this)?.close();
}

export class ByteTunnel implements Tunnel {
  private closed = false;
  private detached = false;
  /** Waits for the backend's first bytes (its handshake answer); cleared when they come. */
  private answerTimer: NodeJS.Timeout | undefined;
  /**
   * The status of the backend's first bytes (0: no status line); none yet: undefined. A 101 makes
   * the connection a WebSocket.
   */
  private status: number | undefined;
  /** How long the tunnel stays open once one side ended and the other has not (0: no limit). */
  halfCloseMs = 0;
  private halfTimer: NodeJS.Timeout | undefined;
  readonly piped = false;

  constructor(
    readonly room: string | null,
    readonly backendId: string,
    readonly client: Duplex,
    readonly upstream: Socket,
    private readonly onClose: (tunnel: Tunnel) => void,
    /** Called with the backend's first chunk (the handshake answer). */
    private onAnswer?: (first: Buffer) => void,
    /** Where the bytes go after a 101, if not through these sockets. */
    private handover?: PipeHandover,
  ) {
    this.reattach();
  }

  /** Installs the shared listeners on both sockets. */
  private reattach(): void {
    const { client, upstream } = this;
    this.detached = false;
    (client as TunnelSocket)[TUNNEL] = this;
    (upstream as TunnelSocket)[TUNNEL] = this;
    upstream.on('data', upstreamData);
    client.on('data', clientData);
    client.on('drain', drained);
    upstream.on('drain', drained);
    upstream.on('end', ended);
    client.on('end', ended);
    upstream.on('error', onSocketClose);
    upstream.on('close', onSocketClose);
    client.on('error', onSocketClose);
    client.on('close', onSocketClose);
    // A 'data' listener does not restart a stream that was paused explicitly (an upgraded socket may be).
    client.resume();
    upstream.resume();
  }

  /** @internal The socket across the tunnel from `socket`. */
  peerOf(socket: Duplex): Duplex {
    return socket === this.client ? this.upstream : this.client;
  }

  /** Sends the handshake (head bytes as Node read them, so latin1) and what the client sent after it, in one write. */
  start(handshake: string, head: Buffer): void {
    const bytes = Buffer.from(handshake, 'latin1');
    this.upstream.write(head.length === 0 ? bytes : Buffer.concat([bytes, head]));
    // A client that sent its head and FIN while the backend connection opened has ended already.
    if (this.client.readableEnded) this.upstream.end();
  }

  /** The backend must answer the handshake within `ms`, else `onTimeout` runs. */
  limitAnswer(ms: number, onTimeout: () => void): void {
    this.answerTimer = setTimeout(onTimeout, ms);
  }

  /** Stops forwarding (the proxy is about to write frames of its own); close handling stays. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    clearTimeout(this.answerTimer);
    this.upstream.off('data', upstreamData);
    this.client.off('data', clientData);
    this.client.off('drain', drained);
    this.upstream.off('drain', drained);
    this.upstream.off('end', ended);
    this.client.off('end', ended);
  }

  /** Detaches and drops this tunnel's close handling: the caller now owns both sockets. */
  release(): void {
    this.detach();
    this.closed = true;
    for (const socket of [this.upstream, this.client]) {
      socket.off('error', onSocketClose);
      socket.off('close', onSocketClose);
      (socket as TunnelSocket)[TUNNEL] = undefined;
    }
  }

  /** @internal Bytes from the backend, to the client. */
  fromUpstream(chunk: Buffer): void {
    if (this.answerTimer !== undefined) {
      clearTimeout(this.answerTimer);
      this.answerTimer = undefined;
    }
    const first = this.status === undefined;
    if (first) this.status = statusOfHead(chunk);
    if (this.onAnswer !== undefined) {
      const onAnswer = this.onAnswer;
      this.onAnswer = undefined;
      onAnswer(chunk);
    }
    if (!this.client.write(chunk)) this.upstream.pause();
    if (first && this.status !== 101) {
      // No WebSocket (a 404, say): the answer reaches the client, nothing more the client sends
      // goes to the backend, which gets our FIN and ends the connection once it has answered.
      this.client.off('data', clientData);
      this.client.on('data', ignore);
      this.upstream.end();
    }
    // Only a switch to the WebSocket protocol makes the rest a byte stream for the pipe.
    if (first && this.handover !== undefined) {
      if (this.status === 101) awaitPipe(this);
      else this.handover = undefined;
    }
  }

  /**
   * @internal Gives both sockets to the native pipe if nothing is queued on either (a byte Node
   * holds in a stream buffer would be lost): 'later' when something is. A tunnel that cannot go
   * ('never') stays on its sockets.
   */
  offerToPipe(): 'done' | 'later' | 'never' {
    const handover = this.handover;
    if (handover === undefined) return 'never';
    const { client, upstream } = this;
    if (this.closed || this.detached || !isSocket(client) || client.readableEnded || upstream.readableEnded) {
      this.handover = undefined;
      return 'never';
    }
    const queued =
      client.writableLength > 0 ||
      upstream.writableLength > 0 ||
      client.readableLength > 0 ||
      upstream.readableLength > 0;
    if (queued) return 'later';
    this.handover = undefined;
    this.release();
    const piped = new PipedTunnel(this.room, this.backendId, handover.pipe, this.onClose);
    piped.answered(101);
    const id = handover.pipe.adopt(client, upstream, handover.idleMs, () => piped.pipeClosed());
    if (id === undefined) {
      this.closed = false;
      this.reattach();
      return 'never';
    }
    piped.id = id;
    handover.replace(this, piped);
    return 'done';
  }

  /**
   * Closes as both peers expect: a close frame with `code` each way after a 101, then both
   * sockets end; an upgrade still waiting for its answer gets an HTTP error instead, and one
   * answered otherwise (a 404, say) just ends.
   */
  closeWith(code: number): void {
    if (this.closed) return;
    if (this.status === 101) closeTunnel(this, code);
    else if (this.status !== undefined) this.close();
    else {
      this.detach();
      replyErrorOnSocket(this.client, unansweredError(code));
      this.upstream.destroy();
    }
  }

  /** Closes both sockets now. */
  destroy(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  /** @internal One side ended: both close if the other has not ended within `halfCloseMs`. */
  halfClosed(): void {
    if (this.halfTimer !== undefined || this.halfCloseMs <= 0 || this.closed) return;
    this.halfTimer = setTimeout(() => this.destroy(), this.halfCloseMs);
    this.halfTimer.unref();
  }

  close(): void {
    fresh.delete(this);
    due.delete(this);
    clearTimeout(this.halfTimer);
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.answerTimer);
    this.onClose(this);
    this.upstream.destroy();
    // What the backend sent last (often its close frame) still reaches a client slow to read.
    if (this.client.writableLength > 0 && !this.client.destroyed) endThenDestroy(this.client);
    else this.client.destroy();
  }
}
