// Header rewriting on real requests (a real server parses what a raw client sends): hop-by-hop
// fields stay on their hop in both directions, X-Forwarded-* are set or appended.
import type { IncomingMessage } from 'node:http';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  isField,
  requestHead,
  requestHeadersFor,
  responseHeadersFor,
  startsWithField,
} from '../../src/proxy/headers.js';
import { onCleanup } from '../helpers.js';

/** The request a real Node server parses from `head` (sent raw, so every byte is ours). */
async function parsed(head: string): Promise<IncomingMessage> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise((resolve) => server.close(resolve)));
  const { port } = server.address() as AddressInfo;
  const client = net.connect(port, '127.0.0.1');
  onCleanup(() => client.destroy());
  client.on('error', () => {});
  const req = new Promise<IncomingMessage>((resolve) => {
    server.once('request', (request: IncomingMessage) => resolve(request));
    server.once('upgrade', (request: IncomingMessage) => resolve(request));
  });
  client.write(head);
  const request = await req;
  onCleanup(() => request.socket.destroy());
  return request;
}

/** A flat [name, value, ...] list as pairs, for readable assertions. */
function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i] as string, flat[i + 1] as string]);
  return out;
}

const names = (flat: readonly string[]): string[] => pairs(flat).map(([name]) => name.toLowerCase());
const valuesOf = (flat: readonly string[], name: string): string[] =>
  pairs(flat)
    .filter(([n]) => n.toLowerCase() === name)
    .map(([, v]) => v);

describe('request headers to the backend', () => {
  it('drops every hop-by-hop field and the fields Connection names', async () => {
    const req = await parsed(
      'POST /rooms/r1 HTTP/1.1\r\n' +
        'Host: chat.example.com\r\n' +
        'Connection: keep-alive, X-Secret, x-other\r\n' +
        'Keep-Alive: timeout=5\r\n' +
        'TE: trailers\r\n' +
        'Trailer: X-Checksum\r\n' +
        'Upgrade: h2c\r\n' +
        'Proxy-Authorization: Basic Zm9vOmJhcg==\r\n' +
        'Proxy-Connection: keep-alive\r\n' +
        'Proxy-Anything: 1\r\n' +
        'Proxy: http://evil.example:8080\r\n' +
        'X-Secret: hop only\r\n' +
        'X-Other: hop only\r\n' +
        'X-Kept: end to end\r\n' +
        'Proxyish: not a proxy field\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n' +
        '0\r\n\r\n',
    );
    const out = requestHeadersFor(req, false);
    for (const hop of [
      'connection',
      'keep-alive',
      'te',
      'trailer',
      'upgrade',
      'proxy-authorization',
      'proxy-connection',
      'proxy-anything',
      'proxy',
      'x-secret',
      'x-other',
      'transfer-encoding',
    ])
      expect(names(out)).not.toContain(hop);
    expect(valuesOf(out, 'x-kept')).toEqual(['end to end']);
    expect(valuesOf(out, 'proxyish')).toEqual(['not a proxy field']);
    expect(valuesOf(out, 'host')).toEqual(['chat.example.com']);
  });

  it('keeps the names as the client wrote them', async () => {
    const req = await parsed('GET / HTTP/1.1\r\nHost: h\r\nX-MiXeD-Case: v\r\n\r\n');
    expect(pairs(requestHeadersFor(req, false))).toContainEqual(['X-MiXeD-Case', 'v']);
  });

  it('sets X-Forwarded-For/-Proto/-Host when the client sent none', async () => {
    const req = await parsed('GET /rooms/r1 HTTP/1.1\r\nHost: chat.example.com:8080\r\n\r\n');
    const out = requestHeadersFor(req, false);
    expect(valuesOf(out, 'x-forwarded-for')).toEqual(['127.0.0.1']);
    expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['http']);
    expect(valuesOf(out, 'x-forwarded-host')).toEqual(['chat.example.com:8080']);
  });

  it('appends the client address to X-Forwarded-For, joining repeated fields in order', async () => {
    const req = await parsed(
      'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\n' +
        'X-Forwarded-For: 198.51.100.1, 10.0.0.2\r\n\r\n',
    );
    const out = requestHeadersFor(req, false);
    expect(valuesOf(out, 'x-forwarded-for')).toEqual(['203.0.113.7, 198.51.100.1, 10.0.0.2, 127.0.0.1']);
  });

  it('keeps X-Forwarded-Proto/-Host from a proxy in front, once each', async () => {
    const req = await parsed(
      'GET / HTTP/1.1\r\nHost: internal:8080\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n' +
        'X-Forwarded-Host: chat.example.com\r\nX-Forwarded-Port: 443\r\n\r\n',
    );
    const out = requestHeadersFor(req, false);
    expect(valuesOf(out, 'x-forwarded-proto')).toEqual(['https']);
    expect(valuesOf(out, 'x-forwarded-host')).toEqual(['chat.example.com']);
    expect(valuesOf(out, 'x-forwarded-port')).toEqual(['443']);
  });

  it('keeps the WebSocket handshake fields of an upgrade and drops the other hop-by-hop ones', async () => {
    const req = await parsed(
      'GET /rooms/r1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, X-Secret\r\n' +
        'Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
        'Keep-Alive: 300\r\nX-Secret: hop only\r\nProxy-Authorization: Basic x\r\n\r\n',
    );
    const out = requestHeadersFor(req, true);
    expect(valuesOf(out, 'connection')).toEqual(['Upgrade']);
    expect(valuesOf(out, 'upgrade')).toEqual(['websocket']);
    expect(valuesOf(out, 'sec-websocket-key')).toEqual(['dGhlIHNhbXBsZSBub25jZQ==']);
    expect(valuesOf(out, 'sec-websocket-version')).toEqual(['13']);
    for (const hop of ['keep-alive', 'x-secret', 'proxy-authorization'])
      expect(names(out)).not.toContain(hop);
    expect(valuesOf(out, 'x-forwarded-for')).toEqual(['127.0.0.1']);
  });

  it('serialises a request head for a raw backend socket', () => {
    expect(requestHead('GET', '/rooms/r1', ['Host', 'h', 'Upgrade', 'websocket'])).toBe(
      'GET /rooms/r1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n',
    );
  });
});

describe('response headers to the client', () => {
  it('drops hop-by-hop fields and the fields Connection names, keeping the rest in order', () => {
    const out = responseHeadersFor([
      'Content-Type',
      'application/json',
      'Connection',
      'x-hop, Keep-Alive',
      'Keep-Alive',
      'timeout=5',
      'x-hop',
      'drop-me',
      'Transfer-Encoding',
      'chunked',
      'Trailer',
      'X-Checksum',
      'Proxy-Authenticate',
      'Basic',
      'Upgrade',
      'h2c',
      'Set-Cookie',
      'a=1',
      'Set-Cookie',
      'b=2',
      'X-Served-By',
      'b1',
    ]);
    expect(pairs(out)).toEqual([
      ['Content-Type', 'application/json'],
      ['Set-Cookie', 'a=1'],
      ['Set-Cookie', 'b=2'],
      ['X-Served-By', 'b1'],
    ]);
  });

  it('keeps everything when there is nothing hop-by-hop', () => {
    const raw = ['Content-Length', '2', 'Cache-Control', 'no-store'];
    expect(responseHeadersFor(raw)).toEqual(raw);
  });
});

describe('field names compared without lower-casing', () => {
  it('ignores the case of letters only', () => {
    expect(isField('Content-Length', 'content-length')).toBe(true);
    expect(isField('CONTENT-LENGTH', 'content-length')).toBe(true);
    expect(isField('content-length', 'content-length')).toBe(true);
    expect(isField('Content_Length', 'content-length')).toBe(false);
    expect(isField('Content\rLength', 'content-length')).toBe(false);
    expect(isField('Content-Lengths', 'content-length')).toBe(false);
    expect(isField('X-Forwarded-For', 'x-forwarded-for')).toBe(true);
    expect(startsWithField('Proxy-Authorization', 'proxy-')).toBe(true);
    expect(startsWithField('Proxy', 'proxy-')).toBe(false);
    expect(startsWithField('Proxyish', 'proxy-')).toBe(false);
  });
});
