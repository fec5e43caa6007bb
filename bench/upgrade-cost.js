#!/usr/bin/env node
// Where an upgrade's CPU goes, per peer: `node bench/upgrade-cost.js [roomring haproxy http-proxy]`.
// Each peer gets the upgrades load (16 loops of open + close handshake over 1,000 rooms) twice:
// once to read each thread's user and system CPU per upgrade from /proc/<pid>/task, once under
// `strace -c -f` (when strace is installed) to count its syscalls per upgrade. On this kind of VM
// a syscall and a cross-thread wake-up cost several microseconds each, so the counts explain most
// of the system time. UPGRADE_COST_SECONDS sets each load's length (5). Not a test, not in CI.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { startBackends, startUpgradesPeer } from './lib/peers.js';
import { installCleanup, runMain, sleep, stopAll } from './lib/procs.js';
import { startClient } from './lib/ws-client.js';

const seconds = Number(process.env.UPGRADE_COST_SECONDS ?? 5);
const peers =
  process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['roomring', 'haproxy', 'http-proxy'];
const TICK = 100; // clock ticks per second in /proc stat fields (USER_HZ)
const hasStrace = spawnSync('strace', ['-V']).status === 0;

/** Each thread's user and system ticks, by name/tid. */
function threadTicks(pids) {
  const out = new Map();
  for (const pid of pids) {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(`${name}/${tid}`, [Number(fields[11]), Number(fields[12])]);
    }
  }
  return out;
}

async function measure(name, backendPorts, client, dir) {
  const { peer, load } = await startUpgradesPeer(name, backendPorts, client, dir);
  const before = threadTicks(peer.pids());
  const { count } = await load(seconds);
  const after = threadTicks(peer.pids());
  const lines = [
    `## ${name}: ${count} upgrades in ${seconds} s`,
    '',
    '| thread | user µs | system µs |',
    '| --- | ---: | ---: |',
  ];
  let user = 0;
  let system = 0;
  for (const [thread, [u, s]] of after) {
    const [u0, s0] = before.get(thread) ?? [0, 0];
    const du = ((u - u0) * 1e6) / TICK / count;
    const ds = ((s - s0) * 1e6) / TICK / count;
    user += du;
    system += ds;
    if (du + ds >= 1) lines.push(`| ${thread.replace(/\/\d+$/, '')} | ${du.toFixed(0)} | ${ds.toFixed(0)} |`);
  }
  lines.push(`| **all** | **${user.toFixed(0)}** | **${system.toFixed(0)}** |`, '');
  if (hasStrace) {
    const file = join(dir, `${name}-strace.txt`);
    const strace = spawn(
      'strace',
      ['-c', '-f', '-o', file, ...peer.pids().flatMap((p) => ['-p', String(p)])],
      {
        stdio: 'ignore',
      },
    );
    await sleep(500);
    const traced = await load(Math.min(seconds, 3));
    strace.kill('SIGINT');
    await new Promise((resolve) => strace.once('exit', resolve));
    const calls = [];
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line);
      if (m !== null && m[2] !== 'total') calls.push([m[2], Number(m[1]) / traced.count]);
    }
    calls.sort((a, b) => b[1] - a[1]);
    const total = calls.reduce((sum, [, n]) => sum + n, 0);
    lines.push(
      `syscalls per upgrade under strace (${traced.count} upgrades): ${total.toFixed(1)}`,
      '',
      calls
        .filter(([, n]) => n >= 0.05)
        .map(([call, n]) => `${call} ${n.toFixed(2)}`)
        .join(', '),
      '',
    );
  }
  await peer.stop();
  return lines.join('\n');
}

async function main() {
  installCleanup();
  const dir = mkdtempSync(join(os.tmpdir(), 'roomring-upgrade-cost-'));
  const started = await startBackends();
  const client = await startClient();
  try {
    console.log(`# CPU per upgrade, by thread (${os.hostname()}, ${os.cpus().length} cores)\n`);
    for (const name of peers) console.log(await measure(name, started.ports, client, dir));
  } finally {
    await client.stop();
    await stopAll();
  }
}

runMain(main);
