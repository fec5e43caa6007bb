// One client TCP connection on the proxy's listener: bytes go through llhttp (RequestParser), each
// request becomes a ClientExchange, and exchanges are answered one at a time in arrival order
// (pipelined requests wait, with reading paused). An upgrade hands the socket over whole.

import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { ClientExchange, ClientRequest, type ExchangeOwner } from './client-exchange.js';
import { endThenDestroy, lingerThenDestroy, replyErrorOnSocket } from './reply.js';
import { type ParsedHead, type ParseError, type ParserEvents, RequestParser } from './request-parser.js';

export interface ConnectionHandler {
  /** A request's turn has come: answer it through the exchange. */
  request(exchange: ClientExchange): void;
  /** An upgrade request: from here the socket belongs to the handler; `head` is what followed it. */
  upgrade(request: ClientRequest, socket: Socket, head: Buffer): void;
  /** The connection is closed and forgotten. */
  closed(connection: ClientConnection): void;
  /** A request was refused before it had a turn (bad HTTP, too large, too slow, CONNECT). */
  refused(code: ErrorCode): void;
}

/** A client connection's limits, in sweep ticks (see ProxyServer); 0 for none. */
export interface TickLimits {
  /** Idle between requests. */
  keepAlive: number;
  /** From a head's first byte to its end. */
  head: number;
  /** With response bytes waiting, none of them taken. */
  send: number;
}

const CONNECTION = Symbol('connection');
type ConnectedSocket = Socket & { [CONNECTION]?: ClientConnection };

// Socket listeners shared by all connections (`this` is the socket), so a connection allocates
// no closures of its own.

function onSocketData(this: ConnectedSocket, data: Buffer): void {
  this[CONNECTION]?.data(data);
}

function onSocketEnd(this: ConnectedSocket): void {
  this[CONNECTION]?.clientEnd();
}

function onSocketError(this: ConnectedSocket): void {
  this.destroy();
}

function onSocketClose(this: ConnectedSocket): void {
  this[CONNECTION]?.closed();
}

export class ClientConnection implements ExchangeOwner, ParserEvents {
  private readonly parser: RequestParser;
  /** The exchange being answered. */
  private current: ClientExchange | undefined;
  /** Pipelined exchanges waiting for their turn. */
  private readonly waiting: ClientExchange[] = [];
  /** The exchange whose request is being parsed. */
  private reading: ClientExchange | undefined;
  /** An upgrade request, with the bytes after its head, once llhttp stopped at it. */
  private upgradeHead: Buffer | undefined;
  private upgradeRequest: ClientRequest | undefined;
  private clientEnded = false;
  private gone = false;
  private paused = false;
  private shuttingDown = false;
  /** Bytes llhttp refused after whole requests: their error answer, once those are answered. */
  private refusal: ErrorCode | undefined;
  /** Sweep ticks (see ProxyServer) since the connection became idle or a head began. */
  idleTicks = 0;
  headTicks = -1;
  /** Sweep ticks with response bytes waiting and none taken, and how many waited at the last tick. */
  private sendTicks = 0;
  private waitingBytes = 0;

  constructor(
    readonly socket: Socket,
    private readonly handler: ConnectionHandler,
  ) {
    this.parser = new RequestParser(this);
    (socket as ConnectedSocket)[CONNECTION] = this;
    // llhttp reads the socket in C++ when it can; else bytes come through 'data'.
    if (!this.parser.consume(socket)) socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
  }

  get closing(): boolean {
    return this.shuttingDown || this.clientEnded;
  }

  /** No request is in flight or being read. */
  get idle(): boolean {
    return this.current === undefined && this.reading === undefined && !this.gone;
  }

  /** Graceful close: idle now, else after the current response. */
  shutdown(): void {
    this.shuttingDown = true;
    if (this.idle) this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * One sweep tick (the listener runs one a second, rather than a timer per request): closes a
   * connection whose client took none of the response bytes waiting for it for more than
   * `limits.send`, or idle for more than `limits.keepAlive`, and answers 408 to a head that took
   * more than `limits.head`.
   */
  tick(limits: TickLimits): void {
    if (this.gone) return;
    const waiting = this.socket.writableLength;
    if (waiting > 0) {
      // A write completes as the kernel takes it: an unchanged amount waiting is no progress.
      if (waiting !== this.waitingBytes) this.sendTicks = 0;
      else if (++this.sendTicks > limits.send && limits.send > 0) {
        this.socket.destroy();
        return;
      }
    } else this.sendTicks = 0;
    this.waitingBytes = waiting;
    // A pipelined head waits while the request before it is answered: its time starts after.
    if (this.headTicks >= 0 && this.current === undefined) {
      if (++this.headTicks > limits.head && limits.head > 0) this.failRequest('ROOMRING_E_REQUEST_TIMEOUT');
      return;
    }
    // A connection whose last response is still being taken is not idle yet.
    if (waiting > 0) this.idleTicks = 0;
    else if (this.idle && this.waiting.length === 0 && ++this.idleTicks > limits.keepAlive)
      this.socket.destroy();
  }

  // Parser events (inside execute()): they only record, the exchanges start after execute returns.

  /** @internal ParserEvents */
  begin(): void {
    this.headTicks = 0;
  }

  /** @internal ParserEvents */
  head(head: ParsedHead): boolean {
    this.headTicks = -1;
    const request = new ClientRequest(head, this.socket);
    if (head.upgrade) {
      // llhttp stops after this head: what follows belongs to the upgraded protocol.
      this.upgradeRequest = request;
      return true;
    }
    const exchange = new ClientExchange(request, this);
    this.reading = exchange;
    this.waiting.push(exchange);
    return false;
  }

  /** @internal ParserEvents */
  body(chunk: Buffer): void {
    this.reading?.pushBody(chunk);
  }

  /** @internal ParserEvents */
  end(): void {
    const exchange = this.reading;
    this.reading = undefined;
    exchange?.endBody();
  }

  /** @internal ParserEvents: llhttp parsed a read of the consumed socket. */
  executed(result: number | ParseError): void {
    this.afterExecute(result, undefined);
  }

  /** The head being read took too long before this connection came here: 408 now. */
  timeOutHead(): void {
    if (!this.gone && this.headTicks >= 0 && this.current === undefined)
      this.failRequest('ROOMRING_E_REQUEST_TIMEOUT');
  }

  // Socket events.

  /**
   * @internal Bytes from 'data' (a socket llhttp could not consume), or those the native pipe
   * read before it handed the connection over.
   */
  data(data: Buffer): void {
    this.afterExecute(this.parser.execute(data), data);
  }

  /** After llhttp parsed a read: errors answered, an upgrade set aside, waiting requests started. */
  private afterExecute(result: number | ParseError, data: Buffer | undefined): void {
    if (typeof result !== 'number') {
      this.parseError(result);
      return;
    }
    if (this.upgradeRequest !== undefined && this.upgradeHead === undefined) {
      this.upgradeHead = (data ?? this.parser.currentBuffer()).subarray(result);
    }
    this.next();
    // An upgrade behind a request in flight waits for its turn without reading; one with nothing
    // before it was handed over by next() with reading untouched (no stop and restart).
    if (this.upgradeRequest !== undefined) this.stopReading();
    this.updateFlow();
  }

  /** No more requests are read from this socket. */
  private stopReading(): void {
    this.socket.off('data', onSocketData);
    if (this.parser.consuming) this.parser.setReading(false);
    else this.socket.pause();
  }

  /**
   * The client closed its side. Idle, the connection ends; with a request in flight it is taken
   * as gone, as node:http and nginx take it, so a vanished client frees its backend exchange.
   */
  clientEnd(): void {
    this.clientEnded = true;
    if (this.upgradeRequest !== undefined) return;
    if (this.idle && this.waiting.length === 0 && this.parser.finish() === undefined) this.socket.end();
    else this.socket.destroy();
  }

  /** @internal The socket closed. */
  closed(): void {
    if (this.gone) return;
    this.gone = true;
    this.parser.release();
    const current = this.current;
    this.current = undefined;
    current?.abort();
    for (const exchange of this.waiting.splice(0)) exchange.abort();
    this.reading = undefined;
    this.handler.closed(this);
  }

  /** llhttp refused the bytes: a coded 4xx if no response has begun, then the connection closes. */
  private parseError(error: ParseError): void {
    this.failRequest(
      error.code === 'HPE_HEADER_OVERFLOW' ? 'ROOMRING_E_HEADERS_TOO_LARGE' : 'ROOMRING_E_BAD_REQUEST',
    );
  }

  /**
   * Refuses the request being read (or the bytes where a head should start) with `code`, and
   * nothing after it is read. Requests read whole before it are answered first, in order, as the
   * native pipe answers them.
   */
  private failRequest(code: ErrorCode): void {
    this.headTicks = -1;
    this.handler.refused(code);
    const bad = this.reading;
    this.reading = undefined;
    this.stopReading();
    if (bad !== undefined) {
      const at = this.waiting.indexOf(bad);
      if (at !== -1) this.waiting.splice(at, 1);
      if (bad === this.current) {
        this.current = undefined;
        if (bad.headersSent) {
          bad.abort();
          this.socket.destroy();
          return;
        }
      }
      bad.abort();
    }
    if (this.current !== undefined || this.waiting.length > 0) {
      this.refusal = code;
      this.next();
      return;
    }
    replyErrorOnSocket(this.socket, code);
  }

  /** Starts the next exchange if none is being answered. */
  private next(): void {
    while (this.current === undefined && !this.gone) {
      const exchange = this.waiting.shift();
      if (exchange === undefined) break;
      if (exchange.done) continue;
      this.current = exchange;
      this.handler.request(exchange);
    }
    if (this.current === undefined && this.upgradeRequest !== undefined && this.upgradeHead !== undefined) {
      this.handOver(this.upgradeRequest, this.upgradeHead);
    }
  }

  /** The socket leaves this connection for the upgrade handler. */
  private handOver(request: ClientRequest, head: Buffer): void {
    this.gone = true;
    this.upgradeRequest = undefined;
    this.upgradeHead = undefined;
    const { socket } = this;
    socket.off('data', onSocketData);
    socket.off('end', onSocketEnd);
    socket.off('error', onSocketError);
    socket.off('close', onSocketClose);
    (socket as ConnectedSocket)[CONNECTION] = undefined;
    if (this.parser.consuming) {
      // Reads go back to the JS stream, which buffers them until the new owner listens. (Its
      // own read request is still pending, so the handle is restarted here, not through read().)
      this.parser.setReading(true);
      this.parser.unconsume();
    }
    this.parser.release();
    this.handler.closed(this);
    if (request.method === 'CONNECT') {
      this.handler.refused('ROOMRING_E_METHOD_NOT_ALLOWED');
      socket.on('error', () => socket.destroy());
      replyErrorOnSocket(socket, 'ROOMRING_E_METHOD_NOT_ALLOWED');
      return;
    }
    this.handler.upgrade(request, socket, head);
  }

  // ExchangeOwner.

  /** Reads while nothing waits and the body being read is not backed up. */
  updateFlow(): void {
    if (this.gone) return;
    const hold =
      this.waiting.length > 0 ||
      this.upgradeRequest !== undefined ||
      this.refusal !== undefined ||
      this.reading?.backedUp === true;
    if (hold === this.paused) return;
    this.paused = hold;
    if (this.parser.consuming) this.parser.setReading(!hold);
    else if (hold) this.socket.pause();
    else this.socket.resume();
  }

  finished(exchange: ClientExchange): void {
    if (exchange !== this.current) {
      // Answered before its turn (an error reply to a waiting request cannot happen; kept safe).
      return;
    }
    this.current = undefined;
    if (exchange.closeAfter || this.clientEnded || this.shuttingDown) {
      this.closeAfterWrites();
      return;
    }
    this.idleTicks = 0;
    if (this.refusal !== undefined && this.waiting.length === 0) {
      replyErrorOnSocket(this.socket, this.refusal);
      return;
    }
    this.next();
    this.updateFlow();
  }

  /**
   * Ends the connection once what was written is sent; a client that never closes is cut. A
   * request body still arriving is read and dropped until the client closes (at most the linger
   * time): closing with unread bytes would reset the connection and could destroy the response
   * before the client read it.
   */
  private closeAfterWrites(): void {
    if (this.gone) return;
    const unread = this.reading !== undefined;
    for (const exchange of this.waiting.splice(0)) exchange.abort();
    this.reading = undefined;
    if (this.socket.destroyed) return;
    if (!unread) {
      this.stopReading();
      endThenDestroy(this.socket);
      return;
    }
    this.socket.off('data', onSocketData);
    if (this.parser.consuming) {
      this.parser.setReading(true);
      this.parser.unconsume();
    }
    lingerThenDestroy(this.socket);
  }
}
