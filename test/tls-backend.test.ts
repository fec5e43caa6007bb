// https:// and wss:// backends: the proxy reaches them over TLS, verifying their certificate
// against the CAs Node trusts (here a throwaway one given through NODE_EXTRA_CA_CERTS).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { freePort, onCleanup, openSocket, request, spawnCli, tempDir, writeConfig } from './helpers.js';

function selfSigned(): { key: Buffer; cert: Buffer; certFile: string } {
  const dir = tempDir();
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(keyFile), cert: readFileSync(certFile), certFile };
}

describe('TLS backends', () => {
  it('forwards HTTP and WebSocket traffic to an https:// backend and refuses an untrusted one', async () => {
    const { key, cert, certFile } = selfSigned();
    const server = https.createServer({ key, cert }, (req, res) => {
      res.writeHead(200, { 'x-served-by': 'tls', 'content-type': 'text/plain' }).end(`secure ${req.url}`);
    });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws, req) => {
      ws.send(JSON.stringify({ server: 'tls', url: req.url, headers: req.headers }));
      ws.on('message', (data) => ws.send(`tls:${data}`));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => server.close(resolve)));
    const backendUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const start = async (env: NodeJS.ProcessEnv) => {
      const port = await freePort();
      const config = writeConfig({
        listen: { host: '127.0.0.1', port },
        room: { from: [{ path: '/rooms/:room' }] },
        backends: [{ id: 'tls', url: backendUrl }],
      });
      const cli = spawnCli(['start', '--config', config], env);
      await cli.waitFor(/roomring listening on/);
      return `http://127.0.0.1:${port}`;
    };

    const trusted = await start({ NODE_EXTRA_CA_CERTS: certFile });
    const res = await request(`${trusted}/rooms/a`);
    expect(res.status).toBe(200);
    expect(res.body).toBe('secure /rooms/a');
    const { ws, hello } = await openSocket(`${trusted.replace('http', 'ws')}/rooms/a`);
    expect(hello.server).toBe('tls');
    const echo = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))));
    ws.send('over tls');
    expect(await echo).toBe('tls:over tls');

    // Without the CA the certificate is not trusted: the client gets a coded 502, never plain text.
    const untrusted = await start({ NODE_EXTRA_CA_CERTS: '' });
    const refused = await request(`${untrusted}/rooms/a`);
    expect(refused.status).toBe(502);
    expect(JSON.parse(refused.body).error.code).toBe('ROOMRING_E_BACKEND_UNREACHABLE');
  });
});
