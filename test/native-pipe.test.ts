// The native byte pipe that forwards upgraded WebSockets (native/pipe.cc): a real proxy process,
// raw TCP clients and a raw backend that answers 101, so every byte, FIN and close is visible.

import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { nativePipe } from '../src/proxy/native-pipe.js';
import {
  connectRaw,
  freePort,
  onCleanup,
  pipeLoopSockets,
  ROOT,
  readAll,
  request,
  socketCount,
  spawnCli,
  startProxy,
  stopProcess,
  type TestProxy,
  tempDir,
  waitForSocketCount,
  waitUntil,
  writeConfig,
} from './helpers.js';

const SWITCH = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';

/** A backend that answers every upgrade with 101 and hands the socket to `onTunnel`. */
async function startUpgradeBackend(onTunnel: (socket: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.write(SWITCH);
      const rest = head.subarray(end + 4);
      onTunnel(socket);
      if (rest.length > 0) socket.unshift(rest);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const address = server.address() as net.AddressInfo;
  return address.port;
}

/** `websocket.threadAfter` of the proxies the tests start (see tunnelTests). */
let threadAfter: string | number = '1s';

/** A proxy in front of one backend; by default given by IP address, so the pipe connects to it. */
async function proxyTo(
  backendPort: number,
  extra: Record<string, unknown> = {},
  host = '127.0.0.1',
): Promise<TestProxy & { admin: string }> {
  const adminPort = await freePort();
  const proxy = await startProxy({
    backends: [{ id: 'b1', url: `http://${host}:${backendPort}` }],
    admin: { port: adminPort },
    ...extra,
    websocket: { threadAfter, ...(extra.websocket as Record<string, unknown> | undefined) },
  });
  return { ...proxy, admin: `http://127.0.0.1:${adminPort}` };
}

/** Opens a raw upgraded connection through the proxy; resolves after the 101 head, paused. */
async function upgrade(port: number): Promise<net.Socket> {
  const socket = await connectRaw(port, true);
  socket.write(
    'GET /rooms/r1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  await new Promise<void>((resolve, reject) => {
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.pause();
      if (!head.startsWith('HTTP/1.1 101')) reject(new Error(`no 101: ${head}`));
      const rest = Buffer.from(head.slice(end + 4), 'latin1');
      if (rest.length > 0) socket.unshift(rest);
      resolve();
    };
    socket.on('data', onData);
  });
  return socket;
}

async function pipedCount(admin: string): Promise<number> {
  const { body } = await request(`${admin}/metrics`);
  const match = /^roomring_piped_connections (\d+)$/m.exec(body);
  if (match === null) throw new Error('no roomring_piped_connections in /metrics');
  return Number(match[1]);
}

const UPGRADE =
  'GET /rooms/r1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

/**
 * A backend whose accept queue is full: its process never accepts (its event loop is blocked),
 * a backlog of 1 holds the two connections made here, and the kernel drops further SYNs, so a
 * connect to it hangs.
 */
async function stuckBackend(): Promise<number> {
  const stuck = spawn(
    process.execPath,
    [
      '-e',
      "const s = require('net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {" +
        ' console.log(s.address().port); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); });',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  onCleanup(() => stopProcess(stuck));
  const port = await new Promise<number>((resolve) =>
    stuck.stdout?.once('data', (line: Buffer) => resolve(Number(String(line).trim()))),
  );
  const fillers = [await connectRaw(port), await connectRaw(port)];
  onCleanup(() => {
    for (const filler of fillers) filler.destroy();
  });
  return port;
}

/** Sends 'ping' on an upgraded (paused) client of an echoing backend and expects it back. */
async function expectEcho(client: net.Socket): Promise<void> {
  const echoed = new Promise<string>((resolve) =>
    client.once('data', (chunk: Buffer) => resolve(String(chunk))),
  );
  client.resume();
  client.write('ping');
  expect(await echoed).toBe('ping');
}

/** CPU ticks (user + system) of the proxy's `roomring-pipe` thread. */
function pipeThreadTicks(pid: number): number {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    if (!stat.includes('(roomring-pipe)')) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  }
  throw new Error(`process ${pid} has no roomring-pipe thread`);
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads a (paused) client until the proxy ends or closes it: its bytes and any socket error. */
function readToEnd(client: net.Socket): Promise<{ data: Buffer; error: Error | undefined }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: Error | undefined;
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.on('error', (e) => {
      error = e;
    });
    const done = (): void => resolve({ data: Buffer.concat(chunks), error });
    client.once('end', done);
    client.once('close', done);
    client.resume();
  });
}

/**
 * Sends an upgrade to a proxy whose backend cannot be connected to, shuts the proxy down while the
 * connect runs, and checks that the connect still runs to its limit: the client hears why it
 * failed, and the proxy exits cleanly after.
 */
async function expectTimeoutAnswerThroughShutdown(proxy: TestProxy): Promise<void> {
  const client = await connectRaw(proxy.port);
  const answer = readAll(client);
  client.write(UPGRADE);
  await sleep(300);
  proxy.child.kill('SIGTERM');
  const text = await answer;
  expect(text).toMatch(/^HTTP\/1\.1 504 /);
  expect(text).toContain('ROOMRING_E_BACKEND_TIMEOUT');
  expect(await proxy.exited).toBe(0);
}

describe('native pipe', () => {
  it('is built on Linux by npm install', () => {
    if (process.platform === 'linux') expect(nativePipe()).toBeDefined();
  });

  it('moves a quiet tunnel to the pipe thread at an idle sweep after websocket.threadAfter, and keeps it working', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const moved = await proxyTo(backendPort, { websocket: { threadAfter: '200ms' } });
    const kept = await proxyTo(backendPort, { websocket: { threadAfter: '1h' } });
    const movedClient = await upgrade(moved.port);
    const keptClient = await upgrade(kept.port);
    // Nothing is sent: only the main loop's idle sweep (every second) can move the tunnel.
    await sleep(1200);
    await waitUntil(() => pipeLoopSockets(moved.child.pid as number).thread === 2, 5000);
    // The main loop watches the listening socket; the pipe thread's loop, the moved tunnel's two.
    expect(pipeLoopSockets(moved.child.pid as number)).toEqual({ main: 1, thread: 2 });
    expect(pipeLoopSockets(kept.child.pid as number)).toEqual({ main: 3, thread: 0 });
    for (const client of [movedClient, keptClient]) await expectEcho(client);
  });

  it('moves a tunnel open for websocket.threadAfter to the pipe thread mid-stream, losing no byte', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    /** Echoes 48 MB in 96 writes over about a second; what comes back, and the pipe thread's CPU ticks. */
    const echoThrough = async (after: string): Promise<{ sent: string; back: string; ticks: number }> => {
      const proxy = await proxyTo(backendPort, { websocket: { threadAfter: after } });
      const client = await upgrade(proxy.port);
      const got: Buffer[] = [];
      let length = 0;
      client.on('data', (chunk: Buffer) => {
        got.push(chunk);
        length += chunk.length;
      });
      client.resume();
      const sent: Buffer[] = [];
      for (let i = 0; i < 96; i++) {
        const chunk = randomBytes(512 * 1024);
        sent.push(chunk);
        client.write(chunk);
        await sleep(10);
      }
      await waitUntil(() => length >= 96 * 512 * 1024, 20000);
      return {
        sent: sha(Buffer.concat(sent)),
        back: sha(Buffer.concat(got)),
        ticks: pipeThreadTicks(proxy.child.pid as number),
      };
    };
    const moved = await echoThrough('200ms');
    expect(moved.back).toBe(moved.sent);
    const stayed = await echoThrough('1h');
    expect(stayed.back).toBe(stayed.sent);
    // The same bytes: forwarded by the pipe thread once moved, by the main thread otherwise.
    expect(moved.ticks).toBeGreaterThan(stayed.ticks);
  });

  it('says in the start log which pipe forwards WebSockets, and warns when the native one is not built', async () => {
    const echo = (socket: net.Socket): void => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    };
    const backendPort = await startUpgradeBackend(echo);
    const built = await proxyTo(backendPort);
    expect(built.output()).toMatch(/"event":"start".*"pipe":"native".*"accept":"pipe"/);
    expect(built.output()).not.toContain('"event":"pipe"');

    // A copy of the CLI without build/: the addon cannot load, and tunnels stay on Node sockets.
    const copy = tempDir();
    for (const part of ['dist', 'bin', 'package.json'])
      cpSync(path.join(ROOT, part), path.join(copy, part), { recursive: true });
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(copy, 'node_modules'));
    const port = await freePort();
    const config = writeConfig({
      listen: { host: '127.0.0.1', port },
      backends: [{ id: 'b1', url: `http://127.0.0.1:${backendPort}` }],
    });
    const unbuilt = spawnCli(['start', '--config', config], {}, path.join(copy, 'bin', 'roomring.js'));
    await unbuilt.waitFor(/roomring listening on/);
    expect(unbuilt.output()).toMatch(/"event":"pipe".*the native addon did not load.*npm run install/);
    expect(unbuilt.output()).toMatch(/"event":"start".*"pipe":"js".*"accept":"node"/);
    const client = await upgrade(port);
    await expectEcho(client);
  });

  it("keeps tunnels on Node sockets with websocket.pipe 'js'", async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const proxy = await proxyTo(backendPort, { websocket: { pipe: 'js' } });
    expect(proxy.output()).toMatch(/"event":"start".*"accept":"node"/);
    const client = await upgrade(proxy.port);
    await expectEcho(client);
    expect(await pipedCount(proxy.admin)).toBe(0);
  });
});

/**
 * The tunnel tests, run twice: with the default `websocket.threadAfter`, so their short-lived tunnels
 * stay on the main thread's loop, and with 0, so each moves to the pipe thread at its first bytes
 * after the backend's answer.
 */
function tunnelTests(after: string | number): void {
  beforeAll(() => {
    threadAfter = after;
  });
  afterAll(() => {
    threadAfter = '1s';
  });

  it('carries 8 MB both ways intact through back-pressure, passes each FIN on, and closes its sockets', async () => {
    const fromBackend = randomBytes(8 * 1024 * 1024);
    const backendGot: Buffer[] = [];
    let backendEnded = false;
    const backendPort = await startUpgradeBackend((socket) => {
      // The backend starts its 8 MB with the client's first bytes, once the tunnel is piped.
      socket.on('data', (chunk: Buffer) => {
        if (backendGot.length === 0) socket.write(fromBackend);
        backendGot.push(chunk);
      });
      socket.on('end', () => {
        backendEnded = true;
        socket.end(Buffer.from('bye'));
      });
    });
    const proxy = await proxyTo(backendPort);
    const before = socketCount(proxy.child.pid as number);
    const client = await upgrade(proxy.port);
    // The client does not read for a while: the backend's 8 MB back up through the pipe.
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    const fromClient = randomBytes(8 * 1024 * 1024);
    client.write(fromClient);
    await sleep(300);
    const clientGot: Buffer[] = [];
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    client.on('data', (chunk: Buffer) => clientGot.push(chunk));
    client.resume();
    await waitUntil(() => Buffer.concat(clientGot).length >= fromBackend.length, 10000);
    await waitUntil(() => Buffer.concat(backendGot).length >= fromClient.length, 10000);
    expect(sha(Buffer.concat(backendGot))).toBe(sha(fromClient));
    client.end();
    await ended;
    expect(backendEnded).toBe(true);
    const received = Buffer.concat(clientGot);
    expect(received.length).toBe(fromBackend.length + 3);
    expect(sha(received.subarray(0, fromBackend.length))).toBe(sha(fromBackend));
    expect(received.subarray(fromBackend.length).toString()).toBe('bye');
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 0);
    // The admin request's own connection may still be open for a moment.
    await waitForSocketCount(proxy.child.pid as number, before);
  });

  it('connects to a backend given by IP address from the pipe: its first bytes never wait in Node', async () => {
    const burst = randomBytes(4 * 1024 * 1024);
    const backendPort = await startUpgradeBackend((socket) => {
      socket.write(burst);
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    // The client reads nothing yet; the tunnel is in the pipe already, burst and all.
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    const got: Buffer[] = [];
    client.on('data', (chunk: Buffer) => got.push(chunk));
    client.resume();
    await waitUntil(() => Buffer.concat(got).length >= burst.length, 10000);
    expect(sha(Buffer.concat(got))).toBe(sha(burst));
    got.length = 0;
    client.write('after');
    await waitUntil(() => Buffer.concat(got).toString() === 'after');
  });

  it('answers 504 when the pipe cannot connect within timeouts.connect', async () => {
    const proxy = await proxyTo(await stuckBackend(), { timeouts: { connect: '300ms' } });
    const client = await connectRaw(proxy.port);
    const answer = readAll(client);
    const started = Date.now();
    client.write(UPGRADE);
    const text = await answer;
    expect(text).toMatch(/^HTTP\/1\.1 504 /);
    expect(text).toContain('ROOMRING_E_BACKEND_TIMEOUT');
    // Not the kernel's own connect timeout, which takes minutes.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await pipedCount(proxy.admin)).toBe(0);
  });

  it('waits on shutdown for an upgrade whose backend the pipe is still connecting to, and answers it', async () => {
    const proxy = await proxyTo(await stuckBackend(), { timeouts: { connect: '1500ms' } });
    await expectTimeoutAnswerThroughShutdown(proxy);
  });

  it('waits on shutdown for an upgrade that Node is connecting (a TLS backend), accepted by the pipe', async () => {
    const stuck = await stuckBackend();
    const adminPort = await freePort();
    const proxy = await startProxy({
      backends: [{ id: 'b1', url: `https://127.0.0.1:${stuck}` }],
      admin: { port: adminPort },
      timeouts: { connect: '1500ms' },
    });
    expect(proxy.output()).toMatch(/"accept":"pipe"/);
    await expectTimeoutAnswerThroughShutdown(proxy);
  });

  it('ends the client of a backend that closes before answering, with no timeout answer', async () => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => socket.destroy());
      socket.resume();
      setTimeout(() => socket.end(), 100);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const proxy = await proxyTo((server.address() as net.AddressInfo).port, { timeouts: { response: '1s' } });
    const client = await connectRaw(proxy.port, true);
    const answer = readToEnd(client);
    client.write(UPGRADE);
    const { data } = await answer;
    expect(data.length).toBe(0);
    // Past timeouts.response: the client, ended already, was not given back for a 504.
    await sleep(1500);
    const { body } = await request(`${proxy.admin}/metrics`);
    expect(body).not.toMatch(/ROOMRING_E_BACKEND_TIMEOUT/);
  });

  it('hands over a tunnel whose bytes were queued in Node once they are written, losing none', async () => {
    const burst = randomBytes(4 * 1024 * 1024);
    const backendPort = await startUpgradeBackend((socket) => {
      socket.write(burst);
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    // A backend given by name is connected to by Node; its tunnel goes to the pipe later.
    const proxy = await proxyTo(backendPort, {}, 'localhost');
    const client = await upgrade(proxy.port);
    // The client reads nothing for a second: the burst waits in the proxy's Node sockets.
    await sleep(1000);
    expect(await pipedCount(proxy.admin)).toBe(0);
    const got: Buffer[] = [];
    client.on('data', (chunk: Buffer) => got.push(chunk));
    client.resume();
    await waitUntil(() => Buffer.concat(got).length >= burst.length, 10000);
    expect(sha(Buffer.concat(got))).toBe(sha(burst));
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    got.length = 0;
    client.write('after');
    await waitUntil(() => Buffer.concat(got).toString() === 'after');
  });

  it('ends the client when the backend ends, after what the backend sent last', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.once('data', () => socket.end(Buffer.from('last words')));
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    let text = '';
    client.on('data', (chunk: Buffer) => {
      text += chunk;
    });
    const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
    client.resume();
    client.write('hello');
    await ended;
    expect(text).toBe('last words');
    // The client's socket lingers until the client ends too, as a WebSocket client does.
    expect(await pipedCount(proxy.admin)).toBe(1);
    client.end();
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 0);
  });

  it('delivers all the backend sends after the client ended, to a client that reads late', async () => {
    const reply = randomBytes(4 * 1024 * 1024);
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', () => {});
      socket.on('end', () => socket.end(reply));
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    client.end();
    await sleep(1000);
    const { data } = await readToEnd(client);
    expect(sha(data)).toBe(sha(reply));
  });

  it('does not reset a client with unread bytes when the backend ends: the last bytes arrive', async () => {
    const reply = randomBytes(2 * 1024 * 1024);
    let backendSocket: net.Socket | undefined;
    const backendPort = await startUpgradeBackend((socket) => {
      // This backend reads nothing: the client's bytes back up in the proxy.
      socket.pause();
      backendSocket = socket;
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    let clientError: Error | undefined;
    client.on('error', (error) => {
      clientError = error;
    });
    client.write(randomBytes(8 * 1024 * 1024));
    await sleep(300);
    backendSocket?.end(reply);
    await sleep(500);
    const { data, error } = await readToEnd(client);
    expect(clientError ?? error).toBeUndefined();
    expect(sha(data)).toBe(sha(reply));
  });

  it('still delivers what a closed backend sent to a slow client when its next bytes are answered with a reset', async () => {
    const last = randomBytes(2 * 1024 * 1024);
    let backendSocket: net.Socket | undefined;
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', () => {});
      backendSocket = socket;
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    // The backend sends more than the paused client takes, then closes outright.
    backendSocket?.end(last, () => backendSocket?.destroy());
    await sleep(300);
    // The client's bytes reach a closed socket: the backend's kernel answers with a reset.
    client.write('one');
    await sleep(200);
    client.write('two');
    await sleep(200);
    const { data, error } = await readToEnd(client);
    expect(error).toBeUndefined();
    expect(sha(data)).toBe(sha(last));
  });

  it('passes on what the backend sent before it reset the connection', async () => {
    const last = randomBytes(1000);
    const backendPort = await startUpgradeBackend((socket) => {
      socket.once('data', () => {
        socket.write(last, () => socket.resetAndDestroy());
      });
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    const read = readToEnd(client);
    client.write('go');
    expect((await read).data).toEqual(last);
  });

  it('closes a piped tunnel with no bytes either way for timeouts.idle, and not one that talks', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const proxy = await proxyTo(backendPort, { timeouts: { idle: '1500ms' } });
    const quiet = await upgrade(proxy.port);
    const talking = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 2);
    let quietClosed = false;
    quiet.once('end', () => {
      quietClosed = true;
    });
    quiet.resume();
    talking.resume();
    let echoed = 0;
    talking.on('data', (chunk: Buffer) => {
      echoed += chunk.length;
    });
    const ticker = setInterval(() => talking.write('.'), 200);
    onCleanup(() => clearInterval(ticker));
    await waitUntil(() => quietClosed, 5000);
    expect(talking.destroyed).toBe(false);
    clearInterval(ticker);
    expect(echoed).toBeGreaterThan(0);
    expect(await pipedCount(proxy.admin)).toBe(1);
  });

  it('waits on shutdown for piped tunnels to finish their close handshake, without an admin listener', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', () => {});
      socket.on('end', () => socket.end());
    });
    const proxy = await startProxy({
      backends: [{ id: 'b1', url: `http://127.0.0.1:${backendPort}` }],
      websocket: { threadAfter },
    });
    const client = await upgrade(proxy.port);
    // Tunnels go to the pipe 250 to 500 ms after their 101.
    await sleep(1000);
    let closeFrameAt = 0;
    client.on('data', () => {
      closeFrameAt = Date.now();
    });
    // The client answers the close frame only after 600 ms.
    client.on('end', () => setTimeout(() => client.end(), 600));
    client.resume();
    const stoppedAt = Date.now();
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).toBe(0);
    expect(closeFrameAt).toBeGreaterThan(0);
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(500);
    expect(proxy.output()).toMatch(/"event":"stopped"/);
  });

  it("closes piped tunnels with 1001 each way on shutdown, the backend's frame masked", async () => {
    const backendFrames: Buffer[] = [];
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => backendFrames.push(chunk));
      // The backend answers the close by closing.
      socket.on('end', () => socket.end());
    });
    const proxy = await proxyTo(backendPort);
    const client = await upgrade(proxy.port);
    await waitUntil(async () => (await pipedCount(proxy.admin)) === 1);
    const got: Buffer[] = [];
    client.on('data', (chunk: Buffer) => got.push(chunk));
    client.on('end', () => client.end());
    client.resume();
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).toBe(0);
    expect(Buffer.concat(got)).toEqual(Buffer.from([0x88, 0x02, 0x03, 0xe9]));
    const frame = Buffer.concat(backendFrames);
    expect(frame.length).toBe(8);
    expect(frame[0]).toBe(0x88);
    expect(frame[1]).toBe(0x82);
    const code =
      ((frame[6] as number) ^ (frame[2] as number)) * 256 + ((frame[7] as number) ^ (frame[3] as number));
    expect(code).toBe(1001);
  });
}

describe('native pipe tunnels on the main thread', () => tunnelTests('1s'));

describe('native pipe tunnels moved to the pipe thread', () => tunnelTests(0));

describe('native accept', () => {
  it('takes an upgrade whose head comes in pieces, with bytes right behind it, to the backend whole', async () => {
    const seen: string[] = [];
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => {
        seen.push(String(chunk));
        socket.write(chunk);
      });
    });
    const proxy = await proxyTo(backendPort);
    const client = await connectRaw(proxy.port);
    const got: Buffer[] = [];
    client.on('data', (chunk: Buffer) => got.push(chunk));
    // The pipe reads until the head's empty line, however it is cut, and what follows the head in
    // the same read is the tunnel's first bytes.
    const cut = UPGRADE.length - 3;
    client.write(UPGRADE.slice(0, 20));
    await sleep(150);
    client.write(UPGRADE.slice(20, cut));
    await sleep(150);
    client.write(`${UPGRADE.slice(cut)}early`);
    await waitUntil(() => Buffer.concat(got).toString().endsWith('early'));
    expect(Buffer.concat(got).toString()).toMatch(/^HTTP\/1\.1 101 /);
    expect(seen.join('')).toBe('early');
    expect(await pipedCount(proxy.admin)).toBe(1);
  });

  it('closes a connection that sends nothing within listen.keepAlive, and one that ends before its head', async () => {
    const backendPort = await startUpgradeBackend(() => {});
    const proxy = await proxyTo(backendPort, { listen: { keepAlive: '1s' } });
    const before = socketCount(proxy.child.pid as number);
    const silent = await connectRaw(proxy.port);
    const started = Date.now();
    const ended = readAll(silent);
    const partial = await connectRaw(proxy.port);
    const partialAnswer = readAll(partial);
    partial.end('GET /rooms/r1 HTTP/1.1\r\nHost');
    expect(await partialAnswer).toBe('');
    expect(await ended).toBe('');
    // The sweep runs every second: closed after one to two of them.
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(Date.now() - started).toBeLessThan(5000);
    await waitForSocketCount(proxy.child.pid as number, before);

    // keepAlive 0, as on Node's side: closed at the next sweep, not kept for ever.
    const eager = await proxyTo(backendPort, { listen: { keepAlive: '0s' } });
    const quiet = await connectRaw(eager.port);
    const closedAt = Date.now();
    expect(await readAll(quiet)).toBe('');
    expect(Date.now() - closedAt).toBeLessThan(3000);
  });

  it('applies a reloaded listen.keepAlive to the connections it accepts afterwards', async () => {
    const backendPort = await startUpgradeBackend(() => {});
    const backends = [{ id: 'b1', url: `http://127.0.0.1:${backendPort}` }];
    const proxy = await startProxy({ backends, listen: { keepAlive: '60s' } });
    writeFileSync(
      proxy.configFile,
      stringify({ listen: { host: '127.0.0.1', port: proxy.port, keepAlive: '1s' }, backends }),
    );
    proxy.child.kill('SIGHUP');
    await proxy.waitFor(/config reloaded/);
    const quiet = await connectRaw(proxy.port);
    const opened = Date.now();
    expect(await readAll(quiet)).toBe('');
    // Within a sweep or two of 1 s, not 60 s.
    expect(Date.now() - opened).toBeLessThan(5000);
  });

  it('closes the connections whose head it still awaits on shutdown, and stops promptly', async () => {
    const backendPort = await startUpgradeBackend(() => {});
    const proxy = await proxyTo(backendPort);
    const waiting = await connectRaw(proxy.port);
    const answer = readAll(waiting);
    waiting.write('GET /rooms/r1 HTTP/1.1\r\n');
    await sleep(100);
    const started = Date.now();
    await proxy.stop();
    expect(await answer).toBe('');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('rests, without spinning, while the process is out of descriptors, and accepts again once some are freed', async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    const proxy = await proxyTo(backendPort);
    const pid = proxy.child.pid as number;
    execFileSync('prlimit', ['--pid', String(pid), '--nofile=64:64']);
    // Silent connections hold a descriptor each in the pipe until the proxy runs out; the
    // kernel queues the rest.
    const silent = [];
    for (let i = 0; i < 80; i++) silent.push(await connectRaw(proxy.port));
    await waitUntil(() => socketCount(pid) > 30);
    const late = await connectRaw(proxy.port);
    let text = '';
    const echoed = new Promise<string>((resolve) => {
      late.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (text.endsWith('ping')) resolve(text);
      });
    });
    late.write(UPGRADE);
    const ticks = (): number => {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      return Number(fields[11]) + Number(fields[12]);
    };
    const before = ticks();
    await sleep(1000);
    // A listener polled while accept4 fails with EMFILE would burn a core (about 100 ticks a second).
    expect(ticks() - before).toBeLessThan(50);
    // Still queued: nothing can accept it yet.
    expect(text).toBe('');
    for (const socket of silent) socket.destroy();
    late.write('ping');
    expect(await echoed).toMatch(/^HTTP\/1\.1 101 [\s\S]*ping$/);
  });

  it("accepts in Node with websocket.pipe 'js', and serves the same requests", async () => {
    const backendPort = await startUpgradeBackend((socket) => {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
    });
    for (const pipe of ['native', 'js']) {
      const proxy = await proxyTo(backendPort, { websocket: { pipe } });
      expect(proxy.output()).toMatch(pipe === 'native' ? /"accept":"pipe"/ : /"accept":"node"/);
      const client = await connectRaw(proxy.port);
      const answer = readAll(client);
      // A request with no room is answered by the proxy itself, before any backend.
      client.end('GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(await answer).toMatch(/^HTTP\/1\.1 400 [\s\S]*ROOMRING_E_NO_ROOM/);
      await proxy.stop();
    }
  });
});
