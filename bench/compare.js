#!/usr/bin/env node
// A/B of two roomring builds on the per-CPU figures, for "did this change make it faster?":
// `node bench/compare.js <other checkout> [http|upgrades|messages ...]`. Both checkouts need
// dist/ built. The two proxies alternate, COMPARE_ROUNDS times (4), each load COMPARE_SECONDS
// long (6), against the same three backends; the medians and the ratio are printed. On a shared
// 2-core machine two identical builds came out 0.92–1.09 apart (2 rounds of 3 s): trust a ratio
// outside that band only. COMPARE_NODE_ARGS (space-separated) are given to node for this
// checkout only, so `COMPARE_NODE_ARGS=--some-v8-flag node bench/compare.js . upgrades` weighs a flag.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makePeer, startBackends } from './lib/peers.js';
import { freePort, installCleanup, stopAll, treeCpu } from './lib/procs.js';
import { wrk } from './lib/wrk.js';
import { startClient } from './lib/ws-client.js';

const BENCH = fileURLToPath(new URL('./', import.meta.url));
const here = resolve(BENCH, '..');
const [other, ...modeArgs] = process.argv.slice(2);
if (other === undefined) {
  console.error('usage: node bench/compare.js <other roomring checkout> [http|upgrades|messages ...]');
  process.exit(2);
}
const modes = modeArgs.length > 0 ? modeArgs : ['http', 'upgrades', 'messages'];
const rounds = Number(process.env.COMPARE_ROUNDS ?? 4);
const seconds = Number(process.env.COMPARE_SECONDS ?? 6);
const nodeArgs = (process.env.COMPARE_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** One load on a fresh proxy from `root`: the unit of work per proxy CPU-second. */
async function measure(root, mode, dir, backendPorts, client, args = []) {
  const port = await freePort();
  const peer = makePeer('roomring', { dir, backendPorts, port, root, nodeArgs: args });
  await peer.start();
  try {
    const http = `http://127.0.0.1:${port}/api/state`;
    const ws = `ws://127.0.0.1:${port}/ws`;
    // A short warm-up, so both builds are measured with compiled code.
    if (mode === 'http') await wrk(http, { seconds: 1, connections: 64 });
    else if (mode === 'upgrades')
      await client.cmd({ cmd: 'upgrades', url: ws, seconds: 1, concurrency: 16, rooms: 1000 });
    else await client.cmd({ cmd: 'throughput', url: ws, seconds: 1, window: 16, size: 64 });
    const cpu0 = treeCpu(peer.pids());
    let units;
    if (mode === 'http') units = (await wrk(http, { seconds, connections: 64 })).requests;
    else if (mode === 'upgrades')
      units = (await client.cmd({ cmd: 'upgrades', url: ws, seconds, concurrency: 16, rooms: 1000 })).count;
    else {
      // Counted after a second on the connection, with the proxy's CPU read by the client.
      const r = await client.cmd({
        cmd: 'throughput',
        url: ws,
        seconds,
        window: 16,
        size: 64,
        warmup: 1,
        pids: peer.pids(),
      });
      return r.messages / r.cpuSeconds;
    }
    return units / (treeCpu(peer.pids()) - cpu0);
  } finally {
    await peer.stop();
  }
}

async function main() {
  installCleanup();
  const dir = mkdtempSync(join(os.tmpdir(), 'roomring-compare-'));
  const backendPorts = (await startBackends()).ports;
  const client = await startClient();
  try {
    for (const mode of modes) {
      const mine = [];
      const theirs = [];
      for (let round = 0; round < rounds; round++) {
        mine.push(await measure(here, mode, dir, backendPorts, client, nodeArgs));
        theirs.push(await measure(resolve(other), mode, dir, backendPorts, client));
      }
      const a = median(mine);
      const b = median(theirs);
      console.log(
        `${mode.padEnd(9)} per proxy CPU-s: this ${a.toFixed(0)} (${mine.map((v) => v.toFixed(0)).join(' ')}), ` +
          `other ${b.toFixed(0)} (${theirs.map((v) => v.toFixed(0)).join(' ')}), ratio ${(a / b).toFixed(3)}`,
      );
    }
  } finally {
    client.stop();
    await stopAll();
  }
}

main().catch(async (error) => {
  console.error(error);
  await stopAll();
  process.exit(1);
});
