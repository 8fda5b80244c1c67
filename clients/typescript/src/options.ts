// Client options: names, units, defaults and checks, in one place.

import type { Rejection } from "./http.js";
import type { Logger } from "./warn.js";

export interface McpLogClientOptions {
  /** Base URL of the mcplog server, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** A writer key (sent as `Authorization: Bearer <apiKey>`). */
  apiKey: string;
  /** The MCP system's id; a writer key may only post its own mcp_id. */
  mcpId: string;

  /** Most events waiting in memory. Default 10 000. A full queue drops new events (counted). */
  queueMaxEvents?: number;
  /** Most bytes (serialized events) waiting in memory. Default 16 MiB. */
  queueMaxBytes?: number;
  /** Most events per request. Default 500; the server takes at most 1000. */
  batchMaxEvents?: number;
  /** Most bytes of events per request. Default 4 MiB; the server takes at most 16 MiB. */
  batchMaxBytes?: number;
  /** How long the worker waits for more events before sending a partial batch, in ms. Default 50. */
  lingerMs?: number;
  /** Limit for one request (connect, send, answer), in ms. Default 10 000. */
  requestTimeoutMs?: number;
  /** First retry delay cap, in ms (doubles per attempt, full jitter). Default 100; must be > 0. */
  backoffBaseMs?: number;
  /** Largest retry delay cap, in ms. Default 10 000; must be > 0. `Retry-After` from the server wins when longer. */
  backoffMaxMs?: number;
  /** How long the process may be kept alive at exit to deliver pending events, in ms. Default 5000. */
  exitFlushTimeoutMs?: number;
  /** Largest payload (serialized, bytes) sent as is; larger ones become `{"truncated":true,"bytes":N}`. Default 512 KiB. */
  payloadBytesMax?: number;
  /** Field names whose values become "[redacted]" at any depth of every payload (case-insensitive). An array (any iterable but a string). */
  redact?: Iterable<string>;
  /** Called for each event refused for good (by the server, or an invalid emit()). Must not block. */
  onRejected?: (rejection: Rejection) => void;
  /** Where warnings go. Default: stderr, prefixed with `mcplog: `. */
  logger?: Logger;
  /** At most one warning of each kind per this many ms. Default 10 000. */
  warnIntervalMs?: number;
  /** Register the beforeExit flush and exit report on `process`. Default true. */
  flushOnExit?: boolean;
  /** Default for instrument(): record tool arguments in request_data. Default true. */
  captureArguments?: boolean;
  /** Default for instrument(): record tool results in result_data. Default true. */
  captureResults?: boolean;
}

export type ResolvedOptions = Required<Omit<McpLogClientOptions, "redact" | "onRejected" | "logger">> &
  Pick<McpLogClientOptions, "redact" | "onRejected" | "logger">;

const MiB = 1024 * 1024;

export const DEFAULTS = {
  queueMaxEvents: 10_000,
  queueMaxBytes: 16 * MiB,
  batchMaxEvents: 500,
  batchMaxBytes: 4 * MiB,
  lingerMs: 50,
  requestTimeoutMs: 10_000,
  backoffBaseMs: 100,
  backoffMaxMs: 10_000,
  exitFlushTimeoutMs: 5_000,
  payloadBytesMax: 512 * 1024,
  warnIntervalMs: 10_000,
  flushOnExit: true,
  captureArguments: true,
  captureResults: true,
} as const;

/** The server's own per-request limits: a batch over them would be refused whole. */
const SERVER_BATCH_MAX_EVENTS = 1000;
const SERVER_BATCH_MAX_BYTES = 16 * MiB;
/** The server refuses events over 1 MiB; the envelope needs some room beside the payload. */
const SERVER_PAYLOAD_MAX_BYTES = MiB - 4096;

/** Checks the options; throws a TypeError on a misconfiguration (at startup, not at emit). */
export function resolveOptions(opts: McpLogClientOptions): ResolvedOptions {
  if (!opts || typeof opts !== "object") throw new TypeError("McpLogClient: options object required");
  for (const k of ["url", "apiKey", "mcpId"] as const) {
    if (typeof opts[k] !== "string" || opts[k].length === 0) throw new TypeError(`McpLogClient: option ${k} (string) is required`);
  }
  let url: URL;
  try {
    url = new URL(opts.url);
  } catch {
    throw new TypeError(`McpLogClient: url ${JSON.stringify(opts.url)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new TypeError("McpLogClient: url must be http(s)");

  const r = { ...DEFAULTS, ...stripUndefined(opts), url: opts.url.replace(/\/+$/, "") } as ResolvedOptions;
  // Backoff limits of 0 would make every retry immediate: a tight loop against a server that is
  // down or overloaded, which is exactly when it needs room.
  const positive = [
    "queueMaxEvents",
    "queueMaxBytes",
    "batchMaxEvents",
    "batchMaxBytes",
    "requestTimeoutMs",
    "backoffBaseMs",
    "backoffMaxMs",
    "payloadBytesMax",
  ] as const;
  const nonNegative = ["lingerMs", "exitFlushTimeoutMs", "warnIntervalMs"] as const;
  for (const k of positive) {
    if (!(typeof r[k] === "number" && r[k] > 0 && Number.isFinite(r[k]))) throw new TypeError(`McpLogClient: ${k} must be a positive number`);
  }
  for (const k of nonNegative) {
    if (!(typeof r[k] === "number" && r[k] >= 0 && Number.isFinite(r[k]))) throw new TypeError(`McpLogClient: ${k} must be a number >= 0`);
  }
  if (r.batchMaxEvents > SERVER_BATCH_MAX_EVENTS) throw new TypeError(`McpLogClient: batchMaxEvents may not exceed the server's ${SERVER_BATCH_MAX_EVENTS}`);
  if (r.batchMaxBytes > SERVER_BATCH_MAX_BYTES) throw new TypeError(`McpLogClient: batchMaxBytes may not exceed the server's ${SERVER_BATCH_MAX_BYTES}`);
  if (r.payloadBytesMax > SERVER_PAYLOAD_MAX_BYTES) throw new TypeError(`McpLogClient: payloadBytesMax may not exceed ${SERVER_PAYLOAD_MAX_BYTES}`);
  checkRedact(r.redact);
  return r;
}

// A string is iterable too, letter by letter: redact: "password" would redact fields named
// "p", "a", "s", ... and never "password". Refused rather than guessed at.
function checkRedact(redact: unknown): void {
  if (redact === undefined || redact === null) return; // none, as makeRedactor() reads it
  const iterable = typeof redact === "object" && typeof (redact as { [Symbol.iterator]?: unknown })[Symbol.iterator] === "function";
  if (!iterable) throw new TypeError("McpLogClient: redact must be an array of field names (not a string)");
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
