// Ring micro-benchmarks on the built ring (dist/ring): lookup cost, rebuild cost, balance and
// how many rooms move when a backend is added or removed.
import { performance } from 'node:perf_hooks';

function members(n, weighted = false) {
  return Array.from({ length: n }, (_, i) => ({ id: `backend-${i}`, weight: weighted ? 1 + (i % 4) : 1 }));
}

function rooms(n) {
  return Array.from({ length: n }, (_, i) => `room-${i}`);
}

function timeLoop(fn, budgetMs) {
  // Warm up, then run in batches until the budget is spent.
  for (let i = 0; i < 2000; i++) fn(i);
  let ops = 0;
  const started = performance.now();
  let now = started;
  while (now - started < budgetMs) {
    for (let i = 0; i < 1000; i++) fn(ops + i);
    ops += 1000;
    now = performance.now();
  }
  return ((now - started) * 1e6) / ops;
}

export async function ringBench({ budgetMs = 400, root = new URL('../../', import.meta.url) } = {}) {
  const { Ring } = await import(new URL('dist/ring/index.js', root).href);
  const sample = rooms(10_000);
  const lookup = [];
  let sink = 0;
  for (const [n, weighted] of [
    [10, false],
    [100, false],
    [1000, false],
    [100, true],
  ]) {
    const ring = new Ring(members(n, weighted));
    const ns = timeLoop((i) => {
      sink += ring.ownerOf(sample[i % sample.length]).weight;
    }, budgetMs);
    lookup.push({ backends: n, weighted, nsPerOp: ns });
  }
  const rebuild = [];
  for (const n of [10, 100, 1000]) {
    const list = members(n);
    const reps = n >= 1000 ? 50 : 500;
    for (let i = 0; i < 5; i++) new Ring(list);
    const started = performance.now();
    for (let i = 0; i < reps; i++) sink += new Ring(list).size;
    rebuild.push({ backends: n, usPerRebuild: ((performance.now() - started) * 1000) / reps });
  }
  const balanceRooms = rooms(100_000);
  const balance = [];
  for (const n of [3, 10, 100]) {
    const ring = new Ring(members(n));
    const counts = new Map();
    for (const room of balanceRooms) {
      const id = ring.ownerOf(room).id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const values = [...ring.members].map((m) => counts.get(m.id) ?? 0);
    const mean = balanceRooms.length / n;
    balance.push({
      backends: n,
      rooms: balanceRooms.length,
      maxOverMean: Math.max(...values) / mean,
      minOverMean: Math.min(...values) / mean,
    });
  }
  const moved = [];
  for (const n of [10, 100]) {
    const base = new Ring(members(n));
    const before = balanceRooms.map((room) => base.ownerOf(room).id);
    const grown = new Ring([...members(n), { id: 'backend-new', weight: 1 }]);
    let addMoved = 0;
    let addStray = 0;
    balanceRooms.forEach((room, i) => {
      const id = grown.ownerOf(room).id;
      if (id !== before[i]) {
        addMoved++;
        if (id !== 'backend-new') addStray++;
      }
    });
    const gone = `backend-${Math.floor(n / 2)}`;
    const shrunk = new Ring(members(n).filter((m) => m.id !== gone));
    let removeMoved = 0;
    let removeStray = 0;
    balanceRooms.forEach((room, i) => {
      const id = shrunk.ownerOf(room).id;
      if (id !== before[i]) {
        removeMoved++;
        if (before[i] !== gone) removeStray++;
      }
    });
    moved.push({
      backends: n,
      rooms: balanceRooms.length,
      addMoved,
      addIdeal: balanceRooms.length / (n + 1),
      addStray,
      removeMoved,
      removeIdeal: balanceRooms.length / n,
      removeStray,
    });
  }
  if (sink === 0.5) console.log(sink);
  return { lookup, rebuild, balance, moved };
}
