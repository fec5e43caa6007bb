// Reads one registry entry (JSON written by backends or operators) into a BackendEntry, or says why
// it cannot be used. A bad entry is skipped by the caller with a warning, never a crash.

import { z } from 'zod';
import { BACKEND_ID, healthOverrideSchema, httpUrl } from '../config/schema.js';
import type { BackendEntry } from './registry.js';

export const entrySchema = z.strictObject({
  url: httpUrl,
  weight: z.number().positive('expected a weight above 0').max(1000).default(1),
  state: z.enum(['active', 'draining']).default('active'),
  /** Heartbeat ttl in ms; 0 or absent for entries without heartbeats. */
  ttl: z.number().int().nonnegative().optional(),
  meta: z.record(z.string(), z.unknown()).optional(),
  health: healthOverrideSchema.optional(),
  drainDeadline: z.number().int().nonnegative().optional(),
});

export type EntryFields = z.input<typeof entrySchema>;

export type EntryResult = { ok: true; entry: BackendEntry } | { ok: false; reason: string };

export function readEntry(id: string, raw: string, allowed?: (host: string) => boolean): EntryResult {
  if (!BACKEND_ID.test(id)) return { ok: false, reason: 'invalid backend id' };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false, reason: 'entry is not valid JSON' };
  }
  const parsed = entrySchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
    const what =
      issue?.code === 'unrecognized_keys' ? `unknown field(s) ${issue.keys.join(', ')}` : issue?.message;
    return { ok: false, reason: `${where}${what}` };
  }
  const { url, weight, state, health, drainDeadline } = parsed.data;
  if (allowed !== undefined && !allowed(new URL(url).hostname)) {
    return { ok: false, reason: `host of ${url} is outside registry.allow` };
  }
  return { ok: true, entry: { id, url, weight, state, health, drainDeadline } };
}
