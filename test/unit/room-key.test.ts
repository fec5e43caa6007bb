// Room id extraction: every rule kind, rule order, decoding and the checks on the decoded id.
import { describe, expect, it } from 'vitest';
import type { RoomRule } from '../../src/config/schema.js';
import { RoomringError } from '../../src/errors.js';
import { compileRoomKey, MAX_ROOM_BYTES, type RoomSource } from '../../src/room/room-key.js';

const req = (url: string, headers: RoomSource['headers'] = {}): RoomSource => ({ url, headers });

/** The error code `fn` throws, or null when it returns. */
function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (error) {
    if (error instanceof RoomringError) return error.code;
    throw error;
  }
}

/** A header value as Node hands it over when the client sent raw UTF-8 bytes (read as latin1). */
const rawUtf8 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');

describe('path rules', () => {
  const roomKey = compileRoomKey([{ path: '/rooms/:room' }]);

  it('takes the :room segment and matches the pattern as a prefix', () => {
    expect(roomKey(req('/rooms/abc'))).toBe('abc');
    expect(roomKey(req('/rooms/abc/ws'))).toBe('abc');
    expect(roomKey(req('/rooms/abc/'))).toBe('abc');
    expect(roomKey(req('/rooms/abc?x=1'))).toBe('abc');
  });

  it('does not match a different literal, a longer literal or a missing segment', () => {
    expect(roomKey(req('/room/abc'))).toBeNull();
    expect(roomKey(req('/roomsx/abc'))).toBeNull();
    expect(roomKey(req('/Rooms/abc'))).toBeNull();
    expect(roomKey(req('/x/rooms/abc'))).toBeNull();
    expect(roomKey(req('/rooms'))).toBeNull();
    expect(roomKey(req('/rooms/'))).toBeNull();
    expect(roomKey(req('/rooms//abc'))).toBeNull();
    expect(roomKey(req('/'))).toBeNull();
  });

  it('lets other :param segments match any one segment', () => {
    const key = compileRoomKey([{ path: '/orgs/:org/rooms/:room/ws' }]);
    expect(key(req('/orgs/acme/rooms/r1/ws'))).toBe('r1');
    expect(key(req('/orgs/other/rooms/r2/ws/extra'))).toBe('r2');
    expect(key(req('/orgs/acme/chats/r1/ws'))).toBeNull();
    expect(key(req('/orgs/acme/rooms/r1'))).toBeNull();
    expect(key(req('/orgs//rooms/r1/ws'))).toBeNull();
  });

  it('tries several patterns in order', () => {
    const key = compileRoomKey([{ path: '/rooms/:room' }, { path: '/games/:room/play' }]);
    expect(key(req('/rooms/a'))).toBe('a');
    expect(key(req('/games/b/play'))).toBe('b');
    expect(key(req('/games/b/watch'))).toBeNull();
  });

  it('percent-decodes the segment but keeps + as it is', () => {
    expect(roomKey(req('/rooms/caf%C3%A9%20%E2%98%95'))).toBe('caf\u00e9 ☕');
    expect(roomKey(req('/rooms/a%2Fb'))).toBe('a/b');
    expect(roomKey(req('/rooms/a+b'))).toBe('a+b');
  });
});

describe('query rules', () => {
  const roomKey = compileRoomKey([{ query: 'room' }]);

  it('finds the parameter first or after &', () => {
    expect(roomKey(req('/ws?room=r1'))).toBe('r1');
    expect(roomKey(req('/ws?a=1&room=r2&b=2'))).toBe('r2');
    expect(roomKey(req('/ws?room=r3&room=r4'))).toBe('r3');
  });

  it('does not take a parameter whose name only ends or starts with the name', () => {
    expect(roomKey(req('/ws?xroom=r1'))).toBeNull();
    expect(roomKey(req('/ws?rooms=r1'))).toBeNull();
    expect(roomKey(req('/ws?xroom=r1&room=r2'))).toBe('r2');
    expect(roomKey(req('/ws?a=room&room'))).toBeNull();
    expect(roomKey(req('/ws?a=room=x'))).toBeNull();
    expect(roomKey(req('/room=x'))).toBeNull();
  });

  it('reads + as a space and percent-decodes, %2B staying a plus', () => {
    expect(roomKey(req('/ws?room=a+b'))).toBe('a b');
    expect(roomKey(req('/ws?room=a%2Bb'))).toBe('a+b');
    expect(roomKey(req('/ws?room=%E6%97%A5%E6%9C%AC'))).toBe('日本');
  });
});

describe('header and cookie rules', () => {
  it('reads a header whatever the case of the configured name', () => {
    // The schema lower-cases header names; a rule given straight to the library may not be.
    const key = compileRoomKey([{ header: 'X-Room-Id' } as RoomRule]);
    expect(key(req('/', { 'x-room-id': 'r1' }))).toBe('r1');
    expect(compileRoomKey([{ header: 'x-room-id' }])(req('/', { 'x-room-id': 'r2' }))).toBe('r2');
  });

  it('reads raw UTF-8 header bytes as UTF-8 and rejects bytes that are not UTF-8', () => {
    const key = compileRoomKey([{ header: 'x-room-id' }]);
    expect(key(req('/', { 'x-room-id': rawUtf8('caf\u00e9 ☕ 😀') }))).toBe('caf\u00e9 ☕ 😀');
    // A lone latin1 byte 0xE9 is not UTF-8; reading it as U+FFFD would merge distinct ids.
    expect(codeOf(() => key(req('/', { 'x-room-id': '\u00e9t\u00e9' })))).toBe('ROOMRING_E_BAD_ROOM');
  });

  it('finds a cookie among others, quoted or not', () => {
    const key = compileRoomKey([{ cookie: 'room' }]);
    expect(key(req('/', { cookie: 'a=1; room=r1; b=2' }))).toBe('r1');
    expect(key(req('/', { cookie: 'a=1;room="r 2"' }))).toBe('r 2');
    expect(key(req('/', { cookie: 'xroom=no; room=r3' }))).toBe('r3');
    expect(key(req('/', { cookie: 'xroom=no; rooms=no' }))).toBeNull();
    expect(key(req('/', { cookie: 'room=caf%C3%A9' }))).toBe('caf\u00e9');
    expect(key(req('/', {}))).toBeNull();
  });
});

describe('rule order and fall-through', () => {
  const rules: RoomRule[] = [{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }];

  it('uses the first rule that finds an id', () => {
    const key = compileRoomKey(rules);
    const both = req('/rooms/from-path?room=from-query', { 'x-room-id': 'from-header' });
    expect(key(both)).toBe('from-path');
    expect(compileRoomKey([...rules].reverse())(both)).toBe('from-header');
    expect(key(req('/other?room=from-query', { 'x-room-id': 'from-header' }))).toBe('from-query');
    expect(key(req('/other', { 'x-room-id': 'from-header' }))).toBe('from-header');
  });

  it('reads the path and query of an absolute-form target (RFC 9112 3.2.2)', () => {
    const key = compileRoomKey(rules);
    expect(key(req('http://proxy.example/rooms/abs/ws'))).toBe('abs');
    expect(key(req('http://proxy.example:8080/other?room=q'))).toBe('q');
    expect(key(req('https://proxy.example?room=bare'))).toBe('bare');
    expect(key(req('http://proxy.example'))).toBe(null);
  });

  it('lets an empty value fall through to the next rule', () => {
    const key = compileRoomKey([{ query: 'room' }, { cookie: 'room' }, { header: 'x-room-id' }]);
    expect(key(req('/?room=', { cookie: 'room=', 'x-room-id': 'h' }))).toBe('h');
    expect(key(req('/?room=&x=1', { cookie: 'room=c' }))).toBe('c');
    expect(key(req('/?room=', { cookie: 'room=""', 'x-room-id': '' }))).toBeNull();
  });

  it('returns null when no rule finds an id', () => {
    expect(compileRoomKey(rules)(req('/nothing'))).toBeNull();
    expect(compileRoomKey(rules)({ headers: {} })).toBeNull();
  });
});

describe('checks on the decoded id', () => {
  const key = compileRoomKey([{ path: '/rooms/:room' }, { header: 'x-room-id' }]);
  const viaPath = (room: string) => key(req(`/rooms/${encodeURIComponent(room)}`));
  const viaHeader = (room: string) => key(req('/', { 'x-room-id': rawUtf8(room) }));

  it('accepts exactly 256 bytes and rejects 257, counting UTF-8 bytes', () => {
    expect(MAX_ROOM_BYTES).toBe(256);
    const cases = [
      'a'.repeat(256),
      '\u00e9'.repeat(128), // 2 bytes each
      `${'€'.repeat(85)}a`, // 3 bytes each
      '😀'.repeat(64), // 4 bytes each, a surrogate pair in UTF-16
    ];
    for (const room of cases) {
      expect(Buffer.byteLength(room)).toBe(256);
      expect(viaPath(room)).toBe(room);
      expect(viaHeader(room)).toBe(room);
      expect(codeOf(() => viaPath(`${room}a`))).toBe('ROOMRING_E_ROOM_TOO_LONG');
      expect(codeOf(() => viaHeader(`${room}a`))).toBe('ROOMRING_E_ROOM_TOO_LONG');
    }
    // The limit applies after decoding: 256 escaped bytes are fine though the raw text is longer.
    expect(key(req(`/rooms/${'%41'.repeat(256)}`))).toBe('A'.repeat(256));
    expect(codeOf(() => key(req(`/rooms/${'%41'.repeat(257)}`)))).toBe('ROOMRING_E_ROOM_TOO_LONG');
  });

  it('rejects malformed percent-encoding', () => {
    for (const bad of ['%E0%A4%A', '%zz', 'a%', '%C3', '%ED%A0%80', '%FF']) {
      expect(codeOf(() => key(req(`/rooms/${bad}`)))).toBe('ROOMRING_E_BAD_ROOM');
    }
  });

  it('gives each error its HTTP status', () => {
    try {
      viaPath('a'.repeat(300));
      expect.unreachable();
    } catch (error) {
      expect((error as RoomringError).status).toBe(414);
    }
    try {
      key(req('/rooms/%zz'));
      expect.unreachable();
    } catch (error) {
      expect((error as RoomringError).status).toBe(400);
    }
  });
});
