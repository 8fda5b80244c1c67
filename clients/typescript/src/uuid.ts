// UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Used for event ids and
// interaction ids: time-ordered ids keep the server's indexes and a human reading a log in
// roughly chronological order, and 74 random bits make collisions negligible.
//
// node:crypto rather than globalThis.crypto: the global only exists without a flag from Node 19,
// and this package supports Node 18.

import { randomFillSync } from "node:crypto";

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

// Random bytes are drawn in blocks: one getrandom() call per 256 ids instead of one per id,
// because emit() runs on the caller's hot path.
const POOL_IDS = 256;
const pool = new Uint8Array(10 * POOL_IDS);
let poolOffset = pool.length;

export function uuidv7(nowMs: number = Date.now()): string {
  if (poolOffset + 10 > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const b = new Uint8Array(16);
  // 48-bit big-endian timestamp. Division, not bit shifts: JS shifts are 32-bit.
  let ms = Math.max(0, Math.floor(nowMs));
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b.set(pool.subarray(poolOffset, poolOffset + 10), 6);
  poolOffset += 10;
  b[6] = 0x70 | (b[6] & 0x0f); // version 7
  b[8] = 0x80 | (b[8] & 0x3f); // variant 10
  let s = "";
  for (let i = 0; i < 16; i++) {
    s += HEX[b[i]];
    if (i === 3 || i === 5 || i === 7 || i === 9) s += "-";
  }
  return s;
}
