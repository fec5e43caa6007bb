// The process logger: pino JSON lines on stdout, human-readable when stdout is a terminal.

import { createRequire } from 'node:module';
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(level: string, human = process.stdout.isTTY === true): Logger {
  const options = { name: 'roomring', level };
  if (!human) return pino(options);
  // Loaded only for a terminal: a daemon writing JSON never pays for it.
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
  return pino(options, pretty({ colorize: true, sync: true }));
}
