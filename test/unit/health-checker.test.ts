// The health checker against real HTTP servers: rise/fall, per-backend overrides, expected statuses.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { type CheckTarget, HealthChecker } from '../../src/health/checker.js';
import { statusMatches } from '../../src/health/probe.js';
import type { Verdict } from '../../src/health/verdict.js';
import { onCleanup, waitUntil } from '../helpers.js';

async function server(routes: Record<string, number>): Promise<number> {
  const srv = http.createServer((req, res) => res.writeHead(routes[req.url ?? ''] ?? 404).end());
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise((resolve) => srv.close(resolve)));
  return (srv.address() as AddressInfo).port;
}

const base = {
  path: '/health',
  interval: 50,
  timeout: 200,
  fall: 2,
  rise: 2,
  expect: ['2xx'],
  initial: 'down' as const,
};

describe('HealthChecker', () => {
  it('applies per-backend overrides over the shared settings', async () => {
    const port = await server({ '/health': 500, '/custom': 200 });
    const checker = new HealthChecker(base);
    onCleanup(() => checker.stop());
    const verdicts = new Map<string, Verdict>();
    checker.on('verdict', (id, verdict) => verdicts.set(id, verdict));
    const targets: CheckTarget[] = [
      { id: 'shared', host: '127.0.0.1', port, tls: false },
      { id: 'custom', host: '127.0.0.1', port, tls: false, health: { path: '/custom', rise: 1 } },
    ];
    checker.setTargets(targets);
    await waitUntil(
      () => verdicts.get('shared')?.status === 'down' && verdicts.get('custom')?.status === 'up',
    );
    expect(verdicts.get('shared')?.reason).toBe('status 500');
    expect(verdicts.get('custom')?.reason).toBe('passed 1 check(s)');
  });

  it('treats a refused connection as a failure and stops checking removed targets', async () => {
    const checker = new HealthChecker({ ...base, fall: 1 });
    onCleanup(() => checker.stop());
    const verdicts: string[] = [];
    checker.on('verdict', (id, verdict) => verdicts.push(`${id}:${verdict.status}:${verdict.reason}`));
    checker.setTargets([{ id: 'gone', host: '127.0.0.1', port: 1, tls: false }]);
    await waitUntil(() => verdicts.length === 1);
    expect(verdicts[0]).toBe('gone:down:ECONNREFUSED');
    checker.setTargets([]);
    expect(checker.verdicts().size).toBe(0);
  });

  it('matches expected statuses by code, range and class', () => {
    expect(statusMatches(204, ['2xx'])).toBe(true);
    expect(statusMatches(302, ['2xx'])).toBe(false);
    expect(statusMatches(302, ['200-399'])).toBe(true);
    expect(statusMatches(418, ['418'])).toBe(true);
    expect(statusMatches(500, ['200', '3xx'])).toBe(false);
  });
});
