// One active health check: an HTTP GET of the backend's health path, judged by its status.

import http from 'node:http';
import https from 'node:https';

export interface ProbeTarget {
  host: string;
  port: number;
  tls: boolean;
}

export interface ProbeOptions {
  path: string;
  timeout: number;
  expect: readonly string[];
}

export interface ProbeResult {
  ok: boolean;
  reason: string;
}

/** True when `status` matches one of the rules: '200', '200-299' or '2xx'. */
export function statusMatches(status: number, rules: readonly string[]): boolean {
  return rules.some((rule) => {
    if (rule.endsWith('xx')) return Math.floor(status / 100) === Number(rule[0]);
    const [low, high] = rule.split('-').map(Number);
    return status >= (low as number) && status <= (high ?? (low as number));
  });
}

export function probe(target: ProbeTarget, options: ProbeOptions): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = (target.tls ? https : http).get({
      host: target.host,
      port: target.port,
      path: options.path,
      agent: false,
      headers: { 'user-agent': 'roomring-health-check', connection: 'close' },
    });
    const timer = setTimeout(() => {
      done({ ok: false, reason: `timeout after ${options.timeout} ms` });
      req.destroy();
    }, options.timeout);
    req.once('response', (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      done(
        statusMatches(status, options.expect)
          ? { ok: true, reason: `status ${status}` }
          : { ok: false, reason: `status ${status}` },
      );
    });
    req.once('error', (error: NodeJS.ErrnoException) =>
      done({ ok: false, reason: error.code ?? error.message }),
    );
  });
}
