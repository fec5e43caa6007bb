// Loads a config file (YAML or JSON), applies overrides, validates it once and freezes the result.
// Errors name the file, the field path, what was expected and, where the parser knows it, the line.

import { readFileSync } from 'node:fs';
import { type Document, isMap, isSeq, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { type Config, configSchema } from './schema.js';

/** Values given on the command line; they win over the file. */
export interface ConfigOverrides {
  host?: string | undefined;
  port?: number | undefined;
  logLevel?: string | undefined;
}

export function loadConfigFile(file: string, overrides: ConfigOverrides = {}): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      file,
      `cannot read the file (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
    );
  }
  return parseConfigText(text, file, overrides);
}

export function parseConfigText(text: string, file: string, overrides: ConfigOverrides = {}): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const [parseError] = doc.errors;
  if (parseError !== undefined) {
    const at = parseError.linePos?.[0];
    const where = at === undefined ? '' : ` (line ${at.line}, column ${at.col})`;
    throw new ConfigError(
      file,
      `not valid YAML or JSON${where}: ${(parseError.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')}`,
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, 'expected a mapping of settings at the top level');
  }
  const source: Source = { doc, lines, overridden: overriddenPaths(overrides) };
  return validateConfig(applyOverrides(raw as Record<string, unknown>, overrides), file, source);
}

/** Where the validated values came from, so an error can point at the right line or flag. */
export interface Source {
  doc: Document;
  lines: LineCounter;
  /** Field paths (`listen.port`) whose values came from overrides, not the file. */
  overridden: ReadonlySet<string>;
}

/** Validates an in-memory config object (the library API's entry point). */
export function validateConfig(raw: unknown, file = '<config>', source?: Source): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const details = result.error.issues.map((issue) => describeIssue(issue, source)).join('\n  ');
    throw new ConfigError(file, result.error.issues.length > 1 ? `\n  ${details}` : details);
  }
  return deepFreeze(result.data);
}

function applyOverrides(raw: Record<string, unknown>, overrides: ConfigOverrides): Record<string, unknown> {
  const out = { ...raw };
  if (overrides.host !== undefined || overrides.port !== undefined) {
    const listen = { ...(out.listen as Record<string, unknown> | undefined) };
    if (overrides.host !== undefined) listen.host = overrides.host;
    if (overrides.port !== undefined) listen.port = overrides.port;
    out.listen = listen;
  }
  if (overrides.logLevel !== undefined) {
    out.log = { ...(out.log as Record<string, unknown> | undefined), level: overrides.logLevel };
  }
  return out;
}

function overriddenPaths(overrides: ConfigOverrides): Set<string> {
  const paths = new Set<string>();
  if (overrides.host !== undefined) paths.add('listen.host');
  if (overrides.port !== undefined) paths.add('listen.port');
  if (overrides.logLevel !== undefined) paths.add('log.level');
  return paths;
}

function describeIssue(issue: z.core.$ZodIssue, source?: Source): string {
  const path = issue.path.map(String);
  let field = path.length === 0 ? '(top level)' : formatPath(issue.path);
  let message = plainMessage(issue.message);
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    field = formatPath([...issue.path, key]);
    message = `unknown field '${key}'${issue.keys.length > 1 ? ` (also: ${issue.keys.slice(1).join(', ')})` : ''}`;
    path.push(key);
  }
  // A value from the command line has no line in the file; the file's line would mislead.
  if (source?.overridden.has(field)) return `${field}: ${message} (given on the command line)`;
  const line = source ? lineOf(source.doc, source.lines, path) : undefined;
  return `${field}: ${message}${line === undefined ? '' : ` (line ${line})`}`;
}

/** Zod's wording minus its 'Invalid input:' lead, and a missing field said as such. */
function plainMessage(message: string): string {
  const text = message.replace(/^(?:Invalid (?:input|option)|Too (?:big|small)): /, '');
  const missing = /^(expected [^,]+), received undefined$/.exec(text);
  return missing === null ? text : `missing; ${missing[1]}`;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
}

/** Finds the line of the deepest node of `path` that exists in the document. */
function lineOf(doc: Document, lines: LineCounter, path: string[]): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const part of path) {
    if (isMap(node)) {
      const pair = node.items.find((item) => String((item.key as { value?: unknown })?.value) === part);
      if (pair === undefined) break;
      offset = (pair.key as { range?: [number, number, number] }).range?.[0];
      node = pair.value;
    } else if (isSeq(node)) {
      const item = node.items[Number(part)] as { range?: [number, number, number] } | undefined;
      if (item === undefined) break;
      offset = item.range?.[0];
      node = item;
    } else {
      break;
    }
  }
  return offset === undefined ? undefined : lines.linePos(offset).line;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
