// The admin dashboard in a real browser: the Debian chromium driven by playwright-core against a real
// proxy with real backends and WebSocket clients; the page must draw the ring and the table from
// /status, follow live connections and show a killed backend as out.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import {
  backendsConfig,
  freePort,
  onCleanup,
  openSocket,
  ROOT,
  request,
  startBackends,
  startProxy,
} from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'test', 'artifacts', 'dashboard.png');
const ROOM_RULES = { from: [{ path: '/rooms/:room' }], onMissing: 'reject' };

async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: the dashboard test needs the Debian chromium package (apt-get install chromium; .ci/run installs it)`,
    );
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  onCleanup(() => browser.close());
  return browser;
}

/** The text of the table row of `id`; throws when the page has not drawn it within a second. */
async function rowText(page: Page, id: string): Promise<string> {
  return (await page.locator(`tr[data-backend="${id}"]`).textContent({ timeout: 1000 })) ?? '';
}

describe('admin dashboard', () => {
  it('draws the ring and table from /status, follows live connections and shows a killed backend as out', async () => {
    const backends = await startBackends(['b1', 'b2', 'b3']);
    const adminPort = await freePort();
    const proxy = await startProxy({
      room: ROOM_RULES,
      backends: backendsConfig(backends),
      admin: { host: '127.0.0.1', port: adminPort },
      // A refused backend stays cooling off well past the page's next poll.
      failover: { coolOff: '30s', maxCoolOff: '30s' },
    });
    const ws = proxy.url.replace('http', 'ws');

    // Two connections in each of eight rooms: 16 live connections spread over the backends.
    const roomsOf = new Map<string, string[]>();
    const connectionsOf = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const room = `dash-${i}`;
      for (let j = 0; j < 2; j++) {
        const { hello } = await openSocket(`${ws}/rooms/${room}`);
        connectionsOf.set(hello.server, (connectionsOf.get(hello.server) ?? 0) + 1);
        if (j === 0) roomsOf.set(hello.server, [...(roomsOf.get(hello.server) ?? []), room]);
      }
    }
    const opened = [...connectionsOf.values()].reduce((a, b) => a + b, 0);
    expect(opened).toBe(16);

    const browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const res = await page.goto(`http://127.0.0.1:${adminPort}/`);
    expect(res?.status()).toBe(200);
    await expect(page.title()).resolves.toBe('roomring');

    // Every backend has an arc in the ring and a row in the table.
    for (const { id } of backends) {
      await page.locator(`#ring path[data-backend="${id}"]`).waitFor({ timeout: 5000 });
      await page.locator(`#backends tr[data-backend="${id}"]`).waitFor({ timeout: 5000 });
    }
    const arcs = await page
      .locator('#ring path[data-backend]')
      .evaluateAll((paths) =>
        paths.map((p) => ({ id: p.getAttribute('data-backend'), d: p.getAttribute('d') ?? '' })),
      );
    expect(arcs.map((a) => a.id).sort()).toEqual(['b1', 'b2', 'b3']);
    for (const { d } of arcs) expect(d).toMatch(/^M [-\d.e]+ [-\d.e]+ A /);

    // The live-connection figure, overall and per backend, matches the sockets opened.
    await expect
      .poll(() => page.locator('#connections').textContent(), { timeout: 5000 })
      .toBe(String(opened));
    for (const { id } of backends) {
      const cells = page.locator(`#backends tr[data-backend="${id}"] td`);
      await expect
        .poll(() => cells.nth(4).textContent(), { timeout: 5000 })
        .toBe(String(connectionsOf.get(id) ?? 0));
      await expect
        .poll(() => cells.nth(3).textContent(), { timeout: 5000 })
        .toBe(String(roomsOf.get(id)?.length ?? 0));
      expect(await rowText(page, id)).toContain('in ring');
    }

    // Kill a backend that hosts rooms; a request for one of them finds it refusing and cools it off.
    const victimId = [...roomsOf.keys()].sort()[0] as string;
    const victim = backends.find((b) => b.id === victimId);
    const victimRoom = roomsOf.get(victimId)?.[0] as string;
    await victim?.kill('SIGKILL');
    const after = await request(`${proxy.url}/rooms/${victimRoom}`);
    expect(after.status).toBe(200);
    expect(after.headers['x-served-by']).not.toBe(victimId);
    await expect.poll(() => rowText(page, victimId), { timeout: 5000 }).toContain('cooling off');
    for (const { id } of backends.filter((b) => b.id !== victimId))
      expect(await rowText(page, id)).toContain('in ring');
    // Its sockets went with it: the figure drops to the others' connections.
    await expect
      .poll(() => page.locator('#connections').textContent(), { timeout: 5000 })
      .toBe(String(opened - (connectionsOf.get(victimId) ?? 0)));

    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(existsSync(SCREENSHOT)).toBe(true);
    expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
    expect(errors).toEqual([]);
  });
});
