// The one schema of roomring's configuration: every field with its type, default and a one-line description.
// It validates config files and emits the JSON Schema for editors (`roomring schema`).

import { isIP } from 'node:net';
import { z } from 'zod';
import { parseDuration } from './duration.js';

const durationValue = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const ms = parseDuration(value);
  if (ms === null) {
    ctx.addIssue({ code: 'custom', message: 'expected a duration such as 500ms, 2s, 1m or a number of ms' });
    return z.NEVER;
  }
  return ms;
});

const duration = (fallback: string, description: string) =>
  durationValue.prefault(fallback).describe(description);

export const httpUrl = z
  .string()
  .refine(
    (text) => {
      try {
        const url = new URL(text);
        return ['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol) && url.hostname !== '';
      } catch {
        return false;
      }
    },
    { message: 'expected an absolute http://, https://, ws:// or wss:// URL with a host' },
  )
  .describe('Where the backend listens, e.g. http://10.0.0.5:9001');

export const BACKEND_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

const STATUS_RULE = /^([1-5]xx|[1-5]\d\d(-[1-5]\d\d)?)$/;

/** Active health check settings; each field can be overridden per backend. */
const healthFields = {
  path: z.string().startsWith('/', 'expected a path starting with /').describe('Path probed with HTTP GET'),
  interval: durationValue.describe('Time between two checks of one backend (each with ±10% jitter)'),
  timeout: durationValue.describe('A check that takes longer fails'),
  fall: z.number().int().min(1).max(100).describe('Consecutive failed checks that mark a backend down'),
  rise: z.number().int().min(1).max(100).describe('Consecutive passed checks that mark a backend up'),
  expect: z
    .array(z.string().regex(STATUS_RULE, "expected a status like '200', a range '200-299' or a class '2xx'"))
    .min(1)
    .describe('Statuses that pass'),
};

export const healthSchema = z
  .strictObject({
    path: healthFields.path.default('/health'),
    interval: healthFields.interval.prefault('2s'),
    timeout: healthFields.timeout.prefault('1s'),
    fall: healthFields.fall.default(3),
    rise: healthFields.rise.default(2),
    expect: healthFields.expect.default(['2xx', '3xx']),
    initial: z
      .enum(['down', 'up'])
      .default('down')
      .describe("A new backend: 'down' takes rooms only after `rise` passed checks, 'up' takes them at once"),
  })
  .describe('Active health checks; absent: no active checks (passive failover still applies)');

export const healthOverrideSchema = z
  .strictObject({
    path: healthFields.path.optional(),
    interval: healthFields.interval.optional(),
    timeout: healthFields.timeout.optional(),
    fall: healthFields.fall.optional(),
    rise: healthFields.rise.optional(),
    expect: healthFields.expect.optional(),
  })
  .describe('Health check settings of this backend, over the `health` section');

export const backendSchema = z
  .strictObject({
    id: z
      .string()
      .regex(
        BACKEND_ID,
        'expected 1-128 characters of letters, digits, . _ : - (starting with a letter or digit)',
      )
      .describe('Stable, unique name of the backend; the ring places rooms by it'),
    url: httpUrl,
    weight: z
      .number()
      .positive('expected a weight above 0')
      .max(1000)
      .default(1)
      .describe('Relative share of rooms; 2 takes twice the rooms of 1'),
    health: healthOverrideSchema.optional(),
  })
  .describe('A backend server');

const pathRule = z.strictObject({
  path: z
    .string()
    .refine((p) => p.startsWith('/') && /(^|\/):room(\/|$)/.test(p), {
      message: "expected a path pattern starting with / that has a ':room' segment, e.g. /rooms/:room",
    })
    .describe('Path pattern; `:room` is the room id, `:name` matches any one segment; matches as a prefix'),
});
const queryRule = z.strictObject({
  query: z.string().min(1).describe('Query parameter that holds the room id'),
});
const headerRule = z.strictObject({
  header: z
    .string()
    .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'expected an HTTP header name')
    .transform((h) => h.toLowerCase())
    .describe('Request header that holds the room id'),
});
const cookieRule = z.strictObject({ cookie: z.string().min(1).describe('Cookie that holds the room id') });

export const roomRuleSchema = z.union([pathRule, queryRule, headerRule, cookieRule], {
  error: 'expected one of {path: /rooms/:room}, {query: NAME}, {header: NAME} or {cookie: NAME}',
});

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** True for `10.0.0.0/8`, `::1/128`, `127.0.0.1`, `backend.local`, `*.svc.cluster.local`. */
function isAllowRule(rule: string): boolean {
  const [address, bits, extra] = rule.split('/');
  const family = isIP(address ?? '');
  if (extra !== undefined) return false;
  if (bits !== undefined) {
    const n = Number(bits);
    return family !== 0 && /^\d+$/.test(bits) && n <= (family === 6 ? 128 : 32);
  }
  return family !== 0 || /^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(rule);
}

const redisUrl = z
  .string()
  .refine(
    (text) => {
      try {
        return ['redis:', 'rediss:'].includes(new URL(text).protocol);
      } catch {
        return false;
      }
    },
    { message: 'expected a redis:// or rediss:// URL, e.g. redis://:password@10.0.0.2:6379/0' },
  )
  .describe(
    'Redis server URL (rediss:// for TLS; user:password@ allowed); the REDIS_URL environment variable overrides it',
  );

export const registrySchema = z
  .strictObject({
    redis: redisUrl,
    cluster: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected 1-64 letters, digits, . _ -')
      .default('default')
      .describe('Namespace of this set of backends; several clusters can share one Redis'),
    allow: z
      .array(
        z
          .string()
          .refine(isAllowRule, { message: 'expected a CIDR (10.0.0.0/8), an IP, a hostname or *.domain' }),
      )
      .optional()
      .describe('Hosts registry entries may point at (CIDRs, IPs, hostnames, *.suffix); absent: any host'),
    resync: duration('5s', 'Full reload of the registry this often, in case a pub/sub notice was lost'),
    debounce: duration('10ms', 'Wait this long after a change notice before reloading, to batch bursts'),
    leaderLease: duration(
      '5s',
      'Lease of the proxy that reaps expired heartbeats; another takes over after it',
    ),
    reapInterval: duration(
      '1s',
      'How often the leader removes backends whose heartbeat is older than their ttl',
    ),
  })
  .describe('Redis registry: backends register themselves; without this section the backends list is used');

export const configSchema = z
  .strictObject({
    listen: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1').describe('Address the proxy listens on'),
        port: z
          .number()
          .int()
          .min(0)
          .max(65535)
          .default(8080)
          .describe('Port the proxy listens on (0: any free)'),
        headTimeout: duration(
          '60s',
          'Time a client has to send a whole request head, then 408 and the connection closes (0: no limit)',
        ),
        keepAlive: duration('5s', 'How long an idle keep-alive connection from a client is kept open'),
        sendTimeout: duration(
          '60s',
          'Time a client may take none of an HTTP response waiting for it, then the connection closes (0: no limit)',
        ),
      })
      .prefault({})
      .describe('Where clients connect'),
    room: z
      .strictObject({
        from: z
          .array(roomRuleSchema)
          .min(1)
          .default([{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }])
          .describe('Where the room id is found, tried in order'),
        onMissing: z
          .enum(['reject', 'random'])
          .default('reject')
          .describe("No room id: 'reject' answers 400, 'random' spreads the request over healthy backends"),
      })
      .prefault({})
      .describe('How the room id is found in a request'),
    backends: z
      .array(backendSchema)
      .default([])
      .superRefine((list, ctx) => {
        const seen = new Set<string>();
        list.forEach((backend, index) => {
          if (seen.has(backend.id)) {
            ctx.addIssue({
              code: 'custom',
              path: [index, 'id'],
              message: `expected a unique backend id, '${backend.id}' appears twice`,
            });
          }
          seen.add(backend.id);
        });
      })
      .describe(
        'Backends known from the config file (with a registry: entries that exist without heartbeats)',
      ),
    registry: registrySchema.optional(),
    health: healthSchema.optional(),
    admin: z
      .strictObject({
        host: z
          .string()
          .min(1)
          .default('127.0.0.1')
          .describe('Address of the admin listener (status, metrics, dashboard)'),
        port: z
          .number()
          .int()
          .min(0)
          .max(65535)
          .default(9090)
          .describe('Port of the admin listener (0: any free)'),
        token: z
          .string()
          .min(16, 'expected a token of at least 16 characters')
          .optional()
          .describe('Bearer token the admin API requires; required when host is not a loopback address'),
      })
      .refine((admin) => admin.token !== undefined || isLoopback(admin.host), {
        message: 'expected a token: the admin listener is bound beyond loopback',
        path: ['token'],
      })
      .optional()
      .describe(
        'Admin listener: /status, /route, /metrics, /healthz, /reload and the dashboard; absent: none',
      ),
    placement: z
      .strictObject({
        affinity: z
          .enum(['on', 'off'])
          .default('on')
          .describe(
            "'on': a live room keeps its backend across ring changes (room leases); 'off': pure ring",
          ),
        leaseTtl: duration(
          '15s',
          'A room with no connection on any proxy for this long follows the ring again',
        ),
        loadFactor: z
          .number()
          .min(1)
          .max(10)
          .optional()
          .describe(
            'Bounded load: a new room skips backends above ceil(factor × average) live rooms; absent: off',
          ),
        drainWindow: duration(
          '10s',
          "At a drain deadline, the backend's remaining WebSockets close (1012) spread over this",
        ),
      })
      .prefault({})
      .describe('Where rooms go, and how live rooms stay whole'),
    websocket: z
      .strictObject({
        pipe: z
          .enum(['native', 'js'])
          .default('native')
          .describe(
            "'native': native code accepts clients, forwards plain-TCP WebSockets and bodiless HTTP/1.1 requests, and connects to backends given by IP address (Linux, built by npm install; else as 'js'); 'js': Node sockets do",
          ),
        threadAfter: duration(
          '1s',
          "With the native pipe, a WebSocket open this long moves from the main thread to the pipe's own thread, at its next bytes or within a second (short-lived ones never cross threads)",
        ),
        halfCloseTimeout: duration(
          '30s',
          'Once one side of a WebSocket ends its connection, how long the other side has to end its own before both close (0: no limit)',
        ),
      })
      .prefault({})
      .describe('How upgraded WebSockets are forwarded'),
    timeouts: z
      .strictObject({
        connect: duration('5s', 'Time allowed to open a connection to a backend'),
        response: duration(
          '60s',
          'Time a backend has to send response headers to an HTTP request (0: no limit)',
        ),
        idle: duration(
          '0',
          'Close an HTTP exchange or a WebSocket after this long with no traffic (0: never; idle WebSockets are kept)',
        ),
        keepAlive: duration(
          '4s',
          "How long an unused keep-alive connection to a backend is kept (below the backend's own idle timeout)",
        ),
      })
      .prefault({})
      .describe('Timeouts of backend connections'),
    failover: z
      .strictObject({
        coolOff: duration(
          '2s',
          'How long a backend that refused a connection is skipped, doubled per failure',
        ),
        maxCoolOff: duration('30s', 'Longest cool-off after repeated failures'),
        retries: z
          .number()
          .int()
          .min(0)
          .max(10)
          .default(2)
          .describe('How many ring successors a refused request is retried on'),
      })
      .prefault({})
      .describe('What happens when a backend refuses connections'),
    shutdownTimeout: duration('10s', 'Time allowed to finish in-flight work on SIGTERM before exiting'),
    log: z
      .strictObject({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info')
          .describe('Lowest level of log lines written'),
      })
      .prefault({})
      .describe('Logging'),
  })
  .describe('roomring configuration');

/** A validated configuration; frozen at load so nothing changes it behind the proxy's back. */
export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type BackendConfig = z.output<typeof backendSchema>;
export type RoomRule = z.output<typeof roomRuleSchema>;
export type RegistryConfig = z.output<typeof registrySchema>;
export type HealthConfig = z.output<typeof healthSchema>;
export type PlacementConfig = Config['placement'];
export type AdminConfig = NonNullable<Config['admin']>;
export type HealthOverride = z.output<typeof healthOverrideSchema>;

export function configJsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' });
}
