// The ring: weighted rendezvous (highest random weight) hashing over an immutable set of members.
//
// Why rendezvous rather than a ketama ring or Maglev: the owner of a room is a pure function of the
// member *set*, removing a member moves only its own rooms, adding one moves rooms only to it, and
// balance is as good as the hash (no vnode lumps). The cost is O(n) per lookup, a few integer ops
// per member, which stays under a few microseconds even at 1,000 backends.

import { createHash } from 'node:crypto';
import { fmix32, murmur3 } from './hash.js';

export interface RingMember {
  readonly id: string;
  readonly weight: number;
}

interface Slot<M> {
  readonly member: M;
  readonly seed: number;
  readonly weight: number;
}

const TWO_32 = 4294967296;

export class Ring<M extends RingMember = RingMember> {
  /** Members sorted by id: the order ties are broken in, so input order never matters. */
  readonly members: readonly M[];
  private readonly slots: readonly Slot<M>[];
  private readonly equalWeights: boolean;
  private fingerprintCache: string | undefined;

  constructor(members: Iterable<M>) {
    const byId = new Map<string, M>();
    for (const member of members) {
      if (!(member.weight > 0) || !Number.isFinite(member.weight)) {
        throw new RangeError(
          `ring member '${member.id}' needs a positive finite weight, got ${member.weight}`,
        );
      }
      if (byId.has(member.id)) throw new RangeError(`ring member '${member.id}' appears twice`);
      byId.set(member.id, member);
    }
    this.members = Object.freeze([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
    this.slots = this.members.map((member) => ({
      member,
      seed: murmur3(member.id, 0x5bd1e995),
      weight: member.weight,
    }));
    this.equalWeights = this.slots.every((slot) => slot.weight === this.slots[0]?.weight);
  }

  get size(): number {
    return this.members.length;
  }

  /** The member that owns `room`, or undefined when the ring is empty. */
  ownerOf(room: string): M | undefined {
    return this.bestOf(murmur3(room), undefined);
  }

  /**
   * The highest-ranked member of `room` that `usable` accepts: exactly the owner the ring would
   * give if the refused members were removed, so failover moves only the refused members' rooms.
   */
  ownerWhere(room: string, usable: (member: M) => boolean): M | undefined {
    const roomHash = murmur3(room);
    const owner = this.bestOf(roomHash, undefined);
    if (owner === undefined || usable(owner)) return owner;
    return this.bestOf(roomHash, usable);
  }

  /** Every member in the order `room` would fall over to them: owner first. */
  successors(room: string): M[] {
    const roomHash = murmur3(room);
    return this.slots
      .map((slot) => ({ member: slot.member, score: this.score(roomHash, slot) }))
      .sort((a, b) => b.score - a.score)
      .map((entry) => entry.member);
  }

  /** A short digest of the member set (ids and weights); equal digests mean equal placement. */
  fingerprint(): string {
    if (this.fingerprintCache === undefined) {
      const text = this.members.map((m) => `${m.id}\t${m.weight}\n`).join('');
      this.fingerprintCache = createHash('sha256').update(text).digest('hex').slice(0, 16);
    }
    return this.fingerprintCache;
  }

  private bestOf(roomHash: number, usable: ((member: M) => boolean) | undefined): M | undefined {
    let best: Slot<M> | undefined;
    let bestScore = -1;
    for (const slot of this.slots) {
      // Strictly greater: on a tie the lower id (earlier slot) keeps the room.
      const score = this.score(roomHash, slot);
      if (score > bestScore && (usable === undefined || usable(slot.member))) {
        best = slot;
        bestScore = score;
      }
    }
    return best?.member;
  }

  private score(roomHash: number, slot: Slot<M>): number {
    const draw = fmix32(roomHash ^ slot.seed);
    if (this.equalWeights) return draw;
    // Weighted rendezvous: w / -ln(u) with u uniform in (0, 1) gives each member a w-proportional share.
    return slot.weight / -Math.log((draw + 0.5) / TWO_32);
  }
}
