// Turns the measurements into markdown tables: absolute figures per peer, roomring's ratios
// against the baselines of the same run, the targets, and the ring micro-benchmarks.

const LABELS = {
  direct: 'direct (ceiling)',
  roomring: 'roomring',
  'http-proxy': 'bare http-proxy',
  haproxy: 'HAProxy',
  nginx: 'nginx',
};

/** Metric rows: key, label, unit, direction (higher/lower is better), formatting digits. */
export const METRICS = [
  { key: 'httpRps', label: 'HTTP requests/s', better: 'higher', digits: 0 },
  { key: 'httpP50', label: 'HTTP latency p50 (ms)', better: 'lower', digits: 2 },
  { key: 'httpP99', label: 'HTTP latency p99 (ms)', better: 'lower', digits: 2 },
  { key: 'httpCpuShare', label: 'proxy CPU during HTTP load (% of one core)', better: 'lower', digits: 0 },
  {
    key: 'httpPerCpu',
    spread: true,
    label: '**HTTP requests per proxy CPU-second**',
    better: 'higher',
    digits: 0,
  },
  { key: 'upgradesPerS', label: 'WS upgrades/s', better: 'higher', digits: 0 },
  {
    key: 'upgradesPerCpu',
    spread: true,
    label: '**WS upgrades per proxy CPU-second**',
    better: 'higher',
    digits: 0,
  },
  { key: 'upgradeUserUs', label: 'user CPU per upgrade (µs)', better: 'lower', digits: 0 },
  { key: 'upgradeSystemUs', label: 'system CPU per upgrade (µs)', better: 'lower', digits: 0 },
  { key: 'msgsPerS', label: 'WS messages/s, one connection', better: 'higher', digits: 0 },
  {
    key: 'msgsPerCpu',
    spread: true,
    label: '**WS messages per proxy CPU-second**',
    better: 'higher',
    digits: 0,
  },
  {
    key: 'echoP50',
    spread: true,
    label: 'WS echo p50 (ms), 1,000 conns / 200 rooms',
    better: 'lower',
    digits: 3,
  },
  {
    key: 'echoP99',
    spread: true,
    label: 'WS echo p99 (ms), 1,000 conns / 200 rooms',
    better: 'lower',
    digits: 3,
  },
  { key: 'rssPerConnKb', spread: true, label: '**RSS per idle WebSocket (KB)**', better: 'lower', digits: 1 },
  { key: 'roomsSplit', label: 'rooms split (must be 0)', better: 'lower', digits: 0 },
  { key: 'errors', label: 'errors (HTTP non-2xx/socket + WS)', better: 'lower', digits: 0 },
];

export function fmt(value, digits = 0) {
  if (value === undefined || value === null || Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return '∞';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function table(header, rows) {
  const lines = [
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
  ];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

/** The median, and for noisy metrics the range over rounds: `7.2 (7.0–7.4)`. */
function cell(f, m) {
  const value = fmt(f?.[m.key], m.digits);
  const range = f?.ranges?.[m.key];
  if (!m.spread || range === undefined || range[0] === range[1] || value === '—') return value;
  return `${value} (${fmt(range[0], m.digits)}–${fmt(range[1], m.digits)})`;
}

export function absoluteTable(peers, figures) {
  const header = ['metric', ...peers.map((p) => LABELS[p] ?? p)];
  const rows = METRICS.map((m) => [m.label, ...peers.map((p) => cell(figures[p], m))]);
  return table(header, rows);
}

const ratio = (a, b) => (a === undefined || b === undefined || !(b > 0) ? undefined : a / b);

export function ratioTable(peers, figures) {
  const baselines = ['http-proxy', 'haproxy', 'nginx', 'direct'].filter((p) => peers.includes(p));
  const header = ['metric (roomring ÷ peer)', ...baselines.map((p) => `÷ ${LABELS[p]}`), 'better'];
  const keys = [
    'httpRps',
    'httpP50',
    'httpP99',
    'httpPerCpu',
    'upgradesPerS',
    'upgradesPerCpu',
    'msgsPerS',
    'msgsPerCpu',
    'echoP50',
    'echoP99',
    'rssPerConnKb',
  ];
  const rows = keys.map((key) => {
    const m = METRICS.find((x) => x.key === key);
    return [
      m.label,
      ...baselines.map((p) =>
        `${fmt(ratio(figures.roomring?.[key], figures[p]?.[key]), 2)}×`.replace('—×', '—'),
      ),
      m.better,
    ];
  });
  return table(header, rows);
}

/**
 * The targets, each met or missed, from ratios of this run. `haproxy` is what HAProxy
 * reaches on the same measure in the same run, where the measure is not relative to HAProxy
 * itself: it shows when a target asks for more than HAProxy does on this machine.
 */
export function targets(figures) {
  const r = figures.roomring ?? {};
  const hp = figures['http-proxy'] ?? {};
  const ha = figures.haproxy ?? {};
  const timesBare = (key) => ({
    of: (p) => ratio(p[key], hp[key]),
    show: (v, p) => `${fmt(v, 2)}× (${fmt(p[key])} vs ${fmt(hp[key])})`,
    ok: (v) => v >= 3,
  });
  const list = [
    { target: 'HTTP requests per proxy CPU-s ≥ 3× bare http-proxy', ...timesBare('httpPerCpu') },
    {
      target: 'WS messages per proxy CPU-s ≥ HAProxy',
      of: (p) => ratio(p.msgsPerCpu, ha.msgsPerCpu),
      show: (v) => `${fmt(v, 2)}× (${fmt(r.msgsPerCpu)} vs ${fmt(ha.msgsPerCpu)})`,
      ok: (v) => v >= 1,
      relative: true,
    },
    { target: 'WS upgrades per proxy CPU-s ≥ 3× bare http-proxy', ...timesBare('upgradesPerCpu') },
    {
      target: '≤ 10 KB RSS per idle proxied WebSocket',
      of: (p) => p.rssPerConnKb,
      show: (v) => `${fmt(v, 1)} KB`,
      ok: (v) => v <= 10,
    },
    {
      target: 'WS echo p99 ≤ 1.2× HAProxy',
      of: (p) => ratio(p.echoP99, ha.echoP99),
      show: (v) => `${fmt(v, 2)}× (${fmt(r.echoP99, 3)} ms vs ${fmt(ha.echoP99, 3)} ms)`,
      ok: (v) => v <= 1.2,
      relative: true,
    },
    {
      target: 'rooms split = 0',
      of: (p) => p.roomsSplit,
      show: (v) => fmt(v),
      ok: (v) => v === 0,
    },
  ];
  const measured = (v) => v !== undefined && !Number.isNaN(v);
  return list.map((t) => {
    const value = t.of(r);
    const theirs = t.relative ? undefined : t.of(ha);
    return {
      target: t.target,
      measured: measured(value) ? t.show(value, r) : 'not measured',
      status: measured(value) ? (t.ok(value) ? 'met' : '**missed**') : 'not measured',
      haproxy: measured(theirs) ? `${t.show(theirs, ha)}${t.ok(theirs) ? '' : ' (misses it too)'}` : '—',
    };
  });
}

export function targetTable(figures) {
  return table(
    ['target', 'measured', 'status', 'HAProxy, same measure'],
    targets(figures).map((t) => [t.target, t.measured, t.status, t.haproxy]),
  );
}

export function ringTables(ring) {
  const lookup = table(
    ['backends', 'lookup ns/op'],
    ring.lookup.map((l) => [`${fmt(l.backends)}${l.weighted ? ' (weights 1–4)' : ''}`, fmt(l.nsPerOp, 0)]),
  );
  const rebuild = table(
    ['backends', 'rebuild µs'],
    ring.rebuild.map((r) => [fmt(r.backends), fmt(r.usPerRebuild, 1)]),
  );
  const balance = table(
    ['backends', 'rooms', 'max/mean', 'min/mean'],
    ring.balance.map((b) => [fmt(b.backends), fmt(b.rooms), fmt(b.maxOverMean, 3), fmt(b.minOverMean, 3)]),
  );
  const moved = table(
    [
      'backends',
      'rooms',
      'moved on add (ideal)',
      'moved elsewhere on add',
      'moved on remove (ideal)',
      'moved elsewhere on remove',
    ],
    ring.moved.map((m) => [
      fmt(m.backends),
      fmt(m.rooms),
      `${fmt(m.addMoved)} (${fmt(m.addIdeal)})`,
      fmt(m.addStray),
      `${fmt(m.removeMoved)} (${fmt(m.removeIdeal)})`,
      fmt(m.removeStray),
    ]),
  );
  return { lookup, rebuild, balance, moved };
}

export { LABELS };
