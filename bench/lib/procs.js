// Child processes for the benchmark: spawned in their own process group, tracked, and always
// stopped (on normal exit, on error and on Ctrl-C). CPU time and RSS are read from /proc.

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

const children = new Set();
const CLK_TCK = 100; // USER_HZ on Linux: utime/stime in /proc/<pid>/stat are in 1/100 s.

/**
 * Spawns a command in its own process group. `ready` (a RegExp) waits for a line on stdout or
 * stderr; the returned object has `pid`, `stop()`, `output()` and `exited` (a promise).
 */
export function start(name, command, args, { ready, env, cwd, timeoutMs = 15000, ipc = false } = {}) {
  const child = spawn(command, args, {
    cwd,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let text = '';
  const onData = (chunk) => {
    text += chunk.toString();
    if (text.length > 200_000) text = text.slice(-100_000);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const proc = {
    name,
    child,
    pid: child.pid,
    exited,
    output: () => text,
    stop: (signal = 'SIGTERM', graceMs = 5000) => stopChild(child, exited, signal, graceMs),
  };
  if (ready === undefined) return Promise.resolve(proc);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      proc.stop('SIGKILL');
      reject(new Error(`${name} not ready after ${timeoutMs} ms; output:\n${text.slice(-2000)}`));
    }, timeoutMs);
    const check = () => {
      if (ready.test(text)) {
        cleanup();
        resolve(proc);
      }
    };
    const onExit = (code, signal) => {
      cleanup();
      reject(new Error(`${name} exited (${code ?? signal}) before ready; output:\n${text.slice(-2000)}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout.off('data', check);
      child.stderr.off('data', check);
      child.off('exit', onExit);
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.once('exit', onExit);
    check();
  });
}

async function stopChild(child, exited, signal, graceMs) {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  killGroup(child.pid, signal);
  const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), graceMs);
  const result = await exited;
  clearTimeout(timer);
  // Whatever the leader left behind in its group (nginx workers) goes too.
  killGroup(child.pid, 'SIGKILL');
  return result;
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** Stops every child still running; used on exit paths. */
export async function stopAll() {
  await Promise.all(
    [...children].map((child) =>
      stopChild(child, new Promise((r) => child.once('exit', r)), 'SIGTERM', 3000),
    ),
  );
}

/** Runs a script's `main`: exits 0 once it resolves, 1 (printing the error) if it throws. */
export function runMain(main) {
  main().then(
    () => process.exit(0),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
}

let hooked = false;
/** Makes sure no child outlives the benchmark, whatever ends it. */
export function installCleanup() {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const child of children) killGroup(child.pid, 'SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping child processes\n`);
      stopAll().finally(() => process.exit(130));
    });
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The pid and every descendant of it (nginx master and workers, for example). */
export function processTree(pid) {
  const parentOf = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parentOf.set(Number(entry), Number(fields[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [child, parent] of parentOf) if (parent === tree[i]) tree.push(child);
  }
  return tree.filter((p) => parentOf.has(p));
}

/** utime and stime of one process (all its threads), in seconds; zeros once it is gone. */
function cpuTimes(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state(0) ppid(1) ... utime is field 14 overall -> index 11 here, stime 12.
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
  } catch {
    return { user: 0, system: 0 };
  }
}

/** utime + stime of one process (all its threads), in seconds. */
export function cpuSeconds(pid) {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** VmRSS of one process, in KB. */
export function rssKb(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds summed over a set of pids (the proxy's whole process tree). */
export function treeCpu(pids) {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** User and system CPU seconds of the processes, apart: {user, system}. */
export function treeCpuSplit(pids) {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    const times = cpuTimes(pid);
    user += times.user;
    system += times.system;
  }
  return { user, system };
}

export function treeRss(pids) {
  return pids.reduce((sum, pid) => sum + rssKb(pid), 0);
}

/** Runs a command to completion (bounded by timeoutMs), returning {code, stdout, stderr}. */
export function run(command, args, { timeoutMs = 120000, env, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, cwd, detached: true });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      children.delete(child);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat. */
export function machineBusySeconds() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const [, ...values] = line.trim().split(/\s+/);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = values.map(Number);
  void idle;
  void iowait;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLK_TCK;
}

/** CPU seconds of this process plus every child it has reaped (and theirs). */
export function ownCpuSeconds() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLK_TCK;
}
