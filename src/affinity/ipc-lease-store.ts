// Room leases for `--workers` without Redis: the primary process holds one MemoryLeaseStore and
// every worker asks it over the cluster IPC channel, so all workers agree on each live room.

import type { Lease, LeaseStore } from './lease-store.js';

type Operation = 'peek' | 'claim' | 'replace' | 'renew' | 'release';

export interface LeaseRequest {
  roomringLease: true;
  id: number;
  op: Operation;
  args: unknown[];
}

export interface LeaseReply {
  roomringLeaseReply: true;
  id: number;
  result?: unknown;
  error?: string;
}

/** A worker's side: each call is one IPC round trip to the primary. */
export class IpcLeaseStore implements LeaseStore {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();

  constructor(private readonly timeoutMs = 2000) {
    process.on('message', (message: Partial<LeaseReply>) => {
      if (message.roomringLeaseReply !== true || message.id === undefined) return;
      const waiter = this.pending.get(message.id);
      if (waiter === undefined) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message.result);
    });
  }

  private call<T>(op: Operation, args: unknown[]): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('lease store (primary process) did not answer'));
      }, this.timeoutMs);
      timer.unref();
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      const request: LeaseRequest = { roomringLease: true, id, op, args };
      if (process.send === undefined) reject(new Error('not a worker process'));
      else process.send(request);
    });
  }

  peek(room: string): Promise<Lease | undefined> {
    return this.call('peek', [room]);
  }

  claim(room: string, candidate: string, ttlMs: number): Promise<Lease> {
    return this.call('claim', [room, candidate, ttlMs]);
  }

  replace(room: string, expected: string, next: string, ttlMs: number): Promise<Lease> {
    return this.call('replace', [room, expected, next, ttlMs]);
  }

  renew(leases: ReadonlyMap<string, string>, ttlMs: number): Promise<string[]> {
    return this.call('renew', [[...leases], ttlMs]);
  }

  release(room: string, backendId: string): Promise<void> {
    return this.call('release', [room, backendId]);
  }

  async close(): Promise<void> {
    for (const waiter of this.pending.values()) waiter.reject(new Error('closed'));
    this.pending.clear();
  }
}

/** The primary's side: answers a worker's request from its own store. */
export async function answerLeaseRequest(store: LeaseStore, request: LeaseRequest): Promise<LeaseReply> {
  const [a, b, c, d] = request.args;
  try {
    let result: unknown;
    switch (request.op) {
      case 'peek':
        result = await store.peek(String(a));
        break;
      case 'claim':
        result = await store.claim(String(a), String(b), Number(c));
        break;
      case 'replace':
        result = await store.replace(String(a), String(b), String(c), Number(d));
        break;
      case 'renew':
        result = await store.renew(new Map(a as [string, string][]), Number(b));
        break;
      case 'release':
        result = await store.release(String(a), String(b));
        break;
    }
    return { roomringLeaseReply: true, id: request.id, result };
  } catch (error) {
    return { roomringLeaseReply: true, id: request.id, error: String(error) };
  }
}

export function isLeaseRequest(message: unknown): message is LeaseRequest {
  return typeof message === 'object' && message !== null && (message as LeaseRequest).roomringLease === true;
}
