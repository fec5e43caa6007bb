#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `node --cpu-prof`): top functions by self time, inclusive time
// of roomring's own functions, and self time by origin (roomring, node internals, dependencies,
// GC, native). Usage: node bench/cpuprofile-summary.js <file.cpuprofile> [top=25]
import { readFileSync } from 'node:fs';

export function summarize(profile, top = 25) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  // timeDeltas[i] is the time before samples[i]; attribute it to the sample it leads to.
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((s, v) => s + v, 0);
  const keyOf = (node) => {
    const f = node.callFrame;
    const url = f.url.replace(/^file:\/\/.*?\/(dist|node_modules|bench)\//, '$1/');
    return `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : ''}`.trim();
  };
  const originOf = (node) => {
    const { url, functionName } = node.callFrame;
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)' || url === '') return 'native / (program)';
    if (url.includes('/dist/')) return 'roomring (dist/)';
    if (url.includes('/node_modules/')) return 'dependencies (node_modules)';
    if (url.startsWith('node:')) return 'node internals (node:*)';
    return 'other';
  };
  const byFunction = new Map();
  const byOrigin = new Map();
  for (const [id, t] of self) {
    const node = nodes.get(id);
    const key = keyOf(node);
    byFunction.set(key, (byFunction.get(key) ?? 0) + t);
    const origin = originOf(node);
    byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + t);
  }
  // Inclusive time: each node's self time plus its subtree; summed per function, counting a
  // function once per stack (recursion is not double counted).
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map();
  for (const [id, t] of self) {
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const key = keyOf(nodes.get(cur));
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + t);
    }
  }
  const idle = byOrigin.get('idle') ?? 0;
  const busy = total - idle;
  const pct = (t) => `${((t / busy) * 100).toFixed(1).padStart(5)}%`;
  const ms = (t) => `${(t / 1000).toFixed(0).padStart(7)} ms`;
  const lines = [];
  lines.push(
    `profile: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (percentages are of busy time)`,
  );
  lines.push('', 'self time by origin:');
  for (const [origin, t] of [...byOrigin].filter(([o]) => o !== 'idle').sort((a, b) => b[1] - a[1]))
    lines.push(`  ${ms(t)} ${pct(t)}  ${origin}`);
  lines.push('', `top ${top} functions by self time:`);
  for (const [key, t] of [...byFunction]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top))
    lines.push(`  ${ms(t)} ${pct(t)}  ${key}`);
  lines.push('', 'roomring functions by inclusive time:');
  for (const [key, t] of [...inclusive]
    .filter(([k]) => k.includes('dist/'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top))
    lines.push(`  ${ms(t)} ${pct(t)}  ${key}`);
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, top = '25'] = process.argv.slice(2);
  if (file === undefined) {
    process.stderr.write('usage: node bench/cpuprofile-summary.js <file.cpuprofile> [top]\n');
    process.exit(2);
  }
  process.stdout.write(`${summarize(JSON.parse(readFileSync(file, 'utf8')), Number(top))}\n`);
}
