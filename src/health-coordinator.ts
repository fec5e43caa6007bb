// Decides who checks and where verdicts go. Without Redis a process checks its backends and feeds
// its own pool, unless it is a worker of `--workers`: then the primary checks and sends verdicts to
// every worker. With Redis only the leader checks; it writes verdicts to the registry, and every
// proxy (the leader too) builds its ring from the registry's verdicts, so all agree. Passive
// failures seen by any proxy reach the checker at once.

import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import { HealthChecker } from './health/checker.js';
import type { Verdict } from './health/verdict.js';
import type { Backend, Pool } from './pool/pool.js';
import { RedisRegistry } from './registry/redis-registry.js';
import type { Registry } from './registry/registry.js';

/** Verdicts decided by another process (the primary of `--workers`), for one that does not check. */
export interface RemoteVerdicts {
  /** Calls `listener` with the whole verdict set, now and after every change. */
  watch(listener: (verdicts: ReadonlyMap<string, Verdict>) => void): void;
  /** Reports a backend this process saw fail, so the checker probes it at once. */
  suspect(id: string): void;
}

export class HealthCoordinator {
  private checker: HealthChecker | undefined;
  private readonly redis: RedisRegistry | undefined;
  private readonly remote: RemoteVerdicts | undefined;

  constructor(
    private readonly pool: Pool,
    registry: Registry,
    private config: Config,
    private readonly log: Logger,
    private readonly onTransition?: (id: string, verdict: Verdict) => void,
    remote?: RemoteVerdicts,
  ) {
    this.redis = registry instanceof RedisRegistry ? registry : undefined;
    // With Redis the registry carries verdicts; a remote checker only stands in without it.
    this.remote = this.redis === undefined ? remote : undefined;
    this.remote?.watch((verdicts) => pool.setVerdicts(verdicts));
    pool.on('backends', (backends) => this.checker?.setTargets(backends));
    pool.on('down', (backend) => this.suspect(backend));
    pool.on('snapshot', () => this.republish());
    this.redis?.on('leader', (held) => (held ? this.startChecker() : this.stopChecker()));
    this.redis?.on('suspect', (id) => this.checker?.probeNow(id));
    this.apply();
  }

  reconfigure(config: Config): void {
    this.config = config;
    this.apply();
  }

  private apply(): void {
    const health = this.config.health;
    this.pool.setHealthPolicy({ enabled: health !== undefined, initial: health?.initial ?? 'up' });
    if (health === undefined) this.stopChecker();
    else if (this.checker !== undefined) this.checker.setTargets(this.pool.list(), health);
    else if (this.remote !== undefined) return;
    else if (this.redis === undefined || this.redis.leader) this.startChecker();
  }

  private startChecker(): void {
    const health = this.config.health;
    if (health === undefined || this.checker !== undefined) return;
    const checker = new HealthChecker(health);
    this.checker = checker;
    checker.on('verdict', (id, verdict, previous) => this.onVerdict(checker, id, verdict, previous));
    checker.on('result', (id, result) => {
      if (result.ok) this.pool.clearCoolOff(id);
    });
    checker.setTargets(this.pool.list());
    checker.seed(new Map(this.pool.list().flatMap((b) => verdictEntry(b.id, this.pool.verdictOf(b.id)))));
  }

  private stopChecker(): void {
    this.checker?.stop();
    this.checker = undefined;
  }

  private onVerdict(
    checker: HealthChecker,
    id: string,
    verdict: Verdict,
    previous: Verdict | undefined,
  ): void {
    this.onTransition?.(id, verdict);
    const level = verdict.status === 'down' ? 'warn' : 'info';
    this.log[level](
      { event: 'health', backend: id, status: verdict.status, reason: verdict.reason, was: previous?.status },
      `backend ${id} is ${verdict.status}: ${verdict.reason}`,
    );
    if (this.redis === undefined) {
      this.pool.setVerdicts(checker.verdicts());
      return;
    }
    this.redis
      .writeVerdict(id, verdict)
      .catch((error: unknown) =>
        this.log.warn(
          { err: error, backend: id },
          'could not publish a health verdict; the next change retries',
        ),
      );
  }

  /**
   * The leader writes a verdict when it changes; a registry that lost it (Redis restarted empty)
   * or never had it gets it again here, whenever what Redis stores disagrees with the leader's
   * checks. (The pool's view is no guide: it keeps old verdicts through a restart on purpose.)
   */
  private republish(): void {
    if (this.redis === undefined || this.checker === undefined) return;
    for (const [id, verdict] of this.checker.verdicts()) {
      if (verdict.status !== 'unknown' && this.redis.storedVerdict(id)?.status !== verdict.status) {
        this.redis.writeVerdict(id, verdict).catch(() => undefined);
      }
    }
  }

  private suspect(backend: Backend): void {
    if (this.config.health === undefined) return;
    if (this.remote !== undefined) this.remote.suspect(backend.id);
    else if (this.redis !== undefined) this.redis.reportSuspect(backend.id);
    else this.checker?.probeNow(backend.id);
  }

  stop(): void {
    this.stopChecker();
  }
}

function verdictEntry(id: string, verdict: Verdict | undefined): [string, Verdict][] {
  return verdict === undefined ? [] : [[id, verdict]];
}
