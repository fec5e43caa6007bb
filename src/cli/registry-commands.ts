// `roomring register` (the backend sidecar) and `roomring backends ...` (operator commands).

import type { Argv, CommandModule } from 'yargs';
import { parseDuration } from '../config/duration.js';
import { BACKEND_ID } from '../config/schema.js';
import { formatPlan, type PlannedChange, planChange } from '../plan.js';
import { RegistryAdmin } from '../registry/admin.js';
import { registerBackend } from '../registry/agent.js';
import { isValidClusterName } from '../registry/keys.js';

type Fail = (error: unknown) => never;

class UsageError extends Error {}

interface RedisArgs {
  redis: string | undefined;
  cluster: string;
}

function withRedis<T>(y: Argv<T>) {
  return y
    .option('redis', { type: 'string', describe: 'Redis URL (default: $REDIS_URL)' })
    .option('cluster', { type: 'string', default: 'default', describe: 'Cluster namespace' });
}

function redisUrl(args: RedisArgs): string {
  const url = args.redis ?? process.env.REDIS_URL;
  if (url === undefined || url === '') throw new UsageError('give --redis URL or set REDIS_URL');
  if (!/^rediss?:\/\//.test(url))
    throw new UsageError(`--redis: expected a redis:// or rediss:// URL, got '${url}'`);
  if (!isValidClusterName(args.cluster))
    throw new UsageError(`--cluster: expected 1-64 letters, digits, . _ -`);
  return url;
}

function checkId(id: string): string {
  if (!BACKEND_ID.test(id)) throw new UsageError(`--id: '${id}' is not a valid backend id`);
  return id;
}

function usageOr(fail: Fail): (error: unknown) => never {
  return (error) => {
    if (error instanceof UsageError) {
      process.stderr.write(`roomring: ${error.message}\n`);
      process.exit(2);
    }
    return fail(error);
  };
}

export function registerCommand(
  fail: Fail,
): CommandModule<object, RedisArgs & { id: string; url: string; weight: number; ttl: string }> {
  return {
    command: 'register',
    describe:
      'Register a backend in Redis and heartbeat until stopped (a sidecar); deregisters on SIGTERM/SIGINT',
    builder: (y) =>
      withRedis(y)
        .option('id', { type: 'string', demandOption: true, describe: 'Backend id' })
        .option('url', { type: 'string', demandOption: true, describe: 'Backend URL' })
        .option('weight', { type: 'number', default: 1, describe: 'Relative share of rooms' })
        .option('ttl', {
          type: 'string',
          default: '5s',
          describe: 'Heartbeat ttl; heartbeats go every ttl/3',
        }) as never,
    handler: async (argv) => {
      try {
        const ttl = parseDuration(argv.ttl);
        if (ttl === null || ttl < 300)
          throw new UsageError(`--ttl: expected a duration of at least 300ms, got '${argv.ttl}'`);
        const registration = registerBackend({
          redis: redisUrl(argv),
          cluster: argv.cluster,
          id: checkId(argv.id),
          url: argv.url,
          weight: argv.weight,
          ttl,
        });
        let announced = false;
        registration.on('registered', (epoch) => {
          if (!announced)
            process.stdout.write(
              `registered ${argv.id} ${argv.url} in cluster ${argv.cluster} (epoch ${epoch})\n`,
            );
          announced = true;
        });
        const stop = (signal: string): void => {
          process.stdout.write(`${signal}: deregistering ${argv.id}\n`);
          registration.close().then(
            () => process.exit(0),
            () => process.exit(1),
          );
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      } catch (error) {
        usageOr(fail)(error);
      }
    },
  };
}

type BackendsArgs = RedisArgs & {
  action: string;
  id?: string;
  url?: string;
  weight?: number;
  deadline?: string;
  json: boolean;
};

export function backendsCommand(fail: Fail): CommandModule<object, BackendsArgs> {
  return {
    command: 'backends <action>',
    describe: 'List or change registry entries: list | add | remove | drain | undrain | weight',
    builder: (y) =>
      withRedis(y)
        .positional('action', {
          choices: ['list', 'add', 'remove', 'drain', 'undrain', 'weight'] as const,
          demandOption: true,
        })
        .option('id', { type: 'string', describe: 'Backend id (add, remove, drain, undrain, weight)' })
        .option('url', { type: 'string', describe: 'Backend URL (add)' })
        .option('weight', { type: 'number', describe: 'Weight (add, weight)' })
        .option('deadline', {
          type: 'string',
          describe: 'drain: move the remaining rooms after this long (e.g. 10m)',
        })
        .option('json', { type: 'boolean', default: false, describe: 'list: print JSON' }) as never,
    handler: async (argv) => {
      let admin: RegistryAdmin | undefined;
      try {
        admin = new RegistryAdmin(redisUrl(argv), argv.cluster);
        await runBackendsAction(admin, argv);
      } catch (error) {
        await admin?.close();
        usageOr(fail)(error);
      }
      await admin?.close();
    },
  };
}

async function runBackendsAction(admin: RegistryAdmin, argv: BackendsArgs): Promise<void> {
  const id = (): string => {
    if (argv.id === undefined) throw new UsageError(`backends ${argv.action}: give --id`);
    return checkId(argv.id);
  };
  const done = (changed: boolean, what: string): void => {
    if (!changed) throw new UsageError(`no backend '${argv.id}' in cluster ${argv.cluster}`);
    process.stdout.write(`${what}\n`);
  };
  switch (argv.action) {
    case 'list': {
      const rows = await admin.list();
      if (argv.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
      else process.stdout.write(formatTable(rows));
      return;
    }
    case 'add':
      if (argv.url === undefined) throw new UsageError('backends add: give --url');
      await admin.add(id(), argv.url, argv.weight ?? 1);
      process.stdout.write(`added ${argv.id} ${argv.url}\n`);
      return;
    case 'remove':
      return done(await admin.remove(id()), `removed ${argv.id}`);
    case 'drain': {
      let deadline: number | undefined;
      if (argv.deadline !== undefined) {
        const ms = parseDuration(argv.deadline);
        if (ms === null)
          throw new UsageError(`--deadline: expected a duration such as 30s or 10m, got '${argv.deadline}'`);
        deadline = ms;
      }
      const then = deadline === undefined ? '' : `; its remaining rooms move in ${argv.deadline}`;
      return done(await admin.drain(id(), deadline), `draining ${argv.id}: no new rooms go to it${then}`);
    }
    case 'undrain':
      return done(await admin.undrain(id()), `${argv.id} takes new rooms again`);
    case 'weight':
      if (argv.weight === undefined || !(argv.weight > 0) || argv.weight > 1000) {
        throw new UsageError('backends weight: give --weight above 0 and at most 1000');
      }
      return done(await admin.set(id(), 'weight', argv.weight), `${argv.id} weight ${argv.weight}`);
  }
}

function formatTable(rows: Awaited<ReturnType<RegistryAdmin['list']>>): string {
  const header = ['ID', 'URL', 'WEIGHT', 'STATE', 'HEALTH', 'ROOMS', 'CONNS', 'HEARTBEAT', 'NOTE'];
  const lines = rows.map((r) => [
    r.id,
    r.url ?? '-',
    String(r.weight ?? '-'),
    r.state ?? '-',
    r.health === null ? '-' : `${r.health} (${r.healthReason})`,
    String(r.rooms),
    String(r.connections),
    r.heartbeatAgeMs === null ? 'none' : `${(r.heartbeatAgeMs / 1000).toFixed(1)}s ago`,
    r.invalid === null ? '' : `skipped: ${r.invalid}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] as string).length)));
  const format = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd();
  const epoch = rows[0]?.epoch ?? 0;
  return `${[format(header), ...lines.map(format)].join('\n')}\n${rows.length} backend(s), epoch ${epoch}\n`;
}

type PlanArgs = RedisArgs & { add?: string; remove?: string; weight: number; json: boolean };

/** `--add ID=URL` or `--remove ID`, exactly one. */
function plannedChange(argv: PlanArgs): PlannedChange {
  if ((argv.add === undefined) === (argv.remove === undefined))
    throw new UsageError('plan: give exactly one of --add ID=URL or --remove ID');
  if (argv.remove !== undefined) return { remove: checkId(argv.remove) };
  const [id = '', ...rest] = (argv.add as string).split('=');
  const url = rest.join('=');
  if (!/^(https?|wss?):\/\/./.test(url))
    throw new UsageError(`--add: expected ID=URL, e.g. b4=http://10.0.0.4:9000, got '${argv.add}'`);
  if (!(argv.weight > 0)) throw new UsageError('--weight: expected a number above 0');
  return { add: { id: checkId(id), url, weight: argv.weight } };
}

export function planCommand(fail: Fail): CommandModule<object, PlanArgs> {
  return {
    command: 'plan',
    describe:
      'Show what adding or removing a backend would do to live rooms, against the live registry; changes nothing',
    builder: (y) =>
      withRedis(y)
        .option('add', { type: 'string', describe: 'ID=URL of a backend to add' })
        .option('remove', { type: 'string', describe: 'ID of a backend to remove' })
        .option('weight', { type: 'number', default: 1, describe: 'Weight of the added backend' })
        .option('json', { type: 'boolean', default: false, describe: 'Print JSON' }) as never,
    handler: async (argv) => {
      try {
        const report = await planChange(redisUrl(argv), argv.cluster, plannedChange(argv));
        process.stdout.write(argv.json ? `${JSON.stringify(report)}\n` : formatPlan(report));
      } catch (error) {
        usageOr(fail)(error);
      }
    },
  };
}
