// Durations in config files: a number of milliseconds or a string such as `500ms`, `2s`, `1m`, `1h`.

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/;

/** Parses a duration into whole milliseconds, or returns null when the text is not one. */
export function parseDuration(value: string | number): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : null;
  const match = DURATION.exec(value.trim());
  if (match === null) return null;
  const [, amount, unit] = match;
  return Math.round(Number(amount) * (UNIT_MS[unit ?? 'ms'] ?? Number.NaN));
}
