// 32-bit hashing for the ring: MurmurHash3 (x86_32) over a string's UTF-8 bytes, and its finalizer as a mixer.
// Fixed algorithms, so every proxy process and version computes the same placement.

/** MurmurHash3 x86_32 of the UTF-8 encoding of `text`, encoded on the fly without a buffer. */
export function murmur3(text: string, seed = 0): number {
  let h = seed >>> 0;
  let k = 0;
  let shift = 0;
  let length = 0;
  const push = (byte: number): void => {
    k |= byte << shift;
    shift += 8;
    length++;
    if (shift === 32) {
      h ^= mixK(k);
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
      k = 0;
      shift = 0;
    }
  };
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) push(c);
    else if (c < 0x800) {
      push(0xc0 | (c >> 6));
      push(0x80 | (c & 63));
    } else if (
      c >= 0xd800 &&
      c < 0xdc00 &&
      i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      c = 0x10000 + ((c - 0xd800) << 10) + (text.charCodeAt(++i) - 0xdc00);
      push(0xf0 | (c >> 18));
      push(0x80 | ((c >> 12) & 63));
      push(0x80 | ((c >> 6) & 63));
      push(0x80 | (c & 63));
    } else {
      // Lone surrogates encode as U+FFFD, as TextEncoder does.
      if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
      push(0xe0 | (c >> 12));
      push(0x80 | ((c >> 6) & 63));
      push(0x80 | (c & 63));
    }
  }
  if (shift !== 0) h ^= mixK(k);
  h ^= length;
  return fmix32(h);
}

function mixK(k: number): number {
  let m = Math.imul(k, 0xcc9e2d51);
  m = (m << 15) | (m >>> 17);
  return Math.imul(m, 0x1b873593);
}

/** The MurmurHash3 finalizer: a bijection on 32-bit integers with full avalanche. */
export function fmix32(value: number): number {
  let h = value;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
