// One proxied WebSocket after its handshake was sent: bytes both ways with back-pressure, ends
// passed on, and one close for both sockets. Hand-rolled instead of two `pipe()` calls: a tunnel
// lives for hours and there are many, so it keeps a handful of listeners and nothing else: the
// listeners are shared by all tunnels and find theirs through the socket.

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Tunnel } from './connections.js';
import { endThenDestroy } from './reply.js';

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

/** A socket drained: the other side may send again. */
function drained(this: Duplex): void {
  tunnelOf(this)?.peerOf(this).resume();
}

/** A socket ended: the end is passed on. */
function ended(this: Duplex): void {
  tunnelOf(this)?.peerOf(this).end();
}

function onSocketClose(this: Duplex): void {
  tunnelOf(this)?.close();
}

export class ByteTunnel implements Tunnel {
  private closed = false;
  private detached = false;
  /** Waits for the backend's first bytes (its handshake answer); cleared when they come. */
  private answerTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly room: string | null,
    readonly backendId: string,
    readonly client: Duplex,
    readonly upstream: Socket,
    private readonly onClose: (tunnel: ByteTunnel) => void,
    /** Called with the backend's first chunk (the handshake answer). */
    private onAnswer?: (first: Buffer) => void,
  ) {
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
    if (this.onAnswer !== undefined) {
      const onAnswer = this.onAnswer;
      this.onAnswer = undefined;
      onAnswer(chunk);
    }
    if (!this.client.write(chunk)) this.upstream.pause();
  }

  close(): void {
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
