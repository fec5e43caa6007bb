// Runs one demo chat server as a process: `node chat-server-main.js <id> [port]`. It reports its
// port over IPC when forked (and exits with its parent), or on stdout when run by hand.

import type { AddressInfo } from 'node:net';
import { startChatServer } from './chat-server.js';

const [id = 'chat', port = '0'] = process.argv.slice(2);
const server = await startChatServer(id, Number(port));
const { port: bound } = server.address() as AddressInfo;
if (process.send) {
  process.send({ ready: true, port: bound });
  process.on('disconnect', () => process.exit(0));
} else {
  process.stdout.write(`${id} listening on http://127.0.0.1:${bound}\n`);
}
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
