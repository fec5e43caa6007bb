// Test helpers: real processes (backends, the roomring CLI, redis-server) on free ports, real
// WebSocket clients, and one cleanup list so every test tears down all it started.

import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import WebSocket from 'ws';
import { stringify } from 'yaml';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'bin', 'roomring.js');
const BACKEND = path.join(ROOT, 'test', 'fixtures', 'backend.mjs');

type Cleanup = () => unknown | Promise<unknown>;
const cleanups: Cleanup[] = [];

/** Registers a teardown step; all run (last first) after each test. */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

afterEach(async () => {
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as Cleanup;
    try {
      await fn();
    } catch {
      // Teardown keeps going: one failed cleanup must not leave the rest running.
    }
  }
});

/**
 * A port that was free a moment ago, for a process to listen on. It is drawn below the kernel's
 * ephemeral range (net.ipv4.ip_local_port_range, 32768 and up here): a port the kernel hands out
 * could be taken, between this check and the listen, as the local end of some test's outgoing
 * connection (EADDRINUSE). Ports are drawn at random so parallel test files rarely try the same.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port found between 20000 and 32000');
}

/**
 * A port nothing listens on, for a backend that refuses connections: drawn from 10000–19999, a
 * range neither freePort nor the kernel's ephemeral ports use, so no test starts listening there.
 */
export async function deadPort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = 10000 + Math.floor(Math.random() * 10000);
    if (await canListen(port)) return port;
  }
  throw new Error('no unused port found between 10000 and 20000');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'roomring-test-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes `config` as YAML (or raw text) to a temp file and returns its path. */
export function writeConfig(config: unknown, name = 'roomring.yaml'): string {
  const file = path.join(tempDir(), name);
  writeFileSync(file, typeof config === 'string' ? config : stringify(config));
  return file;
}

/** Stops a child process: SIGTERM, then SIGKILL if it lingers. */
export function stopProcess(child: ChildProcess, timeoutMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export interface TestBackend {
  id: string;
  port: number;
  url: string;
  child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts the fixture backend as a process of its own on a free port. */
export async function startBackend(id: string, port = 0): Promise<TestBackend> {
  const child = fork(BACKEND, [id, String(port)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  onCleanup(() => stopProcess(child));
  const bound = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`backend ${id} exited (${code})`)));
  });
  const kill = (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  return { id, port: bound, url: `http://127.0.0.1:${bound}`, child, kill };
}

export async function startBackends(ids: string[]): Promise<TestBackend[]> {
  return Promise.all(ids.map((id) => startBackend(id)));
}

export interface RunningCli {
  child: ChildProcess;
  /** Everything written so far to stdout and stderr. */
  output(): string;
  /** Resolves when the output matches; rejects on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/** Runs the real CLI (or the copy of it at `cli`) as a child process. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, cli = CLI): RunningCli {
  const child = spawn(process.execPath, [cli, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  onCleanup(() => stopProcess(child));
  const waitFor = (pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const match = out.match(pattern);
        if (match) {
          cleanup();
          resolve(match);
        }
        return match !== null;
      };
      const onExit = (): void => {
        if (!check()) {
          cleanup();
          reject(new Error(`process exited before ${pattern}:\n${out}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}:\n${out}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        child.stdout?.off('data', check);
        child.stderr?.off('data', check);
        child.off('exit', onExit);
      };
      if (check()) return;
      child.stdout?.on('data', check);
      child.stderr?.on('data', check);
      child.once('exit', onExit);
    });
  return { child, output: () => out, waitFor, exited, stop: () => stopProcess(child) };
}

/** Runs a CLI command to completion. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; output: string }> {
  const cli = spawnCli(args, env);
  const code = await cli.exited;
  return { code, output: cli.output() };
}

export interface TestProxy extends RunningCli {
  port: number;
  url: string;
  configFile: string;
}

/** Starts `roomring start` with `config` (listen port filled in) and waits until it listens. */
export async function startProxy(
  config: Record<string, unknown>,
  extraArgs: string[] = [],
): Promise<TestProxy> {
  const port = await freePort();
  const listen = (config.listen ?? {}) as Record<string, unknown>;
  const configFile = writeConfig({ ...config, listen: { ...listen, host: '127.0.0.1', port } });
  const cli = spawnCli(['start', '--config', configFile, ...extraArgs]);
  await cli.waitFor(/roomring listening on/);
  return { ...cli, port, url: `http://127.0.0.1:${port}`, configFile };
}

export function backendsConfig(backends: TestBackend[]): { id: string; url: string }[] {
  return backends.map((b) => ({ id: b.id, url: b.url }));
}

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request with a fresh connection (no agent), so tests see the proxy's own behaviour. */
export function request(
  url: string,
  options: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: options.method ?? 'GET', headers: options.headers, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export interface OpenSocket {
  ws: WebSocket;
  /** The backend's greeting: which server took the connection. */
  hello: { server: string; url: string; headers: Record<string, string> };
}

/** Opens a WebSocket and waits for the backend's greeting. */
export function openSocket(url: string, headers: Record<string, string> = {}): Promise<OpenSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    onCleanup(() => ws.terminate());
    ws.once('message', (data) => resolve({ ws, hello: JSON.parse(String(data)) }));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
}

export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  stepMs = 25,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export interface TestRedis {
  port: number;
  url: string;
  /** Stops the server (SIGKILL by default: Redis vanishes as in a crash). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port, empty (no persistence). */
  start(): Promise<void>;
}

/** A throwaway redis-server on a free port, without persistence; never a shared instance. */
export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child = proc;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        out += d;
        if (out.includes('Ready to accept connections')) {
          proc.stdout?.off('data', onData);
          proc.stdout?.resume();
          resolve();
        }
      };
      proc.stdout?.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}):\n${out}`)));
    });
  };
  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const proc = child;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill(signal);
    });
  };
  await start();
  onCleanup(() => stop());
  return { port, url: `redis://127.0.0.1:${port}`, stop, start };
}

/** Open sockets of a process (Linux): its file descriptors that link to `socket:[inode]`. */
export function socketCount(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) count++;
    } catch {
      // The descriptor closed between the listing and the read.
    }
  }
  return count;
}

/** Waits until the process has `expected` open sockets; the error says how many it had. */
export async function waitForSocketCount(pid: number, expected: number, timeoutMs = 5000): Promise<void> {
  try {
    await waitUntil(() => socketCount(pid) === expected, timeoutMs);
  } catch {
    throw new Error(`process ${pid} has ${socketCount(pid)} open sockets, expected ${expected}`);
  }
}

export interface SilentServer {
  port: number;
  url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections still open (the peer has not closed them). */
  readonly open: number;
}

/** A TCP server that accepts connections and never writes a byte: a hung backend. */
export async function startSilentServer(): Promise<SilentServer> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => sockets.delete(socket));
    // Reads (and drops) what arrives, so the peer's writes never block on a full window.
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return sockets.size;
    },
  };
}

/** The size of the proxy's latest ring, read from its 'ring rebuilt' log lines (undefined before any). */
export function ringSizeOf(proxy: RunningCli): number | undefined {
  const last = [...proxy.output().matchAll(/ring rebuilt with (\d+) backend/g)].at(-1)?.[1];
  return last === undefined ? undefined : Number(last);
}

/** Runs `roomring backends ACTION --redis URL --cluster C ...args` against a test Redis. */
export function backendsCli(
  redis: TestRedis,
  cluster: string,
  action: string,
  args: string[] = [],
): Promise<{ code: number | null; output: string }> {
  return runCli(['backends', action, '--redis', redis.url, '--cluster', cluster, ...args]);
}

/** Adds a backend entry without heartbeats (`roomring backends add`). */
export async function addBackend(
  redis: TestRedis,
  cluster: string,
  backend: { id: string; url: string },
): Promise<void> {
  const added = await backendsCli(redis, cluster, 'add', ['--id', backend.id, '--url', backend.url]);
  if (added.code !== 0) throw new Error(`backends add ${backend.id} failed:\n${added.output}`);
}

/** A raw TCP client of the proxy, destroyed at cleanup; `allowHalfOpen`: it never closes its side. */
export function connectRaw(port: number, allowHalfOpen = false): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen }, () => resolve(socket));
    socket.on('error', reject);
    onCleanup(() => socket.destroy());
  });
}

/** Everything a raw socket receives until the peer ends it. */
export function readAll(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.on('data', (d) => {
      text += d;
    });
    socket.once('end', () => resolve(text));
    socket.once('close', () => resolve(text));
  });
}

/**
 * How many sockets each of the pipe's epoll sets watches, from /proc: Node's own epoll set is the
 * one that holds another (the pipe's main loop); the remaining one is the pipe thread's.
 */
export function pipeLoopSockets(pid: number): { main: number; thread: number } {
  const kindOf = (fd: string): string => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  };
  const watched = new Map<string, string[]>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    if (kindOf(fd) !== 'anon_inode:[eventpoll]') continue;
    const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    watched.set(
      fd,
      [...info.matchAll(/^tfd:\s+(\d+)/gm)].map((match) => match[1] as string),
    );
  }
  const node = [...watched].find(([, targets]) => targets.some((t) => watched.has(t)));
  const main = node?.[1].find((t) => watched.has(t));
  const thread = [...watched.keys()].find((fd) => fd !== node?.[0] && fd !== main);
  if (main === undefined || thread === undefined) throw new Error(`process ${pid}: pipe loops not found`);
  const sockets = (fd: string): number =>
    (watched.get(fd) ?? []).filter((t) => kindOf(t).startsWith('socket:')).length;
  return { main: sockets(main), thread: sockets(thread) };
}
