// Live WebSocket tunnels, counted per backend and per room: the numbers status, draining and
// graceful shutdown work from.

export interface Tunnel {
  readonly room: string | null;
  readonly backendId: string;
  /** Whether the native pipe forwards its bytes. */
  readonly piped: boolean;
  /** Closes as both peers expect: a WebSocket close frame with `code` each way, then both ends. */
  closeWith(code: number): void;
  /** Closes both sockets now. */
  destroy(): void;
}

export interface BackendLoad {
  connections: number;
  rooms: number;
}

export class ConnectionTracker {
  private readonly tunnels = new Set<Tunnel>();
  /** backend id -> room -> live tunnels of that room on that backend. */
  private readonly rooms = new Map<string, Map<string | null, number>>();
  private readonly waiting: (() => void)[] = [];

  add(tunnel: Tunnel): void {
    this.tunnels.add(tunnel);
    let rooms = this.rooms.get(tunnel.backendId);
    if (rooms === undefined) {
      rooms = new Map();
      this.rooms.set(tunnel.backendId, rooms);
    }
    rooms.set(tunnel.room, (rooms.get(tunnel.room) ?? 0) + 1);
  }

  /** `to` stands for `from` from now on: same room, same backend, counts unchanged. */
  replace(from: Tunnel, to: Tunnel): void {
    if (!this.tunnels.delete(from)) return;
    this.tunnels.add(to);
  }

  remove(tunnel: Tunnel): void {
    if (!this.tunnels.delete(tunnel)) return;
    if (this.tunnels.size === 0) {
      for (const resolve of this.waiting.splice(0)) resolve();
    }
    const rooms = this.rooms.get(tunnel.backendId);
    const count = rooms?.get(tunnel.room) ?? 0;
    if (rooms === undefined) return;
    if (count <= 1) rooms.delete(tunnel.room);
    else rooms.set(tunnel.room, count - 1);
    if (rooms.size === 0) this.rooms.delete(tunnel.backendId);
  }

  /** Resolves when no tunnel is open. */
  empty(): Promise<void> {
    if (this.tunnels.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  get size(): number {
    return this.tunnels.size;
  }

  all(): IterableIterator<Tunnel> {
    return this.tunnels.values();
  }

  /** Each live room with the backend holding most of its tunnels here (its lease's backend). */
  liveRooms(): Map<string, string> {
    const live = new Map<string, string>();
    const best = new Map<string, number>();
    for (const [backendId, rooms] of this.rooms) {
      for (const [room, count] of rooms) {
        if (room !== null && count > (best.get(room) ?? 0)) {
          live.set(room, backendId);
          best.set(room, count);
        }
      }
    }
    return live;
  }

  /** The tunnels open to one backend. */
  tunnelsTo(backendId: string): Tunnel[] {
    return [...this.tunnels].filter((tunnel) => tunnel.backendId === backendId);
  }

  /** Live rooms and connections of every backend with tunnels here. */
  loads(): Map<string, BackendLoad> {
    return new Map([...this.rooms.keys()].map((id) => [id, this.loadOf(id)]));
  }

  loadOf(backendId: string): BackendLoad {
    const rooms = this.rooms.get(backendId);
    if (rooms === undefined) return { connections: 0, rooms: 0 };
    let connections = 0;
    for (const count of rooms.values()) connections += count;
    return { connections, rooms: rooms.size };
  }
}
