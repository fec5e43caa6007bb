// Every error roomring reports, in one list: a stable code, an HTTP status and a message.
// The README's error table is checked against this list by a test.

export const ERROR_CODES = {
  ROOMRING_E_NO_ROOM: { status: 400, message: 'The request names no room (path, query, header or cookie).' },
  ROOMRING_E_ROOM_TOO_LONG: { status: 414, message: 'The room id is longer than 256 bytes after decoding.' },
  ROOMRING_E_BAD_ROOM: { status: 400, message: 'The room id is not valid percent-encoded UTF-8.' },
  ROOMRING_E_BAD_REQUEST: { status: 400, message: 'The request is not valid HTTP/1.1.' },
  ROOMRING_E_HEADERS_TOO_LARGE: { status: 431, message: 'The request head is larger than 16 KiB.' },
  ROOMRING_E_REQUEST_TIMEOUT: { status: 408, message: 'The request head did not arrive in time.' },
  ROOMRING_E_METHOD_NOT_ALLOWED: {
    status: 405,
    message: 'CONNECT requests are not proxied.',
  },
  ROOMRING_E_NO_BACKEND: { status: 503, message: 'No backend is available for this room.' },
  ROOMRING_E_BACKEND_UNREACHABLE: { status: 502, message: 'The backend for this room could not be reached.' },
  ROOMRING_E_BACKEND_TIMEOUT: { status: 504, message: 'The backend for this room did not answer in time.' },
  ROOMRING_E_SHUTTING_DOWN: { status: 503, message: 'The proxy is shutting down.' },
  ROOMRING_E_CONFIG: { status: 500, message: 'The configuration is invalid.' },
  ROOMRING_E_UNAUTHORIZED: { status: 401, message: 'The admin API needs a valid bearer token.' },
  ROOMRING_E_NOT_FOUND: { status: 404, message: 'No such admin endpoint.' },
  ROOMRING_E_ADMIN: { status: 500, message: 'The admin request failed.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error with a stable code; `status` is the HTTP status a client sees for it. */
export class RoomringError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string = ERROR_CODES[code].message) {
    super(message);
    this.name = 'RoomringError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
  }
}

/** Raised for a configuration that fails to load or validate; the CLI exits 2 on it. */
export class ConfigError extends RoomringError {
  readonly file: string;

  constructor(file: string, details: string) {
    super('ROOMRING_E_CONFIG', `${file}: ${details}`);
    this.name = 'ConfigError';
    this.file = file;
  }
}

const bodies = new Map<ErrorCode, Buffer>();

/** The JSON body of an error reply, built once per code since messages are fixed. */
export function errorBody(code: ErrorCode): Buffer {
  let body = bodies.get(code);
  if (body === undefined) {
    body = Buffer.from(JSON.stringify({ error: { code, message: ERROR_CODES[code].message } }));
    bodies.set(code, body);
  }
  return body;
}
