// Membership state and the current ring.
export { type Backend, type CoolOffOptions, Pool, type PoolEvents, type RouteReason } from './pool.js';
