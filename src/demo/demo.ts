// `roomring demo`: three chat servers, each its own process, behind the proxy on the embedded
// default (static backends, in-memory state, no Redis).

import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { validateConfig } from '../config/load.js';
import { attachToProcess, Daemon } from '../daemon.js';

const SERVERS = ['chat-1', 'chat-2', 'chat-3'];

function startServer(id: string): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(new URL('./chat-server-main.js', import.meta.url)), [id, '0'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (message: { port: number }) => resolve({ child, port: message.port }));
    child.once('exit', (code) => reject(new Error(`demo server ${id} exited with code ${code}`)));
  });
}

export async function runDemo(port: number, adminPort = 9090): Promise<Daemon> {
  const servers = await Promise.all(SERVERS.map(startServer));
  const config = validateConfig(
    {
      listen: { host: '127.0.0.1', port },
      room: { from: [{ path: '/rooms/:room' }, { query: 'room' }, { header: 'x-room-id' }] },
      backends: servers.map((server, i) => ({ id: SERVERS[i], url: `http://127.0.0.1:${server.port}` })),
      admin: { host: '127.0.0.1', port: adminPort },
    },
    'demo',
  );
  const daemon = new Daemon(config);
  const stopServers = (): void => {
    for (const { child } of servers) child.kill('SIGTERM');
  };
  attachToProcess(daemon, () => {
    stopServers();
    process.exit(0);
  });
  process.once('exit', stopServers);
  let address: Awaited<ReturnType<Daemon['start']>>;
  try {
    address = await daemon.start();
  } catch (error) {
    stopServers();
    throw error;
  }
  const base = `http://127.0.0.1:${address.port}`;
  process.stdout.write(
    `\nroomring demo: 3 chat servers behind the proxy at\n\n  ${base}\n\n` +
      `Open ${base}/rooms/lobby in two tabs: both reach the server that holds 'lobby'.\n` +
      `Try ${base}/rooms/kitchen and ${base}/rooms/garden: each room sticks to its own server.\n` +
      `The dashboard at http://127.0.0.1:${daemon.adminAddress?.port}/ draws the ring and the live rooms.\n` +
      `Ctrl-C stops everything.\n\n`,
  );
  return daemon;
}
