#!/usr/bin/env node
// Profiles roomring under one load at a time: `node bench/profile.js [http|upgrades|messages|echo ...]`
// (default: all four). Each load gets a fresh proxy started with `node --cpu-prof`; the profile is
// written when the proxy exits on SIGTERM, then summarised (bench/cpuprofile-summary.js).
// Profiles land in bench/profiles/ (git-ignored). PROFILE_SECONDS sets each load's length (10).
//
// PROFILE_PERF=1 also records the proxy with Linux `perf` (cpu-clock, call graphs, JIT names from
// --perf-basic-prof) and writes a report split by user/kernel. V8's own sampler charges time spent
// in the kernel to whichever native write call is on the stack, so on a VM the .cpuprofile can show
// `writev`/`writeLatin1String` as most of the time; perf shows where user time really goes.
import { execFileSync, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { summarize } from './cpuprofile-summary.js';
import { makePeer, startBackends } from './lib/peers.js';
import { freePort, installCleanup, stopAll, treeCpu } from './lib/procs.js';
import { wrk } from './lib/wrk.js';
import { startClient } from './lib/ws-client.js';

const BENCH = fileURLToPath(new URL('./', import.meta.url));
const seconds = Number(process.env.PROFILE_SECONDS ?? 10);
const modes =
  process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['http', 'upgrades', 'messages', 'echo'];
const outDir = join(BENCH, 'profiles');
const withPerf = process.env.PROFILE_PERF === '1';

function perfReport(data) {
  const once = (args) => {
    try {
      return execFileSync('perf', ['report', '-i', data, '--stdio', '-g', 'none', ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        maxBuffer: 256 * 1024 * 1024,
        timeout: 120000,
      });
    } catch (error) {
      return String(error.stdout ?? '');
    }
  };
  // perf report now and then prints nothing on a first read of a fresh file; one retry is enough.
  const report = (args) => once(args) || once(args);
  const rows = (text, n, filter = () => true) =>
    text
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#') && filter(l))
      .slice(0, n)
      .join('\n');
  return [
    'perf: samples by binary (kernel = [kernel.kallsyms], JIT = JavaScript, node = C++ and builtins):',
    rows(report(['--no-children', '--sort', 'dso']), 8),
    '',
    'perf: top symbols by self time:',
    rows(report(['--no-children', '--sort', 'sym']), 30),
    '',
    'perf: JavaScript functions by inclusive time (callees included, kernel too):',
    rows(report(['--children', '--sort', 'sym']), 40, (l) => l.includes('JS:')),
  ].join('\n');
}

async function main() {
  installCleanup();
  mkdirSync(outDir, { recursive: true });
  const dir = mkdtempSync(join(os.tmpdir(), 'roomring-profile-'));
  const backends = [];
  let client;
  try {
    const started = await startBackends();
    backends.push(...started.procs);
    const backendPorts = started.ports;
    client = await startClient();
    for (const mode of modes) {
      const name = `roomring-${mode}.cpuprofile`;
      rmSync(join(outDir, name), { force: true });
      const port = await freePort();
      const peer = makePeer('roomring', {
        dir,
        backendPorts,
        port,
        nodeArgs: [
          '--cpu-prof',
          `--cpu-prof-dir=${outDir}`,
          `--cpu-prof-name=${name}`,
          ...(withPerf
            ? ['--perf-basic-prof', '--interpreted-frames-native-stack', `--logfile=${join(dir, 'v8.log')}`]
            : []),
        ],
      });
      await peer.start();
      const perfData = join(outDir, `roomring-${mode}.perf.data`);
      rmSync(perfData, { force: true });
      rmSync(`${perfData}.old`, { force: true });
      const perf = withPerf
        ? spawn(
            'perf',
            [
              'record',
              '-q',
              '-e',
              'cpu-clock',
              '-F',
              '1999',
              '-g',
              '-o',
              perfData,
              '-p',
              peer.pids().join(','),
            ],
            {
              stdio: 'ignore',
              detached: true,
            },
          )
        : undefined;
      const http = `http://127.0.0.1:${port}/api/state`;
      const ws = `ws://127.0.0.1:${port}/ws`;
      const cpu0 = treeCpu(peer.pids());
      let figure = '';
      if (mode === 'http') {
        const w = await wrk(http, { seconds, connections: 64 });
        figure = `${w.requests} requests`;
        figure += `, ${(w.requests / (treeCpu(peer.pids()) - cpu0)).toFixed(0)} per CPU-s`;
      } else if (mode === 'upgrades') {
        const r = await client.cmd({ cmd: 'upgrades', url: ws, seconds, concurrency: 16, rooms: 1000 });
        figure = `${r.count} upgrades, ${(r.count / (treeCpu(peer.pids()) - cpu0)).toFixed(0)} per CPU-s`;
      } else if (mode === 'messages') {
        const r = await client.cmd({ cmd: 'throughput', url: ws, seconds, window: 16, size: 64 });
        figure = `${r.messages} messages, ${(r.messages / (treeCpu(peer.pids()) - cpu0)).toFixed(0)} per CPU-s`;
      } else if (mode === 'echo') {
        await client.cmd({ cmd: 'open', url: ws, conns: 1000, rooms: 200 });
        const r = await client.cmd({ cmd: 'echo', seconds, rate: 2000, size: 64 });
        await client.cmd({ cmd: 'closeAll' });
        figure = `${r.received} echoes, p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms`;
      } else throw new Error(`unknown mode ${mode}`);
      if (perf !== undefined) {
        process.kill(perf.pid, 'SIGINT');
        await new Promise((resolve) => perf.once('exit', resolve));
      }
      const pid = peer.pids()[0];
      await peer.stop();
      const file = join(outDir, name);
      if (!existsSync(file)) {
        throw new Error(
          `no profile written (${readdirSync(outDir).join(', ')})\n${peer.output().slice(-2000)}`,
        );
      }
      let text = `# roomring under ${mode} load for ${seconds}s: ${figure}\n${summarize(JSON.parse(readFileSync(file, 'utf8')), 30)}\n`;
      if (perf !== undefined) {
        text += `\n${perfReport(perfData)}\n`;
        rmSync(`/tmp/perf-${pid}.map`, { force: true });
      }
      writeFileSync(join(outDir, `roomring-${mode}.txt`), text);
      process.stdout.write(`${text}\n`);
    }
  } finally {
    await client?.stop();
    await Promise.all(backends.map((b) => b.stop()));
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch(async (error) => {
  process.stderr.write(`profile: ${error?.stack ?? error}\n`);
  await stopAll();
  process.exit(1);
});
