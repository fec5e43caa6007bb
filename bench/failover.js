// Failover figures, measured through real proxy processes on 127.0.0.1:
//  1. passive path: a SIGKILLed backend's rooms reach their successors at once (refused connections
//     are retried), with no failed request and no other room moving;
//  2. active path: one health verdict for two proxies sharing a Redis registry: how long until both
//     stop sending a failing backend's rooms to it, whether they agree on every successor, and how
//     long until its rooms come back once it passes again;
//  3. leader failover: the leader proxy is SIGKILLed, the other takes the lease and runs the checks.
// A failed request in 1 is printed with its error and time: a connection the dying backend's kernel
// still accepted is reset rather than refused, and the proxy answers it 502 instead of failing over.
// Usage: npx tsc -p tsconfig.json && node bench/failover.js   (needs redis-server on PATH)
// Knobs: BENCH_ROUNDS (2).
import { execFile, fork, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(root, 'bin/roomring.js');
const dir = mkdtempSync(path.join(tmpdir(), 'roomring-failover-'));
const POLL_MS = 25;
const PASSIVE = { interval: 2000, fall: 3, rise: 2 };
const ACTIVE = { interval: 500, timeout: 300, fall: 3, rise: 2, leaderLease: 1000, reapInterval: 250 };

const children = new Set();
const killAll = () => {
  for (const c of children) c.kill('SIGKILL');
};
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const track = (child) => {
  children.add(child);
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  child.exited.then(() => children.delete(child));
  return child;
};
async function stop(child) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await child.exited;
}

/** One GET through a fresh connection: {status, by} (status 0: the request itself failed). */
function get(port, urlPath, timeout = 3000) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        if (res.statusCode !== 200 && body.length < 500) body += d;
      });
      res.on('end', () => {
        const code = /"(ROOMRING_E_\w+)"/.exec(body)?.[1];
        resolve({ status: res.statusCode, by: res.headers['x-served-by'] ?? null, error: code });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, by: null, error: e.code ?? e.message }));
  });
}
const room = (port, name) => get(port, `/rooms/${name}`);

async function startBackend(id) {
  const child = track(
    fork(path.join(root, 'test/fixtures/backend.mjs'), [id, '0'], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  child.id = id;
  child.port = await new Promise((resolve) => child.once('message', (m) => resolve(m.port)));
  child.url = `http://127.0.0.1:${child.port}`;
  return child;
}
const setHealth = (backend, status) => get(backend.port, `/set-health?status=${status}`);

/** A proxy process; its JSON log lines are kept, and waitLog resolves with the first that matches. */
async function startProxy(name, yaml) {
  const port = await freePort();
  const config = path.join(dir, `${name}.yaml`);
  writeFileSync(config, `listen: {host: 127.0.0.1, port: ${port}}\n${yaml}`);
  const child = track(
    spawn(process.execPath, [cli, 'start', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  child.name = name;
  child.port = port;
  child.lines = [];
  const waiters = new Set();
  let buffer = '';
  child.stdout.on('data', (data) => {
    buffer += data;
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
      let line;
      try {
        line = JSON.parse(text);
      } catch {
        continue;
      }
      child.lines.push(line);
      for (const w of waiters) if (w.match(line)) w.resolve(line);
    }
  });
  child.waitLog = (match, timeoutMs = 10000, since = 0) => {
    const seen = child.lines.find((l) => l.time >= since && match(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const w = { match: (l) => l.time >= since && match(l), resolve: (l) => done(l) };
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (l) => {
        clearTimeout(timer);
        waiters.delete(w);
        resolve(l);
      };
      waiters.add(w);
    });
  };
  if (!(await child.waitLog((l) => /roomring listening on/.test(l.msg ?? ''), 10000)))
    throw new Error(`${name} did not start`);
  return child;
}
const ringOf = (n) => (l) => l.event === 'ring' && l.backends?.length === n;
const healthOf = (id, status) => (l) => l.event === 'health' && l.backend === id && l.status === status;

/** Maps rooms to backends through `port` until `want(owner)` has picked enough of each kind. */
async function pickRooms(port, prefix, quotas) {
  const picked = Object.fromEntries(Object.keys(quotas).map((k) => [k, []]));
  for (let i = 0; i < 2000; i++) {
    const name = `${prefix}-${i}`;
    const { status, by } = await room(port, name);
    if (status !== 200) throw new Error(`room ${name}: status ${status}`);
    for (const [kind, { want, count }] of Object.entries(quotas)) {
      if (picked[kind].length < count && want(by)) {
        picked[kind].push({ name, by });
        break;
      }
    }
    if (Object.entries(quotas).every(([k, q]) => picked[k].length >= q.count)) return picked;
  }
  throw new Error('not enough rooms found');
}

/** Polls `urlPath` on each proxy every POLL_MS until `done(reply)`; ms from t0 per proxy (null: never). */
async function pollUntil(proxies, urlPath, done, t0, limitMs) {
  const result = new Map(proxies.map((p) => [p, null]));
  const failed = new Map(proxies.map((p) => [p, 0]));
  while (Date.now() - t0 < limitMs && [...result.values()].some((v) => v === null)) {
    const tick = Date.now();
    await Promise.all(
      proxies
        .filter((p) => result.get(p) === null)
        .map(async (p) => {
          const reply = await get(p.port, urlPath);
          if (reply.status !== 200) failed.set(p, failed.get(p) + 1);
          else if (done(reply)) result.set(p, Date.now() - t0);
        }),
    );
    await sleep(Math.max(0, POLL_MS - (Date.now() - tick)));
  }
  return {
    times: proxies.map((p) => result.get(p)),
    failed: [...failed.values()].reduce((a, b) => a + b, 0),
  };
}

async function passive(round) {
  const backends = await Promise.all(['b1', 'b2', 'b3'].map(startBackend));
  const [b1] = backends;
  const proxy = await startProxy(
    `passive-${round}`,
    [
      'room: {from: [{path: /rooms/:room}]}',
      'backends:',
      ...backends.map((b) => `  - {id: ${b.id}, url: "${b.url}"}`),
      `health: {interval: ${PASSIVE.interval}ms, fall: ${PASSIVE.fall}, rise: ${PASSIVE.rise}}`,
      'log: {level: info}',
      '',
    ].join('\n'),
  );
  try {
    if (!(await proxy.waitLog(ringOf(3), 10000))) throw new Error('passive: ring never had 3 backends');
    const rooms = await pickRooms(proxy.port, `p${round}`, {
      b1: { want: (by) => by === 'b1', count: 20 },
      other: { want: (by) => by !== 'b1', count: 60 },
    });
    const t0 = Date.now();
    b1.kill('SIGKILL');
    const reaped = b1.exited.then(() => Date.now() - t0);
    let first = null;
    let failed = 0;
    const failures = [];
    const successors = new Map();
    for (const r of rooms.b1) {
      const reply = await room(proxy.port, r.name);
      if (reply.status !== 200 || reply.by === 'b1') {
        failed++;
        failures.push(
          `${reply.status || ''} ${reply.by ?? reply.error ?? ''} at ${Date.now() - t0} ms`.trim(),
        );
      } else {
        first ??= Date.now() - t0;
        successors.set(r.name, reply.by);
      }
    }
    const allServed = Date.now() - t0;
    const down = await proxy.waitLog(healthOf('b1', 'down'), 15000, t0);
    let stayed = 0;
    for (const r of rooms.other) if ((await room(proxy.port, r.name)).by === r.by) stayed++;
    let kept = 0;
    for (const [name, by] of successors) if ((await room(proxy.port, name)).by === by) kept++;
    return {
      first,
      allServed,
      failed,
      stayed,
      otherCount: rooms.other.length,
      kept,
      served: successors.size,
      reaped: await reaped,
      failures,
      verdict: down ? down.time - t0 : null,
    };
  } finally {
    await Promise.all([proxy, ...backends].map(stop));
  }
}

function runCli(args) {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [cli, ...args], (error, stdout, stderr) =>
      error ? reject(new Error(`${args.join(' ')}: ${stderr || error.message}`)) : resolve(stdout),
    ),
  );
}

async function active(round, redisUrl) {
  const cluster = `failover-${round}`;
  const backends = await Promise.all(['b1', 'b2', 'b3'].map(startBackend));
  const [, b2, b3] = backends;
  await Promise.all(
    backends.map((b) =>
      runCli(['backends', 'add', '--redis', redisUrl, '--cluster', cluster, '--id', b.id, '--url', b.url]),
    ),
  );
  const yaml = [
    'room: {from: [{path: /rooms/:room}]}',
    `registry: {redis: "${redisUrl}", cluster: ${cluster}, leaderLease: ${ACTIVE.leaderLease}ms, reapInterval: ${ACTIVE.reapInterval}ms}`,
    `health: {interval: ${ACTIVE.interval}ms, timeout: ${ACTIVE.timeout}ms, fall: ${ACTIVE.fall}, rise: ${ACTIVE.rise}}`,
    'placement: {affinity: off}',
    'log: {level: info}',
    '',
  ].join('\n');
  const proxies = [await startProxy(`a-${round}`, yaml), await startProxy(`b-${round}`, yaml)];
  try {
    for (const p of proxies)
      if (!(await p.waitLog(ringOf(3), 10000))) throw new Error(`${p.name}: ring never had 3 backends`);
    const [pa, pb] = proxies;
    const rooms = await pickRooms(pa.port, `a${round}`, {
      b2: { want: (by) => by === 'b2', count: 40 },
      b3: { want: (by) => by === 'b3', count: 1 },
      other: { want: (by) => by !== 'b2', count: 60 },
    });
    for (const r of [...rooms.b2, ...rooms.other])
      if ((await room(pb.port, r.name)).by !== r.by)
        throw new Error(`proxies disagree on ${r.name} at start`);

    // 2. b2 fails its health checks: one verdict, both proxies.
    const probe = `/rooms/${rooms.b2[0].name}`;
    const t0 = Date.now();
    await setHealth(b2, 500);
    const drop = await pollUntil(proxies, probe, (r) => r.by !== 'b2', t0, 8000);
    const leaderLine = await Promise.race(proxies.map((p) => p.waitLog(healthOf('b2', 'down'), 3000, t0)));
    let agree = 0;
    for (const r of rooms.b2) {
      const [x, y] = await Promise.all(proxies.map((p) => room(p.port, r.name)));
      if (x.status === 200 && x.by === y.by && x.by !== 'b2') agree++;
    }
    let stayed = 0;
    for (const r of rooms.other) {
      const [x, y] = await Promise.all(proxies.map((p) => room(p.port, r.name)));
      if (x.by === r.by && y.by === r.by) stayed++;
    }
    const t1 = Date.now();
    await setHealth(b2, 200);
    const back = await pollUntil(proxies, probe, (r) => r.by === 'b2', t1, 8000);
    let returned = 0;
    for (const r of rooms.b2) {
      const replies = await Promise.all(proxies.map((p) => room(p.port, r.name)));
      if (replies.every((x) => x.by === 'b2')) returned++;
    }

    // 3. The leader dies; the survivor takes the lease and runs the checks.
    const leaders = proxies.filter((p) => p.lines.some((l) => l.event === 'leader'));
    if (leaders.length !== 1) throw new Error(`expected one leader, saw ${leaders.length}`);
    const [leader] = leaders;
    const survivor = proxies.find((p) => p !== leader);
    const t2 = Date.now();
    leader.kill('SIGKILL');
    const took = await survivor.waitLog((l) => l.event === 'leader', 8000, t2);
    const t3 = Date.now();
    await setHealth(b3, 500);
    const dropB3 = await pollUntil([survivor], `/rooms/${rooms.b3[0].name}`, (r) => r.by !== 'b3', t3, 8000);
    return {
      drop: drop.times,
      dropFailed: drop.failed,
      verdict: leaderLine ? leaderLine.time - t0 : null,
      agree,
      b2Count: rooms.b2.length,
      stayed,
      otherCount: rooms.other.length,
      back: back.times,
      backFailed: back.failed,
      returned,
      takeover: took ? took.time - t2 : null,
      dropB3: dropB3.times[0],
      dropB3Failed: dropB3.failed,
    };
  } finally {
    await Promise.all([...proxies, ...backends].map(stop));
  }
}

const redisPort = await freePort();
const redis = track(
  spawn(
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  ),
);
await new Promise((resolve) => {
  let out = '';
  redis.stdout.on('data', (d) => {
    out += d;
    if (out.includes('Ready to accept')) resolve();
  });
});
redis.stdout.resume();
const redisUrl = `redis://127.0.0.1:${redisPort}`;

const started = Date.now();
const runs = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const p = await passive(round);
    const a = await active(round, redisUrl);
    runs.push({ p, a });
    console.error(`round ${round} done (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
} finally {
  await stop(redis);
}

const ms = (v) => (v === null || v === undefined ? 'never' : `${Math.round(v)} ms`);
const stats = (values) => {
  if (values.some((v) => v === null)) return ['never', 'never'];
  const s = [...values].sort((x, y) => x - y);
  const mid = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return [ms(s[0]), ms(mid)];
};
const activeBound = ACTIVE.interval * ACTIVE.fall + 1000;
const rows = [
  ['1 passive', 'kill b1 -> its exit seen by the parent', runs.map((r) => r.p.reaped), ''],
  ['1 passive', 'kill b1 -> first 200 from a successor', runs.map((r) => r.p.first), 'at once'],
  ['1 passive', 'kill b1 -> all 20 b1 rooms served', runs.map((r) => r.p.allServed), ''],
  ['1 passive', 'failed requests (20 b1 rooms)', runs.map((r) => `${r.p.failed}/20`), 'must be 0'],
  ['1 passive', 'kill b1 -> health verdict "b1 is down"', runs.map((r) => r.p.verdict), 'suspect probes'],
  [
    '1 passive',
    'other rooms on the same backend after',
    runs.map((r) => `${r.p.stayed}/${r.p.otherCount}`),
    'all',
  ],
  [
    '1 passive',
    'b1 rooms on the same successor after verdict',
    runs.map((r) => `${r.p.kept}/${r.p.served}`),
    'all',
  ],
  ['2 active', 'b2 fails health -> verdict logged (leader)', runs.map((r) => r.a.verdict), ''],
  [
    '2 active',
    'b2 fails health -> proxy A stops sending to b2',
    runs.map((r) => r.a.drop[0]),
    `≤ ${activeBound} ms`,
  ],
  [
    '2 active',
    'b2 fails health -> proxy B stops sending to b2',
    runs.map((r) => r.a.drop[1]),
    `≤ ${activeBound} ms`,
  ],
  [
    '2 active',
    'b2 rooms on the same successor on both',
    runs.map((r) => `${r.a.agree}/${r.a.b2Count}`),
    'all',
  ],
  ['2 active', 'b1/b3 rooms unmoved on both', runs.map((r) => `${r.a.stayed}/${r.a.otherCount}`), 'all'],
  [
    '2 active',
    'b2 passes again -> proxy A sends to b2',
    runs.map((r) => r.a.back[0]),
    `~ ${ACTIVE.rise * ACTIVE.interval} ms`,
  ],
  [
    '2 active',
    'b2 passes again -> proxy B sends to b2',
    runs.map((r) => r.a.back[1]),
    `~ ${ACTIVE.rise * ACTIVE.interval} ms`,
  ],
  ['2 active', 'b2 rooms back on b2 on both', runs.map((r) => `${r.a.returned}/${r.a.b2Count}`), 'all'],
  [
    '2 active',
    'non-200 replies while polling',
    runs.map((r) => String(r.a.dropFailed + r.a.backFailed)),
    '0',
  ],
  [
    '3 leader',
    'kill leader -> survivor holds the lease',
    runs.map((r) => r.a.takeover),
    `≤ ${ACTIVE.leaderLease} ms lease (+${ACTIVE.reapInterval} ms renew step)`,
  ],
  [
    '3 leader',
    'b3 fails health -> survivor stops sending to b3',
    runs.map((r) => r.a.dropB3),
    `≤ ${activeBound} ms`,
  ],
  ['3 leader', 'non-200 replies while polling', runs.map((r) => String(r.a.dropB3Failed)), '0'],
];
const table = rows.map(([part, what, values, bound]) => {
  const numeric = values.every((v) => v === null || typeof v === 'number');
  const cells = numeric ? values.map(ms) : values;
  const [min, median] = numeric ? stats(values) : ['', ''];
  return [part, what, ...cells, min, median, bound];
});
const header = ['part', 'figure', ...runs.map((_, i) => `run ${i + 1}`), 'min', 'median', 'bound / expected'];
const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => String(r[i]).length)));
const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
console.log(
  `\nfailover on 127.0.0.1, node ${process.version}, ${ROUNDS} run(s), ${((Date.now() - started) / 1000).toFixed(1)} s`,
);
console.log(
  `passive: static config, health ${PASSIVE.interval}ms×fall ${PASSIVE.fall}/rise ${PASSIVE.rise}, affinity on; ` +
    `active: Redis registry, 2 proxies, health ${ACTIVE.interval}ms/timeout ${ACTIVE.timeout}ms fall ${ACTIVE.fall} rise ${ACTIVE.rise}, ` +
    `affinity off, leaderLease ${ACTIVE.leaderLease}ms, reapInterval ${ACTIVE.reapInterval}ms, polls every ${POLL_MS} ms\n`,
);
console.log(line(header));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of table) console.log(line(r));
runs.forEach((r, i) => {
  if (r.p.failures.length > 0) console.log(`run ${i + 1}, passive failures: ${r.p.failures.join('; ')}`);
});
process.exit(0);
