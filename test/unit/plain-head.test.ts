// The quick head reader against llhttp: whatever head readPlainHead() takes, llhttp must read the
// same way (method, target, fields, version, keep-alive, upgrade, length), over typical heads and
// thousands of generated ones full of the characters and fields where parsers differ.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readPlainHead } from '../../src/proxy/plain-head.js';
import { firstHead, llhttpHead } from '../../src/proxy/request-parser.js';

const HANDSHAKE =
  'GET /ws?room=r1 HTTP/1.1\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
  'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' +
  'Host: 127.0.0.1:8080\r\n\r\n';
const CURL =
  'GET /rooms/a/state HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n';

/** Both readers on `text`: the quick one's answer, and llhttp's when the quick one gave one. */
function both(text: string) {
  const bytes = Buffer.from(text, 'latin1');
  const plain = readPlainHead(bytes);
  return { plain, quick: firstHead(bytes), llhttp: llhttpHead(bytes) };
}

/** A small deterministic generator (mulberry32), so a failure names a seed that replays it. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(next: () => number, items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;

/** Mostly a usual choice, now and then an odd one: each head then has a few odd parts at most. */
const either = <T>(next: () => number, usual: readonly T[], odd: readonly T[]): T =>
  next() < 0.93 ? pick(next, usual) : pick(next, odd);

const METHODS = ['GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'];
const ODD_METHODS = ['CONNECT', 'get', 'GETX', 'TRACE', 'GET '];
const TARGET_CHARS = [..."abcXYZ019-._~!$&'()*+,;=:@/?%"];
const ODD_TARGET_CHARS = [' ', '#', '"', '<', '{', '|', '\\', '^', '`', '[', '\t', '\x7f', '\xe9', '\r'];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0'];
const ODD_VERSIONS = ['HTTP/2.0', 'HTTP/1.2', 'http/1.1', 'HTTP/1.1 ', 'HTTP/1.'];
const NAMES = [
  'Host',
  'Upgrade',
  'upgrade',
  'Connection',
  'CONNECTION',
  'Keep-Alive',
  'X-Room',
  'Cookie',
  'Sec-WebSocket-Key',
  'A!#$%&*+^_`|~',
];
const ODD_NAMES = [
  'Content-Length',
  'Transfer-Encoding',
  'Proxy-Connection',
  'X Room',
  'X-Room ',
  'Bad"Name',
  '',
];
const VALUES = [
  'websocket',
  'Upgrade',
  'upgrade',
  'keep-alive',
  'close',
  'Keep-Alive, Upgrade',
  'keep-alive,upgrade',
  'close, upgrade',
  'foo',
  'a; b=c',
  'room=a; other=b',
  '0',
];
const ODD_VALUES = [
  'upgrade , close',
  ' upgrade',
  'upgradex',
  'foo, upgrade',
  'upgrade,',
  ',upgrade',
  '',
  '12',
  'chunked',
  'a\tb',
  'trailing ',
  '  lead',
  'x\xe9y',
  'x\x7fy',
  'x\ny',
  'x\ry',
];
const SEPARATORS = [': ', ':'];
const ODD_SEPARATORS = [' : ', ':\t', ':  ', ' :'];
const ENDS = ['\r\n'];
const ODD_ENDS = ['\n', '\r', '\r\r\n'];

function generated(next: () => number): string {
  let text = `${either(next, METHODS, ODD_METHODS)} `;
  text += either(next, ['/'], ['http://h/', '*', 'x/', '']);
  const length = Math.floor(next() * 12);
  for (let i = 0; i < length; i++) text += either(next, TARGET_CHARS, ODD_TARGET_CHARS);
  text += ` ${either(next, VERSIONS, ODD_VERSIONS)}${either(next, ENDS, ODD_ENDS)}`;
  const fields = Math.floor(next() * 7);
  for (let i = 0; i < fields; i++) {
    text += either(next, NAMES, ODD_NAMES) + either(next, SEPARATORS, ODD_SEPARATORS);
    text += either(next, VALUES, ODD_VALUES) + either(next, ENDS, ODD_ENDS);
  }
  return `${text}${either(next, ENDS, ODD_ENDS)}${next() < 0.3 ? 'rest' : ''}`;
}

describe('readPlainHead', () => {
  it('takes the usual WebSocket handshake and GET, as llhttp reads them', () => {
    for (const text of [HANDSHAKE, CURL]) {
      const { plain, quick, llhttp } = both(text);
      expect(plain).toBeDefined();
      expect(quick).toEqual(llhttp);
      expect(quick?.used).toBe(text.length);
    }
    expect(both(HANDSHAKE).quick?.head.upgrade).toBe(true);
    expect(both(CURL).quick?.head).toMatchObject({ upgrade: false, keepAlive: true, url: '/rooms/a/state' });
  });

  it('leaves what it does not take to llhttp (a body, folded lines, bare LF, absolute targets)', () => {
    for (const text of [
      'POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc',
      'GET /a HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n',
      'GET /a HTTP/1.1\nHost: x\n\n',
      'GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n',
      'GET /a HTTP/1.1\r\nHost: h\r\n',
    ]) {
      const { plain, quick, llhttp } = both(text);
      expect(plain).toBeUndefined();
      expect(quick).toEqual(llhttp);
    }
  });

  it("leaves a head over node's --max-http-header-size to llhttp, which refuses it", () => {
    const parser = fileURLToPath(new URL('../../dist/proxy/request-parser.js', import.meta.url));
    const script = `import { firstHead } from ${JSON.stringify(parser)};
      const head = (n) => Buffer.from('GET /' + 'a'.repeat(n) + ' HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n', 'latin1');
      console.log(JSON.stringify([firstHead(head(3000)) === undefined, firstHead(head(500)) === undefined]));`;
    const run = spawnSync(
      process.execPath,
      ['--max-http-header-size=1024', '--input-type=module', '-e', script],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    expect(run.stderr).toBe('');
    // Over the limit: refused (the client gets 431); under it: read.
    expect(JSON.parse(run.stdout)).toEqual([true, false]);
  });

  it('reads every generated head it takes exactly as llhttp does', () => {
    let taken = 0;
    let refused = 0;
    for (let seed = 1; seed <= 30_000; seed++) {
      const text = generated(random(seed));
      const { plain, quick, llhttp } = both(text);
      if (llhttp === undefined) refused++;
      if (plain === undefined) continue;
      taken++;
      expect({ seed, text, head: quick }).toEqual({ seed, text, head: llhttp });
    }
    // The generator reaches the subset often enough for the comparison to mean something.
    expect(taken).toBeGreaterThan(3000);
    expect(refused).toBeGreaterThan(1000);
  });
});
