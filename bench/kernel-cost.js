#!/usr/bin/env node
// Where roomring's kernel time per upgrade differs from HAProxy's: `node bench/kernel-cost.js`.
// Each peer gets the upgrades load (16 loops of open + close handshake over 1,000 rooms) under
// Linux `perf record` (cpu-clock samples of the peer's process); kernel symbols are turned into
// µs per upgrade, and the 30 that cost roomring the most beyond HAProxy are printed.
// KERNEL_COST_SECONDS sets the load's length (5). Needs `perf`; not a test, not in CI.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { startBackends, startUpgradesPeer } from './lib/peers.js';
import { installCleanup, runMain, sleep, stopAll } from './lib/procs.js';
import { startClient } from './lib/ws-client.js';

const seconds = Number(process.env.KERNEL_COST_SECONDS ?? 5);
const FREQUENCY = 4999;

/** Kernel symbols of one peer under load, in µs per upgrade; with the totals. */
async function measure(name, backendPorts, client, dir) {
  const { peer, load } = await startUpgradesPeer(name, backendPorts, client, dir);
  const data = join(dir, `${name}.perf.data`);
  const perf = spawn('perf', ['record', '-F', String(FREQUENCY), '-o', data, '-p', peer.pids().join(',')], {
    stdio: 'ignore',
  });
  await sleep(300);
  const { count } = await load(seconds);
  perf.kill('SIGINT');
  await new Promise((resolve) => perf.once('exit', resolve));
  await peer.stop();
  const report = execFileSync(
    'perf',
    ['report', '-i', data, '--no-children', '--sort', 'sym', '--stdio', '-F', 'sample,sym'],
    { encoding: 'utf8', maxBuffer: 1 << 28 },
  );
  const perUpgrade = (samples) => ((samples / FREQUENCY) * 1e6) / count;
  const kernel = new Map();
  let all = 0;
  for (const line of report.split('\n')) {
    const m = /^\s+(\d+)\s+\[(.)\]\s+(.+)$/.exec(line);
    if (m === null) continue;
    const samples = Number(m[1]);
    all += samples;
    if (m[2] === 'k') kernel.set(m[3].trim(), perUpgrade(samples));
  }
  const kernelTotal = [...kernel.values()].reduce((sum, us) => sum + us, 0);
  return { name, count, all: perUpgrade(all), kernelTotal, kernel };
}

async function main() {
  if (spawnSync('perf', ['--version']).status !== 0) {
    console.error('kernel-cost needs Linux perf (apt-get install linux-perf)');
    process.exit(2);
  }
  installCleanup();
  const dir = mkdtempSync(join(os.tmpdir(), 'roomring-kernel-cost-'));
  const started = await startBackends();
  const client = await startClient();
  try {
    const roomring = await measure('roomring', started.ports, client, dir);
    const haproxy = await measure('haproxy', started.ports, client, dir);
    console.log(`# Kernel time per upgrade (${os.hostname()}, ${os.cpus().length} cores)\n`);
    for (const peer of [roomring, haproxy]) {
      console.log(
        `- ${peer.name}: ${peer.count} upgrades; ${peer.all.toFixed(0)} µs sampled per upgrade, ` +
          `${peer.kernelTotal.toFixed(0)} µs of it in the kernel`,
      );
    }
    console.log('\n| kernel symbol | roomring − HAProxy µs | roomring µs | HAProxy µs |');
    console.log('| --- | ---: | ---: | ---: |');
    const names = new Set([...roomring.kernel.keys(), ...haproxy.kernel.keys()]);
    const rows = [...names]
      .map((symbol) => {
        const a = roomring.kernel.get(symbol) ?? 0;
        const b = haproxy.kernel.get(symbol) ?? 0;
        return { symbol, a, b, diff: a - b };
      })
      .sort((x, y) => y.diff - x.diff)
      .slice(0, 30);
    for (const { symbol, a, b, diff } of rows)
      console.log(`| ${symbol} | ${diff.toFixed(1)} | ${a.toFixed(1)} | ${b.toFixed(1)} |`);
  } finally {
    await client.stop();
    await stopAll();
  }
}

runMain(main);
