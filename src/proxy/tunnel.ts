// One proxied WebSocket after its handshake was sent: bytes both ways with back-pressure, ends
// passed on, and one close for both sockets. Hand-rolled instead of two `pipe()` calls: a tunnel
// lives for hours and there are many, so it keeps a handful of listeners and nothing else.

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Tunnel } from './connections.js';
import { endThenDestroy } from './reply.js';

export class ByteTunnel implements Tunnel {
  private closed = false;
  private detached = false;
  private answered = false;
  /** Waits for the backend's first bytes (its handshake answer); cleared when they come. */
  private answerTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly room: string | null,
    readonly backendId: string,
    readonly client: Duplex,
    readonly upstream: Socket,
    private readonly onClose: (tunnel: ByteTunnel) => void,
    /** Called with the backend's first chunk (the handshake answer). */
    private readonly onAnswer?: (first: Buffer) => void,
  ) {
    upstream.on('data', this.fromUpstream);
    client.on('data', this.fromClient);
    client.on('drain', this.resumeUpstream);
    upstream.on('drain', this.resumeClient);
    upstream.on('end', this.upstreamEnded);
    client.on('end', this.clientEnded);
    upstream.on('error', this.close);
    upstream.on('close', this.close);
    client.on('error', this.close);
    client.on('close', this.close);
    // A 'data' listener does not restart a stream that was paused explicitly (an upgraded socket may be).
    client.resume();
    upstream.resume();
  }

  /** Sends the handshake (head bytes as Node read them, so latin1) and what the client sent after it, in one write. */
  start(handshake: string, head: Buffer): void {
    const bytes = Buffer.from(handshake, 'latin1');
    this.upstream.write(head.length === 0 ? bytes : Buffer.concat([bytes, head]));
    // A client that sent its head and FIN while the backend connection opened has ended already.
    if (this.client.readableEnded) this.clientEnded();
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
    this.upstream.off('data', this.fromUpstream);
    this.client.off('data', this.fromClient);
    this.client.off('drain', this.resumeUpstream);
    this.upstream.off('drain', this.resumeClient);
    this.upstream.off('end', this.upstreamEnded);
    this.client.off('end', this.clientEnded);
  }

  /** Detaches and drops this tunnel's close handling: the caller now owns both sockets. */
  release(): void {
    this.detach();
    this.closed = true;
    for (const socket of [this.upstream, this.client]) {
      socket.off('error', this.close);
      socket.off('close', this.close);
    }
  }

  private readonly fromUpstream = (chunk: Buffer): void => {
    if (this.answerTimer !== undefined) {
      clearTimeout(this.answerTimer);
      this.answerTimer = undefined;
    }
    if (this.onAnswer !== undefined && !this.answered) {
      this.answered = true;
      this.onAnswer(chunk);
    }
    if (!this.client.write(chunk)) this.upstream.pause();
  };

  private readonly fromClient = (chunk: Buffer): void => {
    if (!this.upstream.write(chunk)) this.client.pause();
  };

  private readonly resumeUpstream = (): void => {
    this.upstream.resume();
  };

  private readonly resumeClient = (): void => {
    this.client.resume();
  };

  private readonly upstreamEnded = (): void => {
    this.client.end();
  };

  private readonly clientEnded = (): void => {
    this.upstream.end();
  };

  readonly close = (): void => {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.answerTimer);
    this.onClose(this);
    this.upstream.destroy();
    // What the backend sent last (often its close frame) still reaches a client slow to read.
    if (this.client.writableLength > 0 && !this.client.destroyed) endThenDestroy(this.client);
    else this.client.destroy();
  };
}
