// A health verdict: what the checks concluded about one backend, and why.

export type HealthStatus = 'up' | 'down' | 'unknown';

export interface Verdict {
  readonly status: HealthStatus;
  /** Why, in a few words: 'passed 2 checks', 'status 503', 'timeout after 1000 ms', 'flapping'. */
  readonly reason: string;
  /** When this status began, ms since the epoch. */
  readonly since: number;
}

/** Reads a verdict written by another proxy; undefined when it is not one. */
export function parseVerdict(raw: string): Verdict | undefined {
  try {
    const value = JSON.parse(raw) as Partial<Verdict>;
    if (
      (value.status === 'up' || value.status === 'down' || value.status === 'unknown') &&
      typeof value.reason === 'string' &&
      typeof value.since === 'number'
    ) {
      return { status: value.status, reason: value.reason, since: value.since };
    }
  } catch {
    // Not JSON: not a verdict.
  }
  return undefined;
}
