// roomring's library API.
export {
  type Config,
  type ConfigInput,
  configJsonSchema,
  loadConfigFile,
  parseConfigText,
  validateConfig,
} from './config/index.js';
export { Daemon, type DaemonOptions } from './daemon.js';
export { ConfigError, ERROR_CODES, type ErrorCode, RoomringError } from './errors.js';
export { type Backend, Pool } from './pool/index.js';
export { ProxyServer } from './proxy/index.js';
export {
  type BackendEntry,
  BackendRegistration,
  RedisRegistry,
  type RegisterOptions,
  type Registry,
  RegistryAdmin,
  type RegistrySnapshot,
  registerBackend,
  registryKeys,
  StaticRegistry,
} from './registry/index.js';
export { Ring, type RingMember } from './ring/index.js';
export { compileRoomKey, type RoomKeyFn } from './room/index.js';
