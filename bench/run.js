#!/usr/bin/env node
// `npm run bench`: measures roomring beside a direct connection (the ceiling), a bare http-proxy
// (the Node baseline), HAProxy and nginx (when installed), alternating the peers within one run,
// and writes bench/results/<date>-<host>.md. See bench/README.md for what each figure means.
//
// Knobs (environment): BENCH_SECONDS (HTTP seconds per measurement, 4), BENCH_WS_SECONDS (3),
// BENCH_ROUNDS (3), BENCH_WARMUP (1), BENCH_WRK_CONNECTIONS (64), BENCH_IDLE_CONNS (1000),
// BENCH_ECHO_ROOMS (200), BENCH_ECHO_RATE (2000 msg/s), BENCH_UPGRADE_CONCURRENCY (16),
// BENCH_WINDOW (16), BENCH_MSG_BYTES (64), BENCH_PEERS (comma list), BENCH_PEER_THREADS (HAProxy
// threads, nginx workers, roomring --workers: 1), BENCH_NO_BUILD (1: use dist/ as it is),
// BENCH_RESULTS (output dir).
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { makePeer, startBackends } from './lib/peers.js';
import {
  freePort,
  installCleanup,
  machineBusySeconds,
  ownCpuSeconds,
  run,
  sleep,
  stopAll,
  treeCpu,
  treeCpuSplit,
  treeRss,
} from './lib/procs.js';
import { absoluteTable, LABELS, ratioTable, ringTables, targets, targetTable } from './lib/report.js';
import { ringBench } from './lib/ring-bench.js';
import { wrk, wrkVersion } from './lib/wrk.js';
import { startClient } from './lib/ws-client.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BENCH = fileURLToPath(new URL('./', import.meta.url));
const env = (name, fallback) =>
  process.env[name] === undefined || process.env[name] === '' ? fallback : Number(process.env[name]);

const cfg = {
  httpSeconds: env('BENCH_SECONDS', 4),
  wsSeconds: env('BENCH_WS_SECONDS', 3),
  rounds: env('BENCH_ROUNDS', 3),
  warmup: env('BENCH_WARMUP', 1),
  wrkConnections: env('BENCH_WRK_CONNECTIONS', 64),
  idleConns: env('BENCH_IDLE_CONNS', 1000),
  echoRooms: env('BENCH_ECHO_ROOMS', 200),
  echoRate: env('BENCH_ECHO_RATE', 2000),
  upgradeConcurrency: env('BENCH_UPGRADE_CONCURRENCY', 16),
  window: env('BENCH_WINDOW', 16),
  msgBytes: env('BENCH_MSG_BYTES', 64),
  threads: env('BENCH_PEER_THREADS', 1),
  pipe: process.env.BENCH_PIPE || 'native',
  nodeArgs: (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== ''),
  httpRooms: 1000,
};
const ALL_PEERS = ['direct', 'roomring', 'http-proxy', 'haproxy', 'nginx'];
const ALL_PHASES = ['http', 'upgrades', 'messages', 'echo'];
const phases = (process.env.BENCH_PHASES || ALL_PHASES.join(','))
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const phase of phases)
  if (!ALL_PHASES.includes(phase)) throw new Error(`unknown phase ${phase}; known: ${ALL_PHASES.join(', ')}`);
const wanted = (process.env.BENCH_PEERS ?? ALL_PEERS.join(','))
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);

const startedAt = Date.now();
const log = (text) =>
  process.stderr.write(`[${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s] ${text}\n`);
const has = (command) => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const median = (values) => {
  const v = values.filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

async function prepare(notes) {
  if (!existsSync(join(BENCH, 'node_modules/http-proxy/package.json'))) {
    log('installing bench dependencies (npm install --prefix bench)');
    const npm = await run('npm', ['install', '--prefix', BENCH, '--no-audit', '--no-fund'], {
      timeoutMs: 180000,
    });
    if (npm.code !== 0) throw new Error(`npm install --prefix bench failed:\n${npm.stderr}`);
  }
  if (process.env.BENCH_NO_BUILD !== '1') {
    log('building (npx tsc -p tsconfig.json)');
    const tsc = await run('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, timeoutMs: 180000 });
    if (tsc.code !== 0) {
      if (!existsSync(join(ROOT, 'dist/cli/main.js')))
        throw new Error(`build failed:\n${tsc.stdout}${tsc.stderr}`);
      notes.push('The build failed; the existing dist/ was measured, which may not match src/.');
      log(`build failed, measuring the existing dist/:\n${tsc.stdout.slice(0, 2000)}`);
    }
  }
}

const urlOf = (peer) => `http://127.0.0.1:${peer.port}/api/state`;
const wsUrlOf = (peer) => `ws://127.0.0.1:${peer.port}/ws`;

async function measureHttp(peer) {
  if (cfg.warmup > 0)
    await wrk(urlOf(peer), { seconds: cfg.warmup, connections: cfg.wrkConnections, rooms: cfg.httpRooms });
  const pids = peer.pids();
  const cpu0 = treeCpu(pids);
  const t0 = process.hrtime.bigint();
  const w = await wrk(urlOf(peer), {
    seconds: cfg.httpSeconds,
    connections: cfg.wrkConnections,
    rooms: cfg.httpRooms,
  });
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = treeCpu(pids) - cpu0;
  return {
    httpRps: w.rps,
    httpP50: w.p50,
    httpP99: w.p99,
    httpCpu: peer.proxied ? cpu : undefined,
    httpCpuShare: peer.proxied ? (cpu / elapsed) * 100 : undefined,
    httpPerCpu: peer.proxied ? w.requests / cpu : undefined,
    httpErrors: w.errors,
  };
}

async function measureUpgrades(peer, client) {
  const pids = peer.pids();
  const cpu0 = treeCpuSplit(pids);
  const r = await client.cmd({
    cmd: 'upgrades',
    url: wsUrlOf(peer),
    seconds: cfg.wsSeconds,
    concurrency: cfg.upgradeConcurrency,
    rooms: cfg.httpRooms,
  });
  const cpu1 = treeCpuSplit(pids);
  const user = cpu1.user - cpu0.user;
  const system = cpu1.system - cpu0.system;
  // User and system time per upgrade apart: the kernel's TCP work is much the same for every peer.
  const perUpgradeUs = (seconds) => (peer.proxied && r.count > 0 ? (seconds * 1e6) / r.count : undefined);
  return {
    upgradesPerS: r.count / r.seconds,
    upgradesPerCpu: peer.proxied ? r.count / (user + system) : undefined,
    upgradeUserUs: perUpgradeUs(user),
    upgradeSystemUs: perUpgradeUs(system),
    upgradeErrors: r.errors,
  };
}

async function measureThroughput(peer, client) {
  // The client counts messages and reads the proxy's CPU after a warm-up second: the figure is an
  // established connection's, not its upgrade's.
  const r = await client.cmd({
    cmd: 'throughput',
    url: wsUrlOf(peer),
    seconds: cfg.wsSeconds,
    window: cfg.window,
    size: cfg.msgBytes,
    warmup: cfg.warmup,
    pids: peer.pids(),
  });
  return {
    msgsPerS: r.messages / r.seconds,
    msgsPerCpu: peer.proxied ? r.messages / r.cpuSeconds : undefined,
  };
}

async function measureConnections(peer, client) {
  // A fresh proxy process, so RSS is not hidden by heap freed after earlier load; then a short
  // warm-up so code paths are compiled before the "before" reading.
  if (peer.proxied) await peer.restart();
  await client.cmd({ cmd: 'upgrades', url: wsUrlOf(peer), seconds: 0.5, concurrency: 4, rooms: 50 });
  await client.cmd({ cmd: 'httpCheck', url: urlOf(peer), rooms: cfg.echoRooms });
  await sleep(1000);
  const pids = peer.pids();
  const rss0 = treeRss(pids);
  const opened = await client.cmd({
    cmd: 'open',
    url: wsUrlOf(peer),
    conns: cfg.idleConns,
    rooms: cfg.echoRooms,
  });
  await sleep(1500);
  const rss1 = treeRss(pids);
  // One second of echoes first, so the measured seconds see compiled code on every side.
  await client.cmd({ cmd: 'echo', seconds: 1, rate: cfg.echoRate, size: cfg.msgBytes });
  const echo = await client.cmd({
    cmd: 'echo',
    seconds: cfg.wsSeconds,
    rate: cfg.echoRate,
    size: cfg.msgBytes,
  });
  await client.cmd({ cmd: 'closeAll' });
  return {
    rssPerConnKb: peer.proxied ? (rss1 - rss0) / opened.opened : undefined,
    rssBeforeKb: peer.proxied ? rss0 : undefined,
    rssAfterKb: peer.proxied ? rss1 : undefined,
    opened: opened.opened,
    openErrors: opened.errors,
    roomsSplit: opened.split,
    roomsChecked: opened.rooms,
    perBackend: opened.perBackend,
    echoP50: echo.p50,
    echoP99: echo.p99,
    echoLost: echo.sent - echo.received,
  };
}

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    host: os.hostname(),
    cpu: model,
    cores: os.cpus().length,
    memoryGiB: os.totalmem() / 2 ** 30,
    kernel: `${os.type()} ${os.release()}`,
    os: (() => {
      try {
        return /^PRETTY_NAME="?(.*?)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
      } catch {
        return '';
      }
    })(),
  };
}

async function versions() {
  const read = (file) => JSON.parse(readFileSync(file, 'utf8')).version;
  const out = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      return `${error.stdout ?? ''}${error.stderr ?? ''}`;
    }
  };
  const nginxV = (() => {
    try {
      return execFileSync('sh', ['-c', 'nginx -v 2>&1'], { encoding: 'utf8' });
    } catch {
      return '';
    }
  })();
  let commit = '';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], {
      cwd: ROOT,
      encoding: 'utf8',
    }).trim();
    if (dirty !== '') commit += ' (src/ has uncommitted changes)';
  } catch {
    /* not a checkout */
  }
  return {
    node: process.version,
    roomring: `${read(join(ROOT, 'package.json'))} @ ${commit}`,
    'http-proxy': existsSync(join(BENCH, 'node_modules/http-proxy/package.json'))
      ? read(join(BENCH, 'node_modules/http-proxy/package.json'))
      : 'not installed',
    ws: read(join(ROOT, 'node_modules/ws/package.json')),
    haproxy: has('haproxy')
      ? (/version (\S+)/.exec(out('haproxy', ['-v']))?.[1] ?? 'unknown')
      : 'not installed',
    nginx: has('nginx') ? (/nginx\/(\S+)/.exec(nginxV)?.[1] ?? 'unknown') : 'not installed',
    wrk: has('wrk') ? await wrkVersion() : 'not installed',
  };
}

function aggregate(rounds) {
  const figures = {};
  for (const [peer, list] of Object.entries(rounds)) {
    const keys = new Set(list.flatMap((r) => Object.keys(r)));
    const f = { ranges: {} };
    for (const key of keys) {
      const values = list.map((r) => r[key]);
      if (typeof values.find((v) => v !== undefined) === 'number') {
        f[key] = median(values);
        const known = values.filter((v) => v !== undefined && !Number.isNaN(v));
        f.ranges[key] = [Math.min(...known), Math.max(...known)];
      }
    }
    // Split rooms and errors: the worst round / the total, never a median.
    f.roomsSplit = Math.max(...list.map((r) => r.roomsSplit ?? 0));
    f.errors = list.reduce(
      (s, r) => s + (r.httpErrors ?? 0) + (r.upgradeErrors ?? 0) + (r.openErrors ?? 0) + (r.echoLost ?? 0),
      0,
    );
    figures[peer] = f;
  }
  return figures;
}

function markdown({ machine: m, versions: v, peers, figures, ring, notes, describe, date }) {
  const rt = ringTables(ring);
  const lines = [
    `# roomring benchmark — ${date}, ${m.host}`,
    '',
    'Generated by `npm run bench` (bench/run.js). All figures are medians over the rounds of one run (noisy ones',
    'with their range over rounds); the peers alternate within each round. Ratios are roomring ÷ peer from the',
    'same run. "Proxy CPU" is utime+stime of the',
    "proxy's processes (all threads, all workers) from /proc, so on this small machine the per-CPU-second figures",
    'are the comparable ones; raw req/s mostly shows who got the cores.',
    '',
    '## Machine',
    '',
    `- CPU: ${m.cpu}, ${m.cores} cores`,
    `- Memory: ${m.memoryGiB.toFixed(1)} GiB`,
    `- OS: ${m.os} (${m.kernel})`,
    '',
    '## Versions',
    '',
    ...Object.entries(v).map(([k, val]) => `- ${k}: ${val}`),
    '',
    '## Setup',
    '',
    `- Three backends (Node: tiny fixed HTTP response; \`ws\` echo), each its own process.`,
    ...peers.map((p) => `- ${LABELS[p]}: ${describe[p]}`),
    `- HTTP: \`wrk -t1 -c${cfg.wrkConnections} -d${cfg.httpSeconds}s\` (after ${cfg.warmup}s warm-up), GET requests spread over ${cfg.httpRooms} room ids in the query string.`,
    `- WS upgrades: ${cfg.upgradeConcurrency} concurrent open + close-handshake loops for ${cfg.wsSeconds}s over ${cfg.httpRooms} rooms.`,
    `- WS messages: one connection, ${cfg.window} echoes of ${cfg.msgBytes} bytes in flight for ${cfg.wsSeconds}s after ${cfg.warmup}s of the same (the established connection, not its upgrade); messages = client→backend + backend→client.`,
    `- Idle/echo: proxy restarted, ${cfg.idleConns} connections over ${cfg.echoRooms} rooms; RSS (VmRSS summed over the proxy's processes) before/after opening; then ${cfg.echoRate} echoes/s spread over them for ${cfg.wsSeconds}s (open loop).`,
    `- Rooms split: per room, the backends (X-Backend) reached by its ${Math.round(cfg.idleConns / cfg.echoRooms)} WebSockets and one HTTP request through the proxy; a room with more than one backend is split.`,
    `- Rounds: ${cfg.rounds}.`,
    ...notes.map((n) => `- Note: ${n}`),
    '',
    '## Targets (issue 3)',
    '',
    targetTable(figures),
    '',
    '## Absolute figures',
    '',
    absoluteTable(peers, figures),
    '',
    '## Ratios (roomring ÷ peer)',
    '',
    ratioTable(peers, figures),
    '',
    '## Ring micro-benchmarks (dist/ring)',
    '',
    rt.lookup,
    '',
    rt.rebuild,
    '',
    'Balance over 100,000 rooms:',
    '',
    rt.balance,
    '',
    'Rooms moved when one backend is added or removed ("elsewhere" = moved between backends that did not change; must be 0):',
    '',
    rt.moved,
    '',
  ];
  return lines.join('\n');
}

async function main() {
  installCleanup();
  const notes = [];
  await prepare(notes);

  const peers = [];
  for (const name of wanted) {
    if (!ALL_PEERS.includes(name)) throw new Error(`unknown peer ${name}; known: ${ALL_PEERS.join(', ')}`);
    if ((name === 'haproxy' || name === 'nginx') && !has(name)) {
      notes.push(`${name} is not installed (apt-get install -y ${name}); skipped.`);
      continue;
    }
    peers.push(name);
  }
  const httpEnabled = has('wrk');
  if (!httpEnabled) notes.push('wrk is not installed (apt-get install -y wrk); HTTP figures skipped.');

  const dir = mkdtempSync(join(os.tmpdir(), 'roomring-bench-'));
  // The whole run measures one snapshot of the build, even if dist/ is rebuilt meanwhile.
  const root = join(dir, 'roomring');
  // build/ holds the native pipe (built by npm install); without it roomring falls back to Node sockets.
  for (const part of ['dist', 'bin', 'package.json', 'build'])
    if (existsSync(join(ROOT, part))) cpSync(join(ROOT, part), join(root, part), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));

  log('ring micro-benchmarks');
  const ring = await ringBench({ root: pathToFileURL(`${root}/`) });

  const busy0 = machineBusySeconds();
  const own0 = ownCpuSeconds();
  const wall0 = Date.now();
  const backends = [];
  const instances = [];
  let client;
  let result;
  try {
    const started = await startBackends();
    backends.push(...started.procs);
    const backendPorts = started.ports;
    for (const name of peers) {
      const port = name === 'direct' ? backendPorts[0] : await freePort();
      const peer = makePeer(name, {
        dir,
        backendPorts,
        port,
        threads: cfg.threads,
        root,
        pipe: cfg.pipe,
        nodeArgs: name === 'roomring' ? cfg.nodeArgs : [],
      });
      await peer.start();
      if (name === 'roomring' && peer.pipe !== cfg.pipe)
        notes.push(
          `roomring was asked for websocket.pipe ${cfg.pipe} but forwarded WebSockets with ${peer.pipe} (see its start log; \`npm run install\` builds the native pipe).`,
        );
      instances.push(peer);
      log(`${name} up on 127.0.0.1:${port}`);
    }
    client = await startClient();

    const rounds = Object.fromEntries(peers.map((p) => [p, []]));
    for (let round = 0; round < cfg.rounds; round++) {
      const order = instances.map((_, i) => instances[(i + round) % instances.length]);
      const record = Object.fromEntries(peers.map((p) => [p, {}]));
      if (httpEnabled && phases.includes('http')) {
        for (const peer of order) {
          log(`round ${round + 1}/${cfg.rounds} http       ${peer.name}`);
          Object.assign(record[peer.name], await measureHttp(peer));
        }
      }
      for (const peer of phases.includes('upgrades') ? order : []) {
        log(`round ${round + 1}/${cfg.rounds} upgrades   ${peer.name}`);
        Object.assign(record[peer.name], await measureUpgrades(peer, client));
      }
      for (const peer of phases.includes('messages') ? order : []) {
        log(`round ${round + 1}/${cfg.rounds} messages   ${peer.name}`);
        Object.assign(record[peer.name], await measureThroughput(peer, client));
      }
      for (const peer of phases.includes('echo') ? order : []) {
        log(`round ${round + 1}/${cfg.rounds} idle+echo  ${peer.name}`);
        Object.assign(record[peer.name], await measureConnections(peer, client));
      }
      for (const p of peers) rounds[p].push(record[p]);
    }

    result = { rounds };
  } finally {
    await client?.stop();
    await Promise.all(instances.map((p) => p.stop().catch(() => {})));
    await Promise.all(backends.map((b) => b.stop()));
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
  {
    const { rounds } = result;
    const foreign = machineBusySeconds() - busy0 - (ownCpuSeconds() - own0);
    const wall = (Date.now() - wall0) / 1000;
    const share = (foreign / (wall * os.cpus().length)) * 100;
    if (cfg.nodeArgs.length > 0)
      notes.push(`roomring's node ran with \`${cfg.nodeArgs.join(' ')}\` (BENCH_NODE_ARGS).`);
    // /proc/stat counts ticks per core and /proc/<pid>/stat precise time per process: on a quiet
    // machine the difference can come out a little below zero.
    notes.push(
      foreign <= 0
        ? `Other processes on the machine used no measurable CPU during the ${wall.toFixed(0)} s of measurements (${foreign.toFixed(1)} CPU-s: the machine's and the processes' CPU accounting differ by that much).`
        : `Other processes on the machine used ${foreign.toFixed(1)} CPU-s during the ${wall.toFixed(0)} s of measurements (${share.toFixed(1)}% of all cores)${share > 5 ? ': the machine was not quiet, absolute figures are disturbed' : ''}.`,
    );
    const figures = aggregate(rounds);
    const date = new Date().toISOString().slice(0, 10);
    const m = machine();
    const v = await versions();
    const describe = Object.fromEntries(instances.map((p) => [p.name, p.describe]));
    const text = markdown({ machine: m, versions: v, peers, figures, ring, notes, describe, date });
    const outDir = process.env.BENCH_RESULTS ?? join(BENCH, 'results');
    mkdirSync(outDir, { recursive: true });
    // A run of some phases only does not overwrite the full run's report.
    const partial = phases.length < ALL_PHASES.length ? `-${phases.join('-')}` : '';
    const base = join(outDir, `${date}-${m.host}${partial}`);
    writeFileSync(`${base}.md`, text);
    writeFileSync(
      `${base}.json`,
      `${JSON.stringify({ date, machine: m, versions: v, config: cfg, notes, rounds, figures, ring }, null, 2)}\n`,
    );
    process.stdout.write(`${text}\n`);
    log(`wrote ${base}.md and ${base}.json`);
    const missed = targets(figures).filter((t) => t.status === '**missed**');
    if (missed.length > 0) log(`targets missed: ${missed.map((t) => t.target).join('; ')}`);
  }
}

main().then(
  () => log('done'),
  async (error) => {
    process.stderr.write(`bench: ${error?.stack ?? error}\n`);
    await stopAll();
    process.exit(1);
  },
);
