// One suite that every registry implementation must pass: static (config list) and Redis.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { RedisRegistry } from '../src/registry/redis-registry.js';
import type { Registry, RegistrySnapshot } from '../src/registry/registry.js';
import { StaticRegistry } from '../src/registry/static-registry.js';
import { onCleanup, startRedis, waitUntil } from './helpers.js';

const silent = pino({ level: 'silent' });

interface Implementation {
  name: string;
  make(config: Config): Promise<Registry>;
  configure(backends: { id: string; url: string }[]): Promise<Config>;
}

const implementations: Implementation[] = [
  {
    name: 'static',
    make: async (config) => new StaticRegistry(config.backends),
    configure: async (backends) => validateConfig({ backends }),
  },
  {
    name: 'redis',
    make: async (config) =>
      new RedisRegistry({
        url: config.registry?.redis as string,
        config: config.registry as NonNullable<Config['registry']>,
        staticBackends: config.backends,
        log: silent,
      }),
    configure: async (backends) => {
      const redis = await startRedis();
      return validateConfig({ backends, registry: { redis: redis.url, cluster: 'contract' } });
    },
  },
];

for (const impl of implementations) {
  describe(`registry contract: ${impl.name}`, () => {
    const ids = (snapshot: RegistrySnapshot | undefined) =>
      snapshot?.backends.map((b) => `${b.id}=${b.url}`).sort();

    it('delivers the configured backends on watch, then every change', async () => {
      const config = await impl.configure([
        { id: 'a', url: 'http://127.0.0.1:9001' },
        { id: 'b', url: 'http://127.0.0.1:9002' },
      ]);
      const registry = await impl.make(config);
      onCleanup(() => registry.close());
      let last: RegistrySnapshot | undefined;
      await registry.watch((snapshot) => {
        last = snapshot;
      });
      expect(ids(last)).toEqual(['a=http://127.0.0.1:9001', 'b=http://127.0.0.1:9002']);
      expect(last?.backends.every((b) => b.state === 'active' && b.weight === 1)).toBe(true);
      expect(registry.status().connected).toBe(true);

      const next = validateConfig({ ...config, backends: [{ id: 'c', url: 'http://127.0.0.1:9003' }] });
      registry.reconfigure(next);
      await waitUntil(() => ids(last)?.join() === 'c=http://127.0.0.1:9003');
    });

    it('stops delivering after close', async () => {
      const config = await impl.configure([{ id: 'a', url: 'http://127.0.0.1:9001' }]);
      const registry = await impl.make(config);
      let count = 0;
      await registry.watch(() => {
        count++;
      });
      await registry.close();
      const seen = count;
      registry.reconfigure(validateConfig({ ...config, backends: [] }));
      await new Promise((r) => setTimeout(r, 100));
      expect(count).toBe(seen);
    });
  });
}
