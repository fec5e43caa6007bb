// The real CLI on config files and arguments: exit codes (0 ok, 2 usage or config error) and
// what it writes to say what is wrong.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { CLI, freePort, runCli, spawnCli, writeConfig } from './helpers.js';

const EXAMPLE = `listen:
  host: 127.0.0.1
  port: 8080
room:
  from:
    - path: /rooms/:room
    - query: room
    - header: X-Room-Id
  onMissing: reject
backends:
  - id: chat-1
    url: http://10.0.0.11:9000
  - id: chat-2
    url: http://10.0.0.12:9000
    weight: 2
`;

const BAD_CONFIGS: { name: string; text: string; file?: string; field: string; expected: RegExp }[] = [
  {
    name: 'an unknown top-level key',
    text: `${EXAMPLE}bogus: 1\n`,
    field: 'bogus',
    expected: /unknown field 'bogus' \(line 16\)/,
  },
  {
    name: 'an unknown nested key',
    text: EXAMPLE.replace('  port: 8080\n', '  port: 8080\n  hots: x\n'),
    field: 'listen.hots',
    expected: /unknown field 'hots' \(line 4\)/,
  },
  {
    name: 'a wrong type',
    text: EXAMPLE.replace('port: 8080', 'port: eighty'),
    field: 'listen.port',
    expected: /expected number, received string \(line 3\)/,
  },
  {
    name: 'a bad URL',
    text: EXAMPLE.replace('http://10.0.0.12:9000', '10.0.0.12:9000'),
    field: 'backends[1].url',
    expected: /expected an absolute http:\/\/.* URL with a host \(line 14\)/,
  },
  {
    name: 'a duplicate backend id',
    text: EXAMPLE.replace('id: chat-2', 'id: chat-1'),
    field: 'backends[1].id',
    expected: /expected a unique backend id, 'chat-1' appears twice \(line 13\)/,
  },
  {
    name: 'YAML that does not parse',
    text: EXAMPLE.replace('  onMissing: reject', ' onMissing: [reject'),
    field: 'not valid YAML or JSON',
    expected: /\(line \d+, column \d+\): \S/,
  },
  {
    name: 'JSON with a bad value',
    text: JSON.stringify({ backends: [{ id: 'a', url: 'http://h:1', weight: 0 }] }, null, 2),
    file: 'roomring.json',
    field: 'backends[0].weight',
    expected: /expected a weight above 0 \(line 6\)/,
  },
];

describe('check-config', () => {
  it('exits 0 and says ok for a good config', async () => {
    const file = writeConfig(EXAMPLE);
    const { code, output } = await runCli(['check-config', '--config', file]);
    expect(output).toBe(`${file}: ok (2 backend(s))\n`);
    expect(code).toBe(0);
  });

  it('accepts a JSON config', async () => {
    const json = JSON.stringify({ backends: [{ id: 'a', url: 'http://127.0.0.1:9001' }] });
    const file = writeConfig(json, 'roomring.json');
    const { code, output } = await runCli(['check-config', '-c', file]);
    expect(output).toMatch(/ok \(1 backend\(s\)\)/);
    expect(code).toBe(0);
  });

  for (const bad of BAD_CONFIGS) {
    it(`exits 2 naming file, field and expectation for ${bad.name}`, async () => {
      const file = writeConfig(bad.text, bad.file);
      const { code, output } = await runCli(['check-config', '--config', file]);
      expect(code).toBe(2);
      expect(output).toContain(`roomring: invalid config ${file}: ${bad.field}`);
      expect(output).toMatch(bad.expected);
    });
  }

  it('exits 2 for a file that does not exist', async () => {
    const file = '/nonexistent/roomring.yaml';
    const { code, output } = await runCli(['check-config', '--config', file]);
    expect(code).toBe(2);
    expect(output).toContain(`${file}: cannot read the file (ENOENT)`);
  });
});

describe('start', () => {
  it('exits 2 on a bad config without listening', async () => {
    const port = await freePort();
    const file = writeConfig(
      EXAMPLE.replace('port: 8080', `port: ${port}`).replace('weight: 2', 'weight: -1'),
    );
    const cli = spawnCli(['start', '--config', file]);
    const code = await cli.exited;
    expect(code).toBe(2);
    expect(cli.output()).toContain(`invalid config ${file}: backends[1].weight: expected a weight above 0`);
    expect(cli.output()).not.toMatch(/listening/);
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  it('exits 2 on a bad --port, naming the flag rather than a line of the file', async () => {
    const file = writeConfig(EXAMPLE);
    const { code, output } = await runCli(['start', '--config', file, '--port', '70000']);
    expect(code).toBe(2);
    expect(output).toContain(
      `${file}: listen.port: expected number to be <=65535 (given on the command line)`,
    );
  });

  it('exits 2 when the config file is missing', async () => {
    const { code, output } = await runCli(['start', '--config', '/nonexistent/roomring.yaml']);
    expect(code).toBe(2);
    expect(output).toMatch(/\/nonexistent\/roomring\.yaml: cannot read the file/);
  });

  it('exits 2 without --config', async () => {
    const { code, output } = await runCli(['start']);
    expect(code).toBe(2);
    expect(output).toMatch(/config/);
  });
});

describe('arguments', () => {
  it('exits 2 on an unknown command', async () => {
    const { code, output } = await runCli(['frobnicate']);
    expect(code).toBe(2);
    expect(output).toMatch(/Unknown argument: frobnicate/);
    expect(output).toMatch(/roomring --help/);
  });

  it('exits 2 on an unknown flag', async () => {
    const file = writeConfig(EXAMPLE);
    const { code, output } = await runCli(['check-config', '--config', file, '--frob']);
    expect(code).toBe(2);
    expect(output).toMatch(/Unknown argument: frob/);
  });

  it('exits 2 with no command', async () => {
    const { code, output } = await runCli([]);
    expect(code).toBe(2);
    expect(output).toMatch(/command/);
  });

  it('prints the version and exits 0', async () => {
    const { code, output } = await runCli(['--version']);
    expect(code).toBe(0);
    expect(output.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('runs as an executable, through its #! line and the node flags it names', () => {
    // How npm's bin link and the systemd unit start it: node refuses a flag it does not know.
    expect(readFileSync(CLI, 'utf8').split('\n')[0]).toBe('#!/usr/bin/env -S node --no-memory-reducer');
    const run = spawnSync(CLI, ['--version'], { encoding: 'utf8', timeout: 20_000 });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('prints help naming the commands and exits 0', async () => {
    const { code, output } = await runCli(['--help']);
    expect(code).toBe(0);
    for (const command of ['start', 'check-config', 'route <room>']) expect(output).toContain(command);
  });
});

describe('route', () => {
  it('prints the chosen backend as JSON, the same every time', async () => {
    const file = writeConfig(EXAMPLE);
    const urls = new Map([
      ['chat-1', 'http://10.0.0.11:9000'],
      ['chat-2', 'http://10.0.0.12:9000'],
    ]);
    const seen = new Map<string, string>();
    for (const room of ['lobby', 'kitchen', 'caf\u00e9 ☕', 'a/b', 'r1', 'r2']) {
      const { code, output } = await runCli(['route', room, '--config', file, '--json']);
      expect(code).toBe(0);
      const out = JSON.parse(output) as { room: string; backend: { id: string; url: string } };
      expect(out.room).toBe(room);
      expect(Object.keys(out.backend).sort()).toEqual(['id', 'url']);
      expect(urls.get(out.backend.id)).toBe(out.backend.url);
      seen.set(room, out.backend.id);
    }
    const again = await runCli(['route', 'kitchen', '--config', file, '--json']);
    expect(JSON.parse(again.output).backend.id).toBe(seen.get('kitchen'));
    expect(new Set(seen.values()).size).toBe(2);
  });

  it('prints id and URL without --json', async () => {
    const file = writeConfig(EXAMPLE);
    const { code, output } = await runCli(['route', 'lobby', '--config', file]);
    expect(code).toBe(0);
    expect(output).toMatch(/^chat-[12] http:\/\/10\.0\.0\.1[12]:9000\n$/);
  });

  it('exits 2 on a bad config', async () => {
    const file = writeConfig(`${EXAMPLE}bogus: 1\n`);
    const { code, output } = await runCli(['route', 'lobby', '--config', file, '--json']);
    expect(code).toBe(2);
    expect(output).toContain(`${file}: bogus: unknown field 'bogus'`);
  });
});
