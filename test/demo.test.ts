// `roomring demo` (what `npm start` runs): three chat server processes behind the proxy, no Redis.
import { describe, expect, it } from 'vitest';
import { openSocket, request, spawnCli, waitUntil } from './helpers.js';

describe('roomring demo', () => {
  it('serves each room from one chat server that remembers its messages, with a dashboard, and stops everything on Ctrl-C', async () => {
    const demo = spawnCli(['demo', '--port', '0', '--admin-port', '0']);
    const [, url] = (await demo.waitFor(
      /behind the proxy at\s+(http:\/\/127\.0\.0\.1:\d+)/,
    )) as RegExpMatchArray;
    const [, dashboard] = (await demo.waitFor(
      /dashboard at (http:\/\/127\.0\.0\.1:\d+\/)/,
    )) as RegExpMatchArray;

    const page = await request(`${url}/rooms/lobby`);
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    const host = String(page.headers['x-served-by']);
    expect(page.body).toContain(`hosted by ${host}`);

    // Two tabs of one room: the same server, the same messages.
    const ws = `${(url as string).replace('http', 'ws')}/rooms/lobby/ws`;
    const a = await openSocket(ws);
    const b = await openSocket(ws);
    expect(a.hello.server).toBe(host);
    expect(b.hello.server).toBe(host);
    const seen = new Promise<string>((resolve) =>
      b.ws.on('message', (d) => resolve(JSON.parse(String(d)).text)),
    );
    a.ws.send('hello from tab a');
    expect(await seen).toBe('hello from tab a');
    const later = await openSocket(ws);
    expect((later.hello as unknown as { history: { text: string }[] }).history.map((m) => m.text)).toContain(
      'hello from tab a',
    );

    const status = JSON.parse((await request(`${dashboard}status`)).body) as {
      backends: { id: string; url: string }[];
    };
    expect(status.backends.map((s) => s.id)).toEqual(['chat-1', 'chat-2', 'chat-3']);

    demo.child.kill('SIGINT');
    expect(await demo.exited).toBe(0);
    // The proxy and all three chat server processes are gone.
    const gone = (target: string) =>
      request(target).then(
        () => false,
        () => true,
      );
    await waitUntil(
      async () =>
        (
          await Promise.all([url as string, ...status.backends.map((s) => `${s.url}/health`)].map(gone))
        ).every(Boolean),
      3000,
    );
  });
});
