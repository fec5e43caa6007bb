// Runs wrk against a URL with the room-spreading Lua script and parses req/s and latency percentiles.
import { fileURLToPath } from 'node:url';
import { run } from './procs.js';

const SCRIPT = fileURLToPath(new URL('./rooms.lua', import.meta.url));

const UNITS = { us: 0.001, ms: 1, s: 1000, m: 60000 };

function toMs(text) {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  return match ? Number(match[1]) * UNITS[match[2]] : Number.NaN;
}

/** wrk -t threads -c connections -d seconds --latency; returns {rps, p50, p99, requests, errors}. */
export async function wrk(url, { seconds, connections, threads = 1, rooms = 1000 }) {
  const args = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout',
    '5s',
    '--latency',
    '-s',
    SCRIPT,
    url,
    '--',
    String(rooms),
  ];
  const { code, stdout, stderr } = await run('wrk', args, { timeoutMs: (seconds + 20) * 1000 });
  if (code !== 0) throw new Error(`wrk exited ${code}: ${stderr || stdout}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(stdout)?.[1] ?? '');
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(stdout)?.[1] ?? '');
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1]);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0);
  const errors = non2xx + (socketErrors ? socketErrors.slice(1).reduce((s, n) => s + Number(n), 0) : 0);
  return { rps, p50, p99, requests, errors, raw: stdout };
}

export async function wrkVersion() {
  const { stdout, stderr } = await run('wrk', ['-v'], { timeoutMs: 5000 }).catch(() => ({
    stdout: '',
    stderr: '',
  }));
  return /wrk\s+(\S+)/.exec(stdout + stderr)?.[1] ?? 'unknown';
}
