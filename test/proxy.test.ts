// The proxy end to end: the real CLI as a child process, real backend processes, real ws clients.
import { type AddressInfo, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  backendsConfig,
  onCleanup,
  openSocket,
  request,
  runCli,
  startBackends,
  startProxy,
  waitUntil,
} from './helpers.js';

const ROOM_RULES = {
  from: [{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }],
  onMissing: 'reject',
};

describe('sticky routing', () => {
  it('keeps 300 rooms × 3 connections (path, query, header styles) on one backend each', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const ws = proxy.url.replace('http', 'ws');
    const rooms = Array.from({ length: 300 }, (_, i) => `room-${i}`);
    const servers = new Map<string, Set<string>>();
    const seen = new Set<string>();
    for (let i = 0; i < rooms.length; i += 50) {
      await Promise.all(
        rooms.slice(i, i + 50).flatMap((room) =>
          [
            openSocket(`${ws}/rooms/${encodeURIComponent(room)}`),
            openSocket(`${ws}/socket?room=${encodeURIComponent(room)}`),
            openSocket(`${ws}/socket`, { 'x-room-id': room }),
          ].map(async (pending) => {
            const { hello, ws: socket } = await pending;
            seen.add(hello.server);
            const set = servers.get(room) ?? new Set();
            set.add(hello.server);
            servers.set(room, set);
            socket.close();
          }),
        ),
      );
    }
    const split = [...servers.values()].filter((set) => set.size > 1).length;
    expect(servers.size).toBe(300);
    expect(split).toBe(0);
    expect(seen.size).toBe(3);
  });

  it('routes a room header sent twice by its first value', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const once = new Map<string, string>();
    const twice = new Map<string, string>();
    for (let i = 0; i < 30; i++) {
      const room = `twice-${i}`;
      const single = await request(`${proxy.url}/api`, { headers: { 'x-room-id': room } });
      const repeated = await request(`${proxy.url}/api`, { headers: { 'x-room-id': [room, room] } });
      once.set(room, JSON.parse(single.body).server);
      twice.set(room, JSON.parse(repeated.body).server);
    }
    expect(twice).toEqual(once);
    expect(new Set(once.values()).size).toBe(3);
  });

  it('sends HTTP and WebSocket traffic of a room to the same backend, and route agrees', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    for (const room of ['lobby', 'kitchen', 'garden', 'caf\u00e9 ☕', 'a/b']) {
      const encoded = encodeURIComponent(room);
      const http = await request(`${proxy.url}/rooms/${encoded}`);
      const { hello } = await openSocket(`${proxy.url.replace('http', 'ws')}/rooms/${encoded}/ws`);
      const route = await runCli(['route', room, '--config', proxy.configFile, '--json']);
      expect(route.code).toBe(0);
      const routed = JSON.parse(route.output) as { room: string; backend: { id: string; url: string } };
      expect(http.status).toBe(200);
      expect(http.headers['x-served-by']).toBe(hello.server);
      expect(routed.room).toBe(room);
      expect(routed.backend.id).toBe(hello.server);
    }
  });

  it('answers 400 with a coded JSON error when no room is found', async () => {
    const backends = await startBackends(['b1']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const res = await request(`${proxy.url}/nothing-here`);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(JSON.parse(res.body)).toEqual({
      error: { code: 'ROOMRING_E_NO_ROOM', message: expect.any(String) },
    });
  });

  it('spreads room-less requests with onMissing: random', async () => {
    const backends = await startBackends(['b1', 'b2']);
    const proxy = await startProxy({
      room: { ...ROOM_RULES, onMissing: 'random' },
      backends: backendsConfig(backends),
    });
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++)
      seen.add(String((await request(`${proxy.url}/anything`)).headers['x-served-by']));
    expect(seen).toEqual(new Set(['b1', 'b2']));
  });

  it('rejects a room id over 256 bytes with 414 and bad percent-encoding with 400', async () => {
    const backends = await startBackends(['b1']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const long = await request(
      `${proxy.url}/rooms/${'é'.repeat(129).split('').map(encodeURIComponent).join('')}`,
    );
    expect(long.status).toBe(414);
    expect(JSON.parse(long.body).error.code).toBe('ROOMRING_E_ROOM_TOO_LONG');
    const ok = await request(`${proxy.url}/rooms/${encodeURIComponent('é'.repeat(128))}`);
    expect(ok.status).toBe(200);
    const bad = await request(`${proxy.url}/rooms/%E0%A4%A`);
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error.code).toBe('ROOMRING_E_BAD_ROOM');
  });
});

describe('failover without Redis', () => {
  it("moves a killed backend's rooms to their successors and no other room", async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const rooms = Array.from({ length: 60 }, (_, i) => `r${i}`);
    const before = new Map<string, string>();
    for (const room of rooms)
      before.set(room, String((await request(`${proxy.url}/rooms/${room}`)).headers['x-served-by']));
    const victim = backends[0];
    await victim?.kill('SIGKILL');
    const after = new Map<string, string>();
    for (const room of rooms) {
      const res = await request(`${proxy.url}/rooms/${room}`);
      // No request is lost: the refused connection is retried on the successor.
      expect(res.status).toBe(200);
      after.set(room, String(res.headers['x-served-by']));
    }
    for (const room of rooms) {
      if (before.get(room) === 'b1') expect(after.get(room)).not.toBe('b1');
      else expect(after.get(room)).toBe(before.get(room));
    }
    expect([...before.values()].filter((s) => s === 'b1').length).toBeGreaterThan(0);
    await waitUntil(() => /backend b1 refused a connection/.test(proxy.output()));
  });
});

describe('failover on a reset before any answer', () => {
  it('sends an idempotent request on when a fresh connection is accepted and then reset', async () => {
    const backends = await startBackends(['b2', 'b3']);
    const resetting = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => resetting.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => resetting.close(resolve)));
    const port = (resetting.address() as AddressInfo).port;
    const proxy = await startProxy({
      room: ROOM_RULES,
      backends: [{ id: 'b1', url: `http://127.0.0.1:${port}` }, ...backendsConfig(backends)],
      failover: { coolOff: 0 },
    });
    const owned: string[] = [];
    for (let i = 0; owned.length < 3; i++) {
      const route = await runCli(['route', `reset-${i}`, '--config', proxy.configFile, '--json']);
      if ((JSON.parse(route.output) as { backend: { id: string } }).backend.id === 'b1')
        owned.push(`reset-${i}`);
    }
    // Each request reaches b1 first (no cool-off), is reset, and is answered by a successor.
    for (const room of owned) {
      const res = await request(`${proxy.url}/rooms/${room}`);
      expect(res.status).toBe(200);
      expect(['b2', 'b3']).toContain(res.headers['x-served-by']);
    }
    // A request with a body is not sent twice: the client gets the coded error.
    const post = await request(`${proxy.url}/rooms/${owned[0]}`, { method: 'POST', body: 'once' });
    expect(post.status).toBe(502);
  });
});

describe('WebSocket handshake bytes', () => {
  it('passes header bytes outside ASCII to the backend unchanged', async () => {
    const backends = await startBackends(['b1']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    const { hello } = await openSocket(`${proxy.url.replace('http', 'ws')}/rooms/lobby`, {
      'x-name': 'caf\u00e9',
    });
    expect(hello.headers['x-name']).toBe('caf\u00e9');
  });
});

describe('backend connections', () => {
  it('reuses keep-alive connections to a backend across requests', async () => {
    const backends = await startBackends(['b1']);
    const proxy = await startProxy({ room: ROOM_RULES, backends: backendsConfig(backends) });
    for (let i = 0; i < 50; i++) expect((await request(`${proxy.url}/rooms/r${i}`)).status).toBe(200);
    const res = await request(`${proxy.url}/connections?room=x`);
    // One pooled connection served them all (plus this request's own).
    expect((JSON.parse(res.body) as { connections: number }).connections).toBeLessThanOrEqual(2);
  });

  it('answers HEAD without a body, passes 100-continue, and reads a body that ends with the connection', async () => {
    const raw = createServer((socket) => {
      let seen = '';
      socket.on('error', () => socket.destroy());
      socket.on('data', (d) => {
        seen += d.toString('latin1');
        if (!seen.includes('\r\n\r\n') || !socket.writable) return;
        if (seen.startsWith('HEAD')) {
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Served-By: raw\r\n\r\n');
          seen = '';
        } else if (seen.startsWith('POST') && seen.includes('body')) {
          // The client sent Expect: 100-continue, so its body arrives chunked ('4\r\nbody\r\n...').
          expect(seen).toMatch(/transfer-encoding: chunked/i);
          socket.end(
            'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Served-By: raw\r\n\r\nuntil the close',
          );
        }
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => raw.close(resolve)));
    const proxy = await startProxy({
      room: ROOM_RULES,
      backends: [{ id: 'raw', url: `http://127.0.0.1:${(raw.address() as AddressInfo).port}` }],
    });
    const head = await request(`${proxy.url}/rooms/a`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('100');
    expect(head.body).toBe('');
    const post = await request(`${proxy.url}/rooms/a`, {
      method: 'POST',
      body: 'body',
      headers: { expect: '100-continue' },
    });
    expect(post.status).toBe(200);
    expect(post.body).toBe('until the close');
  });
});

describe('large responses', () => {
  it('streams 16 MB bodies intact, with Content-Length and chunked, to a slow reader', async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const { createServer: createHttpServer, get } = await import('node:http');
    const payload = randomBytes(16 * 1024 * 1024);
    const digest = createHash('sha256').update(payload).digest('hex');
    const backend = createHttpServer((req, res) => {
      if (req.url?.includes('chunked')) {
        res.writeHead(200);
        for (let i = 0; i < payload.length; i += 1 << 20) res.write(payload.subarray(i, i + (1 << 20)));
        res.end();
      } else res.writeHead(200, { 'content-length': payload.length }).end(payload);
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => backend.close(resolve)));
    const proxy = await startProxy({
      room: ROOM_RULES,
      backends: [{ id: 'big', url: `http://127.0.0.1:${(backend.address() as AddressInfo).port}` }],
    });
    for (const path of ['/rooms/a/plain', '/rooms/a/chunked']) {
      const received = await new Promise<{ hash: string; length: number }>((resolve, reject) => {
        get(`${proxy.url}${path}`, { agent: false }, (res) => {
          const hash = createHash('sha256');
          let length = 0;
          // A slow reader: pauses after each piece, so back-pressure reaches the backend connection.
          res.on('data', (chunk: Buffer) => {
            hash.update(chunk);
            length += chunk.length;
            res.pause();
            setImmediate(() => res.resume());
          });
          res.on('end', () => resolve({ hash: hash.digest('hex'), length }));
          res.on('error', reject);
        }).on('error', reject);
      });
      expect(received.length).toBe(payload.length);
      expect(received.hash).toBe(digest);
    }
  });
});
