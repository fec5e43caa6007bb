// The process logger: pino JSON lines on stdout, human-readable when stdout is a terminal.

import { type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export function createLogger(level: string, human = process.stdout.isTTY === true): Logger {
  const options = { name: 'roomring', level };
  return human ? pino(options, pretty({ colorize: true, sync: true })) : pino(options);
}
