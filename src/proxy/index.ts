// The request path: listener, forwarding of HTTP and WebSocket traffic, connection tracking.
export { type BackendLoad, ConnectionTracker, type Tunnel } from './connections.js';
export { ProxyServer } from './proxy-server.js';
