// Operating roomring: the admin API, metrics, graceful shutdown and zero-drop reload, with the real
// CLI as a child process, real backends and real WebSocket clients.
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  backendsConfig,
  connectRaw,
  freePort,
  openSocket,
  readAll,
  request,
  runCli,
  startBackends,
  startProxy,
  type TestBackend,
  type TestProxy,
  waitUntil,
  writeConfig,
} from './helpers.js';

const ROOMS = { from: [{ path: '/rooms/:room' }, { query: 'room' }] };

async function startWithAdmin(backends: TestBackend[], extra: Record<string, unknown> = {}) {
  const adminPort = await freePort();
  const proxy = await startProxy({
    room: ROOMS,
    backends: backendsConfig(backends),
    admin: { port: adminPort },
    ...extra,
  });
  return { proxy, admin: `http://127.0.0.1:${adminPort}` };
}

async function getJson<T>(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: T }> {
  const res = await request(url, { headers });
  return { status: res.status, body: JSON.parse(res.body) as T };
}

function rewriteConfig(proxy: TestProxy, config: Record<string, unknown>): void {
  writeFileSync(proxy.configFile, stringify({ listen: { host: '127.0.0.1', port: proxy.port }, ...config }));
}

interface Status {
  version: string;
  listen: string;
  registry: { mode: string; connected: boolean };
  ring: { fingerprint: string; size: number };
  connections: number;
  backends: {
    id: string;
    url: string;
    state: string;
    inRing: boolean;
    rooms: number;
    connections: number;
    share: number;
  }[];
}

describe('admin API', () => {
  it('reports status, routes, metrics and health', async () => {
    const backends = await startBackends(['b1', 'b2']);
    const { proxy, admin } = await startWithAdmin(backends);
    const sockets = await Promise.all(
      ['x', 'y', 'z'].map((room) => openSocket(`${proxy.url.replace('http', 'ws')}/rooms/${room}`)),
    );
    await request(`${proxy.url}/rooms/x`);

    const { status, body } = await getJson<Status>(`${admin}/status`);
    expect(status).toBe(200);
    expect(body.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(body.listen).toBe(`127.0.0.1:${proxy.port}`);
    expect(body.registry).toMatchObject({ mode: 'static', connected: true });
    expect(body.ring.size).toBe(2);
    expect(body.connections).toBe(3);
    expect(body.backends.map((b) => b.id)).toEqual(['b1', 'b2']);
    expect(body.backends.reduce((n, b) => n + b.connections, 0)).toBe(3);
    expect(body.backends.reduce((n, b) => n + b.share, 0)).toBeCloseTo(1);

    for (const { hello } of sockets) {
      const room = hello.url.split('/')[2] as string;
      const route = await getJson<{ backend: { id: string }; reason: string }>(`${admin}/route?room=${room}`);
      expect(route.body.backend.id).toBe(hello.server);
      expect(route.body.reason).toBe('lease');
    }
    const fresh = await getJson<{ reason: string }>(`${admin}/route?room=never-seen`);
    expect(fresh.body.reason).toBe('ring-owner');
    expect((await request(`${admin}/route`)).status).toBe(400);

    const metrics = await request(`${admin}/metrics`);
    expect(metrics.headers['content-type']).toMatch(/text\/plain/);
    expect(metrics.body).toMatch(/roomring_requests_total\{backend="b\d",status="200"\} 1/);
    expect(metrics.body).toMatch(/roomring_upgrades_total\{backend="b\d",status="101"\} \d/);
    expect(metrics.body).toMatch(/roomring_live_connections\{backend="b\d"\} \d/);
    expect(metrics.body).toMatch(/roomring_ring_rebuilds_total 1/);
    expect(metrics.body).toMatch(/roomring_placement_seconds_bucket/);
    await request(`${proxy.url}/no-room`);
    // A request llhttp refuses is counted too.
    const garbage = await connectRaw(proxy.port);
    const refused = readAll(garbage);
    garbage.write('NOT HTTP AT ALL\r\n\r\n');
    expect(await refused).toMatch(/^HTTP\/1\.1 400 /);
    const counted = (await request(`${admin}/metrics`)).body;
    expect(counted).toMatch(/roomring_errors_total\{code="ROOMRING_E_NO_ROOM"\} 1/);
    expect(counted).toMatch(/roomring_errors_total\{code="ROOMRING_E_BAD_REQUEST"\} 1/);

    expect((await getJson<{ ok: boolean }>(`${admin}/healthz`)).body).toEqual({ ok: true });
    expect((await request(`${admin}/nope`)).status).toBe(404);
  });

  it('requires the bearer token when one is set, and refuses a non-loopback admin without one', async () => {
    const backends = await startBackends(['b1']);
    const token = 'secret-token-0123456789';
    const adminPort = await freePort();
    const proxy = await startProxy({
      room: ROOMS,
      backends: backendsConfig(backends),
      admin: { port: adminPort, token },
    });
    const admin = `http://127.0.0.1:${adminPort}`;
    expect(proxy.child.exitCode).toBeNull();
    const denied = await request(`${admin}/status`);
    expect(denied.status).toBe(401);
    expect(JSON.parse(denied.body).error.code).toBe('ROOMRING_E_UNAUTHORIZED');
    expect((await request(`${admin}/status`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(
      200,
    );
    expect((await request(`${admin}/status?token=${token}`)).status).toBe(200);

    const open = writeConfig({
      backends: backendsConfig(backends),
      admin: { host: '0.0.0.0', port: adminPort },
    });
    const check = await runCli(['check-config', '--config', open]);
    expect(check.code).toBe(2);
    expect(check.output).toMatch(/admin\.token: expected a token/);
  });
});

describe('graceful shutdown', () => {
  it('fails /healthz, finishes in-flight HTTP, closes WebSockets with 1001 and exits 0', async () => {
    const backends = await startBackends(['b1']);
    const { proxy, admin } = await startWithAdmin(backends);
    const socket = await openSocket(`${proxy.url.replace('http', 'ws')}/rooms/lobby`);
    const closed = new Promise<number>((resolve) => socket.ws.once('close', (code) => resolve(code)));
    const slow = request(`${proxy.url}/slow?ms=1500&room=lobby`).catch((e: Error) => ({
      status: 0,
      body: e.message,
    }));
    await new Promise((r) => setTimeout(r, 200));
    proxy.child.kill('SIGTERM');
    await waitUntil(
      async () => (await request(`${admin}/healthz`).catch(() => ({ status: 0 }))).status === 503,
      2000,
    );
    expect(await closed).toBe(1001);
    expect((await slow).status).toBe(200);
    expect(await proxy.exited).toBe(0);
  });
});

describe('reload', () => {
  it('applies new backends on SIGHUP and through `roomring reload`, keeping open WebSockets; refuses a bad config', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const { proxy, admin } = await startWithAdmin(backends.slice(0, 1));
    const socket = await openSocket(`${proxy.url.replace('http', 'ws')}/rooms/keep`);
    const adminPort = Number(new URL(admin).port);

    rewriteConfig(proxy, {
      room: ROOMS,
      backends: backendsConfig(backends.slice(0, 2)),
      admin: { port: adminPort },
    });
    proxy.child.kill('SIGHUP');
    await waitUntil(async () => (await getJson<Status>(`${admin}/status`)).body.ring.size === 2);

    rewriteConfig(proxy, { room: ROOMS, backends: backendsConfig(backends), admin: { port: adminPort } });
    const reload = await runCli(['reload', '--admin', admin]);
    expect(reload.code).toBe(0);
    expect((await getJson<Status>(`${admin}/status`)).body.ring.size).toBe(3);

    writeFileSync(proxy.configFile, 'listen: [broken');
    const refused = await runCli(['reload', '--admin', admin]);
    expect(refused.code).toBe(1);
    expect(proxy.output()).toMatch(/reload refused/);
    expect((await getJson<Status>(`${admin}/status`)).body.ring.size).toBe(3);

    // The WebSocket opened before all this still echoes through the same tunnel.
    const echo = new Promise<string>((resolve) => socket.ws.once('message', (d) => resolve(String(d))));
    socket.ws.send('still here');
    expect(await echo).toBe(`${socket.hello.server}:still here`);
    expect(proxy.output().match(/config reloaded/g)).toHaveLength(2);
  });
});
