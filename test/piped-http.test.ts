// HTTP requests the native pipe forwards itself (native/pipe.cc, PipedExchange in
// src/proxy/http-forward.ts): a real proxy process, raw TCP clients, and raw backends whose
// responses are written byte by byte, so framing, pooling and keep-alive are visible.

import net from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  addBackend,
  connectRaw,
  onCleanup,
  pipeLoopSockets,
  ringSizeOf,
  socketCount,
  startBackend,
  startBackends,
  startProxy,
  startRedis,
  type TestProxy,
  waitForSocketCount,
  waitUntil,
} from './helpers.js';

/** A request head as the raw backend saw it, with the number of the connection it came on. */
interface Seen {
  connection: number;
  head: string;
}

/**
 * A backend that reads bodiless request heads one after another on each connection and answers
 * each with `respond(head, nth on its connection)`: the raw response, the raw response after which
 * the connection ends (`{ end }`), or 'reset' to reset the connection instead.
 */
async function rawBackend(
  respond: (head: string, nth: number) => string | { end: string } | 'reset',
): Promise<{ port: number; seen: Seen[]; connections: () => number }> {
  const seen: Seen[] = [];
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const connection = ++connections;
    let nth = 0;
    let buffered = '';
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end !== -1; end = buffered.indexOf('\r\n\r\n')) {
        const head = buffered.slice(0, end + 4);
        buffered = buffered.slice(end + 4);
        seen.push({ connection, head });
        const answer = respond(head, ++nth);
        if (answer === 'reset') {
          socket.resetAndDestroy();
          return;
        }
        if (typeof answer === 'string') socket.write(answer, 'latin1');
        else socket.end(answer.end, 'latin1');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as net.AddressInfo).port, seen, connections: () => connections };
}

const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

async function proxyTo(port: number, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  return startProxy({ backends: [{ id: 'b1', url: `http://127.0.0.1:${port}` }], ...extra });
}

interface Response {
  head: string;
  /** The body as it came. */
  body: string;
  /** The body's data (de-chunked). */
  data: string;
}

/** The data of a chunked body. */
function dechunk(body: string): string {
  let data = '';
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    const size = Number.parseInt(body.slice(at, eol), 16);
    if (!(size > 0)) return data;
    data += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

/**
 * Reads `count` responses from a raw client, framed by Content-Length or chunked: their heads and
 * bodies as latin1 text (a chunked body as its raw chunks).
 */
function readResponses(client: net.Socket, count: number): Promise<Response[]> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const out: Response[] = [];
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('latin1');
      for (;;) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buffered.slice(0, end + 4);
        let bodyEnd: number;
        const length = /\r\ncontent-length: (\d+)/i.exec(head);
        if (length !== null) bodyEnd = end + 4 + Number(length[1]);
        else if (/\r\ntransfer-encoding: chunked/i.test(head)) {
          const last = buffered.indexOf('\r\n0\r\n\r\n', end + 4 - 2);
          if (last === -1) return;
          bodyEnd = last + 7;
        } else bodyEnd = end + 4;
        if (buffered.length < bodyEnd) return;
        const body = buffered.slice(end + 4, bodyEnd);
        out.push({ head, body, data: length === null ? dechunk(body) : body });
        buffered = buffered.slice(bodyEnd);
        if (out.length === count) {
          client.off('data', onData);
          resolve(out);
          return;
        }
      }
    };
    client.on('data', onData);
    client.once('close', () => reject(new Error(`closed after ${out.length} of ${count} responses`)));
  });
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

/**
 * Everything a raw client receives until the proxy ends its connection (or resets it), as
 * latin1 text.
 */
function textUntilEnd(client: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    client.on('data', (chunk: Buffer) => {
      got += chunk.toString('latin1');
    });
    client.on('error', () => undefined);
    client.once('end', () => resolve(got));
    client.once('close', () => resolve(got));
  });
}

describe('HTTP in the native pipe', () => {
  it('serves pipelined keep-alive requests on one connection without a Node socket, on one pooled backend connection', async () => {
    const backend = await rawBackend(() => OK);
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    const answers = readResponses(client, 3);
    client.write(get('/rooms/a') + get('/rooms/b') + get('/rooms/c'));
    const responses = await answers;
    expect(responses.map((r) => r.head.split('\r\n')[0])).toEqual(Array(3).fill('HTTP/1.1 200 OK'));
    expect(responses.map((r) => r.body)).toEqual(['ok', 'ok', 'ok']);
    expect(backend.seen.map((s) => s.head.split('\r\n')[0])).toEqual([
      'GET /rooms/a HTTP/1.1',
      'GET /rooms/b HTTP/1.1',
      'GET /rooms/c HTTP/1.1',
    ]);
    expect(backend.connections()).toBe(1);
    // The client's connection and the pooled backend connection are the pipe's main loop's, with
    // the listening socket.
    await waitUntil(() => pipeLoopSockets(proxy.child.pid as number).main === 3, 3000);
    expect(pipeLoopSockets(proxy.child.pid as number)).toEqual({ main: 3, thread: 0 });
    const again = readResponses(client, 1);
    client.write(get('/rooms/d'));
    expect((await again)[0]?.body).toBe('ok');
    expect(backend.connections()).toBe(1);
  });

  it("rewrites the backend's response as the Node path does: interim 1xx skipped, hop-by-hop fields dropped, bodies of unknown length re-chunked", async () => {
    const backend = await rawBackend((head) => {
      if (head.startsWith('GET /rooms/chunked '))
        return (
          'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n' +
          'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\n' +
          'Keep-Alive: timeout=5\r\nX-End: kept\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n' +
          '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n'
        );
      if (head.startsWith('GET /rooms/close '))
        return { end: 'HTTP/1.0 200 OK\r\nX-Kind: close\r\n\r\nuntil the end' };
      return 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n';
    });
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    const chunked = readResponses(client, 1);
    client.write(get('/rooms/chunked'));
    const [first] = await chunked;
    expect(first?.head).toBe(
      'HTTP/1.1 200 OK\r\nX-End: kept\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n',
    );
    expect(first?.body).toBe('5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');

    // A close-delimited body reaches the client chunked, and the client's connection stays open.
    const closing = readResponses(client, 1);
    client.write(get('/rooms/close'));
    const [second] = await closing;
    expect(second?.head).toMatch(
      /^HTTP\/1\.1 200 OK\r\nX-Kind: close\r\nDate: .+ GMT\r\nTransfer-Encoding: chunked\r\n\r\n$/,
    );
    expect(second?.body).toBe('d\r\nuntil the end\r\n0\r\n\r\n');
    const empty = readResponses(client, 1);
    client.write(get('/rooms/none'));
    expect((await empty)[0]?.head).toMatch(/^HTTP\/1\.1 204 No Content\r\nContent-Length: 0\r\nDate: /);
    expect(backend.connections()).toBe(2);
  });

  it('sends a request again on a new connection when its pooled one was reset, and fails over from a refusing owner', async () => {
    // Each backend connection answers its first request and resets at its second.
    const backend = await rawBackend((_head, nth) => (nth === 1 ? OK : 'reset'));
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    for (const room of ['a', 'b', 'c']) {
      const answer = readResponses(client, 1);
      client.write(get(`/rooms/${room}`));
      expect((await answer)[0]?.body).toBe('ok');
    }
    // b and c each went out on the pooled connection, were reset, and went again on a new one.
    expect(backend.connections()).toBe(3);
    expect(backend.seen.map((s) => `${s.connection} ${s.head.split(' ')[1]}`)).toEqual([
      '1 /rooms/a',
      '1 /rooms/b',
      '2 /rooms/b',
      '2 /rooms/c',
      '3 /rooms/c',
    ]);
  });

  it('fails over to the next backend when the owner refuses, and answers 502 on the same connection when none is left', async () => {
    const alive = await startBackend('b2');
    const refusing = net.createServer();
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    const deadPort = (refusing.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => refusing.close(() => resolve()));
    const proxy = await startProxy({
      backends: [
        { id: 'b1', url: `http://127.0.0.1:${deadPort}` },
        { id: 'b2', url: alive.url },
      ],
    });
    const client = await connectRaw(proxy.port);
    const answers = readResponses(client, 20);
    for (let i = 0; i < 20; i++) client.write(get(`/rooms/r${i}`));
    const responses = await answers;
    expect(responses.map((r) => r.head.split('\r\n')[0])).toEqual(Array(20).fill('HTTP/1.1 200 OK'));
    expect(new Set(responses.map((r) => JSON.parse(r.data).server))).toEqual(new Set(['b2']));

    await alive.kill();
    const failed = readResponses(client, 1);
    client.write(get('/rooms/r1'));
    const [error] = await failed;
    expect(error?.head).toMatch(/^HTTP\/1\.1 502 /);
    expect(error?.data).toContain('ROOMRING_E_BACKEND_UNREACHABLE');
    const missing = readResponses(client, 1);
    client.write(get('/no-room-here'));
    const [rejected] = await missing;
    expect(rejected?.head).toMatch(/^HTTP\/1\.1 400 /);
    expect(rejected?.data).toContain('ROOMRING_E_NO_ROOM');
  });

  it.each(['native', 'js'])(
    'answers a HEAD request with an error head and no body, so the next response on the connection is read whole (websocket.pipe %s)',
    async (pipe) => {
      const refusing = net.createServer();
      await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
      const deadPort = (refusing.address() as net.AddressInfo).port;
      await new Promise<void>((resolve) => refusing.close(() => resolve()));
      const proxy = await proxyTo(deadPort, { websocket: { pipe } });
      const client = await connectRaw(proxy.port);
      let text = '';
      client.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
      });
      client.write(
        `HEAD /rooms/a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n${get('/nope')}`,
      );
      await waitUntil(() => text.endsWith('}'), 5000);
      const [first, second, third, body, ...rest] = text.split('\r\n\r\n');
      expect(first).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*Content-Length: \d+/);
      expect(second).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*Content-Length: \d+/);
      expect(third).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      expect(JSON.parse(body ?? '')).toMatchObject({ error: { code: 'ROOMRING_E_NO_ROOM' } });
      expect(rest).toEqual([]);
      // The connection is still open for the next request.
      const next = readResponses(client, 1);
      client.write(get('/nope'));
      expect((await next)[0]?.head).toMatch(/^HTTP\/1\.1 400 /);
    },
  );

  it.each(['native', 'js'])(
    'sends a repeated Content-Length once, and answers 502 to a transfer coding other than chunked (websocket.pipe %s)',
    async (pipe) => {
      const backend = await rawBackend((head) => {
        if (head.startsWith('GET /rooms/twice '))
          return 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok';
        if (head.startsWith('GET /rooms/gzip '))
          return { end: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef' };
        return { end: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' };
      });
      const proxy = await proxyTo(backend.port, { websocket: { pipe } });
      const client = await connectRaw(proxy.port);
      const answers = readResponses(client, 3);
      client.write(get('/rooms/twice') + get('/rooms/gzip') + get('/rooms/gzip-chunked'));
      const [twice, gzip, gzipChunked] = await answers;
      expect(twice?.head.match(/content-length/gi)).toEqual(['Content-Length']);
      expect(twice?.body).toBe('ok');
      expect(gzip?.head).toMatch(/^HTTP\/1\.1 502 /);
      expect(gzipChunked?.head).toMatch(/^HTTP\/1\.1 502 /);
    },
  );

  it.each(['native', 'js'])(
    'serves an upgrade that is not a WebSocket handshake (h2c, HEAD, a body) as plain HTTP and closes the connection after it (websocket.pipe %s)',
    async (pipe) => {
      const backend = await rawBackend(() => OK);
      const proxy = await proxyTo(backend.port, { websocket: { pipe } });
      const handshake =
        'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
      const requests = [
        'GET /rooms/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n',
        `HEAD /rooms/a HTTP/1.1\r\nHost: x\r\n${handshake}\r\n`,
        `GET /rooms/a HTTP/1.1\r\nHost: x\r\n${handshake}Content-Length: 3\r\n\r\nabc`,
      ];
      for (const [i, text] of requests.entries()) {
        const client = await connectRaw(proxy.port);
        const got = textUntilEnd(client);
        // A request after it on the same connection is not read: the connection ends first.
        client.write(`${text}${get('/rooms/other')}`);
        expect(await got).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*Connection: close\r\n/);
        expect(backend.seen.length).toBe(i + 1);
      }
      const [h2c, head, body] = backend.seen.map((s) => s.head);
      expect(h2c).toMatch(/^GET \/rooms\/a HTTP\/1\.1\r\n/);
      expect(h2c).not.toMatch(/\r\nupgrade:/i);
      expect(h2c).toMatch(/\r\nX-Forwarded-For: 6\.6\.6\.6, 127\.0\.0\.1\r\n/i);
      expect(head).toMatch(/^HEAD \/rooms\/a HTTP\/1\.1\r\n/);
      expect(body).toMatch(/^GET \/rooms\/a HTTP\/1\.1\r\n[\s\S]*Content-Length: 3\r\n/i);
      expect(body).not.toMatch(/\r\nupgrade:/i);
    },
  );

  it.each(['native', 'js'])(
    'on shutdown answers an upgrade still waiting for its backend with 503, and ends one the backend answered 404 without close frames (websocket.pipe %s)',
    async (pipe) => {
      const backend = await rawBackend((head) =>
        head.startsWith('GET /rooms/missing ')
          ? 'HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope'
          : '',
      );
      const proxy = await proxyTo(backend.port, { websocket: { pipe } });
      const handshake = (path: string): string =>
        `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
      // The whole text the client got, once the proxy ended the connection.
      const open = async (path: string): Promise<{ text: Promise<string> }> => {
        const client = await connectRaw(proxy.port);
        const text = textUntilEnd(client);
        client.write(handshake(path));
        return { text };
      };
      const waiting = await open('/rooms/waiting');
      const missing = await open('/rooms/missing');
      await waitUntil(() => backend.seen.length === 2, 3000);
      await new Promise((resolve) => setTimeout(resolve, 200));
      proxy.child.kill('SIGTERM');
      expect(await waiting.text).toMatch(
        /^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*\r\n\r\n\{"error":\{"code":"ROOMRING_E_SHUTTING_DOWN"/,
      );
      expect(await missing.text).toBe('HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope');
      expect(await proxy.exited).toBe(0);
    },
  );

  it.each(['native', 'js'])(
    'answers the requests read whole before bytes it refuses, then the refusal (websocket.pipe %s)',
    async (pipe) => {
      const backend = await rawBackend(() => OK);
      const proxy = await proxyTo(backend.port, { websocket: { pipe } });
      for (const [bad, status] of [
        ['NOT HTTP AT ALL\r\n\r\n', 400],
        [`GET /rooms/c HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(17_000)}\r\n\r\n`, 431],
      ] as const) {
        const client = await connectRaw(proxy.port);
        const got = textUntilEnd(client);
        client.write(get('/rooms/a') + get('/rooms/b') + bad);
        const statuses = [...(await got).matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]));
        expect(statuses).toEqual([200, 200, status]);
      }
    },
  );

  it.each(['native', 'js'])(
    'passes on a refused WebSocket handshake (404) and ends the connection, sending the backend nothing after it (websocket.pipe %s)',
    async (pipe) => {
      const backend = await rawBackend(() => 'HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope');
      const proxy = await proxyTo(backend.port, { websocket: { pipe } });
      const client = await connectRaw(proxy.port);
      const text = textUntilEnd(client);
      client.write(
        'GET /rooms/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      await waitUntil(() => backend.seen.length === 1, 3000);
      await new Promise((resolve) => setTimeout(resolve, 100));
      client.write(get('/rooms/other'));
      expect(await text).toBe('HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope');
      expect(backend.seen.map((s) => s.head.split('\r\n')[0])).toEqual(['GET /rooms/a HTTP/1.1']);
    },
  );

  it.each(['native', 'js'])(
    'closes a WebSocket whose backend keeps its side open after the client ended, after websocket.halfCloseTimeout (websocket.pipe %s)',
    async (pipe) => {
      // A backend that answers 101 and never ends its side, even after the proxy's FIN.
      const sockets: net.Socket[] = [];
      let backendGotEnd = false;
      const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
        sockets.push(socket);
        socket.on('error', () => socket.destroy());
        socket.once('data', () =>
          socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
          ),
        );
        socket.on('end', () => {
          backendGotEnd = true;
        });
      });
      await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
      onCleanup(() => {
        for (const socket of sockets) socket.destroy();
        return new Promise<void>((resolve) => backend.close(() => resolve()));
      });
      const proxy = await proxyTo((backend.address() as net.AddressInfo).port, {
        websocket: { pipe, halfCloseTimeout: '1s' },
      });
      const pid = proxy.child.pid as number;
      const baseline = socketCount(pid);
      const client = await connectRaw(proxy.port);
      const text = textUntilEnd(client);
      client.write(
        'GET /rooms/a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      await waitUntil(() => sockets.length === 1, 3000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      client.end();
      await waitUntil(() => backendGotEnd, 3000);
      expect(socketCount(pid)).toBe(baseline + 2);
      // Within the limit and one sweep of the pipe (1 s), the proxy lets go of both sockets.
      expect(await text).toMatch(/^HTTP\/1\.1 101 /);
      await waitForSocketCount(pid, baseline, 4000);
    },
  );

  it('hands the connection to Node for a request with a body, between bodiless ones', async () => {
    const backend = await startBackend('b1');
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    const answers = readResponses(client, 3);
    client.write(
      `${get('/rooms/a')}POST /rooms/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello${get('/rooms/a')}`,
    );
    const responses = await answers;
    expect(responses.map((r) => r.head.split('\r\n')[0])).toEqual(Array(3).fill('HTTP/1.1 200 OK'));
    expect(JSON.parse(responses[1]?.data ?? '{}')).toMatchObject({ method: 'POST', body: 'hello' });
  });

  /**
   * Sends one request to a backend that holds it, stops the proxy, then lets `backendDoes` act on
   * the held backend connection: what the client got until the proxy ended its connection.
   */
  async function duringShutdown(backendDoes: (held: net.Socket) => void): Promise<{
    text: string;
    exitCode: number | null;
  }> {
    const held: net.Socket[] = [];
    const holding = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      socket.once('data', () => held.push(socket));
    });
    await new Promise<void>((resolve) => holding.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => holding.close(() => resolve())));
    const proxy = await proxyTo((holding.address() as net.AddressInfo).port);
    const client = await connectRaw(proxy.port);
    const text = textUntilEnd(client);
    client.write(get('/rooms/a'));
    await waitUntil(() => held.length === 1, 3000);
    proxy.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 300));
    backendDoes(held[0] as net.Socket);
    return { text: await text, exitCode: await proxy.exited };
  }

  it('finishes a request in flight on shutdown, telling its client that the connection closes, and then exits', async () => {
    const { text, exitCode } = await duringShutdown((held) => held.write(OK));
    expect(text).toMatch(
      /^HTTP\/1\.1 200 OK\r\nContent-Length: 2\r\nDate: .+\r\nConnection: close\r\n\r\nok$/,
    );
    expect(exitCode).toBe(0);
  });

  it('answers a request whose backend fails during shutdown with an error that says the connection closes', async () => {
    const { text, exitCode } = await duringShutdown((held) => held.resetAndDestroy());
    expect(text).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*Connection: close\r\n\r\n\{/);
    expect(exitCode).toBe(0);
  });

  it.each(['native', 'js'])(
    'drops a client that takes none of its responses for listen.sendTimeout, and keeps one that reads slowly (websocket.pipe %s)',
    async (pipe) => {
      const body = 'x'.repeat(60_000);
      const backend = await rawBackend(
        () => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      const listen = { host: '127.0.0.1', port: 0, keepAlive: '1s', sendTimeout: '2s' };
      const proxy = await proxyTo(backend.port, { listen, websocket: { pipe } });
      const requests = (count: number): string =>
        Array.from({ length: count }, (_, i) => get(`/rooms/r${i}`)).join('');

      // Takes nothing for over two seconds, with more waiting than the kernel's buffers hold: the
      // proxy lets go of the connection.
      const stalled = await connectRaw(proxy.port);
      stalled.pause();
      stalled.on('error', () => undefined);
      const closed = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
      stalled.write(requests(100));
      await new Promise((resolve) => setTimeout(resolve, 5000));
      let received = 0;
      stalled.on('data', (chunk: Buffer) => {
        received += chunk.length;
      });
      stalled.resume();
      await closed;
      expect(received).toBeLessThan(100 * body.length);

      // Takes a read's worth every 100 ms, for longer than both limits: it gets every response.
      // (The kernel's buffers make progress visible to the proxy only in steps, so the reads must
      // be well within the limit.)
      const slow = await connectRaw(proxy.port);
      const all = readResponses(slow, 30);
      slow.on('data', () => {
        slow.pause();
        setTimeout(() => slow.resume(), 100);
      });
      slow.write(requests(30));
      const responses = await all;
      expect(responses.map((r) => r.body.length)).toEqual(Array(30).fill(body.length));
    },
  );

  it('does not pool a backend connection that said close, answers 502 to a malformed response, and reads a head that comes in pieces', async () => {
    const backend = await rawBackend((head) => {
      if (head.startsWith('GET /rooms/close '))
        return 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok';
      if (head.startsWith('GET /rooms/bad ')) return 'HTTP/1.1 2x0 Nope\r\n\r\n';
      return OK;
    });
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    const ask = async (path: string): Promise<Response> => {
      const answer = readResponses(client, 1);
      client.write(get(path));
      return (await answer)[0] as Response;
    };
    expect((await ask('/rooms/close')).head).not.toContain('Connection');
    expect((await ask('/rooms/a')).body).toBe('ok');
    // The backend's `close` kept its connection out of the pool: the next request opened another.
    expect(backend.connections()).toBe(2);
    const bad = await ask('/rooms/bad');
    expect(bad.head).toMatch(/^HTTP\/1\.1 502 /);
    expect(bad.data).toContain('ROOMRING_E_BACKEND_UNREACHABLE');
    expect((await ask('/rooms/a')).body).toBe('ok');

    // A backend whose head comes in three writes, an interim response first.
    const slow = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      socket.once('data', () => {
        socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-');
        setTimeout(() => socket.write('Length: 5\r\n\r'), 100);
        setTimeout(() => socket.write('\nhello'), 200);
      });
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => slow.close(() => resolve())));
    const slowProxy = await proxyTo((slow.address() as net.AddressInfo).port);
    const slowClient = await connectRaw(slowProxy.port);
    const answer = readResponses(slowClient, 1);
    slowClient.write(get('/rooms/a'));
    const [pieced] = await answer;
    expect(pieced?.head).toMatch(/^HTTP\/1\.1 200 OK\r\nContent-Length: 5\r\nDate: /);
    expect(pieced?.body).toBe('hello');
  });

  it('forwards keep-alive requests whose rooms are placed through the Redis lease store, and lets go of a client reset meanwhile', async () => {
    const redis = await startRedis();
    const backends = await startBackends(['b1', 'b2']);
    for (const backend of backends) await addBackend(redis, 'rooms', backend);
    const proxy = await startProxy({
      registry: { redis: redis.url, cluster: 'rooms' },
      placement: { affinity: 'on' },
    });
    await waitUntil(() => ringSizeOf(proxy) === 2);
    const pid = proxy.child.pid as number;
    const before = socketCount(pid);
    // Each room's first request waits for the lease store while its connection is parked.
    const client = await connectRaw(proxy.port);
    const rooms = Array.from({ length: 10 }, (_, i) => `lease-${i}`);
    const first = readResponses(client, rooms.length);
    client.write(rooms.map((room) => get(`/rooms/${room}`)).join(''));
    const servers = (await first).map((r) => JSON.parse(r.data).server as string);
    expect(new Set(servers).size).toBeGreaterThan(0);
    const again = readResponses(client, rooms.length);
    client.write(rooms.map((room) => get(`/rooms/${room}`)).join(''));
    expect((await again).map((r) => JSON.parse(r.data).server)).toEqual(servers);

    // Reset while its room is being placed: nothing of it stays open.
    for (let i = 0; i < 5; i++) {
      const gone = await connectRaw(proxy.port);
      gone.write(get(`/rooms/gone-${i}`));
      gone.resetAndDestroy();
    }
    client.destroy();
    await waitForSocketCount(pid, before);
    const after = await connectRaw(proxy.port);
    const answer = readResponses(after, 1);
    after.write(get('/rooms/lease-0'));
    expect(JSON.parse((await answer)[0]?.data ?? '{}').server).toBe(servers[0]);
  });

  it('closes the connection after the response a client asked to close, with all of it delivered', async () => {
    const backend = await rawBackend(
      () => `HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(100000)}`,
    );
    const proxy = await proxyTo(backend.port);
    const client = await connectRaw(proxy.port);
    const chunks: Buffer[] = [];
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    client.write(get('/rooms/a', 'Connection: close\r\n'));
    await ended;
    const text = Buffer.concat(chunks).toString('latin1');
    expect(text).toMatch(
      /^HTTP\/1\.1 200 OK\r\nContent-Length: 100000\r\nDate: .+\r\nConnection: close\r\n\r\n/,
    );
    expect(text.endsWith('x'.repeat(100000))).toBe(true);
  });
});
