// Clients and backends that misbehave: resets mid-handshake, rejected upgrades, backends that die,
// hang or refuse, clients that vanish mid-body. None may crash the proxy or leak a socket: after
// each scenario a normal request works and the proxy's open sockets (counted in /proc) return to
// what they were before. Also what forwarding must keep: hop-by-hop headers stay on their hop,
// X-Forwarded-* are set, large bodies arrive intact, idle WebSockets stay open.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { Ring } from '../src/ring/ring.js';
import {
  connectRaw,
  deadPort,
  openSocket,
  readAll,
  request,
  type SilentServer,
  socketCount,
  startBackend,
  startProxy,
  startSilentServer,
  type TestBackend,
  type TestProxy,
  waitForSocketCount,
  waitUntil,
} from './helpers.js';

const ROOM_RULES = { from: [{ path: '/rooms/:room' }, { query: 'room' }], onMissing: 'reject' };
/** Pooled backend connections close after 200 ms idle, so socket counts settle quickly. */
const FAST_POOL = { keepAlive: '200ms' };

interface Target {
  id: string;
  url: string;
}

interface Running {
  proxy: TestProxy;
  pid: number;
  /** Open sockets of the proxy when idle: the listener and its stdio. */
  baseline: number;
  ws: string;
}

/** Starts a proxy in front of `targets` and records its idle socket count. */
async function proxyFor(targets: Target[], extra: Record<string, unknown> = {}): Promise<Running> {
  const { timeouts, ...rest } = extra as { timeouts?: Record<string, unknown> };
  const proxy = await startProxy({
    room: ROOM_RULES,
    backends: targets.map(({ id, url }) => ({ id, url })),
    timeouts: { ...FAST_POOL, ...timeouts },
    ...rest,
  });
  const pid = proxy.child.pid as number;
  return { proxy, pid, baseline: socketCount(pid), ws: proxy.url.replace('http', 'ws') };
}

/** A room whose ring order over `ids` (weight 1 each) starts with `first`. */
function roomOrderedAs(ids: string[], ...first: string[]): string {
  const ring = new Ring(ids.map((id) => ({ id, weight: 1 })));
  for (let i = 0; ; i++) {
    const room = `room-${i}`;
    const order = ring.successors(room).map((m) => m.id);
    if (first.every((id, k) => order[k] === id)) return room;
  }
}

/** The backend the ring gives `room` among `ids` (weight 1 each). */
function roomOwner(ids: string[], room: string): string {
  return new Ring(ids.map((id) => ({ id, weight: 1 }))).ownerOf(room)?.id ?? '';
}

/**
 * The proxy survived: it is running, logged no stray error, still forwards an HTTP request and a
 * WebSocket for `room`, and once all is closed it holds exactly the sockets it held when idle.
 */
async function expectHealthy(run: Running, room: string, server: string): Promise<void> {
  const res = await request(`${run.proxy.url}/rooms/${room}`);
  expect(res.status).toBe(200);
  expect(res.headers['x-served-by']).toBe(server);
  const { ws, hello } = await openSocket(`${run.ws}/rooms/${room}`);
  expect(hello.server).toBe(server);
  expect(await echo(ws, 'still here')).toBe(`${server}:still here`);
  await closeSocket(ws);
  await waitForSocketCount(run.pid, run.baseline);
  expect(run.proxy.child.exitCode).toBeNull();
  expect(run.proxy.output()).not.toMatch(/uncaught|unhandled/i);
}

function echo(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (data) => resolve(String(data)));
    ws.once('close', () => reject(new Error('closed before the echo')));
    ws.send(text);
  });
}

function closeSocket(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === ws.CLOSED) return resolve();
    ws.once('close', () => resolve());
    ws.close();
  });
}

/** TCP connections open on a backend, not counting the one that asks. */
async function backendConnections(backend: TestBackend): Promise<number> {
  const res = await request(`${backend.url}/connections`);
  return (JSON.parse(res.body) as { connections: number }).connections - 1;
}

function upgradeHead(path: string, port: number): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
  );
}

/** A WebSocket upgrade request that is answered with something other than 101. */
function failedUpgrade(
  url: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.once('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('the upgrade succeeded'));
    });
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

/** A GET whose response is read until it ends or breaks off. */
function readResponse(url: string): Promise<{ status: number; body: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = '';
      let complete = false;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.once('end', () => {
        complete = true;
      });
      res.on('error', () => {});
      res.once('close', () => resolve({ status: res.statusCode ?? 0, body, complete }));
    });
    req.once('error', reject);
  });
}

describe('clients that reset mid-handshake', () => {
  it('closes nothing but the reset client when it resets before the upstream connection', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    // The head arrives without its last CRLF: the proxy is still parsing.
    const partial = await connectRaw(run.proxy.port);
    partial.write(upgradeHead('/rooms/r1', run.proxy.port).slice(0, -2));
    await new Promise((r) => setTimeout(r, 50));
    partial.resetAndDestroy();
    // The whole head, then a reset right behind it: the upstream connection is still opening.
    for (let i = 0; i < 20; i++) {
      const socket = await connectRaw(run.proxy.port);
      await new Promise<void>((resolve) =>
        socket.write(upgradeHead(`/rooms/r${i}`, run.proxy.port), () => resolve()),
      );
      if (i % 2 === 0) socket.resetAndDestroy();
      else socket.destroy();
    }
    await waitUntil(async () => (await backendConnections(backend)) === 0);
    await expectHealthy(run, 'r1', 'b1');
  });

  it('closes the upstream connection when the client resets while the backend has not answered', async () => {
    const silent = await startSilentServer();
    const backend = await startBackend('b1');
    const targets = [{ id: 'hung', url: silent.url }, backend];
    const run = await proxyFor(targets);
    const room = roomOrderedAs(['hung', 'b1'], 'hung');
    for (const reset of [true, false]) {
      const before = silent.accepted;
      const socket = await connectRaw(run.proxy.port);
      socket.write(upgradeHead(`/rooms/${room}`, run.proxy.port));
      await waitUntil(() => silent.accepted === before + 1);
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
      await waitUntil(() => silent.open === 0);
    }
    await expectHealthy(run, roomOrderedAs(['hung', 'b1'], 'b1'), 'b1');
  });

  it('survives a client that resets right after the 101', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    for (let i = 0; i < 5; i++) {
      const socket = await connectRaw(run.proxy.port);
      socket.write(upgradeHead(`/rooms/r${i}`, run.proxy.port));
      await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      socket.resetAndDestroy();
    }
    await waitUntil(async () => (await backendConnections(backend)) === 0);
    await expectHealthy(run, 'r1', 'b1');
  });
});

describe('a backend that rejects an upgrade', () => {
  it('passes its 404 to the client and keeps no socket of it', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const res = await failedUpgrade(`${run.proxy.url}/reject-upgrade?room=r1`);
    expect(res.status).toBe(404);
    expect(res.body).toBe('not found');
    // A client that reads the 404 but never closes its side must not hold the proxy's sockets.
    const lingering = await connectRaw(run.proxy.port);
    const text = readAll(lingering);
    lingering.write(upgradeHead('/reject-upgrade?room=r2', run.proxy.port));
    expect(await text).toMatch(/^HTTP\/1\.1 404 Not Found\r\n[\s\S]*\r\n\r\nnot found$/);
    await waitUntil(async () => (await backendConnections(backend)) === 0);
    await expectHealthy(run, 'r1', 'b1');
  });
});

describe('backends that die mid-stream', () => {
  it('breaks off an HTTP response whose backend dies, and serves other rooms', async () => {
    const [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
    const run = await proxyFor([b1, b2]);
    const room = roomOrderedAs(['b1', 'b2'], 'b1');
    const res = await readResponse(`${run.proxy.url}/stream?die=1&room=${room}`);
    expect(res.status).toBe(200);
    expect(res.body).toBe('first chunk\n');
    expect(res.complete).toBe(false);
    await expectHealthy(run, roomOrderedAs(['b1', 'b2'], 'b2'), 'b2');
  });

  it('closes an open WebSocket whose backend is killed, and serves other rooms', async () => {
    const [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
    const run = await proxyFor([b1, b2]);
    const room = roomOrderedAs(['b1', 'b2'], 'b1');
    const { ws, hello } = await openSocket(`${run.ws}/rooms/${room}`);
    expect(hello.server).toBe('b1');
    const other = await openSocket(`${run.ws}/rooms/${roomOrderedAs(['b1', 'b2'], 'b2')}`);
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await b1.kill('SIGKILL');
    // No close frame came from the dead backend, so the client sees an abnormal closure.
    expect(await closed).toBe(1006);
    // A tunnel to the live backend is untouched.
    expect(await echo(other.ws, 'hi')).toBe('b2:hi');
    await closeSocket(other.ws);
    await expectHealthy(run, roomOrderedAs(['b1', 'b2'], 'b2'), 'b2');
  });
});

describe('clients that vanish', () => {
  it('drops the backend exchange when the client vanishes mid-request body', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    for (const reset of [false, true]) {
      const socket = await connectRaw(run.proxy.port);
      socket.write(
        `POST /rooms/r1/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n` +
          'Content-Length: 1000000\r\n\r\n',
      );
      socket.write(randomBytes(100_000));
      await waitUntil(async () => (await backendConnections(backend)) === 1);
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
      await waitUntil(async () => (await backendConnections(backend)) === 0);
    }
    await expectHealthy(run, 'r1', 'b1');
  });

  it('drops the backend exchange when the client vanishes before or during the response', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    // Before the response: the backend takes 3 s; its connection must close long before.
    const slow = http.get(`${run.proxy.url}/slow?ms=3000&room=r1`, { agent: false });
    slow.on('error', () => {});
    await waitUntil(async () => (await backendConnections(backend)) === 1);
    slow.destroy();
    await waitUntil(async () => (await backendConnections(backend)) === 0, 1500);
    // During the response: the first chunk has arrived, the last is 3 s away.
    await new Promise<void>((resolve) => {
      const req = http.get(`${run.proxy.url}/stream?ms=3000&room=r1`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
    });
    await waitUntil(async () => (await backendConnections(backend)) === 0, 1500);
    await expectHealthy(run, 'r1', 'b1');
  });
});

describe('backends that hang or refuse', () => {
  it('answers 504 with a coded JSON error when a backend accepts and never answers', async () => {
    const silent: SilentServer = await startSilentServer();
    const backend = await startBackend('b1');
    const run = await proxyFor([{ id: 'hung', url: silent.url }, backend], {
      timeouts: { response: '300ms' },
    });
    const room = roomOrderedAs(['hung', 'b1'], 'hung');
    for (const path of [`/rooms/${room}`, `/rooms/${room}/post`]) {
      const res = await request(`${run.proxy.url}${path}`, {
        method: path.endsWith('post') ? 'POST' : 'GET',
        body: path.endsWith('post') ? 'payload' : undefined,
      });
      expect(res.status).toBe(504);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect(JSON.parse(res.body)).toEqual({
        error: { code: 'ROOMRING_E_BACKEND_TIMEOUT', message: expect.any(String) },
      });
    }
    // A hung connection is closed, never pooled for the next request.
    await waitUntil(() => silent.open === 0);
    expect(silent.accepted).toBe(2);
    await expectHealthy(run, roomOrderedAs(['hung', 'b1'], 'b1'), 'b1');
  });

  it('answers a WebSocket upgrade to a backend that never answers with 504', async () => {
    const silent = await startSilentServer();
    const backend = await startBackend('b1');
    const run = await proxyFor([{ id: 'hung', url: silent.url }, backend], {
      timeouts: { response: '300ms' },
    });
    const room = roomOrderedAs(['hung', 'b1'], 'hung');
    const res = await failedUpgrade(`${run.proxy.url}/rooms/${room}`);
    expect(res.status).toBe(504);
    expect(JSON.parse(res.body).error.code).toBe('ROOMRING_E_BACKEND_TIMEOUT');
    await waitUntil(() => silent.open === 0);
    await expectHealthy(run, roomOrderedAs(['hung', 'b1'], 'b1'), 'b1');
  });

  it('answers 502 once failover is exhausted, for HTTP and WebSocket', async () => {
    const backend = await startBackend('live');
    const [p1, p2] = await Promise.all([deadPort(), deadPort()]);
    const dead = [
      { id: 'dead1', url: `http://127.0.0.1:${p1}` },
      { id: 'dead2', url: `http://127.0.0.1:${p2}` },
    ];
    // One retry, and no cool-off, so every request tries both refused backends again.
    const run = await proxyFor([...dead, backend], { failover: { retries: 1, coolOff: 0 } });
    const ids = ['dead1', 'dead2', 'live'];
    const room = roomOrderedAs(ids, 'dead1', 'dead2');
    for (const method of ['GET', 'POST']) {
      const res = await request(`${run.proxy.url}/rooms/${room}`, {
        method,
        body: method === 'POST' ? 'x' : undefined,
      });
      expect(res.status).toBe(502);
      expect(res.headers['content-type']).toMatch(/application\/json/);
      expect(JSON.parse(res.body).error.code).toBe('ROOMRING_E_BACKEND_UNREACHABLE');
    }
    const upgrade = await failedUpgrade(`${run.proxy.url}/rooms/${room}`);
    expect(upgrade.status).toBe(502);
    expect(JSON.parse(upgrade.body).error.code).toBe('ROOMRING_E_BACKEND_UNREACHABLE');
    // With a retry left over, the room reaches the live backend, request body and all.
    const rescued = roomOrderedAs(ids, 'dead1', 'live');
    expect((await request(`${run.proxy.url}/rooms/${rescued}`)).headers['x-served-by']).toBe('live');
    const body = randomBytes(1024 * 1024);
    const uploaded = await upload(`${run.proxy.url}/digest?room=${rescued}`, body, false);
    expect(JSON.parse(uploaded.body)).toEqual({
      server: 'live',
      length: body.length,
      sha256: createHash('sha256').update(body).digest('hex'),
    });
    const socket = await openSocket(`${run.ws}/rooms/${rescued}`);
    expect(socket.hello.server).toBe('live');
    await closeSocket(socket.ws);
    await expectHealthy(run, roomOrderedAs(ids, 'live'), 'live');
  });

  it('answers 502 and then 503 when every backend refuses', async () => {
    const [p1, p2] = await Promise.all([deadPort(), deadPort()]);
    const run = await proxyFor([
      { id: 'dead1', url: `http://127.0.0.1:${p1}` },
      { id: 'dead2', url: `http://127.0.0.1:${p2}` },
    ]);
    const first = await request(`${run.proxy.url}/rooms/r1`);
    expect(first.status).toBe(502);
    expect(JSON.parse(first.body).error.code).toBe('ROOMRING_E_BACKEND_UNREACHABLE');
    // Both backends now cool off: nothing is left to try.
    const second = await request(`${run.proxy.url}/rooms/r1`);
    expect(second.status).toBe(503);
    expect(JSON.parse(second.body).error.code).toBe('ROOMRING_E_NO_BACKEND');
    const upgrade = await failedUpgrade(`${run.proxy.url}/rooms/r1`);
    expect(upgrade.status).toBe(503);
    expect(JSON.parse(upgrade.body).error.code).toBe('ROOMRING_E_NO_BACKEND');
    await waitForSocketCount(run.pid, run.baseline);
    expect(run.proxy.child.exitCode).toBeNull();
  });
});

describe('clients that never close their side', () => {
  it('closes the socket after an error reply to an upgrade or a malformed request', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const replies: Promise<string>[] = [];
    for (const text of [
      upgradeHead('/no-room-here', run.proxy.port),
      upgradeHead('/rooms/%zz', run.proxy.port),
      'NOT HTTP AT ALL\r\n\r\n',
    ]) {
      const socket = await connectRaw(run.proxy.port, true);
      replies.push(readAll(socket));
      socket.write(text);
    }
    const [noRoom, badRoom, garbage] = await Promise.all(replies);
    expect(noRoom).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*"ROOMRING_E_NO_ROOM"/);
    expect(badRoom).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*"ROOMRING_E_BAD_ROOM"/);
    expect(garbage).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    await expectHealthy(run, 'r1', 'b1');
  });
});

describe('room ids in raw header bytes', () => {
  it('reads UTF-8 header bytes as UTF-8 and answers 400 to bytes that are not UTF-8', async () => {
    const [b1, b2] = await Promise.all([startBackend('b1'), startBackend('b2')]);
    const run = await proxyFor([b1, b2], {
      room: { from: [{ path: '/rooms/:room' }, { header: 'X-Room-Id' }], onMissing: 'reject' },
    });
    const viaHeader = async (bytes: Buffer): Promise<string> => {
      const socket = await connectRaw(run.proxy.port);
      const reply = readAll(socket);
      socket.write(
        Buffer.concat([
          Buffer.from('GET /socket HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Room-Id: '),
          bytes,
          Buffer.from('\r\n\r\n'),
        ]),
      );
      return reply;
    };
    for (const room of ['caf\u00e9', '日本', '😀 party']) {
      const byPath = await request(`${run.proxy.url}/rooms/${encodeURIComponent(room)}`);
      const byHeader = await viaHeader(Buffer.from(room, 'utf8'));
      expect(byHeader).toMatch(/^HTTP\/1\.1 200 /);
      expect(byHeader).toContain(`x-served-by: ${byPath.headers['x-served-by']}`);
    }
    const bad = await viaHeader(Buffer.from([0x63, 0x61, 0x66, 0xe9]));
    expect(bad).toMatch(/^HTTP\/1\.1 400 /);
    expect(bad).toContain('"ROOMRING_E_BAD_ROOM"');
    await expectHealthy(run, 'r1', roomOwner(['b1', 'b2'], 'r1'));
  });
});

describe('requests that try to smuggle a second request', () => {
  it('answers 400 and never lets the backend see them', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const smuggled = 'GET /rooms/r1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
    for (const head of [
      `POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nContent-Length: ${smuggled.length + 5}\r\n` +
        'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n',
      'POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
      // obs-fold, bare LF line ends, whitespace before a colon, a chunk size with trailing space
      'GET /rooms/r1 HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n',
      'GET /rooms/r1 HTTP/1.1\nHost: x\n\n',
      'GET /rooms/r1 HTTP/1.1\r\nHost : x\r\n\r\n',
      'POST /rooms/r1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n',
    ]) {
      const socket = await connectRaw(run.proxy.port);
      const reply = readAll(socket);
      socket.write(head + smuggled);
      const text = await reply;
      expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*"ROOMRING_E_BAD_REQUEST"/);
      // One answer, the proxy's own: nothing reached the backend, smuggled or not.
      expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
      expect(text).not.toMatch(/x-served-by/i);
    }
    await expectHealthy(run, 'r1', 'b1');
  });
});

describe('timeouts that must not cut live traffic', () => {
  it('waits for a slow response with timeouts.response 0, past the keep-alive timeout', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend], { timeouts: { response: 0 } });
    const res = await request(`${run.proxy.url}/slow?ms=700&room=r1`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).server).toBe('b1');
    await expectHealthy(run, 'r1', 'b1');
  });

  it('keeps an idle WebSocket open with the default timeouts', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend], { timeouts: { keepAlive: '500ms' } });
    const { ws } = await openSocket(`${run.ws}/rooms/r1`);
    let closed = false;
    ws.once('close', () => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 3000));
    expect(closed).toBe(false);
    expect(await echo(ws, 'after a quiet while')).toBe('b1:after a quiet while');
    await closeSocket(ws);
    await expectHealthy(run, 'r1', 'b1');
  });
});

/** POSTs `body` in 64 KiB writes (chunked, or with Content-Length) and returns the answer. */
function upload(url: string, body: Buffer, withLength: boolean): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (withLength) headers['content-length'] = String(body.length);
    const req = http.request(url, { method: 'POST', agent: false, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.once('error', reject);
    const write = (offset: number): void => {
      if (offset >= body.length) {
        req.end();
        return;
      }
      const chunk = body.subarray(offset, offset + 65_536);
      if (req.write(chunk)) setImmediate(() => write(offset + chunk.length));
      else req.once('drain', () => write(offset + chunk.length));
    };
    write(0);
  });
}

describe('what forwarding keeps and drops', () => {
  it('keeps hop-by-hop headers on their hop in both directions and sets X-Forwarded-*', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const res = await request(`${run.proxy.url}/rooms/r1`, {
      headers: {
        Connection: 'close, X-Secret',
        'X-Secret': 'for the proxy only',
        'Keep-Alive': 'timeout=30',
        TE: 'trailers',
        'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
        'X-Forwarded-For': '203.0.113.7',
        'X-Kept': 'end to end',
      },
    });
    expect(res.status).toBe(200);
    const seen = JSON.parse(res.body).headers as Record<string, string>;
    for (const hop of ['x-secret', 'keep-alive', 'te', 'proxy-authorization', 'upgrade'])
      expect(seen[hop]).toBeUndefined();
    // The backend's connection header is the proxy's pooled keep-alive, not the client's list.
    expect(seen.connection).not.toMatch(/x-secret/i);
    expect(seen['x-kept']).toBe('end to end');
    expect(seen['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe(`127.0.0.1:${run.proxy.port}`);
    expect(seen.host).toBe(`127.0.0.1:${run.proxy.port}`);
    // The backend answered with `connection: x-hop`, `x-hop: drop-me` and `keep-alive: timeout=5`.
    expect(res.headers['x-hop']).toBeUndefined();
    expect(res.headers['keep-alive']).toBeUndefined();
    expect(res.headers.connection).toBe('close');
    expect(res.headers['x-served-by']).toBe('b1');
    expect(res.headers['content-type']).toBe('application/json');
  });

  it('sends a WebSocket handshake with X-Forwarded-* and without hop-by-hop extras', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const { ws, hello } = await openSocket(`${run.ws}/rooms/r1`, {
      'X-Forwarded-For': '198.51.100.1',
      'Proxy-Authorization': 'Basic x',
    });
    expect(hello.headers.upgrade).toBe('websocket');
    expect(hello.headers.connection).toBe('Upgrade');
    expect(hello.headers['proxy-authorization']).toBeUndefined();
    expect(hello.headers['x-forwarded-for']).toBe('198.51.100.1, 127.0.0.1');
    expect(hello.headers['x-forwarded-proto']).toBe('http');
    await closeSocket(ws);
  });

  it('streams an 8 MB request body intact, chunked and with Content-Length', async () => {
    const backend = await startBackend('b1');
    const run = await proxyFor([backend]);
    const body = randomBytes(8 * 1024 * 1024);
    const sha256 = createHash('sha256').update(body).digest('hex');
    for (const withLength of [false, true]) {
      const res = await upload(`${run.proxy.url}/digest?room=r1`, body, withLength);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ server: 'b1', length: body.length, sha256 });
    }
    await expectHealthy(run, 'r1', 'b1');
  });
});
