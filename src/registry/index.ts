// Backend discovery sources.
export type { BackendEntry, BackendState, Registry, RegistrySnapshot, SnapshotListener } from './registry.js';
export { StaticRegistry } from './static-registry.js';
