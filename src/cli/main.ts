// The command line: the only place that parses argv. Exit codes: 0 ok, 2 usage or config error,
// 1 runtime failure.

import cluster from 'node:cluster';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runCluster } from '../cluster.js';
import { loadConfigFile } from '../config/load.js';
import { configJsonSchema } from '../config/schema.js';
import { runDaemon } from '../daemon.js';
import { runDemo } from '../demo/demo.js';
import { ConfigError } from '../errors.js';
import { previewRoute } from '../route.js';
import { VERSION } from '../version.js';
import { backendsCommand, planCommand, registerCommand } from './registry-commands.js';

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

function fail(error: unknown): never {
  if (error instanceof ConfigError) {
    process.stderr.write(`roomring: invalid config ${error.message}\n`);
    process.exit(EXIT_USAGE);
  }
  process.stderr.write(`roomring: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(EXIT_RUNTIME);
}

await yargs(hideBin(process.argv))
  .scriptName('roomring')
  .usage('$0 <command> [options]\n\nSticky-session load balancer for stateful real-time servers.')
  .command(
    'start',
    'Run the proxy',
    (y) =>
      y
        .option('config', {
          alias: 'c',
          type: 'string',
          demandOption: true,
          describe: 'Config file (YAML or JSON)',
        })
        .option('host', { type: 'string', describe: 'Override listen.host' })
        .option('port', { type: 'number', describe: 'Override listen.port' })
        .option('log-level', { type: 'string', describe: 'Override log.level' })
        .option('workers', {
          type: 'number',
          default: 1,
          describe: 'Proxy processes sharing the port (node:cluster); the primary serves the admin API',
        })
        .check((argv) => {
          if (!Number.isInteger(argv.workers) || argv.workers < 1 || argv.workers > 64) {
            throw new Error('--workers: expected a whole number from 1 to 64');
          }
          return true;
        }),
    async (argv) => {
      try {
        const overrides = { host: argv.host, port: argv.port, logLevel: argv.logLevel };
        if (argv.workers > 1 || cluster.isWorker) await runCluster(argv.config, overrides, argv.workers);
        else await runDaemon(argv.config, overrides);
      } catch (error) {
        fail(error);
      }
    },
  )
  .command(
    'check-config',
    'Validate a config file and exit',
    (y) => y.option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'Config file' }),
    (argv) => {
      try {
        const config = loadConfigFile(argv.config);
        process.stdout.write(`${argv.config}: ok (${config.backends.length} backend(s))\n`);
      } catch (error) {
        fail(error);
      }
    },
  )
  .command(
    'route <room>',
    'Print the backend the proxy would choose for a room',
    (y) =>
      y
        .positional('room', { type: 'string', demandOption: true, describe: 'Room id (decoded)' })
        .option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'Config file' })
        .option('json', { type: 'boolean', default: false, describe: 'Print JSON' }),
    async (argv) => {
      try {
        const { backend, reason, fingerprint, epoch } = await previewRoute(
          loadConfigFile(argv.config),
          argv.room,
        );
        if (argv.json) {
          const target = backend === undefined ? null : { id: backend.id, url: backend.url };
          const out = { room: argv.room, backend: target, reason, fingerprint, epoch };
          process.stdout.write(`${JSON.stringify(out)}\n`);
        } else {
          process.stdout.write(backend === undefined ? 'no backend\n' : `${backend.id} ${backend.url}\n`);
        }
        if (backend === undefined) process.exitCode = EXIT_RUNTIME;
      } catch (error) {
        fail(error);
      }
    },
  )
  .command(
    'demo',
    'Run three demo chat servers behind the proxy (no Redis needed)',
    (y) =>
      y
        .option('port', { type: 'number', default: 8080, describe: 'Proxy port (0: any free port)' })
        .option('admin-port', {
          type: 'number',
          default: 9090,
          describe: 'Dashboard and admin API port (0: any free port)',
        }),
    async (argv) => {
      try {
        await runDemo(argv.port, argv.adminPort);
      } catch (error) {
        fail(error);
      }
    },
  )
  .command(
    'reload',
    'Ask a running proxy to re-read its config file (as SIGHUP does), through its admin API',
    (y) =>
      y
        .option('admin', { type: 'string', default: 'http://127.0.0.1:9090', describe: 'Admin API base URL' })
        .option('token', { type: 'string', describe: 'Admin bearer token (default: $ROOMRING_ADMIN_TOKEN)' }),
    async (argv) => {
      try {
        const token = argv.token ?? process.env.ROOMRING_ADMIN_TOKEN;
        const res = await fetch(new URL('/reload', argv.admin), {
          method: 'POST',
          headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        });
        const body = (await res.json()) as { error?: { message: string } };
        if (!res.ok) throw new Error(body.error?.message ?? `admin API answered ${res.status}`);
        process.stdout.write('reloaded\n');
      } catch (error) {
        fail(error);
      }
    },
  )
  .command(registerCommand(fail))
  .command(backendsCommand(fail))
  .command(planCommand(fail))
  .command(
    'schema',
    'Print the JSON Schema of the config file',
    (y) => y,
    () => {
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
    },
  )
  .demandCommand(1, 'Name a command; see --help.')
  .strict()
  .version(VERSION)
  .help()
  .fail((message, error) => {
    if (error !== undefined && error !== null) fail(error);
    process.stderr.write(`roomring: ${message}\nRun 'roomring --help' for usage.\n`);
    process.exit(EXIT_USAGE);
  })
  .parseAsync();
