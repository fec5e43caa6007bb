// Consistent hashing: pure, no I/O.
export { fmix32, murmur3 } from './hash.js';
export { Ring, type RingMember } from './ring.js';
