// Compiles the configured room rules into one function that finds the room id of a request.
// Pure string scanning: no URL objects, no allocation beyond the id itself on the common path.

import type { RoomRule } from '../config/schema.js';
import { RoomringError } from '../errors.js';

/** The parts of a request a room id can come from (an `http.IncomingMessage` fits). */
export interface RoomSource {
  url?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  /**
   * The first value of a repeated field (`name` lower-cased), where `headers` joins repeats into
   * one value: a room header added twice on the way must not name another room.
   */
  firstHeader?(name: string): string | undefined;
}

/** Returns the decoded room id, or null when no rule finds one; throws RoomringError for a bad id. */
export type RoomKeyFn = (req: RoomSource) => string | null;

export const MAX_ROOM_BYTES = 256;

type Extractor = (req: RoomSource, path: string, query: string) => string | null;

export function compileRoomKey(rules: readonly RoomRule[]): RoomKeyFn {
  const extractors = rules.map(compileRule);
  // Form-encoded query strings write spaces as '+'; other sources keep '+' as it is.
  const plusIsSpace = rules.map((rule) => 'query' in rule);
  return (req) => {
    const url = originForm(req.url ?? '/');
    let end = url.indexOf('?');
    const hash = url.indexOf('#');
    if (hash !== -1 && (end === -1 || hash < end)) end = hash;
    const path = end === -1 ? url : url.slice(0, end);
    const query =
      end === -1 || url.charCodeAt(end) !== 63 ? '' : url.slice(end + 1, hash > end ? hash : undefined);
    for (let i = 0; i < extractors.length; i++) {
      const raw = (extractors[i] as Extractor)(req, path, query);
      if (raw !== null && raw !== '') {
        const room = decodeRoom(raw, plusIsSpace[i] === true);
        if (room !== '') return room;
      }
    }
    return null;
  };
}

function compileRule(rule: RoomRule): Extractor {
  if ('path' in rule) return pathExtractor(rule.path);
  if ('query' in rule) {
    const name = rule.query;
    return (_req, _path, query) => queryParam(query, name);
  }
  if ('header' in rule) {
    // Node lower-cases incoming header names; a rule built without the schema may not be.
    const name = rule.header.toLowerCase();
    return (req) => headerText(req.firstHeader === undefined ? req.headers[name] : req.firstHeader(name));
  }
  const name = rule.cookie;
  return (req) => cookieValue(headerText(req.headers.cookie), name);
}

/**
 * The path and query of a request target: an absolute-form one (`http://host/rooms/a`, which
 * servers must accept, RFC 9112 3.2.2) without its scheme and authority.
 */
function originForm(target: string): string {
  if (target.charCodeAt(0) === 47 /* / */) return target;
  const scheme = target.indexOf('://');
  if (scheme === -1) return target;
  let from = scheme + 3;
  while (from < target.length && !'/?#'.includes(target[from] as string)) from++;
  return target[from] === '/' ? target.slice(from) : `/${target.slice(from)}`;
}

/** Matches a pattern such as `/rooms/:room` segment by segment, as a prefix of the path. */
function pathExtractor(pattern: string): Extractor {
  const segments = pattern.split('/').filter((s) => s !== '');
  const roomIndex = segments.indexOf(':room');
  return (_req, path) => {
    let pos = 1;
    let room: string | null = null;
    for (let i = 0; i < segments.length; i++) {
      if (pos > path.length) return null;
      let end = path.indexOf('/', pos);
      if (end === -1) end = path.length;
      if (end === pos) return null;
      const segment = segments[i] as string;
      if (i === roomIndex) room = path.slice(pos, end);
      else if (segment.charCodeAt(0) !== 58 /* : */) {
        if (end - pos !== segment.length || !path.startsWith(segment, pos)) return null;
      }
      pos = end + 1;
    }
    return room;
  };
}

function queryParam(query: string, name: string): string | null {
  let from = 0;
  while (from < query.length) {
    const at = query.indexOf(name, from);
    if (at === -1) return null;
    const next = at + name.length;
    if ((at === 0 || query.charCodeAt(at - 1) === 38) /* & */ && query.charCodeAt(next) === 61 /* = */) {
      const end = query.indexOf('&', next + 1);
      return query.slice(next + 1, end === -1 ? undefined : end);
    }
    from = next;
  }
  return null;
}

function cookieValue(header: string | null, name: string): string | null {
  if (header === null) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
    }
  }
  return null;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function headerText(value: string | string[] | undefined): string | null {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return null;
  // Node reads header bytes as latin1; a raw UTF-8 header value is re-read as UTF-8. Bytes that
  // are not UTF-8 are refused rather than turned into U+FFFD, which would merge distinct ids.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: anything past ASCII
  if (!/[^\x00-\x7f]/.test(text)) return text;
  // Past U+00FF the text did not come off the wire as bytes: it is already decoded.
  if (/[\u0100-\uffff]/.test(text)) return text;
  try {
    return strictUtf8.decode(Buffer.from(text, 'latin1'));
  } catch {
    throw new RoomringError('ROOMRING_E_BAD_ROOM');
  }
}

function decodeRoom(raw: string, plusIsSpace: boolean): string {
  let room = raw;
  if (plusIsSpace && room.includes('+')) room = room.replaceAll('+', ' ');
  if (room.includes('%')) {
    try {
      room = decodeURIComponent(room);
    } catch {
      throw new RoomringError('ROOMRING_E_BAD_ROOM');
    }
  }
  // A UTF-16 unit is at most 3 UTF-8 bytes, so short ids skip the byte count.
  if (room.length * 3 > MAX_ROOM_BYTES && Buffer.byteLength(room) > MAX_ROOM_BYTES) {
    throw new RoomringError('ROOMRING_E_ROOM_TOO_LONG');
  }
  return room;
}
