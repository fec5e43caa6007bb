// Active health checks: probes each backend on its own jittered schedule and turns results into
// verdicts with rise/fall hysteresis. A backend whose results keep flipping is held down as flapping.

import { EventEmitter } from 'node:events';
import type { HealthConfig, HealthOverride } from '../config/schema.js';
import { type ProbeResult, type ProbeTarget, probe } from './probe.js';
import type { Verdict } from './verdict.js';

export interface CheckTarget extends ProbeTarget {
  readonly id: string;
  readonly health?: HealthOverride | undefined;
}

export interface CheckerEvents {
  /** A backend's status changed. */
  verdict: [id: string, verdict: Verdict, previous: Verdict | undefined];
  /** Every check's result, for metrics and for clearing passive cool-offs. */
  result: [id: string, result: ProbeResult];
}

type Settings = Omit<HealthConfig, 'initial'>;

interface State {
  target: CheckTarget;
  settings: Settings;
  verdict: Verdict;
  passes: number;
  fails: number;
  /** Times of recent status changes, for flap detection. */
  flips: number[];
  holdUntil: number;
  timer: NodeJS.Timeout | undefined;
  running: boolean;
  /** A passive failure was reported: re-check quickly until the verdict settles. */
  suspect: boolean;
}

/** Time between checks of a suspect backend, so `fall` failures confirm it within a second or so. */
const SUSPECT_INTERVAL = 150;

/** Status changes within `FLAP_WINDOW` check intervals that count as flapping. */
const FLAP_CHANGES = 4;
const FLAP_WINDOW = 10;

export class HealthChecker extends EventEmitter<CheckerEvents> {
  private readonly states = new Map<string, State>();
  private stopped = false;

  constructor(private config: HealthConfig) {
    super();
  }

  /** Reconciles the checked set with `targets`: new ones are probed soon, gone ones stop. */
  setTargets(targets: Iterable<CheckTarget>, config: HealthConfig = this.config): void {
    this.config = config;
    const next = new Map<string, CheckTarget>();
    for (const target of targets) next.set(target.id, target);
    for (const [id, state] of this.states) {
      if (!next.has(id)) {
        clearTimeout(state.timer);
        this.states.delete(id);
      }
    }
    for (const target of next.values()) {
      const state = this.states.get(target.id);
      const settings = { ...this.config, ...definedOnly(target.health) };
      if (state === undefined) {
        const fresh: State = {
          target,
          settings,
          verdict: { status: 'unknown', reason: 'not checked yet', since: Date.now() },
          passes: 0,
          fails: 0,
          flips: [],
          holdUntil: 0,
          timer: undefined,
          running: false,
          suspect: false,
        };
        this.states.set(target.id, fresh);
        // The first check comes soon, at a random point, so a batch of new backends is not probed at once.
        this.schedule(fresh, Math.random() * Math.min(settings.interval, 250));
      } else {
        state.target = target;
        state.settings = settings;
      }
    }
  }

  /** Starts from verdicts another checker reached (a new leader takes over without flapping). */
  seed(verdicts: ReadonlyMap<string, Verdict>): void {
    for (const [id, verdict] of verdicts) {
      const state = this.states.get(id);
      if (state !== undefined && state.verdict.status === 'unknown') {
        state.verdict = verdict;
        if (verdict.status === 'up') state.passes = state.settings.rise;
        if (verdict.status === 'down') state.fails = state.settings.fall;
      }
    }
  }

  verdicts(): Map<string, Verdict> {
    return new Map([...this.states].map(([id, state]) => [id, state.verdict]));
  }

  /** Probes one backend now (a passive failure was seen), outside its schedule. */
  probeNow(id: string): void {
    const state = this.states.get(id);
    if (state === undefined) return;
    state.suspect = true;
    if (!state.running) {
      clearTimeout(state.timer);
      void this.check(state);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const state of this.states.values()) clearTimeout(state.timer);
    this.states.clear();
  }

  private schedule(state: State, delay: number): void {
    if (this.stopped) return;
    clearTimeout(state.timer);
    state.timer = setTimeout(() => void this.check(state), delay);
    state.timer.unref();
  }

  private async check(state: State): Promise<void> {
    state.running = true;
    const result = await probe(state.target, state.settings);
    state.running = false;
    if (this.stopped || this.states.get(state.target.id) !== state) return;
    this.emit('result', state.target.id, result);
    this.judge(state, result);
    if (result.ok || state.verdict.status === 'down') state.suspect = false;
    const { interval } = state.settings;
    // ±10% jitter keeps checks of many backends spread out.
    this.schedule(
      state,
      state.suspect ? Math.min(interval, SUSPECT_INTERVAL) : interval * (0.9 + Math.random() * 0.2),
    );
  }

  private judge(state: State, result: ProbeResult): void {
    const { rise, fall, interval } = state.settings;
    const now = Date.now();
    if (result.ok) {
      state.passes++;
      state.fails = 0;
      if (state.verdict.status !== 'up' && state.passes >= rise) {
        if (now < state.holdUntil) return;
        this.change(state, 'up', `passed ${state.passes} check(s)`, now);
      }
    } else {
      state.fails++;
      state.passes = 0;
      if (state.verdict.status !== 'down' && state.fails >= fall)
        this.change(state, 'down', result.reason, now);
    }
    state.flips = state.flips.filter((t) => now - t < FLAP_WINDOW * interval);
    if (state.flips.length >= FLAP_CHANGES && state.holdUntil < now) {
      state.holdUntil = now + FLAP_WINDOW * interval;
      if (state.verdict.status === 'up')
        this.change(state, 'down', `flapping: ${state.flips.length} changes`, now);
    }
  }

  private change(state: State, status: Verdict['status'], reason: string, now: number): void {
    const previous = state.verdict;
    state.verdict = { status, reason, since: now };
    state.flips.push(now);
    this.emit('verdict', state.target.id, state.verdict, previous);
  }
}

function definedOnly<T extends object>(value: T | undefined): Partial<T> {
  if (value === undefined) return {};
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
