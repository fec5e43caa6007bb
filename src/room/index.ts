// Room ids: where they are found in a request and how they are checked.
export { compileRoomKey, MAX_ROOM_BYTES, type RoomKeyFn, type RoomSource } from './room-key.js';
