// The side facing clients (llhttp driven directly on plain TCP): pipelining, limits and timeouts
// of request heads, keep-alive, framing for HTTP/1.0 clients, 100-continue and methods that are
// not proxied. Real proxy process, real backends, raw sockets so every byte is ours.
import net, { type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  connectRaw,
  onCleanup,
  readAll,
  startBackends,
  startProxy,
  type TestProxy,
  waitUntil,
} from './helpers.js';

const ROOMS = { from: [{ path: '/rooms/:room' }, { query: 'room' }], onMissing: 'reject' };

async function proxyWith(extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const backends = await startBackends(['b1', 'b2', 'b3']);
  return startProxy({
    room: ROOMS,
    backends: backends.map((b) => ({ id: b.id, url: b.url })),
    ...extra,
  });
}

/** A body as sent, without chunked framing (the fixture answers small bodies in one chunk). */
function unchunked(body: string): string {
  return body.replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, '');
}

/** The responses in `text`, split at each status line, as [status, head, body] triples. */
function responses(text: string): { status: number; head: string; body: string }[] {
  return text
    .split(/(?=HTTP\/1\.1 \d{3} )/)
    .filter((part) => part !== '')
    .map((part) => {
      const end = part.indexOf('\r\n\r\n');
      return { status: Number(part.slice(9, 12)), head: part.slice(0, end), body: part.slice(end + 4) };
    });
}

describe('client connections', () => {
  it('answers pipelined requests in order, each from its own room’s backend', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    const reply = readAll(socket);
    const rooms = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
    // Every head in one write, the last one asking to close: llhttp parses them all at once.
    socket.write(
      rooms
        .map(
          (room, i) =>
            `GET /rooms/${room}?n=${i} HTTP/1.1\r\nHost: x\r\n${i === rooms.length - 1 ? 'Connection: close\r\n' : ''}\r\n`,
        )
        .join(''),
    );
    const answers = responses(await reply);
    expect(answers.map((a) => a.status)).toEqual(rooms.map(() => 200));
    const urls = answers.map((a) => (JSON.parse(unchunked(a.body)) as { url: string }).url);
    expect(urls).toEqual(rooms.map((room, i) => `/rooms/${room}?n=${i}`));
    // The same rooms asked one by one land where the pipelined ones did.
    for (let i = 0; i < rooms.length; i++) {
      const single = await connectRaw(proxy.port);
      const text = readAll(single);
      single.write(`GET /rooms/${rooms[i]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const servedBy = /x-served-by: (\S+)/i.exec(await text)?.[1];
      expect(answers[i]?.head).toContain(`x-served-by: ${servedBy}`);
    }
  });

  it('holds an upgrade sent behind a request in flight until that request is answered', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.write(
      'GET /slow?ms=300&room=r1 HTTP/1.1\r\nHost: x\r\n\r\n' +
        'GET /rooms/r1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    await waitUntil(async () => text.includes('HTTP/1.1 101 '), 3000);
    const first = text.indexOf('HTTP/1.1 200 ');
    expect(first).toBe(0);
    expect(text.indexOf('HTTP/1.1 101 ')).toBeGreaterThan(first);
    expect(proxy.child.exitCode).toBeNull();
  });

  it('reads a request that arrives a few bytes at a time, head and body', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    socket.setNoDelay(true);
    const reply = readAll(socket);
    // Over 32 fields, and in separate segments: the binding hands the head over in pieces (its
    // kOnHeaders path), the URL with the first piece.
    const many = Array.from({ length: 40 }, (_, i) => `X-Field-${i}: value ${i}\r\n`).join('');
    const text =
      `POST /rooms/r1/split?part=one HTTP/1.1\r\nHost: x\r\n${many}X-Split-Header: across reads\r\n` +
      'Content-Length: 11\r\nConnection: close\r\n\r\nhello world';
    for (let i = 0; i < text.length; i += 7) {
      socket.write(text.slice(i, i + 7));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const [answer] = responses(await reply);
    expect(answer?.status).toBe(200);
    const seen = JSON.parse(unchunked(answer?.body ?? '{}')) as {
      url: string;
      body: string;
      headers: Record<string, string>;
    };
    expect(seen.url).toBe('/rooms/r1/split?part=one');
    expect(seen.body).toBe('hello world');
    expect(seen.headers['x-split-header']).toBe('across reads');
    expect(seen.headers['x-field-0']).toBe('value 0');
    expect(seen.headers['x-field-39']).toBe('value 39');
  });

  it('answers 431 with a coded error to a head over 16 KiB and closes the connection', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    const reply = readAll(socket);
    socket.write(`GET /rooms/r1 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
    const text = await reply;
    expect(text).toMatch(/^HTTP\/1\.1 431 /);
    expect(text).toContain('"ROOMRING_E_HEADERS_TOO_LARGE"');
    expect(text).toMatch(/content-type: application\/json/i);
  });

  it('answers 408 to a head that does not arrive within listen.headTimeout, and closes idle keep-alive connections', async () => {
    const proxy = await proxyWith({ listen: { headTimeout: '1s', keepAlive: '1s' } });
    const slow = await connectRaw(proxy.port);
    const slowReply = readAll(slow);
    slow.write('GET /rooms/r1 HTTP/1.1\r\nHost: x\r\n');
    const started = Date.now();
    const text = await slowReply;
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain('"ROOMRING_E_REQUEST_TIMEOUT"');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    // A finished exchange leaves the connection open for the next request, until keepAlive.
    const idle = await connectRaw(proxy.port);
    let closed = false;
    idle.on('close', () => {
      closed = true;
    });
    const idleReply = readAll(idle);
    idle.write('GET /rooms/r1 HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(async () => closed, 4000);
    expect(responses(await idleReply).map((a) => a.status)).toEqual([200]);
  });

  it('frames a response of unknown length for HTTP/1.0 clients by closing the connection', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    const reply = readAll(socket);
    // The backend streams /stream in chunks: a 1.0 client cannot read chunked framing.
    socket.write('GET /stream?room=r1&ms=10 HTTP/1.0\r\nHost: x\r\n\r\n');
    const text = await reply;
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    const [head = '', body = ''] = text.split('\r\n\r\n');
    expect(head).not.toMatch(/transfer-encoding/i);
    expect(head).toMatch(/connection: close/i);
    expect(head).toMatch(/\r\ndate: /i);
    expect(body.length).toBeGreaterThan(0);
    expect(body).not.toMatch(/^[0-9a-f]+\r\n/);
  });

  it('sends 100 Continue before reading a body the client holds back', async () => {
    const proxy = await proxyWith();
    const socket = await connectRaw(proxy.port);
    const seen: string[] = [];
    socket.on('data', (d: Buffer) => seen.push(d.toString('latin1')));
    socket.write(
      'POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n',
    );
    await waitUntil(async () => seen.join('').startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 3000);
    socket.write('hello');
    await waitUntil(async () => /HTTP\/1\.1 200 /.test(seen.join('')), 3000);
    const final = responses(seen.join('').slice('HTTP/1.1 100 Continue\r\n\r\n'.length));
    expect(JSON.parse(unchunked(final[0]?.body ?? '{}')).body).toBe('hello');
  });

  it('answers CONNECT with 405 and an HTTP/2 preface with 400, and closes both', async () => {
    const proxy = await proxyWith();
    const expected: [string, RegExp][] = [
      [
        'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n',
        /^HTTP\/1\.1 405 [\s\S]*"ROOMRING_E_METHOD_NOT_ALLOWED"/,
      ],
      ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', /^HTTP\/1\.1 400 [\s\S]*"ROOMRING_E_BAD_REQUEST"/],
    ];
    for (const [head, answer] of expected) {
      const socket = await connectRaw(proxy.port);
      const reply = readAll(socket);
      socket.write(head);
      expect(await reply).toMatch(answer);
    }
    expect(proxy.child.exitCode).toBeNull();
  });
});

describe('request bodies and early answers', () => {
  it('closes both connections cleanly when the backend answers before the body is in', async () => {
    // A backend that refuses every upload at once and keeps its socket open.
    const backend = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      socket.once('data', () => socket.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n'));
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => backend.close(() => resolve())));
    const openBackendSockets = (): Promise<number> =>
      new Promise((resolve) => backend.getConnections((_e, n) => resolve(n)));
    const proxy = await startProxy({
      room: ROOMS,
      backends: [{ id: 'early', url: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }],
    });
    const socket = await connectRaw(proxy.port, true);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write('POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n');
    socket.write(Buffer.alloc(20_000, 97));
    await waitUntil(async () => text.includes('\r\n\r\n'), 3000);
    // The half-sent request's backend connection is closed, not pooled.
    await waitUntil(async () => (await openBackendSockets()) === 0, 3000);
    // The rest of the upload still arrives; the proxy reads and drops it, then both sides close.
    socket.end(Buffer.alloc(180_000, 97));
    await closed;
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).toMatch(/\r\nConnection: close\r\n/i);
    expect(await openBackendSockets()).toBe(0);
  });

  it('lets a slow upload take longer than timeouts.response: only the wait for the answer counts', async () => {
    const proxy = await proxyWith({ timeouts: { response: '1s' } });
    const socket = await connectRaw(proxy.port);
    const reply = readAll(socket);
    const parts = ['one ', 'two ', 'three ', 'four ', 'five'];
    const length = parts.join('').length;
    socket.write(
      `POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${length}\r\n\r\n`,
    );
    for (const part of parts) {
      await new Promise((resolve) => setTimeout(resolve, 450));
      socket.write(part);
    }
    const [answer] = responses(await reply);
    expect(answer?.status).toBe(200);
    expect(JSON.parse(unchunked(answer?.body ?? '{}')).body).toBe(parts.join(''));
  });
});
