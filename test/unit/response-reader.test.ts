// ResponseReader: every framing an HTTP/1.1 backend may use, fed whole and byte by byte.
import { describe, expect, it } from 'vitest';
import { type ResponseHead, ResponseReader } from '../../src/proxy/response-reader.js';

interface Read {
  head?: ResponseHead;
  body: string;
  ended: boolean;
  reader: ResponseReader;
}

function read(text: string, opts: { noBody?: boolean; byteByByte?: boolean } = {}): Read {
  const out: Read = { body: '', ended: false } as Read;
  const reader = new ResponseReader(
    {
      head: (head) => {
        out.head = head;
      },
      body: (chunk) => {
        out.body += chunk.toString('latin1');
      },
      end: () => {
        out.ended = true;
      },
    },
    opts.noBody === true,
  );
  const bytes = Buffer.from(text, 'latin1');
  if (opts.byteByByte) for (const byte of bytes) reader.push(Buffer.from([byte]));
  else reader.push(bytes);
  out.reader = reader;
  return out;
}

describe('ResponseReader', () => {
  for (const byteByByte of [false, true]) {
    const how = byteByByte ? ' (byte by byte)' : '';

    it(`reads a Content-Length body and keeps the connection${how}`, () => {
      const r = read('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhelloEXTRA', { byteByByte });
      expect(r.head).toEqual({
        status: 200,
        statusText: 'OK',
        rawHeaders: ['Content-Length', '5', 'X-A', '1'],
        keepAlive: true,
        framing: 'length',
      });
      expect(r.body).toBe('hello');
      expect(r.ended).toBe(true);
    });

    it(`de-chunks a chunked body, with extensions and trailers${how}`, () => {
      const r = read(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n',
        { byteByByte },
      );
      expect(r.body).toBe('hello world');
      expect(r.ended).toBe(true);
      expect(r.head?.keepAlive).toBe(true);
      expect(r.head?.framing).toBe('chunked');
    });

    it(`skips interim 1xx responses${how}`, () => {
      const r = read('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok', {
        byteByByte,
      });
      expect(r.head?.status).toBe(201);
      expect(r.body).toBe('ok');
    });
  }

  it('reads no body for HEAD, 204 and 304, whatever Content-Length says', () => {
    expect(read('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', { noBody: true }).ended).toBe(true);
    expect(read('HTTP/1.1 204 No Content\r\n\r\n').ended).toBe(true);
    expect(read('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n').ended).toBe(true);
  });

  it('reads a body without framing until the connection closes, and never reuses it', () => {
    const r = read('HTTP/1.1 200 OK\r\n\r\nstreamed');
    expect(r.head?.keepAlive).toBe(false);
    expect(r.ended).toBe(false);
    expect(r.reader.close()).toBe(true);
    expect(r.body).toBe('streamed');
    expect(r.ended).toBe(true);
  });

  it('does not reuse a connection after Connection: close or an HTTP/1.0 response', () => {
    expect(read('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n').head?.keepAlive).toBe(
      false,
    );
    expect(
      read('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n').head?.keepAlive,
    ).toBe(false);
  });

  it('reports a response cut short: close() is false before the framing completes', () => {
    const r = read('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    expect(r.reader.close()).toBe(false);
    expect(r.ended).toBe(false);
  });

  it('rejects what it cannot frame', () => {
    expect(() => read('HTTP/2 200\r\n\r\n')).toThrow(/status line/);
    expect(() => read('HTTP/1.1 200 OK\r\nbad header\r\n\r\n')).toThrow(/header/);
    expect(() => read('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n')).toThrow(
      /content-length/,
    );
    for (const size of ['zz', '0x10', '1zz', '-1', '', '10000000000000'])
      expect(() => read(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${size}\r\n`), size).toThrow(
        /chunk size/,
      );
    expect(() => read(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}`)).toThrow(/too long/);
    for (const line of [
      'HTTP/1.2 200 OK',
      'HTTP/1.1 20x OK',
      'HTTP/1.1 2000 OK',
      'HTTP/1.1  200 OK',
      'HTTP/1.1200 OK',
    ])
      expect(() => read(`${line}\r\nContent-Length: 0\r\n\r\n`), line).toThrow(/status line/);
    expect(() => read('HTTP/1.1 200 OK\r\n: no name\r\n\r\n')).toThrow(/header/);
    expect(() => read('HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n')).toThrow(/content-length/);
  });

  it('reads a status line without a reason phrase, and header values with colons and spaces', () => {
    const r = read('HTTP/1.1 204\r\nX-Time:  12:30:00 \r\nX-Empty:\r\n\r\n');
    expect(r.head?.status).toBe(204);
    expect(r.head?.statusText).toBe('');
    expect(r.head?.rawHeaders).toEqual(['X-Time', '12:30:00', 'X-Empty', '']);
    expect(r.head?.framing).toBe('none');
    expect(r.ended).toBe(true);
  });
});
