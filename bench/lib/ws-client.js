// The forked WebSocket load client (clients/ws-client.js), driven by request/response over IPC.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLIENT = fileURLToPath(new URL('../clients/ws-client.js', import.meta.url));

/** The forked WebSocket client, driven by request/response over IPC. */
export async function startClient() {
  const child = spawn(process.execPath, [CLIENT], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    detached: true,
  });
  await new Promise((resolve, reject) => {
    child.once('message', (m) => (m.ready ? resolve() : reject(new Error('client not ready'))));
    child.once('exit', (code) => reject(new Error(`ws client exited ${code}`)));
  });
  let queue = Promise.resolve();
  const cmd = (message, timeoutMs = 120000) => {
    const next = queue.then(
      () =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`ws client: ${message.cmd} timed out`)), timeoutMs);
          child.once('message', (reply) => {
            clearTimeout(timer);
            if (reply.ok) resolve(reply);
            else reject(new Error(`ws client: ${message.cmd}: ${reply.error}`));
          });
          child.send(message);
        }),
    );
    queue = next.catch(() => {});
    return next;
  };
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = () => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    return exited;
  };
  process.on('exit', stop);
  return { cmd, stop };
}
