// Keeps README.md and config/roomring.example.yaml in step with the code: every error code with its
// status, every config field (the README's reference table is generated from the schema: when this
// test fails it prints the table to paste), the example file's validity, and the quick start.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfigFile, parseConfigText, validateConfig } from '../../src/config/load.js';
import { configJsonSchema } from '../../src/config/schema.js';
import { ERROR_CODES } from '../../src/errors.js';
import { ROOT } from '../helpers.js';

const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const EXAMPLE_FILE = path.join(ROOT, 'config', 'roomring.example.yaml');
const EXAMPLE = readFileSync(EXAMPLE_FILE, 'utf8');

interface SchemaNode {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  properties?: Record<string, SchemaNode>;
  required?: string[];
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
}

interface Field {
  /** Dotted path; `[]` marks the items of a list, e.g. `backends[].url`. */
  path: string;
  node: SchemaNode;
  required: boolean;
  /** One of several alternative keys, such as the `path`/`query`/`header`/`cookie` of a room rule. */
  alternative: boolean;
  leaf: boolean;
}

/** Every field of the schema that gets a table row: leaves, and lists (which carry their own default). */
function fieldsOf(node: SchemaNode, prefix = '', alternative = false, out: Field[] = []): Field[] {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const at = prefix === '' ? key : `${prefix}.${key}`;
    const required = node.required?.includes(key) === true;
    if (child.properties !== undefined) {
      fieldsOf(child, at, false, out);
    } else if (child.type === 'array' && child.items !== undefined) {
      out.push({ path: at, node: child, required, alternative, leaf: false });
      const items = child.items.anyOf ?? [child.items];
      for (const item of items) fieldsOf(item, `${at}[]`, items.length > 1, out);
    } else {
      out.push({ path: at, node: child, required, alternative, leaf: true });
    }
  }
  return out;
}

const FIELDS = fieldsOf(configJsonSchema() as SchemaNode);
const LEAVES = FIELDS.filter((field) => field.leaf);

function formatValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(formatValue).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.entries(value)
      .map(([key, inner]) => `${key}: ${formatValue(inner)}`)
      .join(', ')}}`;
  }
  return String(value);
}

function typeOf({ node }: Field): string {
  if (node.enum !== undefined) return node.enum.map((value) => `\`${String(value)}\``).join(', ');
  const types = Array.isArray(node.type) ? node.type : [node.type];
  if (types.includes('number') && types.includes('string')) return 'duration';
  if (node.type === 'array') return 'list';
  const bounds: string[] = [];
  if (node.minimum !== undefined && node.maximum !== undefined) {
    bounds.push(`${node.minimum} to ${node.maximum}`);
  } else {
    if (node.exclusiveMinimum !== undefined) bounds.push(`above ${node.exclusiveMinimum}`);
    if (node.minimum !== undefined) bounds.push(`at least ${node.minimum}`);
    if (node.maximum !== undefined) bounds.push(`at most ${node.maximum}`);
  }
  return [String(node.type), ...bounds].join(', ');
}

/** Defaults as the schema applies them, for fields whose JSON Schema omits one (zod leaves out the
 * default of a list whose items transform, such as `room.from`). */
const DEFAULTS = validateConfig({});

function appliedDefault(at: string): unknown {
  if (at.includes('[]')) return undefined;
  let value: unknown = DEFAULTS;
  for (const key of at.split('.')) value = (value as Record<string, unknown> | undefined)?.[key];
  return value;
}

function defaultOf(field: Field): string {
  const value = field.node.default ?? appliedDefault(field.path);
  if (value !== undefined) return `\`${formatValue(value)}\``;
  return field.required && !field.alternative ? 'required' : '—';
}

/** The expected cells of a field's row; a `|` inside a cell is escaped as markdown needs. */
function cellsOf(field: Field): string[] {
  const cells = [`\`${field.path}\``, typeOf(field), defaultOf(field), field.node.description ?? ''];
  return cells.map((cell) => cell.replaceAll('|', '\\|'));
}

/** The cells of a markdown table row, trimmed, so that column padding (Biome's format) does not matter. */
function cellsOfRow(line: string): string[] {
  return line
    .trim()
    .replace(/^\|/, '')
    .replace(/\|$/, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim());
}

const TABLE = [
  ['Field', 'Type', 'Default', 'Description'],
  ['---', '---', '---', '---'],
  ...FIELDS.map(cellsOf),
]
  .map((cells) => `| ${cells.join(' | ')} |`)
  .join('\n');
const PASTE = `it should read (then run \`npm run format\`):\n\n${TABLE}\n`;

/** The text of the README section under the `## ` heading `title`, up to the next `## ` heading. */
function section(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  expect(start, `README.md has no '## ${title}' section`).toBeGreaterThanOrEqual(0);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end === -1 ? undefined : end);
}

/** Every path in a parsed config value, lists marked with `[]` as in `Field.path`. */
function pathsIn(value: unknown, prefix = '', out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) {
    out.add(prefix);
    for (const item of value) pathsIn(item, `${prefix}[]`, out);
  } else if (typeof value === 'object' && value !== null) {
    if (prefix !== '') out.add(prefix);
    for (const [key, inner] of Object.entries(value))
      pathsIn(inner, prefix === '' ? key : `${prefix}.${key}`, out);
  } else {
    out.add(prefix);
  }
  return out;
}

/**
 * The example with its switched-off settings switched on: a comment whose text is a setting
 * (`# - cookie: room_id`, `# registry:`, `#   resync: 5s`) loses its '# '. Prose comments start
 * with a capital letter or a space-padded word, so they stay comments.
 */
const EXAMPLE_UNCOMMENTED = EXAMPLE.replace(/^(\s*)# (\s*(?:- )?[a-z][A-Za-z]*:(?: .*)?)$/gm, '$1$2');

describe('README error codes', () => {
  it.each(Object.entries(ERROR_CODES))('lists %s with its HTTP status', (code, { status }) => {
    const row = README.split('\n').find((line) => line.startsWith('|') && line.includes(`\`${code}\``));
    expect(row, `README.md has no table row for ${code}`).toBeDefined();
    expect(row).toMatch(new RegExp(`\\|\\s*${status}\\s*\\|`));
  });

  it('names no code that does not exist', () => {
    const named = new Set(README.match(/ROOMRING_E_[A-Z_]+/g) ?? []);
    const unknown = [...named].filter((code) => !(code in ERROR_CODES));
    expect(unknown).toEqual([]);
  });
});

describe('README config reference', () => {
  const reference = section('Configuration reference');
  const rows = reference
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map(cellsOfRow);

  it('names every leaf field of the schema', () => {
    const missing = LEAVES.filter((field) => !reference.includes(`\`${field.path}\``)).map((f) => f.path);
    expect(missing, `fields missing in README.md; ${PASTE}`).toEqual([]);
  });

  it('has the row generated from the schema for every field', () => {
    const stale = FIELDS.map(cellsOf).filter(
      (expected) => !rows.some((row) => row.join('\t') === expected.join('\t')),
    );
    expect(stale, `README.md's table is out of date; ${PASTE}`).toEqual([]);
  });

  it('has no row for a field the schema does not have', () => {
    const known = new Set(FIELDS.map((field) => `\`${field.path}\``));
    const unknown = rows.map((row) => row[0]).filter((cell) => !known.has(cell ?? ''));
    expect(unknown).toEqual([]);
  });
});

describe('config/roomring.example.yaml', () => {
  it('loads and holds the values of the README example', () => {
    const config = loadConfigFile(EXAMPLE_FILE);
    expect(config.listen).toEqual({
      host: '127.0.0.1',
      port: 8080,
      headTimeout: 60_000,
      keepAlive: 5000,
      sendTimeout: 60_000,
    });
    expect(config.room.from).toEqual([{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }]);
    expect(config.room.onMissing).toBe('reject');
    expect(config.backends).toEqual([
      { id: 'b1', url: 'http://127.0.0.1:9001', weight: 1 },
      { id: 'b2', url: 'http://127.0.0.1:9002', weight: 2 },
    ]);
  });

  it('shows the default of every field but the backend list', () => {
    const config = loadConfigFile(EXAMPLE_FILE);
    expect(config).toEqual(validateConfig({ backends: config.backends }));
  });

  it('still loads with its commented-out examples switched on', () => {
    expect(EXAMPLE_UNCOMMENTED).not.toBe(EXAMPLE);
    const config = parseConfigText(EXAMPLE_UNCOMMENTED, EXAMPLE_FILE);
    expect(config.room.from).toContainEqual({ cookie: 'room_id' });
    expect(config.registry?.redis).toBeDefined();
  });

  it('sets or shows every field of the schema', () => {
    const present = pathsIn(parse(EXAMPLE_UNCOMMENTED));
    const missing = FIELDS.filter((field) => !present.has(field.path)).map((field) => field.path);
    expect(missing).toEqual([]);
  });
});

describe('README quick start', () => {
  it('is the two commands', () => {
    const quickStart = section('Quick start');
    expect(quickStart).toContain('npm install && npm start');
    expect(quickStart).toContain('npm test');
  });
});
