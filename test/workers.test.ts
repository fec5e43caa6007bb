// --workers: several proxy processes on one port that route identically, with one admin API,
// reload and shutdown reaching all of them.
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  backendsConfig,
  freePort,
  openSocket,
  request,
  spawnCli,
  startBackends,
  startProxy,
  waitUntil,
} from './helpers.js';

interface ClusterStatus {
  connections: number;
  ring: { size: number };
  workers: { pid: number; connections: number; fingerprint: string }[];
}

describe('workers', () => {
  it('routes every room identically across 2 workers, aggregates status and metrics, reloads and stops them all', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const adminPort = await freePort();
    const room = { from: [{ path: '/rooms/:room' }] };
    const proxy = await startProxy(
      { room, backends: backendsConfig(backends.slice(0, 2)), admin: { port: adminPort } },
      ['--workers', '2'],
    );
    const admin = `http://127.0.0.1:${adminPort}`;
    await waitUntil(() => /with 2 workers/.test(proxy.output()));
    // Each worker binds its own socket (SO_REUSEPORT) and its native pipe accepts on it. (A
    // worker's log line may reach the output after the primary's.)
    await waitUntil(() => proxy.output().match(/"event":"start".*"accept":"pipe"/g)?.length === 2);
    const ws = proxy.url.replace('http', 'ws');
    const sockets = [];
    const servers = new Map<string, Set<string>>();
    for (let i = 0; i < 60; i++) {
      for (let j = 0; j < 3; j++) {
        const socket = await openSocket(`${ws}/rooms/w${i}`);
        sockets.push(socket);
        servers.set(`w${i}`, (servers.get(`w${i}`) ?? new Set()).add(socket.hello.server));
      }
    }
    expect([...servers.values()].every((s) => s.size === 1)).toBe(true);
    // Rooms joined once, by whichever worker took the connection: after the ring changes, the
    // other worker must still find their lease (kept by the primary), or the room would split.
    const single = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      const socket = await openSocket(`${ws}/rooms/p${i}`);
      sockets.push(socket);
      single.set(`p${i}`, socket.hello.server);
    }

    const status = JSON.parse((await request(`${admin}/status`)).body) as ClusterStatus;
    expect(status.workers).toHaveLength(2);
    expect(new Set(status.workers.map((w) => w.fingerprint)).size).toBe(1);
    expect(new Set(status.workers.map((w) => w.pid)).size).toBe(2);
    // Connections are spread over both workers and summed in the one status.
    expect(status.connections).toBe(220);
    expect(status.workers.every((w) => w.connections > 0)).toBe(true);
    for (let i = 0; i < 10; i++) await request(`${proxy.url}/rooms/m${i}`);
    const metrics = (await request(`${admin}/metrics`)).body;
    const total = [...metrics.matchAll(/roomring_requests_total\{[^}]*status="200"[^}]*\} (\d+)/g)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
    expect(total).toBe(10);

    writeFileSync(
      proxy.configFile,
      stringify({
        listen: { host: '127.0.0.1', port: proxy.port },
        room,
        backends: backendsConfig(backends),
        admin: { port: adminPort },
      }),
    );
    proxy.child.kill('SIGHUP');
    await waitUntil(async () => {
      const s = JSON.parse((await request(`${admin}/status`)).body) as ClusterStatus;
      return s.ring.size === 3 && s.connections === 220;
    });
    let split = 0;
    for (const [room, server] of single) {
      for (let j = 0; j < 3; j++) {
        const socket = await openSocket(`${ws}/rooms/${room}`);
        sockets.push(socket);
        if (socket.hello.server !== server) split++;
      }
    }
    expect(split).toBe(0);

    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).toBe(0);
    for (const { pid } of status.workers) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('workers on their own sockets', () => {
  it('refuses a second proxy on the same port rather than share it, and keeps answering', async () => {
    const backends = await startBackends(['b1', 'b2']);
    const proxy = await startProxy({ backends: backendsConfig(backends) }, ['--workers', '2']);
    await waitUntil(() => proxy.output().match(/"event":"start".*"accept":"pipe"/g)?.length === 2);
    // Each worker's pipe binds the port with SO_REUSEPORT: a plain bind by the next primary fails.
    const second = spawnCli(['start', '--config', proxy.configFile, '--workers', '2']);
    expect(await second.exited).not.toBe(0);
    expect(second.output()).toContain('EADDRINUSE');
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => request(`${proxy.url}/rooms/s${i}`)),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
  });
});

describe('workers without Redis: one health verdict', () => {
  it('has the primary check once and every worker drop and readmit a failing backend together', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const adminPort = await freePort();
    const proxy = await startProxy(
      {
        room: { from: [{ path: '/rooms/:room' }] },
        backends: backendsConfig(backends),
        admin: { port: adminPort },
        health: { interval: '200ms', timeout: '200ms', fall: 2, rise: 1 },
      },
      ['--workers', '2'],
    );
    const admin = `http://127.0.0.1:${adminPort}`;
    await waitUntil(() => /with 2 workers/.test(proxy.output()));
    const rings = async () => {
      const s = JSON.parse((await request(`${admin}/status`)).body) as ClusterStatus & {
        backends: { id: string; inRing: boolean }[];
      };
      return {
        fingerprints: new Set(s.workers.map((w) => w.fingerprint)),
        size: s.ring.size,
        workers: s.workers.length,
      };
    };
    await waitUntil(async () => {
      const r = await rings();
      return r.workers === 2 && r.size === 3 && r.fingerprints.size === 1;
    }, 5000);
    const full = [...(await rings()).fingerprints][0];
    await request(`${backends[1]?.url}/set-health?status=500`);
    await waitUntil(async () => {
      const r = await rings();
      return r.fingerprints.size === 1 && !r.fingerprints.has(full as string);
    }, 3000);
    // The primary decided once and logged it once; no worker checks on its own.
    await waitUntil(() => /backend b2 is down/.test(proxy.output()));
    expect(proxy.output().match(/backend b2 is down/g)).toHaveLength(1);
    await request(`${backends[1]?.url}/set-health?status=200`);
    await waitUntil(
      async () => (await rings()).fingerprints.has(full as string) && (await rings()).fingerprints.size === 1,
      3000,
    );
    expect(proxy.output().match(/backend b\d is up/g)).toHaveLength(4);
  });
});
