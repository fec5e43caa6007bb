// Configuration: the schema, loading and validation.
export { parseDuration } from './duration.js';
export { type ConfigOverrides, loadConfigFile, parseConfigText, validateConfig } from './load.js';
export {
  type BackendConfig,
  type Config,
  type ConfigInput,
  configJsonSchema,
  configSchema,
  type RoomRule,
} from './schema.js';
