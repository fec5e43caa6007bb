// Backend discovery sources: the static list, the Redis registry, and the backend-side agent.
export { type BackendRow, RegistryAdmin } from './admin.js';
export { BackendRegistration, type RegisterOptions, registerBackend } from './agent.js';
export { type RegistryKeys, registryKeys } from './keys.js';
export { RedisRegistry } from './redis-registry.js';
export type {
  BackendEntry,
  BackendState,
  Registry,
  RegistrySnapshot,
  RegistryStatus,
  SnapshotListener,
} from './registry.js';
export { StaticRegistry } from './static-registry.js';
