// Health checks for `--workers` without Redis: the primary checks the configured backends once
// and sends every verdict change to all workers, so every worker builds the same ring (workers
// checking for themselves would disagree for a while on every transition). Workers report the
// backends they saw fail, and the primary probes those at once.

import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import { HealthChecker } from './health/checker.js';
import type { Verdict } from './health/verdict.js';
import type { RemoteVerdicts } from './health-coordinator.js';
import { Pool } from './pool/pool.js';

/** Primary -> worker: the whole verdict set. */
export interface VerdictsMessage {
  roomringVerdicts: [string, Verdict][];
}

/** Worker -> primary: a suspect backend, or a request for the current verdicts. */
export interface SuspectMessage {
  roomringSuspect?: string;
  roomringVerdictsWanted?: true;
}

export class SharedHealth {
  private readonly pool: Pool;
  private checker: HealthChecker | undefined;

  constructor(
    config: Config,
    private readonly log: Logger,
    private readonly broadcast: (message: VerdictsMessage) => void,
  ) {
    this.pool = new Pool(config.failover);
    this.apply(config);
  }

  apply(config: Config): void {
    this.pool.applySnapshot({
      epoch: 1,
      backends: config.backends.map((b) => ({ ...b, state: 'active' as const })),
    });
    if (config.health === undefined) {
      this.checker?.stop();
      this.checker = undefined;
    } else if (this.checker === undefined) {
      const checker = new HealthChecker(config.health);
      checker.on('verdict', (id, verdict, previous) => {
        const level = verdict.status === 'down' ? 'warn' : 'info';
        this.log[level](
          {
            event: 'health',
            backend: id,
            status: verdict.status,
            reason: verdict.reason,
            was: previous?.status,
          },
          `backend ${id} is ${verdict.status}: ${verdict.reason}`,
        );
        this.broadcast(this.message());
      });
      checker.setTargets(this.pool.list());
      this.checker = checker;
    } else {
      this.checker.setTargets(this.pool.list(), config.health);
    }
    this.broadcast(this.message());
  }

  /** Handles a worker's message; returns the reply to send that worker, if any. */
  receive(message: SuspectMessage): VerdictsMessage | undefined {
    if (message.roomringSuspect !== undefined) this.checker?.probeNow(message.roomringSuspect);
    return message.roomringVerdictsWanted === true ? this.message() : undefined;
  }

  message(): VerdictsMessage {
    return { roomringVerdicts: [...(this.checker?.verdicts() ?? new Map<string, Verdict>())] };
  }

  stop(): void {
    this.checker?.stop();
  }
}

/** A worker's side: verdicts arrive from the primary; suspects go to it. */
export class IpcVerdicts implements RemoteVerdicts {
  watch(listener: (verdicts: ReadonlyMap<string, Verdict>) => void): void {
    process.on('message', (message: Partial<VerdictsMessage>) => {
      if (Array.isArray(message.roomringVerdicts)) listener(new Map(message.roomringVerdicts));
    });
    const wanted: SuspectMessage = { roomringVerdictsWanted: true };
    process.send?.(wanted);
  }

  suspect(id: string): void {
    const message: SuspectMessage = { roomringSuspect: id };
    process.send?.(message);
  }
}
