// Config loading: the documented example, defaults, durations, freezing, and the wording of each
// error (file, field path, what was expected, YAML line).
import { describe, expect, it } from 'vitest';
import { loadConfigFile, parseConfigText, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { writeConfig } from '../helpers.js';

const FILE = '/etc/roomring/roomring.yaml';

/** The example config of the issue that specified roomring, as written there. */
const EXAMPLE_YAML = `# roomring.yaml
listen:
  host: 0.0.0.0
  port: 8080
room:
  from:
    - path: /rooms/:room        # wss://chat.example.com/rooms/lobby
    - query: room               # /socket?room=lobby
    - header: X-Room-Id
  onMissing: reject
backends:
  - id: chat-1
    url: http://10.0.0.11:9000
  - id: chat-2
    url: http://10.0.0.12:9000
    weight: 2
`;

/** The ConfigError `text` gives. */
function errorOf(text: string, file = FILE): ConfigError {
  try {
    parseConfigText(text, file);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('valid configs', () => {
  it('loads the example config as written', () => {
    const config = parseConfigText(EXAMPLE_YAML, FILE);
    expect(config.listen).toEqual({
      host: '0.0.0.0',
      port: 8080,
      headTimeout: 60_000,
      keepAlive: 5000,
      sendTimeout: 60_000,
    });
    expect(config.room).toEqual({
      from: [{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }],
      onMissing: 'reject',
    });
    expect(config.backends).toEqual([
      { id: 'chat-1', url: 'http://10.0.0.11:9000', weight: 1 },
      { id: 'chat-2', url: 'http://10.0.0.12:9000', weight: 2 },
    ]);
  });

  it('loads the example from a file too', () => {
    const config = loadConfigFile(writeConfig(EXAMPLE_YAML));
    expect(config.backends.map((b) => b.id)).toEqual(['chat-1', 'chat-2']);
  });

  it('accepts a cookie rule', () => {
    const config = parseConfigText('room:\n  from:\n    - cookie: room_id\n    - query: r\n', FILE);
    expect(config.room.from).toEqual([{ cookie: 'room_id' }, { query: 'r' }]);
  });

  it('reads durations as 500ms, 2s, 1m or a number of ms', () => {
    const config = parseConfigText(
      'timeouts:\n  connect: 500ms\n  response: 2s\n  idle: 1m\n  keepAlive: 250\nshutdownTimeout: 1.5s\n',
      FILE,
    );
    expect(config.timeouts).toEqual({ connect: 500, response: 2000, idle: 60_000, keepAlive: 250 });
    expect(config.shutdownTimeout).toBe(1500);
    expect(parseConfigText('failover:\n  coolOff: 1h\n', FILE).failover.coolOff).toBe(3_600_000);
  });

  it('applies defaults to an empty file', () => {
    const config = parseConfigText('', FILE);
    // A subset: sections added to the schema later bring their own defaults and tests.
    expect(config).toMatchObject({
      listen: { host: '127.0.0.1', port: 8080, headTimeout: 60_000, keepAlive: 5000, sendTimeout: 60_000 },
      room: {
        from: [{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }],
        onMissing: 'reject',
      },
      backends: [],
      timeouts: { connect: 5000, response: 60_000, idle: 0, keepAlive: 4000 },
      failover: { coolOff: 2000, maxCoolOff: 30_000, retries: 2 },
      shutdownTimeout: 10_000,
      log: { level: 'info' },
    });
  });

  it('fills defaults inside a section given only in part', () => {
    const config = parseConfigText('listen:\n  port: 9000\ntimeouts:\n  response: 3s\n', FILE);
    expect(config.listen).toEqual({
      host: '127.0.0.1',
      port: 9000,
      headTimeout: 60_000,
      keepAlive: 5000,
      sendTimeout: 60_000,
    });
    expect(config.timeouts).toEqual({ connect: 5000, response: 3000, idle: 0, keepAlive: 4000 });
  });

  it('lets command-line overrides win over the file', () => {
    const config = parseConfigText(EXAMPLE_YAML, FILE, { host: '127.0.0.2', port: 0, logLevel: 'warn' });
    expect(config.listen).toEqual({
      host: '127.0.0.2',
      port: 0,
      headTimeout: 60_000,
      keepAlive: 5000,
      sendTimeout: 60_000,
    });
    expect(config.log.level).toBe('warn');
  });

  it('accepts a JSON config', () => {
    const json = JSON.stringify({
      listen: { host: '127.0.0.1', port: 9000 },
      room: { from: [{ query: 'room' }], onMissing: 'random' },
      backends: [{ id: 'a', url: 'http://127.0.0.1:9001', weight: 3 }],
      timeouts: { connect: '1s', response: 2500 },
    });
    const config = loadConfigFile(writeConfig(json, 'roomring.json'));
    expect(config.listen.port).toBe(9000);
    expect(config.room).toEqual({ from: [{ query: 'room' }], onMissing: 'random' });
    expect(config.backends).toEqual([{ id: 'a', url: 'http://127.0.0.1:9001', weight: 3 }]);
    expect(config.timeouts.connect).toBe(1000);
    expect(config.timeouts.response).toBe(2500);
  });

  it('freezes the result all the way down', () => {
    const config = parseConfigText(EXAMPLE_YAML, FILE);
    const backend = config.backends[0] as { weight: number };
    const rule = config.room.from[0] as { path: string };
    for (const part of [config, config.listen, config.room, config.room.from, rule, config.backends, backend])
      expect(Object.isFrozen(part)).toBe(true);
    expect(() => {
      backend.weight = 5;
    }).toThrow(TypeError);
    expect(() => {
      (config.backends as unknown as unknown[]).push({});
    }).toThrow(TypeError);
    expect(() => {
      rule.path = '/x/:room';
    }).toThrow(TypeError);
    expect(config.backends[0]?.weight).toBe(1);
  });

  it('validates an in-memory object through the library entry point', () => {
    expect(validateConfig({ backends: [{ id: 'a', url: 'http://h:1' }] }).backends).toHaveLength(1);
    expect(() => validateConfig({ listen: { port: -1 } })).toThrow(/<config>: listen\.port: /);
  });
});

describe('invalid configs name the file, the field, what was expected and the line', () => {
  const cases: { name: string; yaml: string; field: string; expected: RegExp; line: number }[] = [
    {
      name: 'an unknown top-level key',
      yaml: 'listen:\n  port: 8080\nbogus: 1\n',
      field: 'bogus',
      expected: /unknown field 'bogus'/,
      line: 3,
    },
    {
      name: 'an unknown nested key',
      yaml: 'listen:\n  port: 8080\n  hots: 0.0.0.0\n',
      field: 'listen.hots',
      expected: /unknown field 'hots'/,
      line: 3,
    },
    {
      name: 'an unknown key in a backend',
      yaml: 'backends:\n  - id: a\n    url: http://h:1\n    wieght: 2\n',
      field: 'backends[0].wieght',
      expected: /unknown field 'wieght'/,
      line: 4,
    },
    {
      name: 'a wrong type',
      yaml: 'listen:\n  host: 127.0.0.1\n  port: "eighty"\n',
      field: 'listen.port',
      expected: /expected number, received string/,
      line: 3,
    },
    {
      name: 'a section of the wrong type',
      yaml: 'room: {}\nbackends: {}\n',
      field: 'backends',
      expected: /expected array/,
      line: 2,
    },
    {
      name: 'a bad URL',
      yaml: 'backends:\n  - id: a\n    url: http://h:1\n  - id: b\n    url: ftp://h:2\n',
      field: 'backends[1].url',
      expected: /expected an absolute http:\/\/, https:\/\/, ws:\/\/ or wss:\/\/ URL/,
      line: 5,
    },
    {
      name: 'a duplicate backend id',
      yaml: 'backends:\n  - id: a\n    url: http://h:1\n  - id: a\n    url: http://h:2\n',
      field: 'backends[1].id',
      expected: /expected a unique backend id, 'a' appears twice/,
      line: 4,
    },
    {
      name: 'a missing backend URL',
      yaml: 'backends:\n  - id: a\n',
      field: 'backends[0].url',
      expected: /missing; expected string/,
      line: 2,
    },
    {
      name: 'a bad duration',
      yaml: 'timeouts:\n  connect: soon\n',
      field: 'timeouts.connect',
      expected: /expected a duration such as 500ms, 2s, 1m or a number of ms/,
      line: 2,
    },
    {
      name: 'a path rule without :room',
      yaml: 'room:\n  from:\n    - path: /rooms\n',
      field: 'room.from[0].path',
      expected: /':room' segment/,
      line: 3,
    },
    {
      name: 'an unknown rule kind',
      yaml: 'room:\n  from:\n    - query: room\n    - param: room\n',
      field: 'room.from[1]',
      expected: /expected one of \{path: \/rooms\/:room\}/,
      line: 4,
    },
    {
      name: 'an unknown onMissing',
      yaml: 'room:\n  onMissing: ignore\n',
      field: 'room.onMissing',
      expected: /expected one of "reject"\|"random"/,
      line: 2,
    },
  ];

  for (const { name, yaml, field, expected, line } of cases) {
    it(`${name}`, () => {
      const error = errorOf(yaml);
      expect(error.code).toBe('ROOMRING_E_CONFIG');
      expect(error.file).toBe(FILE);
      expect(error.message.startsWith(`${FILE}: `)).toBe(true);
      const detail = error.message.slice(FILE.length + 2);
      expect(detail.startsWith(`${field}: `)).toBe(true);
      expect(detail).toMatch(expected);
      expect(detail).toMatch(new RegExp(`\\(line ${line}\\)$`));
    });
  }

  it('lists every problem, one a line, when there are several', () => {
    const error = errorOf('listen:\n  port: x\nbogus: 1\n');
    const lines = error.message.split('\n').map((l) => l.trim());
    expect(lines).toContain("bogus: unknown field 'bogus' (line 3)");
    expect(lines).toContain('listen.port: expected number, received string (line 2)');
  });

  it('gives the line and column of YAML that does not parse', () => {
    const error = errorOf('listen:\n  port: 8080\n bad: [\n');
    expect(error.message).toMatch(
      new RegExp(`^${FILE}: not valid YAML or JSON \\(line 3, column \\d+\\): \\S`),
    );
    expect(errorOf('listen:\n  port: 1\n  port: 2\n').message).toMatch(
      /\(line 3, column 3\): Map keys must be unique/,
    );
  });

  it('gives the line of JSON that does not parse', () => {
    const error = errorOf('{"listen": {"port": 9000},\n "backends": [}\n', '/tmp/roomring.json');
    expect(error.message).toMatch(/^\/tmp\/roomring\.json: not valid YAML or JSON \(line 2, column \d+\)/);
  });

  it('refuses a top level that is not a mapping', () => {
    expect(errorOf('- a\n- b\n').message).toBe(`${FILE}: expected a mapping of settings at the top level`);
    expect(errorOf('42\n').message).toMatch(/expected a mapping/);
  });

  it('says a bad value came from the command line instead of pointing at a line of the file', () => {
    let message = '';
    try {
      parseConfigText(EXAMPLE_YAML, FILE, { port: 70_000, logLevel: 'loud' });
    } catch (error) {
      message = (error as ConfigError).message;
    }
    expect(message).toContain('listen.port: expected number to be <=65535 (given on the command line)');
    expect(message).toMatch(/log\.level: expected one of .* \(given on the command line\)/);
    expect(message).not.toMatch(/line \d/);
  });

  it('names a file it cannot read', () => {
    const missing = '/nonexistent/roomring.yaml';
    expect(() => loadConfigFile(missing)).toThrow(ConfigError);
    expect(() => loadConfigFile(missing)).toThrow(`${missing}: cannot read the file (ENOENT)`);
  });
});
