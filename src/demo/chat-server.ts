// The demo backend: a chat server that keeps the last 10 messages of each room in its own memory,
// the textbook stateful server. `chat-server-main.ts` runs it as a process of its own.

import http from 'node:http';
import { type WebSocket, WebSocketServer } from 'ws';
import { chatPage } from './chat-page.js';

const HISTORY = 10;

interface Room {
  readonly history: { text: string; at: number }[];
  readonly members: Set<WebSocket>;
}

export function startChatServer(id: string, port = 0): Promise<http.Server> {
  const rooms = new Map<string, Room>();
  const roomOf = (name: string): Room => {
    let room = rooms.get(name);
    if (room === undefined) {
      room = { history: [], members: new Set() };
      rooms.set(name, room);
    }
    return room;
  };

  const server = http.createServer((req, res) => {
    res.setHeader('x-served-by', id);
    const name = roomFromPath(req.url ?? '/');
    if (req.url === '/health') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ ok: true, server: id }));
    } else if (name !== null && (req.url ?? '').endsWith('/info')) {
      const room = rooms.get(name);
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          server: id,
          room: name,
          messages: room?.history ?? [],
          members: room?.members.size ?? 0,
        }),
      );
    } else if (name !== null) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(chatPage(id, name));
    } else {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ server: id, error: 'not found' }));
    }
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    const name = roomFromPath(req.url ?? '/');
    if (name === null) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const room = roomOf(name);
      room.members.add(ws);
      ws.send(JSON.stringify({ type: 'hello', server: id, room: name, history: room.history }));
      ws.on('message', (data) => {
        const message = { text: String(data).slice(0, 2000), at: Date.now() };
        room.history.push(message);
        if (room.history.length > HISTORY) room.history.shift();
        const out = JSON.stringify({ type: 'message', server: id, ...message });
        for (const member of room.members) member.send(out);
      });
      ws.on('close', () => room.members.delete(ws));
      ws.on('error', () => ws.terminate());
    });
  });

  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

function roomFromPath(url: string): string | null {
  const match = /^\/rooms\/([^/?#]+)/.exec(url);
  if (match === null) return null;
  try {
    return decodeURIComponent(match[1] as string);
  } catch {
    return null;
  }
}
